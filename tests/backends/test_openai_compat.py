"""The OpenAI-compatible backend: pure helpers, and the real SDK against serve-sim."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import numpy as np
import pytest

from persona_collapse.backends import create_backend
from persona_collapse.backends.openai_compat import (
    PROTOCOL_LOGPROBS,
    PROTOCOL_REASONING,
    PROTOCOL_SHORT,
    OpenAIBackend,
    _names_parameter,
    parse_retry_after,
    public_url,
    scale_probabilities,
    scale_value_of,
)
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    TransientBackendError,
)
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt
from persona_collapse.serve import FaultSettings, SimServerSettings, serve_in_thread
from persona_collapse.stats.metrics import tempered

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

T = TypeVar("T")
SCALE = tuple(range(6))
PERSONA = builtin_personas()[11]
PROMPT = render_prompt(DEFAULT_TEMPLATE, mfq30(), 5, PERSONA)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def local(url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend("simulator", base_url=url, api_key_env=None, **options)


async def generate_and_close(backend: OpenAIBackend, **kwargs: Any) -> Any:
    try:
        options = {"n": 10, "temperature": 0.5, "max_tokens": 1, "seed": 9, **kwargs}
        return (await backend.generate([PROMPT], **options))[0]
    finally:
        await backend.aclose()


# --- pure helpers ---------------------------------------------------------------------------


def test_tokens_of_one_value_are_merged() -> None:
    top = [("3", math.log(0.5)), (" 3", math.log(0.2)), ("▁4", math.log(0.1)), ("As", -3.0)]
    dist = scale_probabilities(top, SCALE, missing="zero")
    assert dist.mass == pytest.approx(0.8)
    assert dist.probs == pytest.approx((0, 0, 0, 0.7 / 0.8, 0.1 / 0.8, 0))
    assert dist.missing == (0, 1, 2, 5) and dist.floor_logprob is None


def test_floor_policy_gives_missing_values_the_smallest_listed_probability() -> None:
    top = [("2", math.log(0.6)), ("1", math.log(0.3)), ("Sure", math.log(0.01))]
    dist = scale_probabilities(top, SCALE, missing="floor")
    raw = np.array([0.01, 0.3, 0.6, 0.01, 0.01, 0.01])
    assert dist.probs == pytest.approx(tuple(raw / raw.sum()))
    assert dist.mass == pytest.approx(0.9)
    assert dist.floor_logprob == pytest.approx(math.log(0.01))


def test_zero_policy_without_any_value_falls_back_to_uniform() -> None:
    dist = scale_probabilities([("Hello", -0.1), ("I", -2.5)], SCALE, missing="zero")
    assert dist.probs == pytest.approx((1 / 6,) * 6)
    assert dist.mass == 0.0


def test_temperature_is_applied_as_a_power() -> None:
    top = [(str(k), math.log(p)) for k, p in enumerate((0.05, 0.1, 0.2, 0.3, 0.25, 0.1))]
    for temperature in (0.1, 0.5, 2.0):
        dist = scale_probabilities(top, SCALE, temperature=temperature)
        expected = tempered(np.array([[0.05, 0.1, 0.2, 0.3, 0.25, 0.1]]), temperature)[0]
        assert dist.probs == pytest.approx(tuple(expected))
    greedy = scale_probabilities(
        [("1", -0.7), ("4", -0.7), ("x", -3.0)], SCALE, temperature=0.0, missing="zero"
    )
    assert greedy.probs == (0.0, 0.5, 0.0, 0.0, 0.5, 0.0)


@pytest.mark.parametrize(
    ("top", "kwargs"),
    [
        ([], {}),
        ([("1", float("nan"))], {}),
        ([("1", 0.5)], {}),
        ([("1", -0.1)], {"temperature": -1.0}),
        ([("1", -0.1)], {"missing": "half"}),
    ],
)
def test_invalid_logprob_inputs(top: list[tuple[str, float]], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        scale_probabilities(top, SCALE, **kwargs)


def test_scale_value_of() -> None:
    assert scale_value_of(" 4", SCALE) == 4 and scale_value_of("Ġ0", SCALE) == 0
    assert scale_value_of("6", SCALE) is None and scale_value_of("4.", SCALE) is None
    assert scale_value_of("", SCALE) is None and scale_value_of("-1", (-1, 0, 1)) == -1


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < (parse_retry_after({"retry-after": format_datetime(later, usegmt=True)}) or 0) <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_public_url_drops_credentials() -> None:
    assert public_url("https://user:pw@api.example.com:8443/v1/?key=abc#x") == (
        "https://api.example.com:8443/v1"
    )


def test_parameter_named_in_error_messages() -> None:
    assert _names_parameter("Unsupported parameter: 'max_tokens' is not supported", "max_tokens")
    assert _names_parameter("n must be 1 for this model", "n")
    assert _names_parameter("invalid parameter n", "n")
    assert not _names_parameter("the model is not supported", "n")


# --- construction ---------------------------------------------------------------------------


def test_missing_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCOLLAPSE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="PCOLLAPSE_NO_SUCH_KEY is not set"):
        OpenAIBackend("m", api_key_env="PCOLLAPSE_NO_SUCH_KEY")


@pytest.mark.parametrize(
    "options",
    [
        {"missing_logprob": "nearest"},
        {"top_logprobs": 50},
        {"min_scale_mass": 2.0},
        {"timeout": 0},
        {"base_url": "ftp://host"},
        {"base_url": []},
        {"token_parameter": "max_length"},
        {"reasoning_max_tokens": 4},
    ],
)
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="openai backend"):
        OpenAIBackend("m", api_key_env=None, **options)


def test_unknown_option_through_the_registry() -> None:
    with pytest.raises(ConfigError, match="invalid options"):
        create_backend("openai", model="m", api_key_env=None, colour="red")


def test_missing_sdk_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingDependencyError, match=r"persona-collapse\[openai\]"):
        OpenAIBackend("m", api_key_env=None)


def test_describe_has_no_secrets_and_no_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCOLLAPSE_DESCRIBE_KEY", "sk-describe-0123456789")
    backend = OpenAIBackend(
        "m",
        base_url=["http://a:1/v1", "http://b:2/v1"],
        api_key_env="PCOLLAPSE_DESCRIBE_KEY",
        extra_body={"top_k": 5, "provider": {"api_key": "sk-nested", "order": ["x"]}},
    )
    info = backend.describe()
    assert info == {
        "backend": "openai",
        "model": "m",
        "extra_body": {"top_k": 5, "provider": {"order": ["x"]}},
        "missing_logprob": "floor",
        "top_logprobs": 20,
    }
    assert "sk-" not in repr(info)
    assert "sk-describe" not in repr(vars(backend))  # the key is read when needed, not kept
    assert backend.endpoints == ["http://a:1/v1", "http://b:2/v1"]


# --- against serve-sim ----------------------------------------------------------------------


def test_one_request_for_n_completions_with_usage() -> None:
    with serve_in_thread(SimServerSettings()) as srv:
        gen = run(generate_and_close(local(srv.url, extra_body={"enable_thinking": False})))
        again = run(generate_and_close(local(srv.url)))
        stats = srv.stats
        assert len(gen.texts) == 10 and gen.texts == again.texts  # same seed, same answers
        assert stats.requests == 2 and stats.n_requested[10] == 2
        assert stats.extra_fields["enable_thinking"] == 1
        assert gen.usage.prompt_tokens + again.usage.prompt_tokens == stats.prompt_tokens
        assert gen.usage.completion_tokens == sum(len(t.split()) for t in gen.texts)
        assert again.usage.cached_tokens > 0  # the persona system message was cached


def test_errors_become_engine_errors() -> None:
    faults = FaultSettings(rate_limit_rate=1.0, retry_after=0.25)
    with serve_in_thread(SimServerSettings(faults=faults)) as srv:
        with pytest.raises(TransientBackendError) as info:
            run(generate_and_close(local(srv.url)))
        assert info.value.retry_after == 0.25
        assert getattr(info.value, "rate_limited", False) is True
        assert "HTTP 429" in str(info.value)
    with serve_in_thread(SimServerSettings(faults=FaultSettings(server_error_rate=1.0))) as srv:
        with pytest.raises(TransientBackendError) as info:
            run(generate_and_close(local(srv.url)))
        assert info.value.retry_after is None and "HTTP 500" in str(info.value)
    garbled = SimServerSettings(faults=FaultSettings(unparseable_rate=1.0))
    with (
        serve_in_thread(garbled) as srv,
        pytest.raises(TransientBackendError, match="unreadable response"),
    ):
        run(generate_and_close(local(srv.url)))
    slow = SimServerSettings(faults=FaultSettings(slow_rate=1.0, slow_delay=1.0))
    with (
        serve_in_thread(slow) as srv,
        pytest.raises(TransientBackendError, match=r"no response within 0\.2 s"),
    ):
        run(generate_and_close(local(srv.url, timeout=0.2)))
    with serve_in_thread(SimServerSettings()) as srv:
        backend = OpenAIBackend("no-such-model", base_url=srv.url, api_key_env=None)
        with pytest.raises(BackendError, match="HTTP 404") as info:
            run(generate_and_close(backend))
        assert not isinstance(info.value, TransientBackendError)
        assert info.value.__context__ is None and info.value.__cause__ is None


def test_server_ignoring_n_is_detected_once_and_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve_in_thread(SimServerSettings(faults=FaultSettings(ignore_n=True))) as srv:
        backend = local(srv.url)

        async def three_calls() -> list[int]:
            try:
                sizes = []
                for seed in range(3):
                    gens = await backend.generate(
                        [PROMPT], n=10, temperature=0.5, max_tokens=1, seed=seed
                    )
                    sizes.append(len(gens[0].texts))
                return sizes
            finally:
                await backend.aclose()

        with caplog.at_level(logging.WARNING, logger="persona_collapse.backends.openai_compat"):
            assert run(three_calls()) == [1, 1, 1]
        assert sum("ignores n" in r.getMessage() for r in caplog.records) == 1
        assert srv.stats.n_requested[10] == 1 and srv.stats.n_requested[1] == 2
        assert backend.run_metadata()["honours_n"] == {srv.url: False}


def test_replicas_are_used_round_robin_and_a_dead_one_is_skipped() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    dead.close()  # nothing listens there any more
    with (
        serve_in_thread(SimServerSettings()) as one,
        serve_in_thread(SimServerSettings()) as two,
    ):
        backend = local([one.url, two.url])  # type: ignore[arg-type]

        async def four() -> None:
            try:
                for _ in range(4):
                    await backend.generate([PROMPT], n=2, temperature=0.5, max_tokens=1)
            finally:
                await backend.aclose()

        run(four())
        assert one.stats.requests == two.stats.requests == 2

        flaky = local([dead_url, one.url])  # type: ignore[arg-type]

        async def with_dead() -> int:
            failures = 0
            try:
                for _ in range(6):
                    try:
                        await flaky.generate([PROMPT], n=2, temperature=0.5, max_tokens=1)
                    except TransientBackendError as exc:
                        assert "connection failed" in str(exc)
                        failures += 1
            finally:
                await flaky.aclose()
            return failures

        assert run(with_dead()) == 1  # tried once, then skipped during its cool-down
        assert one.stats.requests == 2 + 5


@pytest.mark.parametrize("flavour", ["o-series", "thinking"])
def test_reasoning_models_switch_protocol_once(
    flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_thread(SimServerSettings(reasoning=flavour)) as srv:  # type: ignore[arg-type]
        backend = local(srv.url, reasoning_max_tokens=256)

        async def calls() -> list[Any]:
            try:
                out = []
                for _ in range(2):
                    out.append(
                        (await backend.generate([PROMPT], n=3, temperature=0.5, max_tokens=1))[0]
                    )
                with pytest.raises(BackendError, match="use mode 'sampling'"):
                    await backend.distributions([PROMPT], scale=SCALE, temperature=0.1)
                return out
            finally:
                await backend.aclose()

        with caplog.at_level(logging.WARNING, logger="persona_collapse.backends.openai_compat"):
            gens = run(calls())
        assert all(len(g.texts) == 3 and all(t.strip() for t in g.texts) for g in gens)
        assert sum("reasoning protocol" in r.getMessage() for r in caplog.records) == 1
        assert backend.protocol == PROTOCOL_REASONING
        assert backend.run_metadata()["protocols"] == [PROTOCOL_REASONING]
        assert gens[1].usage.completion_tokens > 3 * 20  # reasoning tokens are billed


def test_fresh_backend_in_exact_mode_refuses_a_reasoning_model() -> None:
    with serve_in_thread(SimServerSettings(reasoning="o-series")) as srv:
        backend = local(srv.url)

        async def exact() -> None:
            try:
                await backend.distributions([PROMPT], scale=SCALE, temperature=0.1)
            finally:
                await backend.aclose()

        with pytest.raises(BackendError, match="rejects logprob requests"):
            run(exact())


def test_logprob_distributions_are_exact() -> None:
    with serve_in_thread(SimServerSettings()) as srv:
        backend = local(srv.url)

        async def dist() -> Any:
            try:
                return (await backend.distributions([PROMPT], scale=SCALE, temperature=0.1))[0]
            finally:
                await backend.aclose()

        got = run(dist())
        assert srv.stats.logprob_requests == 1
    sim = SimulatorBackend("base")
    truth = sim.cell_distributions([PERSONA], temperature=0.1, items=[5])[0, 0]
    np.testing.assert_allclose(got.probs, truth, atol=1e-12)
    assert got.mass == pytest.approx(1 - sim.params.unparseable_rate)
    assert got.raw["protocol"] == PROTOCOL_LOGPROBS and got.raw["request_temperature"] == 1.0
    assert {t.strip() for t, _ in got.raw["top_logprobs"]} >= {"0", "1", "2", "3", "4", "5"}
    assert backend.run_metadata()["protocols"] == [PROTOCOL_LOGPROBS]
    assert got.usage.prompt_tokens > 0 and got.usage.completion_tokens == 1


def test_missing_values_policy(caplog: pytest.LogCaptureFixture) -> None:
    # Few top logprobs and much probability off the scale (simulator replies that do not
    # start with a rating).
    settings = SimServerSettings(sim_params={"unparseable_rate": 0.7, "width": 0.6})
    with serve_in_thread(settings) as srv:

        async def dist(policy: str) -> Any:
            backend = local(srv.url, top_logprobs=4, missing_logprob=policy)
            try:
                return (await backend.distributions([PROMPT], scale=SCALE, temperature=1.0))[
                    0
                ], backend
            finally:
                await backend.aclose()

        with caplog.at_level(logging.WARNING, logger="persona_collapse.backends.openai_compat"):
            floor, floor_backend = run(dist("floor"))
        zero, _ = run(dist("zero"))
    assert floor.raw["missing"] == zero.raw["missing"] and len(zero.raw["missing"]) >= 2
    for value in zero.raw["missing"]:
        assert zero.probs[value] == 0.0
        assert floor.probs[value] > 0.0
    assert floor.mass == zero.mass < 0.5
    # The low-mass warning is the engine's, for instrument cells only (tests/test_scale_mass.py):
    # a bare distributions() call, as the judge makes, does not warn.
    assert floor_backend.run_metadata().get("low_mass_cells") is None
    assert not any("on scale values" in r.getMessage() for r in caplog.records)


def test_protocol_of_plain_sampling() -> None:
    with serve_in_thread(SimServerSettings()) as srv:
        backend = local(srv.url)
        run(generate_and_close(backend))
        assert backend.protocol == PROTOCOL_SHORT
        assert backend.run_metadata()["protocols"] == [PROTOCOL_SHORT]
