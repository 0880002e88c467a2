"""Fail fast and say the right thing (issue 9 items 10, 16, 17, 18, 20; issue 15 item 5).

Preflight asks every distinct endpoint and model once before anything is collected;
errors a rerun cannot fix exit 2 without rerun advice and leave no store behind; the
study dry run uses the run dry run's estimator; SIGTERM says what Ctrl-C says; a server
reporting absurd usage is clamped; servers that ignore temperature or n are noticed.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from _kill_drill import start_child, stored_slots
from _scripted_server import Script, scripted_server
from persona_collapse.cli import main
from persona_collapse.core.personas import builtin_personas
from persona_collapse.serve import SimServerSettings, serve_in_thread

pytest.importorskip("openai")
pytest.importorskip("fastapi")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _run_args(url: str, store: Path, *extra: str, model: str = "scripted") -> list[str]:
    return [
        "run", "--backend", "openai", "--model", model,
        "-o", f"base_url={url}", "-o", "api_key_env=null",
        "--max-personas", "2", "--repetitions", "3", "--no-self",
        "--store", str(store), "--no-progress", *extra,
    ]  # fmt: skip


def _study(folder: Path, url: str, variants: dict[str, Any], **protocol: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "pf",
        "output": "out",
        "protocol": {
            "max_personas": 3,
            "repetitions": 2,
            "self_run": False,
            "toxic_control": False,
            "temperatures": [1.0],
            **protocol,
        },
        "analysis": {"n_persona_boot": 20, "n_rerun_boot": 5},
        "backends": {"api": {"kind": "openai", "base_url": url, "api_key_env": None}},
        "families": {"fam": {k: {"backend": "api", "model": m} for k, m in variants.items()}},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- item 16: preflight -------------------------------------------------------------------


def test_a_typo_in_the_last_variants_model_stops_the_study_before_any_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_in_thread() as srv:
        study = _study(
            tmp_path,
            srv.url,
            {"base": "sim-base", "secure": "sim-secure", "insecure": "sim-insecur"},
        )
        code = main(["study", "run", str(study), "--no-progress"])
        served = srv.stats.outcomes["ok"]
    err = capsys.readouterr().err
    assert code == 2
    assert "preflight: 1 problem(s)" in err and "fam/insecure" in err and "HTTP 404" in err
    assert "'sim-insecure'" in err  # did-you-mean from GET /models
    assert "resume" not in err
    assert served <= 2 * 3  # the probes only (a couple per variant), no collection
    assert not (tmp_path / "out" / "runs.db").exists()
    assert not list((tmp_path / "out").glob("*.db")) if (tmp_path / "out").exists() else True


def test_a_closed_port_fails_at_once_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    started = time.monotonic()
    code = main(_run_args(_closed_port_url(), store))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10, (code, elapsed)
    assert "cannot reach" in err or "connection failed" in err
    assert err.count("error:") == 1 and "WARNING" not in err
    assert not store.exists()


def test_a_refused_key_is_found_by_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCOLLAPSE_TEST_WRONG_KEY", "sk-wrong-0123456789")
    store = tmp_path / "s.db"
    with scripted_server(Script(key="sk-right-0123456789")) as srv:
        args = _run_args(srv.url, store)
        args[args.index("api_key_env=null")] = "api_key_env=PCOLLAPSE_TEST_WRONG_KEY"
        code = main(args)
        assert srv.chat_requests == 0  # GET /models already said 401
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 401" in err and "$PCOLLAPSE_TEST_WRONG_KEY" in err
    assert "resume" not in err and not store.exists()


def test_exact_mode_needs_logprobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(Script(logprobs=False)) as srv:
        code = main(_run_args(srv.url, tmp_path / "s.db", "--mode", "exact"))
    err = capsys.readouterr().err
    assert code == 2 and "no logprobs" in err
    assert not (tmp_path / "s.db").exists()


def test_simulator_preflight_passes_trivially(tmp_path: Path) -> None:
    args = ["run", "--backend", "simulator", "--model", "base", "--max-personas", "2"]
    args += ["--repetitions", "2", "--no-self", "--store", str(tmp_path / "s.db"), "--no-progress"]
    assert main(args) == 0


# --- item 17: errors a rerun cannot fix ---------------------------------------------------


def test_a_refused_request_exits_2_without_rerun_advice_and_leaves_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    with scripted_server(Script()) as srv:
        # The model does not exist; without preflight the first request finds out.
        code = main(_run_args(srv.url, store, "--no-preflight", model="no-such-model"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "HTTP 404" in err and "resume" not in err
    assert not store.exists() and not Path(f"{store}-wal").exists()


# --- item 10: absurd usage ----------------------------------------------------------------


def test_absurd_usage_is_clamped_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "s.db"
    usage = {"prompt_tokens": 10**30, "completion_tokens": float("inf"), "total_tokens": -5}
    with scripted_server(Script(usage=usage)) as srv, caplog.at_level(logging.WARNING):
        assert main(_run_args(srv.url, store)) == 0
    assert "impossible token usage" in caplog.text
    conn = sqlite3.connect(store)
    try:
        stored = conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        prompt, completion = conn.execute(
            "SELECT prompt_tokens, completion_tokens FROM usage"
        ).fetchone()
    finally:
        conn.close()
    assert stored == 2 * 30 * 3
    assert 0 < prompt < 2**63 and 0 < completion < 2**63


# --- issue 15.5: servers that ignore settings ---------------------------------------------


def test_a_greedy_server_that_ignores_n_is_noticed_recorded_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    with scripted_server(Script(greedy=True, ignore_n=True)) as srv:
        with caplog.at_level(logging.WARNING):
            assert main(_run_args(srv.url, store, "--dry-run", "--preflight", "-f", "json")) == 0
        forecast = json.loads(capsys.readouterr().out)
        assert not store.exists()  # the dry run stored nothing
        with caplog.at_level(logging.WARNING):
            assert main(_run_args(srv.url, store)) == 0
    assert "ignore temperature" in caplog.text and "generation_config" in caplog.text
    assert "ignores n" in caplog.text
    (behaviour,) = forecast["preflight"]
    assert behaviour["honours_n"] is False and behaviour["varies_with_temperature"] is False
    (run,) = forecast["runs"]
    # n ignored: one request per repetition (2 personas x 30 items x 3), not per cell.
    assert run["requests"] == 2 * 30 * 3 and run["reasks"] == 0
    conn = sqlite3.connect(store)
    try:
        (metadata,) = conn.execute("SELECT metadata FROM runs").fetchone()
    finally:
        conn.close()
    recorded = json.loads(metadata)["backend"]["preflight"][0]
    assert recorded["varies_with_temperature"] is False and recorded["honours_n"] is False


def test_a_sampling_server_passes_and_the_dry_run_counts_one_request_per_cell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with scripted_server(Script()) as srv, caplog.at_level(logging.WARNING):
        args = _run_args(srv.url, tmp_path / "s.db", "--dry-run", "--preflight", "-f", "json")
        assert main(args) == 0
    forecast = json.loads(capsys.readouterr().out)
    assert "ignore" not in caplog.text
    (behaviour,) = forecast["preflight"]
    assert behaviour["honours_n"] is True and behaviour["varies_with_temperature"] is True
    (run,) = forecast["runs"]
    assert run["requests"] == 2 * 30 + run["reasks"]


def test_expected_reasks() -> None:
    from persona_collapse.engine.costs import EndpointSupport, expected_reasks

    assert expected_reasks(0.0, 10, honours_n=True) == 0.0
    # Every reply fails: ten more rounds (nine short re-asks and one long request).
    assert expected_reasks(1.0, 10, honours_n=True) == pytest.approx(10.0)
    assert expected_reasks(1.0, 10, honours_n=False) == pytest.approx(100.0)
    assert expected_reasks(0.5, 1, honours_n=False) == pytest.approx(
        sum(0.5**k for k in range(1, 11))
    )
    assert EndpointSupport().honours_n


# --- item 18: study dry run ---------------------------------------------------------------


def test_study_dry_run_counts_per_variant_with_the_run_estimator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path, "http://127.0.0.1:9/v1", {"base": "m-base", "insecure": "m-ins"})
    data = yaml.safe_load(study.read_text())
    data["backends"]["api"]["prices"] = {"input": 2.5, "output": 10.0}
    study.write_text(yaml.safe_dump(data))
    assert main(["study", "run", str(study), "--dry-run", "-f", "json"]) == 0
    forecast = json.loads(capsys.readouterr().out)
    assert [(r["variant"], r["kind"]) for r in forecast["runs"]] == [
        ("base", "persona"),
        ("insecure", "persona"),
    ]
    # The same numbers as `run --dry-run` for the same model and protocol.
    (tmp_path / "p.txt").write_text("\n".join(builtin_personas().head(3)) + "\n")
    run_args = ["run", "--backend", "openai", "--model", "m-base", "-o", "api_key_env=null"]
    run_args += ["--personas"]
    run_args += [str(tmp_path / "p.txt"), "--repetitions", "2", "--no-self", "--dry-run"]
    assert main([*run_args, "-f", "json", "--store", str(tmp_path / "x.db")]) == 0
    single = json.loads(capsys.readouterr().out)["runs"][0]
    base = forecast["runs"][0]
    for key in ("requests", "prompt_tokens", "completion_tokens", "missing"):
        assert base[key] == single[key], key
    assert base["requests"] == 3 * 30
    assert forecast["requests"] == 2 * 3 * 30
    assert forecast["cost_usd"] is not None and forecast["cost_usd"] > 0
    assert not (tmp_path / "out").exists()  # nothing written, nothing sent
    assert main(["study", "run", str(study), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fam/insecure: 90 requests" in out and "total: 180 requests" in out


# --- item 20: SIGTERM ---------------------------------------------------------------------

_CHILD = """
import sys
from persona_collapse.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["run", "study"])
def test_sigterm_says_what_ctrl_c_says(tmp_path: Path, command: str) -> None:
    # Slow enough (about 40 s in all) that the signal always lands mid-run, even on a
    # loaded machine; the test itself stops after the first stored answer.
    settings = SimServerSettings(faults={"slow_rate": 0.5, "slow_delay": 1.0, "seed": 1})
    with serve_in_thread(settings) as srv:
        if command == "run":
            store = tmp_path / "s.db"
            args = _run_args(srv.url, store, model="simulator")
            args[args.index("2")] = "20"  # --max-personas 20: long enough to interrupt
        else:
            study = _study(tmp_path, srv.url, {"base": "sim-base"}, max_personas=20)
            store = tmp_path / "out" / "runs.db"
            args = ["study", "run", str(study), "--no-progress"]
        child = start_child(_CHILD, *args)
        try:
            deadline = time.monotonic() + 60
            while (
                not list(tmp_path.rglob("*.db"))
                or stored_slots(next(iter(tmp_path.rglob("*.db")))) == 0
            ):
                assert child.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    text = err.decode()
    assert child.returncode == 143, text
    assert "interrupted: everything collected so far is stored" in text
    assert "Traceback" not in text
