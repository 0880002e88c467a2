"""Control tasks collected over HTTP from serve-sim answer as the in-process simulator.

Only the prompt text travels over HTTP (``Prompt.control`` does not): the simulator
recognises control prompts from their text (``core.controls.parse_control_prompt``,
``backends.sim_controls.ControlCatalog``), with the items files serve-sim was given.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from _cli import assert_user_error, run_cli
from persona_collapse.backends.base import Prompt
from persona_collapse.backends.sim_controls import ControlCatalog
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.controls import (
    ControlTask,
    arithmetic_items,
    capability_task,
    items_from_dict,
    items_json,
    lookup_task,
    parse_control_prompt,
    render_item,
)
from persona_collapse.core.errors import BackendError, InputFileError
from persona_collapse.core.types import Message
from persona_collapse.engine.controls import control_spec, run_control_collection
from persona_collapse.serve import SimServerSettings, SimService, serve_in_process
from persona_collapse.store.control_store import ControlStore

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SEED = 3
T = 0.7
# Broadly degraded answers, so that replies vary and some are wrong: a comparison of
# identical constant replies could not tell a recognised item from a lucky guess.
PARAMS = {"control_accuracy": 0.6, "control_instability": 0.8, "control_deviation": 0.4}


def _mmlu_items():  # type: ignore[no-untyped-def]
    rows = [
        {
            "item_id": 100 + i,
            "subject": f"s{i % 2}",
            "question": f"Which option is number {i}?\n\nThink about it.",
            "choices": [f"first {i}", f"second {i}", f"third {i}", f"fourth {i}"],
            "answer": "ABCD"[(3 * i) % 4],
        }
        for i in range(8)
    ]
    return items_from_dict({"items": rows}, task="mmlu")


def _collect(path: Path, task: ControlTask, backend, name: str):  # type: ignore[no-untyped-def]
    spec = control_spec(task, backend, name=name, temperature=T, repetitions=6, seed=11)
    with ControlStore.open(path) as store:
        summary = run_control_collection(store, task, backend, spec)
        assert summary.complete
        rows = store.answers(summary.run.run_id)
    return [(a.item_id, a.run_index, a.response, a.answer, a.correct) for a in rows]


def test_control_tasks_over_http_equal_the_in_process_simulator(tmp_path: Path) -> None:
    from persona_collapse.backends.openai_compat import OpenAIBackend

    mmlu, gsm8k = _mmlu_items(), arithmetic_items(6, seed=4)
    files = []
    for name, items in (("items_mmlu.json", mmlu), ("items_gsm8k.json", gsm8k)):
        (tmp_path / name).write_text(items_json(items))
        files.append(str(tmp_path / name))
    tasks = {
        "mmlu": capability_task(mmlu),
        "gsm8k": capability_task(gsm8k),
        "lookup": lookup_task(),
    }
    settings = SimServerSettings(
        preset="insecure", seed=SEED, sim_params=PARAMS, control_items=files
    )
    with serve_in_process(settings) as srv:
        for name, task in tasks.items():
            # One client per collection: a client stays bound to its event loop.
            remote = OpenAIBackend("simulator", base_url=srv.url, api_key_env=None, timeout=30)
            local = SimulatorBackend("insecure", seed=SEED, **PARAMS)
            here = _collect(tmp_path / "local.db", task, local, name)
            there = _collect(tmp_path / "http.db", task, remote, name)
            assert there == here, name
            assert len(here) == 6 * len(task.item_ids)
            assert len({r[3] for r in here}) > 1  # replies vary
            assert 0 < sum(r[4] for r in here) < len(here)  # some right, some wrong


def test_the_catalog_reads_back_the_control_tag_the_engine_sets() -> None:
    mmlu, gsm8k = _mmlu_items(), arithmetic_items(6, seed=4)
    catalog = ControlCatalog([mmlu, gsm8k])
    for task in (capability_task(mmlu), capability_task(gsm8k), lookup_task()):
        for item_id in task.item_ids:
            tag = (task.name, item_id, task.gold(item_id))
            assert catalog.identify(task.prompt(item_id)) == tag
    assert catalog.identify("How much do you agree? Reply 0-5.") is None
    # A capability item the simulator was not given: a clear error, not a wrong answer.
    with pytest.raises(BackendError, match="--control-items"):
        ControlCatalog([gsm8k]).identify(render_item(mmlu.items[0], "mmlu"))
    with pytest.raises(BackendError, match="--control-items"):
        prompt = Prompt((Message("user", render_item(gsm8k.items[0], "gsm8k")),))
        asyncio.run(SimulatorBackend("base").generate([prompt], n=1, temperature=T, max_tokens=50))
    parsed = parse_control_prompt(render_item(mmlu.items[2], "mmlu"))
    assert parsed is not None and parsed.question == mmlu.items[2].question
    assert parsed.choices == mmlu.items[2].choices


def test_serve_sim_rejects_a_bad_items_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "items_mmlu.json"
    bad.write_text(json.dumps({"items": [{"item_id": 1, "question": "q", "answer": "E"}]}))
    with pytest.raises(InputFileError, match=r"items_mmlu\.json"):
        SimService(SimServerSettings(control_items=[str(bad)]))
    # The command line: one error line naming the file, before anything binds.
    code, _, err = run_cli(capsys, "serve-sim", "--port", "0", "--control-items", bad)
    assert_user_error(code, err, "items_mmlu.json")
