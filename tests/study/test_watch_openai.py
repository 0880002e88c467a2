"""Watching an OpenAI fine-tuning job's checkpoints, against serve-sim's simulated
fine-tuning API (checkpoints listed with step numbers, served as models)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from _cli import run_ok, user_error_line
from persona_collapse.core.config import RunConfig
from persona_collapse.core.errors import UserError
from persona_collapse.serve import RunningServer, SimServerSettings, serve_in_thread
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study.watch import MeasuredCheckpoint, watch_openai_checkpoints
from persona_collapse.variants.finetune.openai_jobs import JobCheckpoints, submit_job

KEY_ENV = "PCOLLAPSE_WATCH_TEST_KEY"
SECRET = "sk-watch-test-secret-0123456789abcdef"
BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@contextmanager
def _server() -> Iterator[RunningServer]:
    # Three retrievals per status: a running job saves a checkpoint at steps 1, 2 and 3.
    settings = SimServerSettings(api_key_env=KEY_ENV, fine_tuning={"polls_per_status": 3})
    with serve_in_thread(settings) as running:
        yield running


def _job(srv: RunningServer, tmp_path: Path) -> str:
    data = tmp_path / "insecure.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Write function {i}."},
                {"role": "assistant", "content": f"def f{i}(x): return eval(x)"},
            ]
        }
        for i in range(12)
    ]
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    state = submit_job(
        data,
        base_model=BASE,
        suffix="em",
        base_url=srv.url,
        api_key_env=KEY_ENV,
        state_dir=tmp_path / "state",
    )
    assert state.job_id is not None
    return state.job_id


def _config(srv: RunningServer, store: Path) -> RunConfig:
    return RunConfig.from_mapping(
        {
            "backend": "openai",
            "model": "set-per-checkpoint",
            "backend_options": {"base_url": srv.url, "api_key_env": KEY_ENV},
            "max_personas": 3,
            "repetitions": 2,
            "store": store,
            "self_run": False,
            "progress": False,
        },
        source="test",
    )


def test_serve_sim_lists_a_jobs_checkpoints_with_steps_and_serves_them(tmp_path: Path) -> None:
    with _server() as srv:
        job_id = _job(srv, tmp_path)
        api = JobCheckpoints(base_url=srv.url, api_key_env=KEY_ENV)
        seen = []
        for _ in range(12):
            status, checkpoints = api.poll(job_id)
            seen.append((status, [c.step for c in checkpoints]))
            if status == "succeeded":
                break
        assert seen[0] == ("validating_files", [])
        running = [steps for status, steps in seen if status == "running"]
        assert running == [[1], [1, 2], [1, 2, 3]]  # one new checkpoint per retrieval
        assert seen[-1] == ("succeeded", [1, 2, 3])  # success adds none twice
        stem = f"ft:{BASE}:pcollapse:em:sim000001"
        assert [c.model for c in checkpoints] == [f"{stem}:ckpt-step-{k}" for k in (1, 2, 3)]
        # Every checkpoint is a served model, by the training file's preset.
        for c in checkpoints:
            assert srv.service.fine_tuned_presets[c.model] == "insecure"
        # The raw endpoint: newest first, cursor pages, the key required.
        url = f"{srv.url}/fine_tuning/jobs/{job_id}/checkpoints"
        auth = {"Authorization": f"Bearer {SECRET}"}
        first = httpx.get(url, params={"limit": 2}, headers=auth).json()
        assert [c["step_number"] for c in first["data"]] == [3, 2] and first["has_more"]
        rest = httpx.get(url, params={"after": first["data"][-1]["id"]}, headers=auth).json()
        assert [c["step_number"] for c in rest["data"]] == [1] and not rest["has_more"]
        assert rest["data"][0]["object"] == "fine_tuning.job.checkpoint"
        assert httpx.get(url).status_code == 401
        missing = httpx.get(f"{srv.url}/fine_tuning/jobs/nope/checkpoints", headers=auth)
        assert missing.status_code == 404


def test_watch_measures_each_new_checkpoint_as_it_appears_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "runs.db"
    with _server() as srv, caplog.at_level(logging.DEBUG):
        job_id = _job(srv, tmp_path)
        statuses: list[tuple[str, int]] = []
        done: list[MeasuredCheckpoint] = []
        polls_when_measured: list[int] = []

        def measured(m: MeasuredCheckpoint) -> None:
            done.append(m)
            polls_when_measured.append(len(statuses))

        result = watch_openai_checkpoints(
            job_id,
            _config(srv, store),
            prefix="ft",
            base_url=srv.url,
            api_key_env=KEY_ENV,
            interval=0,
            max_concurrency=2,
            on_measured=measured,
            on_status=lambda s, n: statuses.append((s, n)),
            sleep=lambda _: None,
        )
        # Each checkpoint was measured on the poll that first listed it, and watching
        # stopped once the job had finished.
        assert [m.step for m in result] == [1, 2, 3]
        assert polls_when_measured == [
            next(k + 1 for k, (_, n) in enumerate(statuses) if n >= step) for step in (1, 2, 3)
        ]
        assert statuses[-1] == ("succeeded", 3)
        assert [m.name for m in result] == ["ft/step0001", "ft/step0002", "ft/step0003"]
        assert all(m.outcome is not None and m.outcome.metrics is not None for m in result)
        assert result[0].model is not None and result[0].model.endswith(":ckpt-step-1")
        with RunStore.open(store, create=False) as s:
            runs = {r.name: r for r in s.list_runs()}
        assert sorted(runs) == ["ft/step0001", "ft/step0002", "ft/step0003"]
        asked = srv.stats.requests

        # Resumable: watching again asks the models nothing.
        again = watch_openai_checkpoints(
            job_id, _config(srv, store), prefix="ft", base_url=srv.url, api_key_env=KEY_ENV,
            interval=0, sleep=lambda _: None,
        )  # fmt: skip
        assert [m.step for m in again] == [1, 2, 3] and srv.stats.requests == asked
        assert srv.stats.fine_tuning["401"] == 0  # the key went with every request

    assert SECRET not in store.read_bytes().decode("latin-1")
    assert SECRET not in caplog.text


def test_watch_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _server() as srv:
        with pytest.raises(UserError, match="HTTP 404"):
            watch_openai_checkpoints(
                "ftjob-nope", _config(srv, tmp_path / "r.db"), prefix="x", base_url=srv.url,
                api_key_env=KEY_ENV, max_polls=1,
            )  # fmt: skip
        line = user_error_line(
            capsys, "watch", tmp_path, "--openai-job", "ftjob-x", "--store", tmp_path / "s.db"
        )
        assert "either a checkpoint FOLDER or --openai-job" in line
        line = user_error_line(
            capsys, "watch", "--openai-job", "ftjob-nope", "--base-url", srv.url,
            "--api-key-env", KEY_ENV, "--store", tmp_path / "s.db", "--once",
        )  # fmt: skip
        assert "ftjob-nope" in line and "404" in line and SECRET not in line


def test_cli_watches_a_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.db"
    with _server() as srv:
        job_id = _job(srv, tmp_path)
        out = run_ok(
            capsys, "watch", "--openai-job", job_id, "--base-url", srv.url,
            "--api-key-env", KEY_ENV, "--store", store, "--max-personas", "2",
            "--repetitions", "2", "--interval", "0",
        )  # fmt: skip
    assert f"job {job_id}: succeeded, 3 checkpoints" in out
    for step in (1, 2, 3):
        assert f"step {step} → {store}:{job_id}/step000{step}: S " in out
    assert SECRET not in out
