"""The persona_collapse inspect tasks: the same protocol through ``inspect eval`` and
through the ``inspect`` backend gives the same answers, S and R (mockllm, no network)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("inspect_ai", reason="inspect_ai is not installed")

from _cli import run_cli
from _inspect_mock import StreamOutputs, logging_restored
from persona_collapse.backends import create_backend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import load_instrument, mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import run_collection
from persona_collapse.stats.sources import load_runs, run_metrics
from persona_collapse.store.sqlite import RunStore

REPO = Path(__file__).resolve().parents[1]
N_PERSONAS = 4
REPS = 3
N_ITEMS = 6


@pytest.fixture(autouse=True, scope="module")
def _inspect_logging() -> Iterator[None]:
    """inspect's eval reconfigures process-wide logging; later tests must not see it."""
    with logging_restored():
        yield


def write_instrument(path: Path, n_items: int = N_ITEMS) -> Path:
    """A reduced MFQ (its first items) as a YAML file, as a user would write one."""
    data = mfq30().to_dict()
    data["name"] = f"mfq-first-{n_items}"
    data["items"] = data["items"][:n_items]
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


def eval_log(instrument: Path, log_dir: Path, outputs: Any, **task_args: Any) -> Path:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import get_model

    from persona_collapse.inspect_tasks import mfq_personas

    model = get_model("mockllm/model", custom_outputs=outputs, memoize=False)
    args = {"instrument": str(instrument), "n_personas": N_PERSONAS, "repetitions": REPS}
    args.update(task_args)
    (log,) = inspect_eval(mfq_personas(**args), model=model, log_dir=str(log_dir), display="none")
    assert log.status == "success", log.error
    return Path(log.location)


def cells(frame: Any) -> dict[tuple[int, int], list[int]]:
    grouped = frame.groupby(["persona_id", "item_id"])["rating"]
    return {key: sorted(int(v) for v in values) for key, values in grouped}


def test_eval_and_backend_paths_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    instrument_file = write_instrument(tmp_path / "mfq6.yaml")
    store_path = tmp_path / "runs.db"

    # Path 1: our engine through the inspect backend.
    backend = create_backend(
        "inspect", model="mockllm/model", model_args={"custom_outputs": StreamOutputs()}
    )
    with RunStore.open(store_path) as store:
        summary = run_collection(
            store,
            None,
            backend,
            builtin_personas()[:N_PERSONAS],
            load_instrument(instrument_file),
            protocol=SamplingSettings(repetitions=REPS, temperature=0.1),
            progress=False,
        )
        assert summary.complete
    # Path 2: inspect eval of our task with the same scripted replies, imported back.
    log = eval_log(instrument_file, tmp_path / "logs", StreamOutputs())
    code, out, err = run_cli(capsys, "import", log, "--store", store_path, "--name", "via-eval")
    assert code == 0, err
    assert "via-eval" in out

    with RunStore.open(store_path, create=False) as store:
        engine_run, eval_run = store.list_runs()
        engine = store.ratings_frame(engine_run.run_id)
        evaled = store.ratings_frame(eval_run.run_id)
        engine_attempts = store.attempts_frame(engine_run.run_id)
        eval_attempts = store.attempts_frame(eval_run.run_id)
        assert store.personas(eval_run.run_id) == store.personas(engine_run.run_id)
    for key in ("instrument_hash", "persona_set_hash", "template_hash", "n_repetitions", "kind"):
        assert getattr(eval_run, key) == getattr(engine_run, key), key
    assert eval_run.temperature == engine_run.temperature
    assert eval_run.is_imported and eval_run.metadata["inspect"]["model"] == "mockllm/model"

    # Identical answers: each cell's ratings (the k-th reply to a prompt is the same
    # in both paths; which repetition receives it depends on scheduling), identical
    # attempts per cell, with retries exercised and ratings that vary.
    assert len(engine) == len(evaled) == N_PERSONAS * N_ITEMS * REPS
    assert cells(engine) == cells(evaled)
    per_cell = ["persona_id", "item_id"]
    assert (
        engine_attempts.groupby(per_cell).size().to_dict()
        == eval_attempts.groupby(per_cell).size().to_dict()
    )
    assert (eval_attempts["attempt"] > 1).any()
    assert engine["rating"].nunique() >= 4

    # S and R from both paths are identical.
    runs = {r.name: r for r in load_runs([store_path])}
    first = run_metrics(runs[engine_run.name]).estimates
    second = run_metrics(runs["via-eval"]).estimates
    for name in ("S", "R", "sigma_bar"):
        assert first[name].value == pytest.approx(second[name].value, rel=1e-12), name
    assert first["S"].value > 0


def test_self_task_and_parse_failures(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    from persona_collapse.inspect_tasks import mfq_self

    def never_a_rating(*_args: Any) -> Any:
        out = ModelOutput.from_content(model="mock", content="I cannot say.")
        out.usage = ModelUsage(input_tokens=3, output_tokens=3, total_tokens=6)
        return out

    model = get_model("mockllm/model", custom_outputs=never_a_rating, memoize=False)
    task = mfq_self(instrument=str(write_instrument(tmp_path / "i.yaml", 2)), repetitions=2)
    (log,) = inspect_eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none")
    sample = log.samples[0]
    score = sample.scores["rating"]
    assert score.value == -1 and score.metadata["parsed"] is False
    # Ten short attempts, then the long form, as the engine does.
    attempts = score.metadata["attempts"]
    assert [a["max_tokens"] for a in attempts] == [1] * 10 + [64]
    assert log.results.scores[0].metrics["parsed_share"].value == 0.0
    from persona_collapse.store.inspect_log import import_inspect_log

    with RunStore.open(tmp_path / "s.db") as store:
        done = import_inspect_log(store, Path(log.location))
        frame = store.ratings_frame(done.run.run_id)
        assert done.run.kind == "self"
        assert (frame["rating"] == -1).all() and (frame["failures"] == 11).all()
        assert store.usage(done.run.run_id)[1].prompt_tokens == 3 * 11 * 2 * 2


def test_task_names_resolve_through_the_entry_point(tmp_path: Path) -> None:
    """``inspect eval persona_collapse/mfq_self`` finds the task by the entry point that
    pyproject.toml declares (a stand-in distribution declares it where the package is
    not installed with it)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    target = declared["inspect_ai"]["persona_collapse"]
    assert importlib.util.find_spec(target) is not None
    site = tmp_path / "site"
    if not any(ep.name == "persona_collapse" for ep in entry_points(group="inspect_ai")):
        info = site / "persona_collapse_inspect_probe-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: probe\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[inspect_ai]\npersona_collapse = {target}\n")
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from _inspect_mock import StreamOutputs\n"
        "from inspect_ai import eval\n"
        "from inspect_ai.model import get_model\n"
        "model = get_model('mockllm/model', custom_outputs=StreamOutputs())\n"
        "(log,) = eval('persona_collapse/mfq_self', model=model, log_dir=sys.argv[2],\n"
        "    task_args={'instrument': sys.argv[3], 'repetitions': 1}, display='none')\n"
        "print(log.status, log.eval.task)\n"
    )
    env = dict(os.environ)
    if site.exists():
        # Only for the stand-in: an installed package is found through its own entry point
        # (inspect does not resolve the task when src/ shadows the editable install).
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), str(REPO / "src"), env.get("PYTHONPATH")) if p
        )
    instrument = write_instrument(tmp_path / "i.yaml", 2)
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "tests"), str(tmp_path / "logs"), str(instrument)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert done.stdout.split() == ["success", "persona_collapse/mfq_self"]
