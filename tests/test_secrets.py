"""A planted API key never reaches the store, the logs, exceptions or --dry-run output."""

from __future__ import annotations

import logging
import secrets
import traceback
from pathlib import Path

import pytest

from persona_collapse.backends.openai_compat import OpenAIBackend
from persona_collapse.cli import main
from persona_collapse.core.errors import BackendError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import RetryPolicy, run_collection
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
                n_repetitions=1,
                progress=False,
                retry=RetryPolicy(max_retries=0),
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
