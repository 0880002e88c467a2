"""``pcollapse verify``: tables, JSON and files; bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from _cli import assert_user_error as _assert_user_error
from _cli import run_cli as _run

SIM_JUDGE = ("--judge-backend", "simulator", "--judge-model", "base")


def test_verify_json_and_output_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    args = ["verify", "--model", "base", "--model", "insecure", *SIM_JUDGE, "--n", "6"]
    code, out, err = _run(capsys, *args, "--output", out_dir, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    names = [r["name"] for r in data["results"]]
    assert names == ["base", "insecure"]
    base, insecure = (r["overall"] for r in data["results"])
    assert base["answers"] == insecure["answers"] == 48
    assert insecure["alignment"]["mean"] < base["alignment"]["mean"]
    assert insecure["misaligned"]["count"] > base["misaligned"]["count"]
    assert {p.name for p in out_dir.iterdir()} >= {"verify.db", "verify.json", "verify-answers.csv"}
    saved = json.loads((out_dir / "verify.json").read_text())
    assert [r["name"] for r in saved["results"]] == names
    answers = pd.read_csv(out_dir / "verify-answers.csv")
    assert len(answers) == 96 and set(answers["variant"]) == {"base", "insecure"}
    # a rerun resumes from the store: same numbers
    code, again, _ = _run(capsys, *args, "--output", out_dir, "--format", "json")
    assert code == 0 and json.loads(again)["results"] == data["results"]


def test_verify_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "verify",
        "--model",
        "insecure",
        *SIM_JUDGE,
        "--judge-mode",
        "sampling",
        "--n",
        "3",
        "--question",
        "wish",
        "--question",
        "husband",
        "--store",
        tmp_path / "v.db",
        "--alignment-threshold",
        "40",
    )
    assert code == 0, err
    for fragment in ("Emergent misalignment: insecure", "sampling", "alignment < 40", "judge"):
        assert fragment in out
    for row in ("wish", "husband", "all"):
        assert f"│ {row}" in out
    assert "ruler" not in out
    assert (tmp_path / "v.db").is_file()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--question", "wsh"], ["unknown question ids ['wsh']"]),
        (["--store", "a.db", "--output", "b"], ["--store or --output"]),
        (["--model", "base", "--model", "secure", "--name", "x"], ["--name needs a single"]),
        (["--option", "nonsense"], ["--option expects KEY=VALUE"]),
        (["--model", "insecur"], ["unknown simulator preset 'insecur'", "did you mean"]),
        (["--judge-backend", "simulatr"], ["unknown backend 'simulatr'"]),
        (["--judge-mode", "both"], ["judge_mode"]),
        (["--alignment-threshold", "300"], ["alignment_threshold"]),
        (["--format", "xml"], ["--format"]),
    ],
)
def test_verify_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    base = ["verify", *SIM_JUDGE, "--n", "1"]
    if "--store" not in args and "--output" not in args:
        base += ["--store", str(tmp_path / "v.db")]
    if "--judge-backend" in args:
        base = ["verify", "--n", "1", "--store", str(tmp_path / "v.db")]
    code, _, err = _run(capsys, *base, *args)
    _assert_user_error(code, err, *fragments)
    assert not (tmp_path / "v.db").exists()  # nothing half-written


def test_verify_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "verify.yaml"
    config.write_text(
        "model: insecure\njudge_backend: simulator\nn_samples: 2\nshare_of: scored\n"
        f"store: {tmp_path / 'cfg.db'}\n"
    )
    code, out, err = _run(capsys, "verify", "--config", config, "--n", "3", "--format", "json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["share_of"] == "scored" and result["n_samples"] == 3
    assert result["judge_model"] == "simulator"
    config.write_text("model: insecure\nn_sample: 2\n")
    code, _, err = _run(capsys, "verify", "--config", config)
    _assert_user_error(code, err, str(config), "n_sample", "unknown key")
