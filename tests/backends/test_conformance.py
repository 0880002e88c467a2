"""Backend conformance: every registered backend passes the same checks.

Each built-in backend has a builder below that makes a working instance here
(the simulator, the OpenAI-compatible backend against serve-sim on loopback, the
transformers backend on a tiny model built in the test). A backend registered
without a builder fails :func:`test_every_registered_backend_has_a_builder`, so a
new backend cannot skip the suite.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

from persona_collapse.backends import BUILTIN_BACKENDS, available_backends, create_backend
from persona_collapse.backends.base import Backend, Generation, Prompt
from persona_collapse.core.errors import ConfigError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt

PLANTED_KEY = "sk-conformance-planted-0123456789abcdef"
SCALE = tuple(range(6))


def _prompts(count: int) -> list[Prompt]:
    personas = builtin_personas()
    return [render_prompt(DEFAULT_TEMPLATE, mfq30(), 1 + i, personas[3 + i]) for i in range(count)]


def _simulator(_stack: ExitStack, _tmp: Path) -> dict[str, Any]:
    return {"preset": "base"}


def _openai(stack: ExitStack, _tmp: Path) -> dict[str, Any]:
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from persona_collapse.serve import SimServerSettings, serve_in_thread

    server = stack.enter_context(serve_in_thread(SimServerSettings()))
    return {"model": "simulator", "base_url": server.url, "api_key_env": None}


def _transformers(_stack: ExitStack, tmp: Path) -> dict[str, Any]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from _tiny_models import save_tiny_model

    return {"model": str(save_tiny_model(tmp / "tiny")), "device": "cpu"}


def _inspect(_stack: ExitStack, _tmp: Path) -> dict[str, Any]:
    pytest.importorskip("inspect_ai")
    from _inspect_mock import SeededOutputs

    return {"model": "mockllm/model", "model_args": {"custom_outputs": SeededOutputs()}}


BUILDERS: dict[str, Callable[[ExitStack, Path], dict[str, Any]]] = {
    "simulator": _simulator,
    "inspect": _inspect,
    "openai": _openai,
    "transformers": _transformers,
}
"""Backend name -> options that make a working instance in a test."""


def test_every_registered_backend_has_a_builder() -> None:
    missing = sorted(set(BUILTIN_BACKENDS) - set(BUILDERS))
    assert not missing, f"add a conformance builder for {missing}"
    assert set(BUILTIN_BACKENDS) <= set(available_backends())


BackendSpec = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def spec(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendSpec]:
    """A backend name and working options (servers and model files live for the module)."""
    name = request.param
    with ExitStack() as stack:
        yield name, BUILDERS[name](stack, tmp_path_factory.mktemp(name))


T = TypeVar("T")


def _using(spec: BackendSpec, work: Callable[[Backend], Awaitable[T]]) -> T:
    """Build the backend, run ``work`` on it and close it, all in one event loop
    (as the engine does: clients bind to the loop that first used them)."""

    async def main() -> T:
        backend = create_backend(spec[0], **spec[1])
        try:
            return await work(backend)
        finally:
            await backend.aclose()
            await backend.aclose()  # closing twice is harmless

    return asyncio.run(main())


async def _generate(backend: Backend, prompts: list[Prompt], **kwargs: Any) -> list[Generation]:
    options: dict[str, Any] = {"n": 3, "temperature": 1.0, "max_tokens": 1, "seed": 11}
    options.update(kwargs)
    return await backend.generate(prompts, **options)


def test_is_a_backend_under_its_registered_name(spec: BackendSpec) -> None:
    async def check(backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert backend.name == spec[0]
        assert backend.max_batch_size >= 1

    _using(spec, check)


def test_generate_returns_one_generation_per_prompt(spec: BackendSpec) -> None:
    async def check(backend: Backend) -> None:
        prompts = _prompts(min(2, backend.max_batch_size))
        out = await _generate(backend, prompts)
        assert len(out) == len(prompts)
        for gen in out:
            assert 1 <= len(gen.texts) <= 3
            assert all(isinstance(text, str) for text in gen.texts)
            usage = gen.usage
            assert min(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) >= 0

    _using(spec, check)


def test_a_seeded_request_repeats(spec: BackendSpec) -> None:
    async def check(backend: Backend) -> None:
        prompts = _prompts(1)
        first = await _generate(backend, prompts, seed=5, max_tokens=4)
        again = await _generate(backend, prompts, seed=5, max_tokens=4)
        assert [g.texts for g in first] == [g.texts for g in again]

    _using(spec, check)


def test_distributions_are_probabilities_on_the_scale(spec: BackendSpec) -> None:
    async def check(backend: Backend) -> None:
        if not backend.supports_distributions:
            with pytest.raises(NotImplementedError):
                await backend.distributions(_prompts(1), scale=SCALE, temperature=0.1)
            return
        prompts = _prompts(min(2, backend.max_batch_size))
        dists = await backend.distributions(prompts, scale=SCALE, temperature=0.1)
        assert len(dists) == len(prompts)
        for dist in dists:
            assert tuple(dist.scale) == SCALE
            assert len(dist.probs) == len(SCALE)
            assert min(dist.probs) >= 0.0
            assert math.isclose(sum(dist.probs), 1.0, abs_tol=1e-9)
            assert 0.0 < dist.mass <= 1.0 + 1e-12

    _using(spec, check)


def test_describe_and_metadata_are_plain_json_without_secrets(
    spec: BackendSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)

    async def check(backend: Backend) -> None:
        await _generate(backend, _prompts(1))
        for data in (backend.describe(), backend.run_metadata()):
            assert PLANTED_KEY not in json.dumps(data)
        assert backend.describe().get("backend") == backend.name

    _using(spec, check)


def test_unknown_options_are_config_errors() -> None:
    for name in BUILDERS:
        with pytest.raises(ConfigError, match=name):
            create_backend(name, no_such_option=1)
