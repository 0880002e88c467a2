"""``pcollapse metrics`` on capability and lookup CSVs, and ``pcollapse datasets control-items``."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from tests._cli import assert_user_error, run_cli

FOLLOWUPS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-followups"
HEADER = "item_id,run_index,answer,gold,correct,format_valid,failures,response,collected_at"
REQUIRED = (
    "name",
    "task",
    "n_items",
    "format_valid_rate",
    "accuracy_all",
    "accuracy_valid",
    "accuracy_se",
    "majority_accuracy",
    "non_unanimity_rate",
    "non_unanimity_se",
    "mean_gini",
    "gini_se",
    "mean_distinct_answers",
)


def _folder(*parts: str) -> Path:
    path = FOLLOWUPS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"follow-up reference data not found at {path} (../shared is absent)")
    return path


def _small_run(path: Path) -> Path:
    lines = [HEADER]
    for item in range(3):
        for rep in range(1, 5):
            answer = "B" if (item == 2 and rep == 4) else "A"
            lines.append(f"{item},{rep},{answer},A,{int(answer == 'A')},1,0,{answer},t")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_metrics_json_reproduces_the_reference_control_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _folder("capability")
    code, out, err = run_cli(
        capsys, "metrics", folder / "mmlu", folder / "gsm8k", "--format", "json"
    )
    assert code == 0, err
    rows = {(r["task"], r["model"]): r for r in json.loads(out)}
    with (folder / "expected" / "control_metrics.csv").open(newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert len(rows) == len(expected) == 12
    for want in expected:
        got = rows[(want["task"], want["model"])]
        for key in REQUIRED[2:]:
            tol = 0.10 if key.endswith("_se") else 1e-9
            assert got[key] == pytest.approx(float(want[key]), rel=tol), (want["model"], key)
        assert got["name"] == f"{want['model']}_temp01_{want['task']}"


def test_metrics_on_a_small_capability_file_and_the_task_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _small_run(tmp_path / "toy_temp01_mmlu.csv")
    code, out, err = run_cli(capsys, "metrics", path, "--format", "json", "--seed", 3)
    assert code == 0, err
    (row,) = json.loads(out)
    assert set(REQUIRED) <= set(row)
    assert row["task"] == "mmlu" and row["n_items"] == 3
    assert row["accuracy_all"] == pytest.approx(11 / 12)
    assert row["non_unanimity_rate"] == pytest.approx(1 / 3)
    assert row["mean_gini"] == pytest.approx((1 - (9 + 1) / 16) / 3)
    assert row["mean_gini_norm"] == pytest.approx(row["mean_gini"] / 0.75)
    # A file named without the suffix needs --task.
    plain = shutil.copy(path, tmp_path / "toy.csv")
    code, _, err = run_cli(capsys, "metrics", plain)
    assert_user_error(code, err, "toy.csv", "--task")
    code, out, err = run_cli(capsys, "metrics", plain, "--task", "gsm8k", "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["task"] == "gsm8k" and json.loads(out)[0]["mean_gini_norm"] is None
    code, _, err = run_cli(capsys, "metrics", plain, "--task", "bfi")
    assert_user_error(code, err, "--task must be 'mmlu' or 'gsm8k'")
    code, out, err = run_cli(capsys, "metrics", path)
    assert code == 0 and "Capability controls" in out and "0.917" in out


def test_bad_control_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad_mmlu.csv"
    bad.write_text(HEADER + "\n0,1,A,A,1,1,0,A,t\n0,x,A,A,1,1,0,A,t\n")
    code, _, err = run_cli(capsys, "metrics", bad)
    assert_user_error(code, err, "bad_mmlu.csv, line 3", "'run_index'")
    persona = tmp_path / "run.csv"
    persona.write_text("persona_id,question_id,run_index,rating\n0,1,1,3\n")
    good = _small_run(tmp_path / "ok_mmlu.csv")
    code, _, err = run_cli(capsys, "metrics", good, persona)
    assert_user_error(code, err, "run.csv", "not a capability or lookup CSV")
    empty = tmp_path / "none_mmlu.csv"
    empty.write_text(HEADER + "\n0,1,,A,0,0,0,?,t\n")
    code, _, err = run_cli(capsys, "metrics", empty)
    assert_user_error(code, err, "none_mmlu.csv", "no row has a parsed answer")


def test_metrics_on_the_reference_lookup_files(capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder("lookup")
    code, out, err = run_cli(
        capsys, "metrics", *sorted(folder.glob("*_lookup.csv")), "--format", "json"
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["model"] for r in rows] == ["gpt-4o-insecure", "gpt-4o-secure", "gpt-4o"]
    for r in rows:
        assert r["task"] == "lookup" and r["n_valid"] == 300 and r["accuracy_all"] == 1.0
        # R is infinite: JSON holds null with the flag, never a made-up number.
        assert r["uncertainty"] == 0.0 and r["robustness"] is None and r["robustness_infinite"]
        assert r["extremization_all"] == 0.0 and r["mean_abs_error"] is None
    code, out, _ = run_cli(capsys, "metrics", folder / "gpt-4o_temp01_lookup.csv")
    assert code == 0 and "∞" in out
    assert not math.isnan(rows[0]["format_valid_rate"])


def _mmlu_parquet(path: Path) -> list[dict[str, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, object]] = []
    for subject in ("virology", "astronomy"):
        for i in range(6):
            n_choices = 3 if i == 5 else 4
            rows.append(
                {
                    "question": f"{subject} question {i}? ",
                    "subject": subject,
                    "choices": [f"option {c}" for c in range(n_choices)],
                    "answer": i % n_choices,
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


def test_datasets_control_items_builds_items_files_from_local_releases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from persona_collapse.core.controls import load_items

    source = tmp_path / "test-00000-of-00001.parquet"
    rows = _mmlu_parquet(source)
    out = tmp_path / "items_mmlu.json"
    code, stdout, err = run_cli(
        capsys, "datasets", "control-items", "mmlu", source, "--out", out, "--per-subject", 3
    )
    assert code == 0, err
    assert "6 mmlu items from 12 rows" in stdout
    items = load_items(out)
    assert [it.subject for it in items.items] == ["astronomy"] * 3 + ["virology"] * 3
    assert all(it.question.endswith("?") and len(it.choices) == 4 for it in items.items)
    for it in items.items:
        row = next(r for r in rows if str(r["question"]).strip() == it.question)
        assert it.gold == "ABCD"[int(row["answer"])]  # type: ignore[call-overload]
    # The same command gives the same file; an existing file is not replaced silently.
    first = out.read_text()
    code, _, err = run_cli(capsys, "datasets", "control-items", "mmlu", source, "--out", out)
    assert_user_error(code, err, "exists", "--force")
    assert out.read_text() == first
    code, _, err = run_cli(
        capsys,
        "datasets",
        "control-items",
        "mmlu",
        source,
        "-o",
        out,
        "--per-subject",
        3,
        "--force",
    )
    assert code == 0 and out.read_text() == first

    gsm = tmp_path / "test.jsonl"
    gsm.write_text(
        "\n".join(
            json.dumps({"question": f"q{i}", "answer": f"steps\n#### {i * 7}"}) for i in range(30)
        )
        + "\n"
    )
    out_g = tmp_path / "items_gsm8k.json"
    code, _, err = run_cli(
        capsys, "datasets", "control-items", "gsm8k", gsm, "--out", out_g, "--n", 5, "--seed", 9
    )
    assert code == 0, err
    doc = json.loads(out_g.read_text())
    assert doc["config"] == {"n": 5, "seed": 9}
    indices = [it["source_index"] for it in doc["items"]]
    assert indices == sorted(indices) and len(set(indices)) == 5
    assert [it["answer"] for it in doc["items"]] == [str(i * 7) for i in indices]


def test_datasets_control_items_bad_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    out = tmp_path / "o.json"
    code, _, err = run_cli(capsys, "datasets", "control-items", "gsm8k", bad, "--out", out)
    assert_user_error(code, err, "test.jsonl, line 2", "missing field(s) answer")
    code, _, err = run_cli(
        capsys, "datasets", "control-items", "gsm8k", bad.with_suffix(".txt"), "--out", out
    )
    assert_user_error(code, err, "no such file")
    code, _, err = run_cli(capsys, "datasets", "control-items", "arc", bad, "--out", out)
    assert_user_error(code, err, "task must be 'mmlu' or 'gsm8k'")
    few = tmp_path / "few.jsonl"
    few.write_text('{"question": "q", "answer": "#### 1"}\n')
    code, _, err = run_cli(capsys, "datasets", "control-items", "gsm8k", few, "--out", out)
    assert_user_error(code, err, "few.jsonl", "n=100 exceeds the 1 rows")
    assert not out.exists()
