"""The command line: happy paths and bad input (one-line error, exit status 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import assert_user_error as _assert_user_error
from _cli import run_cli as _run
from persona_collapse.store.sqlite import RunStore

HEADER = "persona_id,question_id,run_index,rating,failures,response,collected_at\n"


def _persona_csv(path: Path, *, personas: int = 4, reps: int = 3) -> Path:
    lines = [HEADER]
    for p in range(personas):
        for q in range(1, 31):
            for r in range(1, reps + 1):
                rating = (p + q + (r % 2)) % 6
                lines.append(f"{p},{q},{r},{rating},0,{rating},2026-01-01T00:00:00\n")
    path.write_text("".join(lines))
    return path


# --- happy paths ---------------------------------------------------------------------------


def test_metrics_json_on_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _persona_csv(tmp_path / "toy.csv")
    code, out, _ = _run(capsys, "metrics", path, "--format", "json", "--per-foundation")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 1
    row = rows[0]
    for key in ("name", "S", "S_se", "R", "R_se", "sigma_bar", "sigma_bar_se", "personas"):
        assert key in row
    assert row["name"] == "toy"
    assert row["personas"] == 4 and row["questions"] == 30
    assert set(row["per_foundation"]) == {
        "Harm/Care",
        "Fairness/Reciprocity",
        "In-group/Loyalty",
        "Authority/Respect",
        "Purity/Sanctity",
    }
    assert row["R"] == pytest.approx(1 / row["sigma_bar"])
    # the bias-corrected estimates ride along, labelled, with the paper's unchanged
    for key in ("S_corrected", "S_corrected_se", "S_corrected_ci_low", "R_corrected_ci_high"):
        assert key in row
    assert row["S_corrected_interval"] == "jackknife-t"
    assert row["S_corrected"] <= row["S"] and "rating noise" in row["estimates_explanation"]
    assert set(row["corrected_by_foundation"]) == set(row["per_foundation"])


def test_run_then_metrics_from_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.db"
    code, out, err = _run(
        capsys,
        "run",
        "--model",
        "insecure",
        "--max-personas",
        "6",
        "--repetitions",
        "3",
        "--store",
        store,
        "--no-progress",
        "--format",
        "json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["metrics"]["personas"] == 6
    assert result["collected"] == {"persona": 6 * 30 * 3, "self": 30 * 3}
    # metrics from the store agree with those printed by `run`
    code, out, _ = _run(capsys, "metrics", store, "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["insecure"]
    assert rows[0]["S"] == pytest.approx(result["metrics"]["S"], rel=1e-12)
    # issue 16: `run` also reports the bias-corrected estimates, as `metrics` does
    for key in ("S_corrected", "S_corrected_se", "R_corrected", "R_corrected_se"):
        assert result["corrected"][key] == pytest.approx(rows[0][key], rel=1e-12), key
    assert result["corrected"]["S_corrected"] < result["metrics"]["S"]
    assert set(result["corrected"]["corrected_by_foundation"]) == set(
        result["metrics"]["per_foundation"]
    )
    # running again resumes: nothing new to collect
    code, out, _ = _run(
        capsys, "run", "--model", "insecure", "--max-personas", "6", "--repetitions", "3",
        "--store", store, "--no-progress", "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["collected"] == {"persona": 0, "self": 0}
    code, out, _ = _run(capsys, "profile", store, "--format", "json")
    assert code == 0
    profile = json.loads(out)[0]
    assert profile["name"] == "insecure/self"
    assert min(profile["mean"].values()) > 4.0


def test_run_summary_table_shows_both_estimates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    args = ["--model", "insecure", "--max-personas", "4", "--repetitions", "3", "--no-self"]
    code, out, err = _run(capsys, "run", *args, "--store", store, "--no-progress")
    assert code == 0, err
    header = next(line for line in out.splitlines() if "S corr." in line)
    assert "R corr." in header
    assert "the paper's estimates" in out and "bias-corrected" in out and "jackknife" in out
    code, js, _ = _run(capsys, "metrics", store, "--format", "json")
    assert code == 0
    corrected = json.loads(js)[0]
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("insecure"))
    assert f"{corrected['S_corrected']:.3f}" in row, (row, corrected["S_corrected"])
    assert f"{corrected['R_corrected']:.2f} ± " in row  # R is shown to 2 digits


def test_compare_import_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _persona_csv(tmp_path / "base.csv", reps=3)
    other = tmp_path / "wide.csv"
    lines = [HEADER]
    for p in range(4):
        for q in range(1, 31):
            for r in range(1, 4):
                rating = (2 * p + q + r) % 6
                lines.append(f"{p},{q},{r},{rating},0,{rating},2026-01-01T00:00:00\n")
    other.write_text("".join(lines))
    code, out, err = _run(capsys, "compare", base, other, "--base", "base", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    s_base, s_other = data["metrics"]["base"]["S"], data["metrics"]["wide"]["S"]
    assert data["variants"]["wide"]["overall"]["S"] == pytest.approx((s_other - s_base) / s_base)

    store = tmp_path / "imported.db"
    code, out, err = _run(capsys, "import", base, "--store", store)
    assert code == 0, err
    code, out, _ = _run(capsys, "runs", store)
    assert code == 0 and "base" in out
    exported = tmp_path / "export.csv"
    code, _, err = _run(capsys, "export", store, "--run", "base", "--output", exported)
    assert code == 0, err
    code, out, _ = _run(capsys, "metrics", exported, "--format", "json")
    assert code == 0
    code, out2, _ = _run(capsys, "metrics", base, "--format", "json")
    assert code == 0
    assert json.loads(out)[0]["S"] == json.loads(out2)[0]["S"]


def test_console_script_exit_status(tmp_path: Path) -> None:
    """The installed entry point, as a real process: exit 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "persona_collapse.cli", "metrics", str(tmp_path / "none.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture
def bad_csv(tmp_path: Path) -> Path:
    return tmp_path / "bad.csv"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("", ("bad.csv", "empty")),
        (HEADER, ("bad.csv",)),
        ("persona_id,question_id,rating\n0,1,3\n", ("bad.csv", "run_index")),
        (HEADER + "0,1,1,four,0,x,t\n", ("bad.csv", "line 2", "rating")),
        (HEADER + "0,1,1,3,0,3,t\n0,1,2,7,0,7,t\n", ("bad.csv", "line 3", "rating")),
        (HEADER + "0,99,1,3,0,3,t\n", ("bad.csv", "line 2", "99")),
        (HEADER + "-4,1,1,3,0,3,t\n", ("bad.csv", "line 2", "persona_id")),
        (HEADER + '0,1,1,3,0,"multi\nline",t\n0,1,2,x,0,3,t\n', ("bad.csv", "line 4")),
    ],
    ids=[
        "empty-file",
        "header-only",
        "missing-column",
        "non-numeric-rating",
        "rating-out-of-range",
        "unknown-item",
        "negative-persona",
        "line-after-quoted-newline",
    ],
)
def test_metrics_bad_csv(
    bad_csv: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    fragments: tuple[str, ...],
) -> None:
    bad_csv.write_text(content)
    code, _, err = _run(capsys, "metrics", bad_csv)
    _assert_user_error(code, err, *fragments)


def test_metrics_binary_garbage(bad_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_csv.write_bytes(bytes(range(256)) * 8)
    code, _, err = _run(capsys, "metrics", bad_csv)
    _assert_user_error(code, err, "bad.csv")


def test_metrics_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "metrics", tmp_path / "nope.csv")
    _assert_user_error(code, err, "nope.csv")


def test_metrics_bad_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _persona_csv(tmp_path / "toy.csv")
    code, _, err = _run(capsys, "metrics", path, "--format", "xml")
    _assert_user_error(code, err, "--format", "xml")


def test_corrupt_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "broken.db"
    store.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    code, _, err = _run(capsys, "metrics", store)
    _assert_user_error(code, err, "broken.db")


def test_store_not_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "text.db"
    store.write_text("this is not a database\n" * 50)
    code, _, err = _run(capsys, "runs", store)
    _assert_user_error(code, err, "text.db")


def test_unknown_run_in_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.db"
    with RunStore.open(store) as st:
        st.import_csv(_persona_csv(tmp_path / "gpt-base.csv"), name="gpt-base")
    code, _, err = _run(capsys, "metrics", store, "--run", "gpt-bsae")
    _assert_user_error(code, err, "gpt-bsae", "did you mean", "gpt-base")


def test_unknown_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.db"
    code, _, err = _run(capsys, "run", "--backend", "simulater", "--store", store)
    _assert_user_error(code, err, "simulater", "did you mean", "simulator")
    assert not store.exists(), "a failed run must not leave a store behind"


def test_unknown_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.db"
    code, _, err = _run(capsys, "run", "--model", "insecur", "--store", store)
    _assert_user_error(code, err, "insecur", "insecure")
    assert not store.exists()


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ('["a nurse", "a judge", "a nurse"]', ("personas.json", "line 1", "duplicate")),
        ("", ("personas.json", "empty")),
        ('["a nurse", ""]', ("personas.json",)),
        ('{"not": "a list"}', ("personas.json",)),
    ],
    ids=["duplicate", "empty", "blank-entry", "not-a-list"],
)
def test_bad_persona_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragments: tuple[str, ...]
) -> None:
    personas = tmp_path / "personas.json"
    personas.write_text(content)
    store = tmp_path / "s.db"
    code, _, err = _run(capsys, "run", "--personas", personas, "--store", store)
    _assert_user_error(code, err, *fragments)
    assert not store.exists()


def test_unknown_persona_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "run", "--personas", "toxik", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "toxik", "toxic")


def test_invalid_instrument_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inst = tmp_path / "inst.yaml"
    inst.write_text(
        "name: tiny\nscale: {min: 0, max: 5}\nblocks:\n  agreement:\n"
        "    instruction: Agree?\n    anchors: {0: no, 1: a, 2: b, 3: c, 4: d}\n"
        "items:\n  - {id: 1, text: Be kind., foundation: Harm/Care, kind: agreement}\n"
    )
    code, _, err = _run(capsys, "run", "--instrument", inst, "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "inst.yaml", "anchors")


def test_unknown_instrument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "run", "--instrument", "mfq3", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "mfq3", "mfq30")


def test_config_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: base\nrepetitons: 10\n")
    code, _, err = _run(capsys, "run", "--config", cfg)
    _assert_user_error(code, err, "run.yaml", "repetitons", "unknown key")


def test_config_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: base\n  bad: [unclosed\n")
    code, _, err = _run(capsys, "run", "--config", cfg)
    _assert_user_error(code, err, "run.yaml", "line")


def test_config_bad_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "run", "--repetitions", "0", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "repetitions")
    code, _, err = _run(capsys, "run", "--mode", "greedy", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "mode")


def test_bad_backend_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "run", "--option", "novalue", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "KEY=VALUE")
    code, _, err = _run(capsys, "run", "--option", "widht=2", "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "widht")


def test_bad_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmpl = tmp_path / "tmpl.yaml"
    tmpl.write_text(
        "persona_system: 'You are {persona}.'\npersona_user: 'Rate this.'\n"
        "self_system: null\nself_user: '{item}'\n"
    )
    code, _, err = _run(capsys, "run", "--template", tmpl, "--store", tmp_path / "s.db")
    _assert_user_error(code, err, "tmpl.yaml", "persona_user")


def test_compare_unknown_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _persona_csv(tmp_path / "base.csv")
    code, _, err = _run(capsys, "compare", path, "--base", "bsae")
    _assert_user_error(code, err, "bsae", "did you mean", "base")


def test_import_bad_csv_leaves_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "0,1,1,3,0,3,t\n0,1,2,9,0,9,t\n")
    store = tmp_path / "s.db"
    code, _, err = _run(capsys, "import", bad, "--store", store)
    _assert_user_error(code, err, "bad.csv", "line 3")
    if store.exists():
        with RunStore.open(store, create=False) as st:
            assert st.list_runs() == []


def test_profile_without_self_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _persona_csv(tmp_path / "only-persona.csv")
    code, _, err = _run(capsys, "profile", tmp_path)
    _assert_user_error(code, err, "no self runs")


def test_export_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys, "export", tmp_path / "none.db", "--run", "x", "--output", tmp_path / "o.csv"
    )
    _assert_user_error(code, err, "none.db")
