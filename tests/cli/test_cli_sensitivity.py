"""``pcollapse sensitivity``: the robustness table as text, JSON and CSV; one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from _cli import assert_user_error, run_cli, run_ok
from persona_collapse.core.personas import builtin_personas


def write_study(folder: Path, sensitivity: object, *, personas: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "personas.txt").write_text("\n".join(builtin_personas().head(personas)) + "\n")
    data = {
        "name": "sens-cli",
        "output": "out",
        "protocol": {"personas": "personas.txt", "repetitions": 2, "self_run": False,
                     "toxic_control": False},
        "analysis": {"n_persona_boot": 100, "n_rerun_boot": 10, "seed": 2},
        "backends": {"sim": {"kind": "simulator"}},
        "families": {"fam": {
            "base": {"backend": "sim", "model": "base"},
            "insecure": {"backend": "sim", "model": "base",
                         "options": {"differentiation": 1.6, "width": 3.0,
                                     "template_shift": {"plain": -1.3}}},
        }},
    }  # fmt: skip
    if sensitivity is not None:
        data["sensitivity"] = sensitivity
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = write_study(tmp_path_factory.mktemp("sens-cli"), {"templates": ["plain"]})
    code, out, err = run_cli_module(
        "sensitivity", path, "--collect", "--no-progress", "--no-preflight", "-f", "json"
    )
    assert code == 0, err
    return path, json.loads(out)


def run_cli_module(*args: object) -> tuple[int, str, str]:
    """``run_cli`` for module fixtures (no capsys there)."""
    import contextlib

    from persona_collapse.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_json_says_the_effect_is_fragile(collected: tuple[Path, dict[str, object]]) -> None:
    _, record = collected
    assert record["robust"] is False
    assert "template=plain" in str(record["summary"])
    rows = record["rows"]
    assert isinstance(rows, list)
    plain = next(r for r in rows if r["level"] == "plain" and r["metric"] == "S")
    assert plain["status"] == "flips" and plain["estimate"] < 0
    assert {"ci_low", "ci_high", "p_holm", "significant", "n_personas"} <= set(plain)


def test_table_and_csv_from_the_store(
    collected: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = collected
    figure = tmp_path / "robust.svg"
    text = run_ok(capsys, "sensitivity", path, "--figure", figure)
    assert "template=plain" in text and "flips" in text
    assert "The finding is fragile" in text
    assert figure.read_text().lstrip().startswith("<?xml")
    rows = list(csv.DictReader(io.StringIO(run_ok(capsys, "sensitivity", path, "-f", "csv"))))
    assert {(r["factor"], r["level"]) for r in rows} == {("headline", "protocol"),
                                                          ("template", "plain")}  # fmt: skip
    status = json.loads(run_ok(capsys, "study", "status", path, "-f", "json"))
    suite = [r for r in status if r.get("kind") == "sensitivity"]
    assert len(suite) == 2 and all(r["complete"] for r in suite)


def test_user_errors_are_one_line(
    collected: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = collected
    code, _, err = run_cli(capsys, "sensitivity", path, "-f", "yaml")
    assert_user_error(code, err, "--format")
    code, _, err = run_cli(capsys, "sensitivity", path, "--figure", tmp_path / "f.txt")
    assert_user_error(code, err, "--figure")
    bad = write_study(tmp_path / "bad", {"templates": ["plian"]})
    code, _, err = run_cli(capsys, "sensitivity", bad)
    assert_user_error(code, err, "sensitivity.templates[0]", "did you mean 'plain'")
    too_many = write_study(tmp_path / "many", {"personas": {"source": "personas.txt", "size": 50}})
    code, _, err = run_cli(capsys, "sensitivity", too_many)
    assert_user_error(code, err, "50 personas", "only 12")
    none = write_study(tmp_path / "none", None)
    code, _, err = run_cli(capsys, "sensitivity", none)
    assert_user_error(code, err, "no 'sensitivity' section")
    fresh = write_study(tmp_path / "fresh", {"orders": 1})
    code, _, err = run_cli(capsys, "sensitivity", fresh)
    assert_user_error(code, err, "run store not found")


def test_dry_run_counts_the_suite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_study(tmp_path, {"templates": ["plain"], "temperatures": [0.5]})
    forecast = json.loads(run_ok(capsys, "study", "run", path, "--dry-run", "-f", "json"))
    names = [r["name"] for r in forecast["runs"]]
    suite = [n for n in names if "/sensitivity/" in n]
    assert len(names) == 6 and len(suite) == 4
    assert "fam/insecure/sensitivity/temperature-0.5" in suite
    per_run = 12 * 30 * 2  # personas x items x repetitions, one request per cell
    assert forecast["requests"] == 6 * per_run // 2
    assert not (tmp_path / "out" / "runs.db").exists()
