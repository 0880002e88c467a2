"""``pcollapse audit``, ``pcollapse plan`` and the difference tests of ``pcollapse compare``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _cli import assert_user_error as _assert_user_error
from _cli import run_cli as _run
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.stats.audit import sample_cells
from persona_collapse.store.reference_csv import write_ratings_csv

SCALE = np.arange(6.0)


def _simulated_csv(path: Path, preset: str, seed: int, personas: int = 40) -> Path:
    import pandas as pd

    sim = SimulatorBackend(preset)
    probs = sim.cell_distributions([f"cli persona {k}" for k in range(personas)], temperature=0.1)
    cells = sample_cells(probs, n_repetitions=5, scale=SCALE, rng=np.random.default_rng(seed))
    n_p, n_q, n = cells.values.shape
    frame = pd.DataFrame(
        {
            "persona_id": np.repeat(cells.persona_ids, n_q * n),
            "item_id": np.tile(np.repeat(cells.item_ids, n), n_p),
            "repetition": np.tile(np.arange(1, n + 1), n_p * n_q),
            "rating": cells.values.ravel().astype(int),
        }
    )
    write_ratings_csv(frame, path)
    return path


# --- audit ----------------------------------------------------------------------------------


def test_audit_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "audit",
        "--replications", "3",
        "--personas", "20",
        "--persona-boot", "30",
        "--rerun-boot", "10",
        "--pool", "200",
        "--preset", "base",
        "--preset", "insecure",
    )  # fmt: skip
    assert code == 0, err
    for fragment in ("coverage", "corrected", "insecure vs base", "base-rerun vs base", "seed 0"):
        assert fragment in out
    # every share with its Monte-Carlo SE, and the warning about too few replications
    assert "Monte-Carlo SE" in out and " ± " in out
    assert "warning: 3 replications" in out and "95 % from 90 %" in out
    # per-foundation coverage of the corrected S and R (issue 16)
    assert "Per foundation: 95 % coverage of the corrected estimators" in out
    assert "Purity/Sanctity" in out


def test_audit_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "audit", "--replications", "2", "--personas", "10", "--persona-boot", "20",
        "--rerun-boot", "10", "--pool", "50", "--preset", "base", "--format", "json", "--seed", "4",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["settings"]["seed"] == 4 and data["settings"]["presets"] == ["base"]
    assert {row["estimator"] for row in data["estimators"]} == {"reference", "corrected"}
    assert data["elapsed_s"] > 0
    assert "too few" in data["warning"]
    row = data["estimators"][0]
    assert row["coverage_mcse"] == pytest.approx(
        (row["coverage"] * (1 - row["coverage"]) / 2) ** 0.5
    )
    assert {"coverage_mcse", "rejection_mcse"} <= set(data["differences"][0])
    assert {row["scope"] for row in data["foundations"]} >= {"Harm/Care", "Purity/Sanctity"}


def test_audit_covers_count_statistics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from _registry import WIDE_CELL_RATE, register_for_test

    register_for_test(monkeypatch, WIDE_CELL_RATE)  # declared without exact features
    options = ("--replications", "2", "--personas", "10", "--persona-boot", "20",
               "--rerun-boot", "10", "--pool", "50", "--preset", "base")  # fmt: skip
    code, out, err = _run(capsys, "audit", *options, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["truth"]["base"]["non_unanimity_rate"] > 0
    assert "non_unanimity_rate" in {row["metric"] for row in data["estimators"]}
    null = [d for d in data["differences"] if d["metric"] == "non_unanimity_rate"]
    assert null and {"rejection_rate", "rejection_mcse"} <= set(null[0])
    assert data["no_truth"] == [WIDE_CELL_RATE.name]
    code, out, err = _run(capsys, "audit", *options)
    assert code == 0, err
    assert f"no truth available (null contrast only): {WIDE_CELL_RATE.label}" in out


def test_audit_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "audit", "--preset", "nope", "--replications", "2")
    _assert_user_error(code, err, "nope")
    code, _, err = _run(capsys, "audit", "--personas", "50", "--pool", "10")
    _assert_user_error(code, err, "--pool")


# --- plan -----------------------------------------------------------------------------------


def test_plan_from_preset_with_prices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "plan", "--preset", "base", "--metric", "R", "--change", "-0.2",
        "--input-price", "2.5", "--output-price", "10", "--prompt-tokens", "200",
    )  # fmt: skip
    assert code == 0, err
    assert "cheapest design reaching the target" in out
    assert "exact" in out and "$" in out
    assert "warning" not in out


def test_plan_warns_when_the_persona_set_is_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 10.15: a design needing more personas than the chosen set holds is flagged.
    small = tmp_path / "five.json"
    small.write_text(json.dumps([f"Persona number {i}, a careful person." for i in range(5)]))
    code, out, err = _run(
        capsys,
        "plan", "--preset", "base", "--metric", "R", "--change=-0.2",
        "--personas", "50,100,200", "--repetitions", "3,5", "--persona-set", str(small),
    )  # fmt: skip
    assert code == 0, err
    flat = " ".join(out.split())
    assert "personas but persona set" in flat and "holds 5; add personas" in flat


def test_plan_json_from_csv_pilot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pilot = _simulated_csv(tmp_path / "pilot.csv", "base", seed=1)
    prices = tmp_path / "prices.yaml"
    prices.write_text("default: {input: 1.0, output: 4.0}\n")
    code, out, err = _run(
        capsys,
        "plan", pilot, "--metric", "S", "--change=0.3", "--personas", "20,40,80",
        "--repetitions", "2,5", "--prices", prices, "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["metric"] == "S" and data["change"] == 0.3
    assert data["model"]["pilot_personas"] == 40
    assert len(data["points"]) == 3 * 2 + 3
    assert all(p["cost_usd"] is not None for p in data["points"])
    assert data["pilot"].startswith("pilot")


def test_plan_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "--metric", "Q")
    _assert_user_error(code, err, "--metric")
    code, _, err = _run(capsys, "plan", "--personas", "10,x")
    _assert_user_error(code, err, "--personas")
    code, _, err = _run(capsys, "plan", "--repetitions", "1,5")
    _assert_user_error(code, err, "--repetitions")
    code, _, err = _run(capsys, "plan", "--input-price", "1")
    _assert_user_error(code, err, "--output-price")
    code, _, err = _run(capsys, "plan", "--change=-1.5")
    _assert_user_error(code, err, "--change")
    pilot = _simulated_csv(tmp_path / "p.csv", "base", seed=2, personas=10)
    code, _, err = _run(capsys, "plan", pilot, "--preset", "base")
    _assert_user_error(code, err, "not both")
    code, _, err = _run(capsys, "plan", "--preset", "nope")
    _assert_user_error(code, err, "nope")


def test_plan_for_a_count_statistic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _run(
        capsys, "plan", "--preset", "base", "--metric", "non_unanimity_rate", "--change=-0.05",
        "--repetitions", "2,5,10", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["metric"] == "non_unanimity_rate"
    assert data["model"]["pilot_repetitions"] == 10  # as many as the largest design
    assert [fit["repetitions"] for fit in data["model"]["by_repetitions"]] == [2, 5]
    assert data["cheapest"]["sampling"] is not None
    code, out, err = _run(capsys, "plan", "--metric", "non_unanimty_rate")
    _assert_user_error(code, err, "did you mean 'non_unanimity_rate'")
    assert "--metric" in err

    from _registry import WIDE_CELL_RATE, register_for_test

    register_for_test(monkeypatch, WIDE_CELL_RATE)
    code, out, err = _run(
        capsys, "plan", "--metric", WIDE_CELL_RATE.name, "--change", "0.02",
        "--repetitions", "3,5", "--personas", "50,100",
    )  # fmt: skip
    assert code == 0, err
    assert f"Δ{WIDE_CELL_RATE.label} = +0.02" in out and "SE(log)" not in out
    assert "extrapolated" not in out  # the preset pilot has 10 ratings, the designs <= 5
    pilot = _simulated_csv(tmp_path / "pilot.csv", "base", seed=5)  # 5 ratings per cell
    code, out, err = _run(
        capsys, "plan", pilot, "--metric", "non_unanimity_rate", "--change=-0.05",
        "--repetitions", "3,5,10", "--personas", "50,100",
    )  # fmt: skip
    assert code == 0, err
    assert "designs with 10 are extrapolated" in out


# --- compare --------------------------------------------------------------------------------


@pytest.fixture()
def family(tmp_path: Path) -> list[Path]:
    return [
        _simulated_csv(tmp_path / "base.csv", "base", seed=1),
        _simulated_csv(tmp_path / "secure.csv", "secure", seed=2),
        _simulated_csv(tmp_path / "insecure.csv", "insecure", seed=3),
    ]


def test_compare_reports_difference_tests(
    family: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "compare", *family, "--base", "base", "--control", "secure",
        "--treatment", "insecure", "--persona-boot", "200", "--rerun-boot", "50",
        "--per-foundation",
    )  # fmt: skip
    assert code == 0, err
    assert "Difference tests" in out and "Holm" in out
    assert "insecure vs base" in out and "excess (insecure − secure)" in out
    assert "Harm/Care" in out and "significant" in out
    assert "verdict: corrected estimator" in out and "corrected" in out


def test_compare_json_tests(family: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "compare", *family, "--base", "base", "--control", "secure",
        "--treatment", "insecure", "--persona-boot", "200", "--rerun-boot", "50",
        "--estimator", "corrected", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    tests = data["tests"]
    assert tests["estimator"] == "corrected" and tests["paired"] is True
    insecure_s = tests["contrasts"]["insecure"]["tests"]["S"]["overall"]
    assert insecure_s["estimate"] > 0.3 and insecure_s["p_holm"] < 0.05
    assert "excess" in tests["contrasts"]
    # both estimators: the reference one rides along; verdicts follow the corrected one
    assert tests["other"]["estimator"] == "reference"
    assert tests["verdict_estimator"] == "corrected"
    both = tests["estimates_both"]["insecure"]["overall"]
    assert {"S", "S_corrected", "S_corrected_se", "S_corrected_ci_low"} <= set(both)
    assert set(data["corrected"]) == {"base", "secure", "insecure"}
    base_both = tests["estimates_both"]["base"]["overall"]
    assert data["corrected"]["base"]["S_corrected"] == pytest.approx(base_both["S_corrected"])


def test_compare_without_tests_and_bad_options(
    family: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "compare", *family[:2], "--base", "base", "--no-tests", "--format", "json",
        "--persona-boot", "20", "--rerun-boot", "5",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["tests"] is None
    code, _, err = _run(
        capsys, "compare", *family[:2], "--base", "base", "--estimator", "corrected",
        "--variance", "rerun",
    )  # fmt: skip
    _assert_user_error(code, err, "--variance rerun needs --estimator reference")
    code, _, err = _run(capsys, "compare", *family[:2], "--base", "base", "--variance", "x")
    _assert_user_error(code, err, "--variance")


# --- statistics added to the registry --------------------------------------------------------


def test_registered_statistics_reach_compare_plan_and_audit(
    family: list[Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from _registry import SPREAD_MINUS_NOISE, SPREAD_TO_NOISE, register_for_test

    register_for_test(monkeypatch)
    new = (SPREAD_TO_NOISE.name, SPREAD_MINUS_NOISE.name)
    options = ("--base", "base", "--control", "secure", "--treatment", "insecure",
               "--persona-boot", "60", "--rerun-boot", "10")  # fmt: skip
    code, out, err = _run(capsys, "compare", *family, *options, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    for name in new:
        assert name in data["metrics"]["base"]
        assert name in data["variants"]["insecure"]["overall"]
        assert name in data["tests"]["contrasts"]["insecure"]["tests"]
        assert name in data["tests"]["estimates"]["base"]["overall"]
    code, out, err = _run(capsys, "compare", *family, *options)
    assert code == 0, err
    for stat in (SPREAD_TO_NOISE, SPREAD_MINUS_NOISE):
        assert f"Δ{stat.label}" in out  # the comparison table
        assert out.count(stat.label) >= 3  # metrics table, comparison and difference tests

    code, out, err = _run(
        capsys, "plan", "--metric", SPREAD_MINUS_NOISE.name, "--change", "0.1", "--format", "json"
    )
    assert code == 0, err
    assert json.loads(out)["metric"] == SPREAD_MINUS_NOISE.name
    code, out, err = _run(capsys, "plan", "--metric", SPREAD_TO_NOISE.name)
    assert code == 0 and f"Δ{SPREAD_TO_NOISE.label}" in out

    code, out, err = _run(
        capsys,
        "audit", "--replications", "2", "--personas", "10", "--persona-boot", "20",
        "--rerun-boot", "10", "--pool", "50", "--preset", "base", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert set(new) <= {row["metric"] for row in json.loads(out)["estimators"]}


def test_a_registered_count_statistic_reaches_the_difference_tests_of_compare(
    family: list[Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from _registry import WIDE_CELL_RATE, register_for_test

    register_for_test(monkeypatch, WIDE_CELL_RATE)
    name = WIDE_CELL_RATE.name
    options = ("--base", "base", "--control", "secure", "--treatment", "insecure",
               "--persona-boot", "60", "--rerun-boot", "10")  # fmt: skip
    code, out, err = _run(capsys, "compare", *family, *options, "--format", "json")
    assert code == 0, err
    tests = json.loads(out)["tests"]
    for key in ("secure", "insecure", "excess"):
        t = tests["contrasts"][key]["tests"][name]["overall"]
        assert 0 <= t["p_value"] <= t["p_holm"] <= 1 and t["se"] > 0
    assert name in tests["estimates"]["base"]["overall"]
    code, out, err = _run(capsys, "compare", *family, *options)
    assert code == 0, err
    tests_table = out[out.index("Difference tests") :]
    assert WIDE_CELL_RATE.label in tests_table and "non-unan." in tests_table
