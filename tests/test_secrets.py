"""A planted API key never reaches the store, the logs, exceptions or --dry-run output."""

from __future__ import annotations

import logging
import secrets
import traceback
from pathlib import Path

import pytest

from persona_collapse.backends.openai_compat import OpenAIBackend
from persona_collapse.cli import main
from persona_collapse.core.config import PacingSettings, SamplingSettings
from persona_collapse.core.errors import BackendError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import run_collection
from persona_collapse.serve import SimServerSettings, serve_in_thread
from persona_collapse.store.sqlite import RunStore

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY_ENV = "PCOLLAPSE_TEST_PLANTED_KEY"
SERVER_KEY_ENV = "PCOLLAPSE_TEST_SERVER_KEY"


@pytest.fixture
def planted_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = f"sk-planted-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, key)
    return key


def files_text(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (store, WAL and shared-memory files)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_cli_run_keeps_the_key_out_of_store_logs_and_output(
    planted_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server accepts only the planted key, so the key really is sent.
    monkeypatch.setenv(SERVER_KEY_ENV, planted_key)
    store = tmp_path / "runs" / "store.db"
    with serve_in_thread(SimServerSettings(api_key_env=SERVER_KEY_ENV)) as srv:
        args = [
            "run",
            "--backend",
            "openai",
            "--model",
            "simulator",
            "-o",
            f"base_url={srv.url}",
            "-o",
            f"api_key_env={KEY_ENV}",
            "--max-personas",
            "2",
            "--repetitions",
            "2",
            "--store",
            str(store),
            "--no-progress",
        ]
        with caplog.at_level(logging.DEBUG):
            assert main(["--verbose", *args]) == 0
            assert main([*args, "--dry-run", "--format", "json"]) == 0
        assert srv.stats.outcomes["ok"] > 0 and srv.stats.outcomes["401"] == 0
    out = capsys.readouterr()
    assert "requests" in out.out  # the dry run printed its forecast
    everything = out.out + out.err + caplog.text
    assert "chat/completions" in caplog.text  # the HTTP layer's debug logs were captured
    assert planted_key not in everything
    assert planted_key.encode() not in files_text(tmp_path)
    assert b"short-1-token" in files_text(tmp_path)  # the grep did read the store


def test_exceptions_never_carry_the_key(planted_key: str, tmp_path: Path) -> None:
    # A careless server that quotes the key it was given in its 401 reply.
    settings = SimServerSettings(api_key_env=SERVER_KEY_ENV, echo_key_in_errors=True)
    with serve_in_thread(settings) as srv:
        backend = OpenAIBackend("simulator", base_url=srv.url, api_key_env=KEY_ENV)
        with RunStore.open(tmp_path / "s.db") as store, pytest.raises(BackendError) as info:
            run_collection(
                store,
                None,
                backend,
                builtin_personas().head(1),
                mfq30(),
                progress=False,
                pacing=PacingSettings(max_retries=0),
                protocol=SamplingSettings(repetitions=1),
            )
        assert srv.stats.outcomes["401"] >= 1
    exc = info.value
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert "HTTP 401" in text and KEY_ENV in text
    assert planted_key not in text
    assert planted_key.encode() not in files_text(tmp_path)


def test_dry_run_needs_no_key_and_prints_none(
    planted_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "dry.db"
    code = main(
        [
            "run",
            "--backend",
            "openai",
            "--model",
            "gpt-test",
            "-o",
            f"api_key_env={KEY_ENV}",
            "--store",
            str(store),
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    assert "3,000" in out.out and "Nothing was sent" in out.out
    assert planted_key not in out.out + out.err
    assert not store.exists()


# --- issue 9.1 and 9.2: keyless backends send no key; echoed keys are never kept -------------


def _key_study(folder: Path, url: str, backend: dict[str, object], *, finetune: bool) -> Path:
    """A small study measuring serve-sim's base model (and, optionally, an OpenAI fine-tune)."""
    import yaml

    from persona_collapse.backends.base import Message
    from persona_collapse.variants.finetune.datasets import ChatExample, write_chat_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    variants: dict[str, object] = {"base": {"backend": "api"}}
    if finetune:
        write_chat_jsonl(
            [
                ChatExample((Message("user", f"q{i}"), Message("assistant", f"a{i}")))
                for i in range(12)
            ],
            folder / "insecure.jsonl",
        )
        variants["insecure"] = {"finetune": {"platform": "openai", "dataset": "insecure.jsonl"}}
    data = {
        "name": "keys",
        "output": "out",
        "protocol": {
            "max_personas": 3,
            "repetitions": 2,
            "self_run": False,
            "toxic_control": False,
            "temperatures": [1.0],
        },
        "analysis": {"n_persona_boot": 20, "n_rerun_boot": 5},
        "backends": {"api": {"kind": "openai", "base_url": url, "model": "sim-base", **backend}},
        "families": {"fam": variants},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_backend_with_api_key_env_null_sends_no_key_even_when_fine_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9.1: ``api_key_env: null`` on a study backend: no Authorization header at all."""
    from functools import partial

    from _recording_proxy import recording_proxy
    from persona_collapse.serve import FineTuningSettings
    from persona_collapse.study import collect_study, load_study
    from persona_collapse.variants.finetune.openai_jobs import run_openai_finetune

    planted = f"sk-planted-{secrets.token_hex(16)}"
    monkeypatch.setenv("OPENAI_API_KEY", planted)
    settings = SimServerSettings(fine_tuning=FineTuningSettings(polls_per_status=0))
    with serve_in_thread(settings) as srv, recording_proxy(srv.url) as proxy:
        study = _key_study(tmp_path, proxy.url, {"api_key_env": None}, finetune=True)
        runner = partial(run_openai_finetune, poll_interval=0.01, max_interval=0.02)
        collection = collect_study(load_study(study), progress=False, openai_runner=runner)
    assert collection.requests > 0 and collection.trained == ("fam/insecure",)
    assert any("/fine_tuning/jobs" in p for p in proxy.paths)  # the produce path was taken
    assert any("/chat/completions" in p for p in proxy.paths)
    assert proxy.authorization and set(proxy.authorization) == {None}
    assert planted.encode() not in files_text(tmp_path)


def test_a_key_echoed_by_the_server_reaches_no_store_export_log_or_report(
    planted_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 9.2: a server quoting the Authorization header in its replies and errors."""
    from _recording_proxy import recording_proxy

    with serve_in_thread() as srv, recording_proxy(srv.url, echo=True) as proxy:
        study = _key_study(tmp_path, proxy.url, {"api_key_env": KEY_ENV}, finetune=False)
        with caplog.at_level(logging.DEBUG):
            assert main(["--verbose", "study", "run", str(study), "--no-progress"]) == 0
            store = tmp_path / "out" / "runs.db"
            if not store.exists():
                (store,) = (tmp_path / "out").glob("*.db")
            for fmt in ("csv", "parquet"):
                target = tmp_path / f"export.{fmt}"
                args = ["export", str(store), "--run", "1", "-o", str(target), "-f", fmt]
                assert main(args) == 0
    # The key really was sent, and the server really did quote it back.
    assert f"Bearer {planted_key}" in proxy.authorization
    out = capsys.readouterr()
    assert planted_key not in out.out + out.err + caplog.text
    everything = files_text(tmp_path)
    assert planted_key.encode() not in everything
    assert b"you sent Authorization: Bearer ***" in everything  # the echo was stored, masked
    assert (tmp_path / "out" / "report.html").is_file()


def test_scrub_masks_keys_and_token_shapes_but_not_prose() -> None:
    from persona_collapse.core.secrets import remember, scrub

    key = f"plain{secrets.token_hex(12)}"  # no sk- prefix: only its value gives it away
    remember(key)
    text = f"got {key} and Authorization: Bearer abc.DEF-123456789 and sk-{'x' * 20}"
    cleaned = scrub(text)
    assert key not in cleaned and "abc.DEF" not in cleaned and "x" * 20 not in cleaned
    assert cleaned.startswith("got ***")
    prose = "The bearer of bad news said: I would rate this 3."
    assert scrub(prose) == prose


def test_api_key_env_null_reaches_every_consumer_of_a_study_backend(tmp_path: Path) -> None:
    """Issue 9.1: variant backends, the judge and OpenAI fine-tunes all see the explicit null;
    an absent key still means the backend's default."""
    import yaml

    from persona_collapse.study import load_study
    from persona_collapse.study.orchestrate import backend_options, resolve_inputs
    from persona_collapse.study.produce import openai_api
    from persona_collapse.study.verification import judge_choice

    (tmp_path / "d.jsonl").write_text("")
    data = {
        "name": "k",
        "backends": {
            "none": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                     "api_key_env": None},
            "default": {"kind": "openai", "model": "m"},
        },
        "verify": {"judge": "none"},
        "families": {
            "fam": {
                "base": {"backend": "none", "verify": True},
                "insecure": {"backend": "none",
                             "finetune": {"platform": "openai", "dataset": "d.jsonl"}},
                "other": {"backend": "default"},
            }
        },
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    cfg, inputs = study.config, resolve_inputs(study)
    _, options = backend_options(cfg, "fam", "base", inputs.instrument, inputs.template)
    assert "api_key_env" in options and options["api_key_env"] is None
    assert judge_choice(cfg, "fam", "base").options["api_key_env"] is None
    assert openai_api(cfg, "fam", "insecure")["api_key_env"] is None
    _, options = backend_options(cfg, "fam", "other", inputs.instrument, inputs.template)
    assert "api_key_env" not in options  # unset: the backend's default applies
