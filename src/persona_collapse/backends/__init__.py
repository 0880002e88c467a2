"""Backends by name.

Built-in backends are listed in :data:`BUILTIN_BACKENDS`; third-party packages
add their own through the ``persona_collapse.backends`` entry-point group
(``name = "package.module:BackendClass"``). Modules are imported only when a
backend is created, so heavy optional dependencies load lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
        "inspect": "persona_collapse.backends.inspect_backend:InspectBackend",
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


@dataclass(frozen=True)
class ModelBackendSpec:
    """What to build: a backend kind for a model, with its endpoint and options.

    Attributes:
        kind: Registered backend name.
        model: The model (the backend's :attr:`~Backend.model_option`), or None.
        connection: ``base_url`` / ``api_key_env`` as the user set them (an explicit
            None means "no key"); passed only to backends that use an endpoint.
        options: Further keyword options, passed as they are.
        context: Run or study settings on offer (``instrument``, ``template``,
            ``min_scale_mass``...); a backend takes those in its ``context_options``.
    """

    kind: str
    model: str | None = None
    connection: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def resolve_options(spec: ModelBackendSpec) -> dict[str, Any]:
    """The keyword options :func:`build_backend` passes for ``spec`` (builds nothing).

    Explicit ``options`` win over the model, the connection and the context.

    Raises:
        UnknownNameError: ``spec.kind`` is not registered.
    """
    factory = backend_factory(spec.kind)
    options = dict(spec.options)
    if spec.model:
        options.setdefault(_class_attr(factory, "model_option", "model"), spec.model)
    if _class_attr(factory, "uses_endpoint", False):
        for key, value in spec.connection.items():
            options.setdefault(key, value)
    wanted = _class_attr(factory, "context_options", frozenset())
    for key, value in spec.context.items():
        if key in wanted:
            options.setdefault(key, value)
    return options


def build_backend(spec: ModelBackendSpec) -> Backend:
    """Build the backend ``spec`` describes (the one builder of run, study, judge and
    fine-tuning backends).

    Raises:
        UnknownNameError: ``spec.kind`` is not registered.
        ConfigError: An option is not accepted by the backend.
    """
    return create_backend(spec.kind, **resolve_options(spec))


def model_option(kind: str) -> str:
    """The keyword option that names backend ``kind``'s model (the simulator's ``preset``)."""
    return str(_class_attr(backend_factory(kind), "model_option", "model"))


def default_key_variable(kind: str) -> str | None:
    """The API-key variable backend ``kind`` reads when a spec names none."""
    value = _class_attr(backend_factory(kind), "default_api_key_env", None)
    return None if value is None else str(value)


def _class_attr(factory: BackendFactory, name: str, default: Any) -> Any:
    # Entry-point plug-ins may register any callable; only classes declare these hooks.
    return getattr(factory, name, default)


def create_model_backend(name: str, model: str | None, options: Mapping[str, Any]) -> Backend:
    """Build backend ``name`` for ``model`` (its :attr:`~Backend.model_option`).

    An explicit model option in ``options`` wins over ``model``.
    """
    return build_backend(ModelBackendSpec(name, model, options=options))


__all__ = [
    "BUILTIN_BACKENDS",
    "Backend",
    "Generation",
    "Message",
    "ModelBackendSpec",
    "Prompt",
    "ScaleDistribution",
    "Usage",
    "available_backends",
    "backend_factory",
    "build_backend",
    "create_backend",
    "create_model_backend",
    "default_key_variable",
    "model_option",
    "resolve_options",
]
