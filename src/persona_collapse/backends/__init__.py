"""Backends by name.

Built-in backends are listed in :data:`BUILTIN_BACKENDS`; third-party packages
add their own through the ``persona_collapse.backends`` entry-point group
(``name = "package.module:BackendClass"``). Modules are imported only when a
backend is created, so heavy optional dependencies load lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from persona_collapse.backends.base import (
    Backend,
    Generation,
    Message,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.core.errors import ConfigError, UnknownNameError

BackendFactory = Callable[..., Backend]

BUILTIN_BACKENDS: Mapping[str, str] = MappingProxyType(
    {
        "simulator": "persona_collapse.backends.simulator:SimulatorBackend",
        "openai": "persona_collapse.backends.openai_compat:OpenAIBackend",
        "transformers": "persona_collapse.backends.hf:TransformersBackend",
    }
)
"""Built-in backend names and the ``module:attribute`` that implements each."""

ENTRY_POINT_GROUP = "persona_collapse.backends"


def _targets() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN_BACKENDS}


def available_backends() -> list[str]:
    """Names of all backends (built in and installed plug-ins), sorted."""
    return sorted(_targets())


def backend_factory(name: str) -> BackendFactory:
    """Import and return the class registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not a known backend (with suggestions).
    """
    targets = _targets()
    if name not in targets:
        raise UnknownNameError("backend", name, targets)
    module_name, _, attr = targets[name].partition(":")
    factory: BackendFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def create_backend(name: str, **options: Any) -> Backend:
    """Build backend ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an option is not accepted by the backend.
    """
    factory = backend_factory(name)
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"backend {name!r}: invalid options ({exc})") from None


def create_model_backend(name: str, model: str | None, options: Mapping[str, Any]) -> Backend:
    """Build backend ``name`` for ``model``: the simulator's ``preset``, any other's ``model``.

    An explicit ``preset``/``model`` in ``options`` wins over ``model``.
    """
    opts = dict(options)
    if model:
        opts.setdefault("preset" if name == "simulator" else "model", model)
    return create_backend(name, **opts)


__all__ = [
    "BUILTIN_BACKENDS",
    "Backend",
    "Generation",
    "Message",
    "Prompt",
    "ScaleDistribution",
    "Usage",
    "available_backends",
    "backend_factory",
    "create_backend",
    "create_model_backend",
]
