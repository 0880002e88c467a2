"""Reproduce the authors' BFI-44 S and R (follow-up study 1) through ``pcollapse metrics``.

The raw CSV files of GPT-4o base / secure / insecure go through the command line
with ``--instrument bfi44 --format json --per-foundation``; point estimates must
match the authors' ``expected/*.csv`` to 1e-9 (relative), bootstrap standard
errors within 10 % (their seeds differ from ours). Skips when ../shared is absent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from _cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
BFI_DIR = REPO_ROOT.parent / "shared" / "reference" / "costa2026-followups" / "bfi44"
FILES = ("gpt-4o_temp01.csv", "gpt-4o-secure_temp01.csv", "gpt-4o-insecure_temp01.csv")
POINT_RTOL = 1e-9
SE_RTOL = 0.10

# (our JSON key, the authors' column); R's SE is SE(sigma_bar) / sigma_bar^2 in both.
POINTS = (("S", "susceptibility"), ("R", "robustness"), ("sigma_bar", "uncertainty"))
SES = (
    ("S_se", "susceptibility_uncertainty"),
    ("R_se", "robustness_uncertainty"),
    ("sigma_bar_se", "uncertainty_uncertainty"),
)


@pytest.fixture(scope="module")
def bfi_dir() -> Path:
    if not (BFI_DIR / "expected" / "persona_bfi_metrics.csv").is_file():
        pytest.skip(
            f"BFI-44 reference data not found at {BFI_DIR} "
            "(../shared is only present in CI and developer checkouts)"
        )
    return BFI_DIR


def _expected(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _close(ours: float, theirs: str, rtol: float) -> bool:
    return bool(abs(ours - float(theirs)) <= rtol * abs(float(theirs)))


def test_bfi44_metrics_reproduce_the_reference(
    bfi_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys,
        "metrics",
        *(bfi_dir / f for f in FILES),
        "--instrument",
        "bfi44",
        "--format",
        "json",
        "--per-foundation",
    )
    assert code == 0, err
    rows = {Path(r["source"]).name: r for r in json.loads(out)}
    assert set(rows) == set(FILES)
    expected = bfi_dir / "expected"
    overall = {r["source_file"]: r for r in _expected(expected / "persona_bfi_metrics.csv")}
    per_domain = _expected(expected / "persona_bfi_metrics_per_domain.csv")
    assert len(per_domain) == 15
    for name, row in rows.items():
        ref = overall[name]
        assert "per_foundation" not in row
        assert (row["personas"], row["questions"]) == (100, 44)
        for ours, theirs in POINTS:
            assert _close(row[ours], ref[theirs], POINT_RTOL), (name, ours, row[ours], ref[theirs])
        for ours, theirs in SES:
            assert _close(row[ours], ref[theirs], SE_RTOL), (name, ours, row[ours], ref[theirs])
        domains = row["per_domain"]
        assert list(domains) == [
            "Extraversion",
            "Agreeableness",
            "Conscientiousness",
            "Neuroticism",
            "Openness",
        ]
        for ref_d in (d for d in per_domain if d["source_file"] == name):
            got = domains[ref_d["domain"]]
            assert got["items"] == json.loads(ref_d["retained_question_ids_json"])
            for ours, theirs in POINTS:
                assert _close(got[ours], ref_d[theirs], POINT_RTOL), (name, ref_d["domain"], ours)
            for ours, theirs in SES:
                assert _close(got[ours], ref_d[theirs], SE_RTOL), (name, ref_d["domain"], ours)


def test_the_published_headline_numbers(bfi_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R = 16.376 / 7.132 / 3.825 and S = 0.6270 / 0.6346 / 1.1776 (SPEC section 1)."""
    code, out, err = run_cli(
        capsys,
        "metrics",
        *(bfi_dir / f for f in FILES),
        "--instrument",
        "bfi44",
        "--format",
        "json",
        "--persona-boot",
        "20",
        "--rerun-boot",
        "5",
    )
    assert code == 0, err
    rows = {Path(r["source"]).name: r for r in json.loads(out)}
    got = [(round(rows[f]["R"], 3), round(rows[f]["S"], 4)) for f in FILES]
    assert got == [(16.376, 0.627), (7.132, 0.6346), (3.825, 1.1776)]
