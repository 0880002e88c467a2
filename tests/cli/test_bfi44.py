"""BFI-44 through the command line: reading, per-domain metrics, reflected self-profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _cli import assert_user_error, run_cli
from persona_collapse.core.errors import InputFileError
from persona_collapse.store.reference_csv import read_rating_columns, read_ratings_csv

HEADER = "persona_id,question_id,run_index,rating,failures,response,collected_at"
SELF_HEADER = "question_id,run_index,rating,failures,response,collected_at"


def _bfi_file(path: Path, *, personas: int = 3, reps: int = 3) -> Path:
    rng = np.random.default_rng(3)
    lines = [HEADER]
    for p in range(personas):
        for q in range(1, 45):
            for r in range(1, reps + 1):
                rating = int(rng.integers(1, 6))
                lines.append(f"{p},{q},{r},{rating},0,{rating},t{r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_metrics_json_has_per_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bfi_file(tmp_path / "bfi.csv")
    code, out, err = run_cli(
        capsys, "metrics", path, "--instrument", "bfi44", "--format", "json", "--per-foundation"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    for key in ("name", "S", "S_se", "R", "R_se", "sigma_bar", "sigma_bar_se", "personas"):
        assert key in row
    assert (row["personas"], row["questions"]) == (3, 44)
    assert "per_foundation" not in row
    assert list(row["per_domain"]) == [
        "Extraversion",
        "Agreeableness",
        "Conscientiousness",
        "Neuroticism",
        "Openness",
    ]
    assert row["per_domain"]["Openness"]["items"] == [5, 10, 15, 20, 25, 30, 35, 40, 41, 44]
    assert row["slots"] == "396/396"
    # The table names the domains too.
    code, out, err = run_cli(capsys, "metrics", path, "--instrument", "bfi44", "--per-foundation")
    assert code == 0, err
    assert "Neuroticism" in out


def test_without_the_instrument_a_bfi_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bfi_file(tmp_path / "bfi.csv")
    code, _, err = run_cli(capsys, "metrics", path, "--format", "json")
    assert_user_error(code, err, str(path), "unknown item id 33", "mfq30")


@pytest.mark.parametrize("reader", [read_ratings_csv, read_rating_columns])
def test_rating_zero_in_a_bfi_file_names_file_and_line(tmp_path: Path, reader: object) -> None:
    from persona_collapse.core.instrument import bfi44

    path = tmp_path / "bfi.csv"
    path.write_text(f"{HEADER}\n0,1,1,4,0,4,t\n0,1,2,-1,1,??,t\n0,1,3,0,0,0,t\n", encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        reader(path, instrument=bfi44())  # type: ignore[operator]
    assert info.value.line == 4
    assert "rating 0 outside the scale 1..5" in str(info.value)
    assert str(path) in str(info.value)


def test_cli_rating_zero_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bfi_file(tmp_path / "bfi.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[10] = "1,4,1,0,0,0,t1"  # line 11 of the file
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "metrics", path, "--instrument", "bfi44", "--format", "json")
    assert_user_error(code, err, str(path), "line 11", "rating 0 outside the scale 1..5")
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    assert out == ""


def test_unknown_instrument_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bfi_file(tmp_path / "bfi.csv")
    code, _, err = run_cli(capsys, "metrics", path, "--instrument", "bfi")
    assert_user_error(code, err, "unknown instrument 'bfi'", "bfi44")


def test_profile_reflects_reverse_keyed_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Extraversion: item 1 (talkative) rated 5, item 6 (reserved, reverse-keyed) rated 1:
    # reflected, both say "very extraverted" and the domain mean is 5.
    path = tmp_path / "bfi_self.csv"
    rows = [SELF_HEADER]
    for rep in (1, 2):
        rows += [f"1,{rep},5,0,5,t", f"6,{rep},1,0,1,t", f"2,{rep},2,0,2,t", f"7,{rep},4,0,4,t"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "profile", path, "--instrument", "bfi44", "--format", "json")
    assert code == 0, err
    (profile,) = json.loads(out)
    assert profile["mean"]["Extraversion"] == 5.0
    # Agreeableness: item 2 (finds fault, reverse) 2 -> 4, item 7 (helpful) 4.
    assert profile["mean"]["Agreeableness"] == 4.0
    assert profile["group"] == "domain"
    assert profile["reverse_keyed_reflected"] is True
    assert 6 in profile["reverse_keyed_items"] and 1 not in profile["reverse_keyed_items"]
    code, out, err = run_cli(capsys, "profile", path, "--instrument", "bfi44")
    assert code == 0, err
    assert "reflected" in out


def test_mfq_output_keeps_its_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mfq_self.csv"
    path.write_text(f"{SELF_HEADER}\n1,1,4,0,4,t\n2,1,3,0,3,t\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "profile", path, "--format", "json")
    assert code == 0, err
    (profile,) = json.loads(out)
    assert profile["group"] == "foundation"
    assert profile["reverse_keyed_reflected"] is False
    assert profile["mean"]["Harm/Care"] == 4.0


def _variant(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for p in range(4):
        for q in range(1, 45):
            centre = int(rng.integers(1, 6))
            for r in range(1, 4):
                rating = int(np.clip(centre + rng.integers(-1, 2), 1, 5))
                lines.append(f"{p},{q},{r},{rating},0,{rating},t{r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_compare_and_plan_take_the_instrument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [_variant(tmp_path / f"{n}.csv", s) for n, s in (("base", 1), ("sec", 2), ("ins", 3))]
    code, out, err = run_cli(
        capsys,
        "compare",
        *files,
        "--base",
        "base",
        "--control",
        "sec",
        "--treatment",
        "ins",
        "--instrument",
        "bfi44",
        "--format",
        "json",
        "--persona-boot",
        "30",
        "--rerun-boot",
        "5",
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result["metrics"]) == {"base", "sec", "ins"}
    assert result["metrics"]["base"]["questions"] == 44
    code, out, err = run_cli(
        capsys, "plan", files[0], "--instrument", "bfi44", "--format", "json", "--personas", "4,8"
    )
    assert code == 0, err


def test_import_records_the_instrument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _variant(tmp_path / "base.csv", 1)
    store = tmp_path / "runs.db"
    code, _, err = run_cli(capsys, "import", path, "--store", store, "--instrument", "bfi44")
    assert code == 0, err
    # The store remembers the instrument: metrics need no --instrument.
    code, out, err = run_cli(
        capsys, "metrics", store, "--format", "json", "--per-foundation", "--persona-boot", "20"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["questions"] == 44
    assert "Openness" in row["per_domain"]


def test_run_on_the_simulator_with_bfi44(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    code, out, err = run_cli(
        capsys,
        "run",
        "--backend",
        "simulator",
        "--model",
        "base",
        "--store",
        store,
        "--instrument",
        "bfi44",
        "--max-personas",
        "3",
        "--repetitions",
        "2",
    )
    assert code == 0, err
    assert "Openness" in out
    assert "reverse-keyed items 2, 6, 8" in " ".join(out.split())
    code, out, err = run_cli(capsys, "profile", store, "--format", "json")
    assert code == 0, err
    (profile,) = json.loads(out)
    assert profile["instrument"] == "bfi44" and profile["reverse_keyed_reflected"] is True


def test_count_statistics_use_the_instruments_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a 1-5 instrument the scale's ends are 1 and 5 and k = 5 (not MFQ's 0..5)."""
    path = _bfi_file(tmp_path / "bfi.csv", personas=4, reps=4)
    code, out, err = run_cli(capsys, "metrics", path, "--instrument", "bfi44", "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    ratings = np.array([int(line.split(",")[3]) for line in path.read_text().splitlines()[1:]])
    assert row["endpoint_mass"] == pytest.approx(float(np.mean((ratings == 1) | (ratings == 5))))
    assert row["mean_gini_norm"] == pytest.approx(row["mean_gini"] / (1 - 1 / 5))
