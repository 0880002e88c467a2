"""Studies with ``controls:``: collection, resume, status, dry run, outputs and verdicts."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _study_helpers import write_study

from persona_collapse.backends.sim_controls import BROAD_OVERRIDES
from persona_collapse.core.controls import arithmetic_items, items_from_dict, items_json
from persona_collapse.core.errors import ConfigError
from persona_collapse.store.control_store import ControlStore
from persona_collapse.study import load_study, run_study
from persona_collapse.study.controls import controls_path, estimate_study, study_status


def _items(folder: Path, n_mmlu: int = 40, n_gsm: int = 20) -> None:
    rng = random.Random(9)
    rows = [
        {
            "item_id": i,
            "subject": f"s{i % 4}",
            "question": f"Which option is right in question {i}?",
            "choices": ["w", "x", "y", "z"],
            "answer": "ABCD"[rng.randrange(4)],
        }
        for i in range(n_mmlu)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items_mmlu.json").write_text(
        items_json(items_from_dict({"items": rows}, task="mmlu"))
    )
    (folder / "items_gsm8k.json").write_text(items_json(arithmetic_items(n_gsm)))


def _study(folder: Path, insecure_options: dict[str, Any], controls: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    _items(folder)
    path = write_study(
        folder,
        personas=12,
        repetitions=10,
        overrides={
            "controls": controls
            or {"capability": {"mmlu": "items_mmlu.json", "gsm8k": "items_gsm8k.json"}},
            "protocol": {
                "personas": "personas.txt",
                "repetitions": 10,
                "temperature": 0.7,
                "seed": 3,
                "self_run": False,
                "toxic_control": False,
            },
        },
        families={
            "fam": {
                "base": {"backend": "sim", "model": "base"},
                "insecure": {"backend": "sim", "model": "insecure", "options": insecure_options},
            }
        },
    )
    return load_study(path)


def _verdict(outcome) -> Any:  # type: ignore[no-untyped-def]
    report = outcome.results.controls
    assert report is not None
    (verdict,) = report.verdicts
    return verdict


def test_selective_preset_reads_as_persona_specific(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path, {})
    before = study_status(study)
    names = [r.run.name for r in before]
    assert "fam/insecure/mmlu" in names and "fam/base/gsm8k" in names
    dry = {r.name: e for r, e in estimate_study(study)}
    assert dry["fam/base/mmlu"].missing == 400 and dry["fam/base/mmlu"].requests == 40
    outcome = run_study(study, progress=False, figures=False, preflight=False)
    verdict = _verdict(outcome)
    assert verdict.kind == "selective", verdict.text
    assert "persona instability rose more than non-persona instability" in verdict.text
    html = outcome.files.html.read_text()
    assert "Is it persona-specific?" in html and "rose more than" in html
    out = study.config.output_dir
    rows = pd.read_csv(out / "controls.csv")
    assert {"mmlu", "gsm8k"} <= set(rows["measure"])
    deltas = pd.read_csv(out / "controls_deltas.csv")
    assert {"p_holm", "lo", "hi"} <= set(deltas.columns)
    assert all(r.complete for r in study_status(study))
    # Every control run is exported in the reference layout and reads back via metrics.
    exported = out / "controls" / "fam__insecure_mmlu.csv"
    from persona_collapse.store.control_csv import read_capability_csv

    assert len(read_capability_csv(exported).item_id) == 400
    from _cli import run_ok

    (metrics,) = json.loads(run_ok(capsys, "metrics", exported, "--format", "json"))
    assert metrics["task"] == "mmlu" and metrics["n_items"] == 40
    # Resume: nothing is asked again, nothing duplicated.
    with ControlStore.open(controls_path(study.config), create=False) as cs:
        counts = {r.name: len(cs.answers(r.run_id)) for r in cs.list_runs()}
    run_study(study, progress=False, figures=False, preflight=False, force=True)
    with ControlStore.open(controls_path(study.config), create=False) as cs:
        assert {r.name: len(cs.answers(r.run_id)) for r in cs.list_runs()} == counts
    assert estimate_study(study)[-1][1].missing == 0


def test_broad_preset_reads_as_broad_degradation(tmp_path: Path) -> None:
    outcome = run_study(
        _study(tmp_path, dict(BROAD_OVERRIDES)), progress=False, figures=False, preflight=False
    )
    verdict = _verdict(outcome)
    assert verdict.kind == "broad", verdict.text
    assert verdict.text.startswith("fam/insecure: the model degraded broadly (accuracy fell")


def test_bfi_and_lookup_controls_run(tmp_path: Path) -> None:
    study = _study(tmp_path, {}, controls={"bfi44": True, "lookup": True, "repetitions": 3})
    outcome = run_study(study, progress=False, figures=False, preflight=False)
    report = outcome.results.controls
    assert report is not None
    measures = {(r.label, r.measure) for r in report.rows}
    assert ("insecure", "bfi44 persona") in measures and ("base", "lookup") in measures
    assert [v.kind for v in report.verdicts] == ["selective"]
    assert "vs lookup" in report.verdicts[0].text
    assert all(r.complete for r in study_status(study))


@pytest.mark.parametrize(
    ("controls", "key"),
    [
        ({"capability": {"mmlu": "missing.json"}}, "controls.capability.mmlu"),
        ({"capability": {"trivia": "items_mmlu.json"}}, "controls.capability.trivia"),
        ({"lookup": "yes"}, "controls.lookup"),
        ({"repetitions": 1}, "controls.repetitions"),
        ({"capability": {"gsm8k": "items_mmlu.json"}}, "controls.capability.gsm8k"),
    ],
)
def test_bad_controls_entries_name_the_key(tmp_path: Path, controls: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _study(tmp_path, {}, controls=controls)
    message = str(info.value)
    assert key in message and "\n" not in message


def test_cli_status_dry_run_and_bad_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _cli import run_ok, user_error_line

    study = _study(tmp_path, {}, controls={"capability": {"gsm8k": "items_gsm8k.json"}})
    path = Path(study.source)
    status = json.loads(run_ok(capsys, "study", "status", path, "--format", "json"))
    gsm = [r for r in status if r.get("kind") == "gsm8k"]
    assert {r["run"] for r in gsm} == {"fam/base/gsm8k", "fam/insecure/gsm8k"}
    assert all(r["planned"] == 200 and r["status"] == "missing" for r in gsm)
    dry = json.loads(run_ok(capsys, "study", "run", path, "--dry-run", "--format", "json"))
    assert {r["name"] for r in dry["runs"]} >= {"fam/base/gsm8k", "fam/insecure/gsm8k"}
    text = path.read_text().replace("items_gsm8k.json", "nope.json")
    path.write_text(text)
    line = user_error_line(capsys, "study", "status", path)
    assert "controls.capability.gsm8k" in line and "nope.json" in line
