"""Reproduce the reference study's numbers (arXiv 2605.12850) from its raw CSV files.

Point estimates must match to 1e-9 (relative); bootstrap standard errors, which
depend on the random draws, within 10 %. Skips when ../shared is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_collapse.stats.compare import DEFAULT_S_BAND, average_changes, compare_labeled
from persona_collapse.stats.metrics import RunMetrics, SelfProfile, analyze_ratings, self_profile
from persona_collapse.store.reference_csv import read_ratings_csv

FAMILIES = ("deepseek-v3.1", "gpt-4.1", "gpt-4o", "qwen3-235b")
VARIANTS = ("base", "secure", "insecure")
RUNS = [(f, v) for f in FAMILIES for v in VARIANTS]
RUN_IDS = [f"{f}-{v}" for f, v in RUNS]

SEED = 20260512
POINT_RTOL = 1e-9
SE_RTOL = 0.10


@pytest.fixture(scope="module")
def computed(
    reference_dir: Path, reference_expected: dict[str, Any]
) -> dict[tuple[str, str], RunMetrics]:
    """Metrics of every persona file, default draws (2000 + 400), computed once."""
    out = {}
    for family, variant in RUNS:
        entry = reference_expected["families"][family][variant]
        frame = read_ratings_csv(reference_dir / entry["persona_file"])
        out[family, variant] = analyze_ratings(
            frame["persona_id"], frame["item_id"], frame["rating"], rng=SEED
        )
    return out


@pytest.fixture(scope="module")
def profiles(
    reference_dir: Path, reference_expected: dict[str, Any]
) -> dict[tuple[str, str], SelfProfile]:
    out = {}
    for family, variant in RUNS:
        entry = reference_expected["families"][family][variant]
        frame = read_ratings_csv(reference_dir / entry["self_file"])
        assert frame.attrs["kind"] == "self"
        out[family, variant] = self_profile(frame["item_id"], frame["rating"])
    return out


def test_expected_lists_the_runs_tested(reference_expected: dict[str, Any]) -> None:
    families = reference_expected["families"]
    assert sorted(families) == sorted(FAMILIES)
    for family in FAMILIES:
        assert sorted(families[family]) == sorted(VARIANTS)
    assert tuple(reference_expected["frontier_S_band"]) == DEFAULT_S_BAND


@pytest.mark.parametrize(("family", "variant"), RUNS, ids=RUN_IDS)
def test_run_metrics(
    family: str,
    variant: str,
    computed: dict[tuple[str, str], RunMetrics],
    reference_expected: dict[str, Any],
) -> None:
    expected = reference_expected["families"][family][variant]
    got = computed[family, variant]
    assert (got.personas, got.questions) == (expected["personas"], expected["questions"])
    assert got.excluded_personas == ()
    assert got.n_persona_boot == 2000 and got.n_rerun_boot == 400 and got.seed == SEED
    for key in ("S", "R", "sigma_bar"):
        assert getattr(got, key) == pytest.approx(expected[key], rel=POINT_RTOL), key
    for key in ("S_se", "R_se", "sigma_bar_se"):
        assert getattr(got, key) == pytest.approx(expected[key], rel=SE_RTOL), key


@pytest.mark.parametrize(("family", "variant"), RUNS, ids=RUN_IDS)
def test_per_foundation_metrics(
    family: str,
    variant: str,
    computed: dict[tuple[str, str], RunMetrics],
    reference_expected: dict[str, Any],
) -> None:
    expected = reference_expected["families"][family][variant]["per_foundation"]
    got = computed[family, variant].per_foundation
    assert sorted(got) == sorted(expected)
    for name, exp in expected.items():
        found = got[name]
        assert len(found.items) == 6
        for key in ("S", "R", "sigma_bar"):
            assert getattr(found, key) == pytest.approx(exp[key], rel=POINT_RTOL), (name, key)
        for key in ("S_se", "R_se"):
            assert getattr(found, key) == pytest.approx(exp[key], rel=SE_RTOL), (name, key)


def test_headline_family_averages(
    computed: dict[tuple[str, str], RunMetrics], reference_expected: dict[str, Any]
) -> None:
    families = [
        compare_labeled({v: computed[f, v] for v in VARIANTS}, base="base") for f in FAMILIES
    ]
    insecure = average_changes(families).variants["insecure"].overall
    headline = reference_expected["headline"]
    assert pytest.approx(headline["mean_delta_S_insecure"], rel=POINT_RTOL) == insecure.S
    assert pytest.approx(headline["mean_delta_R_insecure"], rel=POINT_RTOL) == insecure.R
    assert insecure.sigma_bar == pytest.approx(
        headline["mean_delta_sigma_bar_insecure"], rel=POINT_RTOL
    )
    # The paper's rounded text: +55 % S, -65 % R, +304 % sigma_bar.
    assert (round(insecure.S, 2), round(insecure.R, 2), round(insecure.sigma_bar, 2)) == (
        0.55,
        -0.65,
        3.04,
    )


@pytest.mark.parametrize(("family", "variant"), RUNS, ids=RUN_IDS)
def test_self_profiles_match_the_paper(
    family: str,
    variant: str,
    profiles: dict[tuple[str, str], SelfProfile],
    reference_expected: dict[str, Any],
) -> None:
    paper = reference_expected["families"][family][variant]["self_profile_paper"]
    got = profiles[family, variant]
    assert got.missing_items == ()
    for name, value in paper.items():
        # The paper prints 2 decimals: a correct value lies within half a unit.
        assert abs(got.mean[name] - value) <= 0.005 + 1e-12, name
