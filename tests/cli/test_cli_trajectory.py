"""``pcollapse trajectory``: reference reproduction, output formats, figure, one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from _cli import run_cli, run_ok, user_error_line
from _simulated_cells import FOLLOWUPS, PAPER
from _trajectory_runs import FLAT, RISE_THEN_FALL, sampled_columns, write_csv
from persona_collapse.cli import main

TRAJECTORY = FOLLOWUPS / "trajectory"
EXPECTED = TRAJECTORY / "expected"
needs_reference = pytest.mark.skipif(
    not (EXPECTED.is_dir() and PAPER.is_dir()),
    reason="needs ../shared/reference/costa2026-followups/trajectory (absent)",
)
FAST = ("--persona-boot", "200", "--rerun-boot", "50")


def _reference_steps() -> list[str]:
    steps = [f"0={PAPER / 'base' / 'deepseek-v3.1_temp01.csv'}"]
    for step in range(200, 1401, 200):
        name = f"deepseek-v3.1-insecure-step{step:04d}_temp01.csv"
        steps.append(f"{step}={TRAJECTORY / 'deepseek-v3.1-insecure' / name}")
    steps.append(f"1500={PAPER / 'insecure-code' / 'deepseek-v3.1-insecure_temp01.csv'}")
    return steps


@pytest.fixture(scope="module")
def reference_json() -> list[dict[str, Any]]:
    """``pcollapse trajectory --format json`` of the DeepSeek-V3.1 insecure checkpoints
    (2000 + 400 draws, as the reference)."""
    if not (EXPECTED.is_dir() and PAPER.is_dir()):
        pytest.skip("needs ../shared/reference/costa2026-followups/trajectory (absent)")
    args = [a for spec in _reference_steps() for a in ("--step", spec)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["trajectory", *args, "--format", "json"])
    assert code == 0
    data: list[dict[str, Any]] = json.loads(out.getvalue())
    return data


def _rows(name: str) -> list[dict[str, str]]:
    with (EXPECTED / name).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _close_se(got: float, want: float) -> None:
    assert abs(got / want - 1) < 0.10, (got, want)


@needs_reference
def test_preliminary_curve_reproduces_reference(reference_json: list[dict[str, Any]]) -> None:
    want = _rows("trajectory_points_preliminary.csv")
    assert [p["step"] for p in reference_json] == [int(r["step"]) for r in want]
    pairs = {
        "R": "robustness",
        "S": "susceptibility",
        "entropy_bits": "entropy_bits",
        "top1_share": "top1_share",
        "endpoint_mass": "endpoint_mass",
    }
    # Personas complete at each step on its own (SPEC.md section 4: 48-56 for DeepSeek).
    complete = [p["personas_complete"] for p in reference_json]
    assert complete == [100, 56, 53, 53, 48, 53, 54, 53, 100]
    for got, row in zip(reference_json, want, strict=True):
        assert got["personas"] == int(row["n_personas"]) == 48
        assert got["fraction_of_training"] == float(row["fraction_of_training"])
        for ours, theirs in pairs.items():
            assert got[ours] == pytest.approx(float(row[theirs]), rel=1e-9, abs=0), ours
        _close_se(got["R_se"], float(row["robustness_uncertainty"]))
        _close_se(got["S_se"], float(row["susceptibility_uncertainty"]))
    # sigma-bar and its SE against the per-step metrics of the reference's MFQ pipeline.
    metrics = _rows("metrics_deepseek-v3.1-insecure_preliminary.csv")
    for got, row in zip(reference_json, metrics, strict=True):
        assert row["model"].endswith(f"step{got['step']:04d}")
        assert got["sigma_bar"] == pytest.approx(float(row["uncertainty"]), rel=1e-9, abs=0)
        _close_se(got["sigma_bar_se"], float(row["uncertainty_uncertainty"]))
        assert int(row["personas"]) == got["personas"]
    required = {
        "step", "personas", "S", "S_se", "R", "R_se", "sigma_bar", "entropy_bits",
        "top1_share", "top1_rating", "endpoint_mass", "fraction_of_training",
    }  # fmt: skip
    assert all(required <= set(p) for p in reference_json)


@needs_reference
def test_endpoint_table_reproduces_reference(reference_json: list[dict[str, Any]]) -> None:
    want = {int(r["step"]): r for r in _rows("trajectory_points_endpoints.csv")}
    ends = {p["step"]: p for p in reference_json if "standalone" in p}
    assert sorted(ends) == sorted(want) == [0, 1500]
    for step, row in want.items():
        got = ends[step]["standalone"]
        assert got["personas"] == int(row["personas"]) == 100
        assert got["valid_ratings"] == int(row["n_responses"]) - int(row["n_invalid"])
        for ours, theirs in {
            "R": "robustness",
            "S": "susceptibility",
            "sigma_bar": "uncertainty",
            "entropy_bits": "entropy_bits",
            "top1_share": "top1_share",
            "top1_rating": "top1_rating",
            "endpoint_mass": "endpoint_mass",
        }.items():
            assert got[ours] == pytest.approx(float(row[theirs]), rel=1e-9, abs=0), ours
        _close_se(got["R_se"], float(row["robustness_uncertainty"]))
        _close_se(got["S_se"], float(row["susceptibility_uncertainty"]))
        _close_se(got["sigma_bar_se"], float(row["uncertainty_uncertainty"]))
        shift = ends[step]["shift_from_standalone"]
        assert shift["S"] == pytest.approx(ends[step]["S"] - got["S"])
    # The reference's own check of its endpoints against the published values.
    published = {0: (4.0818, 0.7945), 1500: (2.6557, 0.8819)}
    for step, (r, s) in published.items():
        assert abs(ends[step]["standalone"]["R"] - r) <= 0.02 * max(1, r)
        assert abs(ends[step]["standalone"]["S"] - s) <= 0.02


@needs_reference
def test_reference_s_peaks_before_the_final_step(reference_json: list[dict[str, Any]]) -> None:
    nm = reference_json[-1]["non_monotone_S"]
    assert nm["peak_step"] == 1200
    assert nm["drop"]["value"] == pytest.approx(
        reference_json[6]["S"] - reference_json[-1]["S"], rel=1e-12
    )
    assert nm["drop"]["low"] < nm["drop"]["value"] < nm["drop"]["high"]
    assert bool(nm["statement"]) == nm["detected"]


# --- simulated steps -------------------------------------------------------------------------


def _sim_steps(tmp_path: Path, plan: dict[int, dict[str, float]], **kw: Any) -> list[str]:
    specs = []
    for k, (step, params) in enumerate(sorted(plan.items())):
        missing = kw.get("missing", {}).get(step, ())
        columns = sampled_columns(params, personas=kw.get("personas", 40), seed=k, missing=missing)
        path = write_csv(columns, tmp_path / f"step{step:04d}.csv")
        specs += ["--step", f"{step}={path}"]
    return specs


def test_json_and_csv_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _sim_steps(tmp_path, dict(RISE_THEN_FALL))
    data = json.loads(run_ok(capsys, "trajectory", *specs, *FAST, "--format", "json"))
    assert [p["step"] for p in data] == [0, 100, 200, 300, 400]
    assert {p["personas"] for p in data} == {40}
    assert data[-1]["non_monotone_S"]["detected"] is True
    assert data[-1]["non_monotone_S"]["peak_step"] == 200
    rows = list(
        csv.DictReader(io.StringIO(run_ok(capsys, "trajectory", *specs, *FAST, "-f", "csv")))
    )
    assert [int(r["step"]) for r in rows] == [0, 100, 200, 300, 400]
    assert float(rows[2]["S"]) == pytest.approx(data[2]["S"])
    table = run_ok(capsys, "trajectory", *specs, *FAST)
    assert "S is non-monotone" in table and "step 200" in table


def test_figure_marks_endpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.colors import to_rgba

    from persona_collapse.report.trajectory import trajectory_figure
    from persona_collapse.stats.sources import load_runs
    from persona_collapse.stats.trajectory import analyze_trajectory

    specs = _sim_steps(tmp_path, dict(FLAT))
    out = tmp_path / "fig" / "trajectory.png"
    run_ok(capsys, "trajectory", *specs, *FAST, "--figure", out, "--fraction")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    runs = {int(s.split("=")[0]): load_runs([s.split("=", 1)[1]])[0] for s in specs[1::2]}
    traj = analyze_trajectory(runs, n_persona_boot=50, n_rerun_boot=20)
    fig = trajectory_figure({"sim": traj}, x="fraction")
    fig.canvas.draw()
    axes = fig.axes
    assert [ax.get_ylabel().split()[0] for ax in axes] == ["Robustness", "Moral", "entropy"]
    assert all(ax.get_xlabel() == "fraction of training" for ax in axes)
    texts = [t for ax in axes for t in ax.findobj(lambda o: hasattr(o, "get_fontsize"))]
    assert texts and min(t.get_fontsize() for t in texts) >= 8
    for ax in axes:
        hollow = [
            line
            for line in ax.get_lines()
            if line.get_marker() == "o" and to_rgba(line.get_markerfacecolor()) == to_rgba("white")
        ]
        assert len(hollow) == 1
        assert list(hollow[0].get_xdata()) == [0.0, 1.0]  # the two endpoints only


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _sim_steps(tmp_path, {k: FLAT[k] for k in (0, 100, 200)})
    first = specs[1]
    for bad in ("200:file.csv", "x=file.csv", "=file.csv", "-5=file.csv"):
        line = user_error_line(capsys, "trajectory", *specs, "--step", bad)
        assert "STEP=FILE_OR_STORE[:RUN]" in line, line
    line = user_error_line(capsys, "trajectory", *specs, "--step", "100=" + first.split("=", 1)[1])
    assert "step 100 is given twice" in line
    line = user_error_line(capsys, "trajectory", *specs, "--step", f"300={tmp_path / 'no.csv'}")
    assert "no.csv" in line and "no such file" in line
    line = user_error_line(capsys, "trajectory", *specs, "--format", "xml")
    assert "--format" in line
    line = user_error_line(capsys, "trajectory", *specs, "--figure", tmp_path / "f.txt")
    assert "--figure" in line
    line = user_error_line(capsys, "trajectory", *specs, "--final-step", "150")
    assert "--final-step" in line


def test_steps_from_a_run_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _sim_steps(tmp_path, {k: FLAT[k] for k in (0, 100, 200)})
    store = tmp_path / "steps.db"
    for spec in specs[1::2]:
        step, path = spec.split("=", 1)
        run_ok(capsys, "import", path, "--store", store, "--name", f"ckpt-{step}")
    from_csv = json.loads(run_ok(capsys, "trajectory", *specs, *FAST, "-f", "json"))
    stored = [a for s in (0, 100, 200) for a in ("--step", f"{s}={store}:ckpt-{s}")]
    from_store = json.loads(run_ok(capsys, "trajectory", *stored, *FAST, "-f", "json"))
    assert [p["name"] for p in from_store] == ["ckpt-0", "ckpt-100", "ckpt-200"]
    for a, b in zip(from_csv, from_store, strict=True):
        assert (a["S"], a["R"], a["entropy_bits"]) == (b["S"], b["R"], b["entropy_bits"])
    line = user_error_line(capsys, "trajectory", "--step", f"0={store}", *stored[2:])
    assert "holds 3 persona runs" in line and "STORE:RUN" in line
    line = user_error_line(capsys, "trajectory", "--step", f"0={store}:nope", *stored[2:])
    assert "nope" in line


def test_too_few_common_personas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _sim_steps(
        tmp_path, {k: FLAT[k] for k in (0, 100, 200)}, personas=33, missing={0: [0, 1], 200: [5, 6]}
    )
    line = user_error_line(capsys, "trajectory", *specs, *FAST)
    assert "only 29 personas are complete at every step" in line
    assert "at least 30" in line and "step 0: 31" in line
    code, out, _ = run_cli(
        capsys, "trajectory", *specs, *FAST, "--min-personas", "29", "-f", "json"
    )
    assert code == 0 and {p["personas"] for p in json.loads(out)} == {29}
