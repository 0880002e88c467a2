"""The serve-sim HTTP server: OpenAI-compatible replies, logprobs, usage and faults."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import ConfigError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt
from persona_collapse.serve import (
    FaultSettings,
    RunningServer,
    SimServerSettings,
    is_loopback,
    serve_in_thread,
    settings_from_options,
)
from persona_collapse.serve.app import NON_RATING_TOKENS, REASONING_TOKENS

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SRC = Path(__file__).resolve().parents[2] / "src"
PROMPT = render_prompt(DEFAULT_TEMPLATE, mfq30(), 3, builtin_personas()[7])
MESSAGES = [{"role": m.role, "content": m.content} for m in PROMPT.messages]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with serve_in_thread(SimServerSettings()) as running:
        yield running


def chat(url: str, **fields: Any) -> httpx.Response:
    body = {"model": "simulator", "messages": MESSAGES, **fields}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=10)


def test_binds_loopback_and_lists_models(server: RunningServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    data = httpx.get(f"{server.url}/models").json()
    assert [m["id"] for m in data["data"]] == [
        "simulator",
        "sim-base",
        "sim-secure",
        "sim-insecure",
    ]


def test_completions_honour_n_seed_and_report_usage(server: RunningServer) -> None:
    first = chat(server.url, n=7, max_tokens=1, temperature=0.7, seed=42).json()
    again = chat(server.url, n=7, max_tokens=1, temperature=0.7, seed=42).json()
    other = chat(server.url, n=7, max_tokens=1, temperature=0.7, seed=43).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert len(texts) == 7 and [c["index"] for c in first["choices"]] == list(range(7))
    assert texts == [c["message"]["content"] for c in again["choices"]]
    assert texts != [c["message"]["content"] for c in other["choices"]]
    usage = first["usage"]
    assert usage["prompt_tokens"] > 100
    assert usage["completion_tokens"] == sum(len(t.split()) for t in texts)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The system message (the persona) was seen before: a prompt-cache hit.
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert 0 < again["usage"]["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]
    stats = server.stats
    assert stats.requests == 3 and stats.outcomes["ok"] == 3 and stats.choices == 21
    assert stats.n_requested[7] == 3


def test_logprobs_carry_the_simulator_distribution(server: RunningServer) -> None:
    reply = chat(server.url, max_tokens=1, temperature=1.0, logprobs=True, top_logprobs=20).json()
    (entry,) = reply["choices"][0]["logprobs"]["content"]
    top = entry["top_logprobs"]
    assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    merged: dict[str, float] = {}
    for t in top:
        merged[t["token"].strip()] = merged.get(t["token"].strip(), 0.0) + math.exp(t["logprob"])
    sim = SimulatorBackend("base")
    probs = sim.cell_distributions([builtin_personas()[7]], temperature=1.0, items=[3])[0, 0]
    rating_mass = 1.0 - sim.params.unparseable_rate
    for value, p in enumerate(probs):
        assert merged.get(str(value), 0.0) == pytest.approx(p * rating_mass, rel=1e-9, abs=1e-15)
    for token, share in NON_RATING_TOKENS:
        assert merged[token] == pytest.approx((1 - rating_mass) * share)
    assert entry["token"] == reply["choices"][0]["message"]["content"].split()[0]
    few = chat(server.url, max_tokens=1, logprobs=True, top_logprobs=3).json()
    assert len(few["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 3


def test_rejects_bad_requests_like_openai(server: RunningServer) -> None:
    missing = httpx.post(f"{server.url}/chat/completions", json={"model": "simulator"})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]
    unknown = chat(server.url, model="gpt-nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    not_json = httpx.post(f"{server.url}/chat/completions", content=b"{", timeout=10)
    assert not_json.status_code == 400
    assert server.stats.outcomes["400"] == 2 and server.stats.outcomes["404"] == 1


def test_extra_fields_are_accepted_and_counted(server: RunningServer) -> None:
    reply = chat(server.url, max_tokens=1, chat_template_kwargs={"enable_thinking": False})
    assert reply.status_code == 200
    assert server.stats.extra_fields["chat_template_kwargs"] == 1


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        (FaultSettings(rate_limit_rate=1.0, retry_after=0.25), 429),
        (FaultSettings(server_error_rate=1.0), 500),
    ],
)
def test_error_faults(faults: FaultSettings, status: int) -> None:
    with serve_in_thread(SimServerSettings(faults=faults)) as srv:
        reply = chat(srv.url, max_tokens=1)
        assert reply.status_code == status
        assert "error" in reply.json()
        if status == 429:
            assert reply.headers["retry-after"] == "0.25"
            assert reply.headers["retry-after-ms"] == "250"
        assert srv.stats.outcomes[str(status)] == 1 and srv.stats.outcomes["ok"] == 0


def test_unparseable_slow_and_ignore_n_faults() -> None:
    faults = FaultSettings(unparseable_rate=1.0)
    with serve_in_thread(SimServerSettings(faults=faults)) as srv:
        reply = chat(srv.url, max_tokens=1)
        assert reply.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply.content)
        assert srv.stats.outcomes["unparseable"] == 1
    slow = FaultSettings(slow_rate=1.0, slow_delay=0.3)
    with serve_in_thread(SimServerSettings(faults=slow)) as srv:
        body = {"model": "simulator", "messages": MESSAGES, "max_tokens": 1}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.url}/chat/completions", json=body, timeout=0.1)
        started = time.perf_counter()
        assert chat(srv.url, max_tokens=1).status_code == 200  # a patient client is answered
        assert time.perf_counter() - started >= 0.3
        assert srv.stats.outcomes["slow"] == 2 and srv.stats.outcomes["ok"] == 0
    with serve_in_thread(SimServerSettings(faults=FaultSettings(ignore_n=True))) as srv:
        reply = chat(srv.url, n=10, max_tokens=1).json()
        assert len(reply["choices"]) == 1
        assert srv.stats.n_requested[10] == 1 and srv.stats.choices == 1


def test_fault_rates_are_validated() -> None:
    with pytest.raises(ConfigError, match="more than 1"):
        settings_from_options(faults={"rate_limit_rate": 0.7, "server_error_rate": 0.4})
    with pytest.raises(ConfigError, match="reasoning"):
        settings_from_options(reasoning="sometimes")
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_options(colour="blue")


def test_fault_draws_follow_the_seed() -> None:
    faults = FaultSettings(rate_limit_rate=0.3, server_error_rate=0.3, seed=5)
    outcomes = []
    for _ in range(2):
        with serve_in_thread(SimServerSettings(faults=faults)) as srv:
            outcomes.append([chat(srv.url, max_tokens=1).status_code for _ in range(12)])
    assert outcomes[0] == outcomes[1]
    assert {200, 429, 500} <= set(outcomes[0])


def test_o_series_reasoning_model() -> None:
    with serve_in_thread(SimServerSettings(reasoning="o-series")) as srv:
        rejected = chat(srv.url, max_tokens=1)
        assert rejected.status_code == 400
        assert rejected.json()["error"]["param"] == "max_tokens"
        no_logprobs = chat(srv.url, max_completion_tokens=100, logprobs=True)
        assert no_logprobs.json()["error"]["param"] == "logprobs"
        ok = chat(srv.url, max_completion_tokens=100).json()
        assert ok["choices"][0]["message"]["content"]
        details = ok["usage"]["completion_tokens_details"]
        assert details["reasoning_tokens"] == REASONING_TOKENS


def test_thinking_model_spends_the_budget_reasoning() -> None:
    with serve_in_thread(SimServerSettings(reasoning="thinking")) as srv:
        cut = chat(srv.url, max_tokens=1).json()["choices"][0]
        assert cut["message"]["content"] == "" and cut["finish_reason"] == "length"
        assert cut["message"]["reasoning_content"]
        full = chat(srv.url, max_tokens=REASONING_TOKENS + 8).json()["choices"][0]
        assert full["message"]["content"] and full["finish_reason"] == "stop"


def test_api_key_is_checked_and_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_SIM_TEST_KEY", "sk-serve-sim-right-key")
    with serve_in_thread(SimServerSettings(api_key_env="SERVE_SIM_TEST_KEY")) as srv:
        body = {"model": "simulator", "messages": MESSAGES, "max_tokens": 1}
        wrong = httpx.post(
            f"{srv.url}/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-serve-sim-wrong-key"},
        )
        assert wrong.status_code == 401
        assert "sk-serve-sim-wrong-key" not in wrong.text
        right = httpx.post(
            f"{srv.url}/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-serve-sim-right-key"},
        )
        assert right.status_code == 200


def test_stats_endpoint_and_reset(server: RunningServer) -> None:
    chat(server.url, max_tokens=1)
    root = server.url.removesuffix("/v1")
    assert httpx.get(f"{root}/stats").json()["requests"] == 1
    assert httpx.post(f"{root}/stats/reset").json()["requests"] == 0
    assert server.stats.requests == 0


def test_cli_serves_until_interrupted() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "persona_collapse.cli", "serve-sim", "--port", "0", "--ignore-n"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serve-sim: model 'simulator' (preset base) at http://127.0.0.1:")
        url = line.split()[-1]
        reply = chat(url, n=3, max_tokens=1).json()
        assert len(reply["choices"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [["--rate-limit", "2"], ["--preset", "nope"], ["--rate-limit", "0.6", "--slow", "0.6"]],
)
def test_cli_rejects_bad_options(args: list[str]) -> None:
    from persona_collapse.cli import main

    assert main(["serve-sim", *args]) == 2


# --- other clients' request shapes (issue 15.6) ----------------------------------------------

# Official MFQ-30 wording of part 2 and item 30 of the form (our item 28), written the way
# another client might: persona in the user message, no system message, its own scale lines.
_OTHER_CLIENT = (
    "Imagine you are this person: {persona}\n"
    "Please read the following sentences and indicate your agreement or disagreement:\n"
    "{item}\n"
    "[0] Strongly disagree, [1] Moderately disagree, [2] Slightly disagree, "
    "[3] Slightly agree, [4] Moderately agree, [5] Strongly agree\n"
    "Answer with the number only."
)


def _other_client(persona: str, item: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": _OTHER_CLIENT.format(persona=persona, item=item)}]


def test_other_clients_request_shapes(server: RunningServer) -> None:
    official = "It is more important to be a team player than to express oneself."
    old_wording = "It is MORE important to be a team-player than to express yourself"
    personas = [builtin_personas()[k] for k in (0, 5, 9)]

    def ask(messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
        body = {"model": "simulator", "messages": messages, "max_tokens": 1, **fields}
        response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    # The item is recognised under any template and wording: no HTTP 400.
    for item in (official, old_wording):
        ask(_other_client(personas[0], item), n=1, temperature=1.0)
    # The persona is found in the user message: each persona has its own distribution.
    firsts = []
    for persona in personas:
        data = ask(_other_client(persona, official), logprobs=True, top_logprobs=6)
        top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        firsts.append(tuple(sorted((t["token"], round(t["logprob"], 6)) for t in top)))
    assert len(set(firsts)) == len(personas)
    # Unseeded requests (n = 1, one per repetition) sample independently ...
    undecided = _other_client(personas[1], "Whether or not someone was cruel")
    replies = [
        ask(undecided, n=1, temperature=1.0, max_tokens=64)["choices"][0]["message"]["content"]
        for _ in range(12)
    ]
    assert len(set(replies)) > 1
    # ... and seeded ones stay reproducible.
    seeded = [
        ask(undecided, n=3, temperature=1.0, seed=7, max_tokens=64)["choices"] for _ in range(2)
    ]
    assert [c["message"]["content"] for c in seeded[0]] == [
        c["message"]["content"] for c in seeded[1]
    ]


def test_other_client_with_the_openai_sdk(server: RunningServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    persona = builtin_personas()[3]
    messages = _other_client(persona, "Chastity is an important and valuable virtue.")
    texts = [
        client.chat.completions.create(
            model="simulator", messages=messages, temperature=1.0, max_tokens=64
        )
        .choices[0]
        .message.content
        for _ in range(10)
    ]
    client.close()
    assert all(t for t in texts) and len(set(texts)) > 1


def test_client_disconnect_prints_no_asgi_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 9.20: a client that goes away mid-request is normal, not a server error.
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server.url)
    with caplog.at_level("DEBUG"):
        for path in ("/v1/chat/completions", "/v1/files", "/v1/fine_tuning/jobs"):
            with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    'Content-Length: 1000\r\n\r\n{"model":'.encode()
                )
            time.sleep(0.3)
        assert chat(server.url, max_tokens=1).status_code == 200  # still serving
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Exception in ASGI application" not in logged
    assert "Traceback" not in logged
