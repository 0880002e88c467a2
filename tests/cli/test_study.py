"""End to end through the CLI: `pcollapse demo`, `pcollapse reproduce`, `pcollapse study ...`.

The demo runs on a reduced persona set (the full demo's speed is a benchmark, not
a test); `reproduce` runs on the paper's real data and must give its headline.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from _cli import run_ok as _run
from persona_collapse.cli import main

VARIANTS = ("base", "secure", "insecure")
DEMO_FAMILIES = ("sim-a", "sim-b")
FIGURES = ("fig_s_bars", "fig_r_bars", "fig_deltas", "fig_foundations", "fig_profiles",
           "fig_ceiling", "fig_scale_usage", "fig_parse_failures")  # fmt: skip
POINT_RTOL = 1e-9


def check_latex(path: Path, *, data_rows: int, columns: int) -> None:
    """A LaTeX table that compiles: balanced braces and environments, ``data_rows`` rows."""
    text = path.read_text()
    body = re.sub(r"\\[{}%&$#_]", "", text)  # escaped specials are not delimiters
    body = "\n".join(line.split("%", 1)[0] for line in body.splitlines())  # comments
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, f"{path}: unbalanced closing brace"
    assert depth == 0, f"{path}: unbalanced braces"
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", body):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"{path}: \\end{{{env}}} does not match"
    assert not stack, f"{path}: unclosed environments {stack}"
    assert body.count("$") % 2 == 0, f"{path}: unbalanced math"
    inner = body.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [r for r in inner.split("\\\\") if r.strip() and r.strip() != "\\midrule"]
    rows = [r.replace("\\midrule", "").strip() for r in rows if r.replace("\\midrule", "").strip()]
    assert len(rows) == data_rows, (path, rows)
    for row in rows:
        assert row.count("&") == columns - 1, (path, row)


def check_both_estimates_in_latex(path: Path, metrics_csv: Path) -> None:
    """Issue 16: the LaTeX metrics table shows the paper's S, R and the bias-corrected
    S_c, R_c (with their changes), labelled in the header and the caption, and each row's
    S_c is the corrected S of metrics.csv."""
    text = path.read_text()
    header = next(line for line in text.splitlines() if line.startswith("Family &"))
    for label in ("$S$", "$\\Delta S$", "$R$", "$S_c$", "$\\Delta S_c$", "$R_c$", "$\\Delta R_c$"):
        assert label in header, label
    assert "the paper's estimates" in text and "bias-corrected ones" in text
    assert "jackknife SE" in text and "rating noise" in text  # which is which, and why
    overall = pd.read_csv(metrics_csv)
    overall = overall[overall["scope"] == "overall"]
    rows = [line for line in text.splitlines() if line.endswith("\\\\") and "&" in line][1:]
    assert len(rows) == len(overall)
    for line, (_, got) in zip(rows, overall.iterrows(), strict=True):
        cells = [c.strip() for c in line.removesuffix("\\\\").split("&")]
        assert cells[1] == got["variant"].replace("_", "\\_")
        s_c = float(cells[-4].strip("$").split("\\pm")[0])
        assert s_c == pytest.approx(got["S_corrected"], abs=0.0051), line
        assert s_c != pytest.approx(float(cells[2].strip("$").split("\\pm")[0]), abs=1e-9)


# --- demo -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo on 6 personas x 3 repetitions, run once; its folder and what it printed.

    What these tests check (every output written, tables, figures, manifest, resume)
    does not depend on the number of personas; 6 keeps the bootstrap draws cheap.
    """
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--output", str(out), "--max-personas", "6", "--repetitions", "3",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    return out, printed.getvalue()


def test_demo_writes_every_output(
    demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = demo_dir
    for name in ("study.yaml", "runs.db", "report.html", "metrics.csv", "metrics.json",
                 "comparison.csv", "profiles.csv", "diagnostics.csv", "counts.csv",
                 "parse_failures_by_persona.csv", "tables/table_metrics.tex",
                 "tables/table_self_profiles.tex", "tables/table_toxic_profiles.tex",
                 "tables/tables.tex", "controls.csv", "controls_deltas.csv",
                 "items_gsm8k.json"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for key in FIGURES:
        assert (out / "figures" / f"{key}.pdf").read_bytes()[:5] == b"%PDF-"
        assert (out / "figures" / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "figures" / "fig_temperature.pdf").exists()  # sampling: no T curves

    comparison = pd.read_csv(out / "comparison.csv")
    for family in DEMO_FAMILIES:
        rows = comparison[(comparison["family"] == family) & (comparison["scope"] == "overall")]
        assert set(rows["comparison"]) == {"secure", "insecure", "excess"}
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["profile"]) == {"self", "toxic"}
    assert len(profiles[profiles["profile"] == "toxic"]) == 2 * 5  # base of 2 families x 5
    check_latex(out / "tables" / "table_metrics.tex", data_rows=6, columns=10)
    check_latex(out / "tables" / "table_self_profiles.tex", data_rows=6, columns=7)
    check_latex(out / "tables" / "table_toxic_profiles.tex", data_rows=2, columns=7)
    # Persona-specificity controls: a BFI-44 run and the arithmetic capability task.
    controls = pd.read_csv(out / "controls.csv")
    assert {"mfq30 persona", "bfi44 persona", "gsm8k"} <= set(controls["measure"])
    assert "Is it persona-specific?" in (out / "report.html").read_text()


def test_demo_latex_table_carries_both_estimates(demo_dir: tuple[Path, str]) -> None:
    out, _ = demo_dir
    check_both_estimates_in_latex(out / "tables" / "table_metrics.tex", out / "metrics.csv")


def test_demo_prints_headline_and_report_path(demo_dir: tuple[Path, str]) -> None:
    out, printed = demo_dir
    assert "Headline: demo" in printed
    for family in DEMO_FAMILIES:
        assert family in printed
    assert f"report: {(out / 'report.html').resolve()}" in " ".join(printed.split())
    # Issue 16.2: which estimator each headline column shows, said on the table.
    flat = " ".join(printed.split())
    assert "S base (corr.)" in flat and "S treatment (corr.)" in flat
    said = "bias-corrected estimates (± jackknife SE); ΔS, ΔR, Δσ̄ and excess ΔR: the paper's"
    assert said in flat


def test_demo_records_its_files_in_a_manifest(demo_dir: tuple[Path, str]) -> None:
    out, _ = demo_dir
    entries = set(json.loads((out / ".pcollapse-manifest.json").read_text())["entries"])
    assert {"study.yaml", "report.html", "metrics.csv", "figures", "tables"} <= entries


def test_demo_never_replaces_a_users_study_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pcollapse demo --output DIR`` replaced a study.yaml it did not write."""
    (tmp_path / "study.yaml").write_text("name: my-own-study\n")
    code = main(["demo", "--output", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "did not write (study.yaml)" in err and "Traceback" not in err
    assert (tmp_path / "study.yaml").read_text() == "name: my-own-study\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
    # --force writes beside other files, never over them.
    code = main(["demo", "--output", str(tmp_path), "--no-progress", "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "study.yaml: exists and was not written by pcollapse" in err
    assert (tmp_path / "study.yaml").read_text() == "name: my-own-study\n"


@pytest.mark.parametrize("command", ["demo", "reproduce"])
def test_output_that_is_a_file_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing file as --output gave a FileExistsError traceback."""
    target = tmp_path / "taken"
    target.write_text("keep me")
    args = ["demo", "--no-progress"] if command == "demo" else ["reproduce", str(tmp_path)]
    code = main([*args, "--output", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and f"{target}: is a file" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep me"


def test_metrics_csv_equals_pcollapse_metrics(
    demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = demo_dir
    listed = json.loads(
        _run(capsys, "metrics", out / "runs.db", "--format", "json", "--per-foundation")
    )
    by_run = {row["name"]: row for row in listed}
    table = pd.read_csv(out / "metrics.csv")
    assert len(table[table["scope"] == "overall"]) == 6
    keys = ("S", "S_se", "R", "R_se", "sigma_bar", "sigma_bar_se")
    for row in table.itertuples(index=False):
        cli = by_run[row.run]
        expected = cli if row.scope == "overall" else cli["per_foundation"][row.scope]
        for key in keys:
            assert getattr(row, key) == pytest.approx(expected[key], rel=1e-12), (row.run, key)
        if row.scope == "overall":
            assert row.personas == cli["personas"]
    data = json.loads((out / "metrics.json").read_text())
    base = data["families"]["sim-a"]["variants"]["base"]["metrics"]
    assert base["S"] == pytest.approx(by_run["sim-a/base"]["S"], rel=1e-12)


def test_study_status_and_report_need_no_model(
    demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = demo_dir
    status = json.loads(_run(capsys, "study", "status", out / "study.yaml", "--format", "json"))
    # Persona and self runs, toxic controls, then a BFI-44 and a gsm8k control per variant.
    assert len(status) == 2 * (3 * 2 + 1) + 2 * 3 * 2
    assert all(row["complete"] for row in status)
    requests = sum(row["stored"] for row in status)
    (out / "report.html").unlink()
    printed = _run(capsys, "study", "report", out / "study.yaml", "--no-figures")
    assert (out / "report.html").is_file()
    assert "model requests" not in printed
    rerun = _run(capsys, "study", "run", out / "study.yaml", "--no-progress", "--no-figures")
    assert "model requests this session: 0" in rerun
    again = json.loads(_run(capsys, "study", "status", out / "study.yaml", "--format", "json"))
    assert sum(row["stored"] for row in again) == requests


# --- reproduce ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reproduced(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference data reproduced once. The tests compare point estimates, which do not
    depend on the bootstrap draws (they only set the standard errors): few draws, no figures
    (figures are checked on the demo)."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    args = ["--persona-boot", "100", "--rerun-boot", "20", "--no-figures"]
    assert main(["reproduce", str(reference_dir), "--output", str(out), *args]) == 0
    return out


def test_reproduce_gives_the_paper_headline(
    reproduced: Path, reference_expected: dict[str, Any]
) -> None:
    headline = reference_expected["headline"]
    comparison = pd.read_csv(reproduced / "comparison.csv")
    mean = comparison[
        comparison["family"].str.startswith("mean (4")
        & (comparison["comparison"] == "treatment")
        & (comparison["scope"] == "overall")
    ]
    assert len(mean) == 1
    row = mean.iloc[0]
    assert row["dS_pct"] / 100 == pytest.approx(headline["mean_delta_S_insecure"], rel=POINT_RTOL)
    assert row["dR_pct"] / 100 == pytest.approx(headline["mean_delta_R_insecure"], rel=POINT_RTOL)
    assert row["dsigma_bar_pct"] / 100 == pytest.approx(
        headline["mean_delta_sigma_bar_insecure"], rel=POINT_RTOL
    )
    # The paper's rounding: +55 % S, -65 % R, +304 % sigma_bar.
    assert (round(row["dS_pct"]), round(row["dR_pct"]), round(row["dsigma_bar_pct"])) == (
        55, -65, 304,
    )  # fmt: skip
    html = (reproduced / "report.html").read_text()
    assert "ΔS = +55.1 %, ΔR = −64.5 %, Δσ̄ = +303.7 %" in html


def test_reproduce_report_shows_no_absolute_path(reproduced: Path, reference_dir: Path) -> None:
    # Issue 10.4: nothing of the machine it ran on (the data folder is named, not located).
    html = (reproduced / "report.html").read_text()
    assert str(reference_dir.resolve()) not in html
    assert str(reproduced.resolve()) not in html
    assert reference_dir.resolve().name in html


def test_reproduce_matches_every_run(reproduced: Path, reference_expected: dict[str, Any]) -> None:
    metrics = pd.read_csv(reproduced / "metrics.csv")
    overall = metrics[metrics["scope"] == "overall"].set_index(["family", "variant"])
    families = reference_expected["families"]
    assert len(overall) == sum(len(v) for v in families.values())
    for family, variants in families.items():
        for variant, expected in variants.items():
            got = overall.loc[(family, variant)]
            for key in ("S", "R", "sigma_bar"):
                assert got[key] == pytest.approx(expected[key], rel=POINT_RTOL), (family, variant)
            assert got["personas"] == expected["personas"]
            assert got["in_band"] == (0.66 <= expected["S"] <= 0.83)
    profiles = pd.read_csv(reproduced / "profiles.csv")
    selfp = profiles[profiles["profile"] == "self"].set_index(["family", "variant", "foundation"])
    for family, variants in families.items():
        for variant, expected in variants.items():
            for foundation, value in expected["self_profile_paper"].items():
                got = selfp.loc[(family, variant, foundation), "mean"]
                assert got == pytest.approx(value, abs=0.005 + 1e-9), (family, variant, foundation)
    check_latex(reproduced / "tables" / "table_metrics.tex", data_rows=12, columns=10)
    check_latex(reproduced / "tables" / "table_self_profiles.tex", data_rows=12, columns=7)
    study = (reproduced / "study.yaml").read_text()
    assert "toxic_control: false" in study


def test_reproduce_reports_both_estimates(
    reproduced: Path, reference_expected: dict[str, Any]
) -> None:
    # Issue 16: the paper's estimates (still matching expected.json) beside the
    # bias-corrected ones for all 12 runs, in metrics.csv, metrics.json, significance.csv
    # and report.html; the verdicts follow the corrected ones.
    metrics = pd.read_csv(reproduced / "metrics.csv")
    overall = metrics[metrics["scope"] == "overall"].set_index(["family", "variant"])
    data = json.loads((reproduced / "metrics.json").read_text())
    assert "rating noise" in data["estimates_explanation"]
    runs = 0
    for family, variants in reference_expected["families"].items():
        for variant, expected in variants.items():
            got = overall.loc[(family, variant)]
            for key in ("S", "R", "sigma_bar"):
                assert got[key] == pytest.approx(expected[key], rel=POINT_RTOL), (family, variant)
                for suffix in ("", "_se", "_ci_low", "_ci_high"):
                    assert got[f"{key}_corrected{suffix}"] > 0, (family, variant, key, suffix)
            assert got["S_corrected"] < got["S"] and got["R_corrected"] < got["R"]
            s_corrected = got["S_corrected"]
            assert got["in_band_corrected"] == (0.66 <= s_corrected <= 0.83)
            entry = data["families"][family]["variants"][variant]
            assert entry["corrected"]["S_corrected"] == pytest.approx(s_corrected, rel=1e-12)
            assert set(entry["corrected"]["corrected_by_foundation"]) == set(
                entry["metrics"]["per_foundation"]
            )
            runs += 1
    assert runs == 12
    per_foundation = metrics[metrics["scope"] != "overall"]
    assert per_foundation["S_corrected"].notna().all()
    tests = pd.read_csv(reproduced / "significance.csv")
    # S, R and σ̄ have a bias-corrected estimator, which the verdicts follow; the count
    # statistics have one estimator only (the paper's definition).
    corrected = tests["metric"].isin(["S", "R", "sigma_bar"])
    assert corrected.any() and (~corrected).any()
    assert (tests.loc[corrected, "verdict_estimator"] == "corrected").all()
    assert (tests.loc[~corrected, "verdict_estimator"] == "reference").all()
    assert tests.loc[corrected, "estimate_corrected"].notna().all()
    html = (reproduced / "report.html").read_text()
    assert "S (corrected)" in html and "R (corrected)" in html
    assert "subtracting the noise variance of the cell means" in html  # why they differ
    assert "bias-corrected (paper&#x27;s estimate" in html  # headline: both, labelled


def test_reproduce_latex_table_carries_both_estimates(reproduced: Path) -> None:
    check_both_estimates_in_latex(
        reproduced / "tables" / "table_metrics.tex", reproduced / "metrics.csv"
    )


def test_reproduce_rejects_a_folder_without_base_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secure-code").mkdir()
    code = main(["reproduce", str(tmp_path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no base persona files" in err and "Traceback" not in err
    assert main(["reproduce", str(tmp_path / "missing")]) == 2
