"""Loading a study: YAML with ``${VAR}`` expansion, one-line errors, path resolution,
and the cross-checks between families, backends, fine-tuning and verification that a
single model cannot make on its own (see :mod:`persona_collapse.study.spec` for the
study file's vocabulary).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    RootModel,
    ValidationError,
)

from persona_collapse.core.errors import ConfigError, format_validation_error
from persona_collapse.core.files import FilePaths
from persona_collapse.core.yamlio import load_yaml_mapping
from persona_collapse.study.spec import (
    FamilySpec,
    FinetuneSpec,
    StudyConfig,
    StudyVerifySettings,
    VariantSpec,
)

_ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LoadedStudy:
    """A validated study and where it came from.

    Attributes:
        config: The study, with paths made absolute.
        source: The study file (or a label for studies built in code).
        root: Folder relative paths were resolved from.
    """

    config: StudyConfig
    source: str
    root: Path


def expand_env(value: Any, *, source: str, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value`` (``$$`` = ``$``).

    Raises:
        ConfigError: A variable without default is not set (names the key).
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            raise ConfigError(
                f"{source}: field {path or '(top level)'!r}: environment variable {name!r} "
                f"is not set; set it (export {name}=...) or write ${{{name}:-default}}"
            )

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, source=source, path=f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_env(v, source=source, path=f"{path}.{i}" if path else str(i))
            for i, v in enumerate(value)
        ]
    return value


def _unwrap(annotation: Any) -> Any:
    """The model type inside ``X | None`` (or the annotation itself)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else args[0]
    return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` in a study file (None if not a model)."""
    current: Any = StudyConfig
    parts = list(loc)
    while parts:
        if isinstance(current, type) and issubclass(current, RootModel):
            current = current.model_fields["root"].annotation
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(parts.pop(0)))
            if field is None:
                return None
            current = _unwrap(field.annotation)
            continue
        if typing.get_origin(current) is dict:
            parts.pop(0)  # a free key (family name, backend name, variant label)
            current = _unwrap(typing.get_args(current)[1])
            continue
        return None
    if isinstance(current, type) and issubclass(current, RootModel):
        return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _keys_at(loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys a study file allows at ``loc`` (None where that is not one model)."""
    model = _model_at(loc)
    return sorted(model.model_fields) if model is not None else None


def _resolve_finetune(spec: FinetuneSpec | None, paths: FilePaths, key: str) -> FinetuneSpec | None:
    if spec is None:
        return None
    from persona_collapse.variants.finetune.datasets import KNOWN_DATASETS
    from persona_collapse.variants.finetune.recipes import RECIPES

    update: dict[str, Any] = {
        "dataset": paths.name_or_path(spec.dataset, f"{key}.dataset", tuple(KNOWN_DATASETS)),
        "recipe": paths.name_or_path(spec.recipe, f"{key}.recipe", tuple(RECIPES)),
    }
    if spec.base_model is not None and spec.platform == "local":
        update["base_model"] = paths.existing(spec.base_model, f"{key}.base_model")
    return spec.model_copy(update=update)


_LOCAL_KINDS = frozenset({"transformers"})
"""Backend kinds whose ``model`` may be a local folder."""

_PATH_OPTIONS = ("adapter",)
"""Backend options naming a local file or folder."""


def _resolve_options(options: dict[str, Any], paths: FilePaths, key: str) -> dict[str, Any]:
    return {
        k: paths.existing(v, f"{key}.{k}") if k in _PATH_OPTIONS and isinstance(v, str) else v
        for k, v in options.items()
    }


def resolve_paths(
    config: StudyConfig,
    root: Path,
    *,
    source: str = "study",
    allow_outside: bool = False,
) -> StudyConfig:
    """A copy of ``config`` whose paths are absolute (relative ones taken from ``root``).

    Raises:
        ConfigError: A path leads outside ``root`` and ``allow_outside`` is false.
    """
    from persona_collapse.core.instrument import BUILTIN_INSTRUMENTS
    from persona_collapse.core.personas import BUILTIN_PERSONA_SETS

    paths = FilePaths(root, source, allow_outside)
    personas_builtin = tuple(BUILTIN_PERSONA_SETS)
    proto = config.protocol
    protocol = proto.model_copy(
        update={
            "personas": paths.name_or_path(proto.personas, "protocol.personas", personas_builtin),
            "toxic_personas": paths.name_or_path(
                proto.toxic_personas, "protocol.toxic_personas", personas_builtin
            ),
            "instrument": paths.name_or_path(
                proto.instrument, "protocol.instrument", tuple(BUILTIN_INSTRUMENTS)
            ),
            "template": None
            if proto.template is None
            else paths.name_or_path(proto.template, "protocol.template", ()),
        }
    )
    # A local model folder named relative to the study file is found from anywhere.
    backends = {
        name: b.model_copy(
            update={
                "model": paths.existing(b.model, f"backends.{name}.model")
                if b.kind in _LOCAL_KINDS and b.model is not None
                else b.model,
                "options": _resolve_options(b.options, paths, f"backends.{name}.options"),
            }
        )
        for name, b in config.backends.items()
    }

    def local_model(v: VariantSpec, key: str) -> str | None:
        backend = config.backends.get(v.backend or "")
        if v.model is None or backend is None or backend.kind not in _LOCAL_KINDS:
            return v.model
        return paths.existing(v.model, key)

    families = {
        name: FamilySpec(
            {
                label: v.model_copy(
                    update={
                        "model": local_model(v, f"families.{name}.{label}.model"),
                        "options": _resolve_options(
                            v.options, paths, f"families.{name}.{label}.options"
                        ),
                        **{
                            field: paths.optional(
                                getattr(v, field), f"families.{name}.{label}.{field}"
                            )
                            for field in ("persona_file", "self_file", "toxic_file")
                        },
                        "finetune": _resolve_finetune(
                            v.finetune, paths, f"families.{name}.{label}.finetune"
                        ),
                    }
                )
                for label, v in fam.variants.items()
            }
        )
        for name, fam in config.families.items()
    }
    output = paths.optional(config.output, "output") or root / config.name
    controls = config.controls
    if controls is not None and controls.capability is not None:
        cap = controls.capability
        controls = controls.model_copy(
            update={
                "capability": cap.model_copy(
                    update={
                        task: paths.path(path, f"controls.capability.{task}")
                        for task, path in cap.files().items()
                    }
                )
            }
        )
    sensitivity = config.sensitivity
    if sensitivity is not None:
        sampling = sensitivity.personas
        if sampling is not None and sampling.source is not None:
            key = "sensitivity.personas.source"
            src = paths.name_or_path(sampling.source, key, personas_builtin)
            sampling = sampling.model_copy(update={"source": src})
        templates = [
            paths.name_or_path(t, f"sensitivity.templates[{i}]", ())
            for i, t in enumerate(sensitivity.templates)
        ]
        sensitivity = sensitivity.model_copy(update={"templates": templates, "personas": sampling})
    return config.model_copy(
        update={
            "sensitivity": sensitivity,
            "controls": controls,
            "protocol": protocol,
            "backends": backends,
            "families": families,
            "output": output,
            "store": paths.optional(config.store, "store"),
        }
    )


def _check_references(config: StudyConfig, source: str) -> None:
    """Cross-key checks pydantic cannot do alone: backend names and kinds."""
    from persona_collapse.backends import available_backends

    kinds = available_backends()
    for name, backend in config.backends.items():
        if backend.kind not in kinds:
            close = difflib.get_close_matches(backend.kind, kinds, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"known kinds: {', '.join(kinds)}"
            raise ConfigError(
                f"{source}: field 'backends.{name}.kind': unknown backend kind "
                f"{backend.kind!r}; {hint}"
            )
    for family, fam in config.families.items():
        for label, variant in fam.variants.items():
            if variant.backend is None:
                continue  # imported, or fine-tuned with the base variant's backend
            if variant.backend not in config.backends:
                defined = list(config.backends)
                close = difflib.get_close_matches(variant.backend, defined, n=1, cutoff=0.5)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else "define it under 'backends'"
                    + (f" (defined: {', '.join(defined)})" if defined else "")
                )
                raise ConfigError(
                    f"{source}: field 'families.{family}.{label}.backend': unknown backend "
                    f"{variant.backend!r}; {hint}"
                )


_MEASURED_WITH = {"local": "transformers", "openai": "openai"}
"""Backend kind that measures a variant fine-tuned on each platform."""

OPENAI_JOBS_MODULE = "persona_collapse.variants.finetune.openai_jobs"


def recipe_getter(platform: str) -> Callable[..., BaseModel] | None:
    """The recipe resolver of a platform: ``get_recipe`` (LoRA recipes, local) or
    ``get_openai_recipe`` (job hyperparameters, openai); None when the OpenAI
    fine-tuning module is not installed."""
    if platform == "local":
        from persona_collapse.variants.finetune.recipes import get_recipe

        return get_recipe
    try:
        module = importlib.import_module(OPENAI_JOBS_MODULE)
    except ImportError as exc:
        if exc.name == OPENAI_JOBS_MODULE:
            return None
        raise
    getter: Callable[..., BaseModel] = module.get_openai_recipe
    return getter


def _complete_finetune(config: StudyConfig, source: str) -> StudyConfig:
    """Fill in the defaults of fine-tuned variants (backend and base model from the
    family's base variant) and check the backend kind and the recipe."""
    from persona_collapse.core.errors import UserError

    families: dict[str, FamilySpec] = {}
    for family, fam in config.families.items():
        base = fam.variants.get(fam.base)
        # The base variant lends its backend and model when it is collected as is.
        usable = base if base is not None and not base.imported and base.finetune is None else None
        variants: dict[str, VariantSpec] = {}
        for label, variant in fam.variants.items():
            ft = variant.finetune
            if ft is None:
                variants[label] = variant
                continue
            key = f"families.{family}.{label}"
            backend = variant.backend
            if backend is None and usable is not None and label != fam.base:
                backend = usable.backend
            wanted = _MEASURED_WITH[ft.platform]
            if backend is None:
                raise ConfigError(
                    f"{source}: field '{key}.backend': a fine-tuned variant is measured with "
                    f"a {wanted!r} backend; add 'backend: <name>' naming one under 'backends'"
                )
            kind = config.backends[backend].kind
            if kind != wanted:
                given = "" if variant.backend is not None else " (taken from the base variant)"
                raise ConfigError(
                    f"{source}: field '{key}.backend': platform {ft.platform!r} is measured "
                    f"with a {wanted!r} backend, but backend {backend!r}{given} is {kind!r}; "
                    f"name a {wanted!r} backend"
                )
            base_model = ft.base_model
            if base_model is None and usable is not None and label != fam.base:
                base_model = usable.model or config.backends[usable.backend or ""].model
            if base_model is None:
                raise ConfigError(
                    f"{source}: field '{key}.finetune.base_model': no model to fine-tune; "
                    "set it (the default, the base variant's model, is not available)"
                )
            get = recipe_getter(ft.platform)
            for field, overrides in (("recipe", None), ("overrides", ft.overrides)):
                if get is None:
                    break  # platform unavailable: reported when the study runs
                try:
                    get(ft.recipe, overrides)
                except UserError as exc:
                    raise ConfigError(f"{source}: field '{key}.finetune.{field}': {exc}") from None
            variants[label] = variant.model_copy(
                update={
                    "backend": backend,
                    "finetune": ft.model_copy(update={"base_model": base_model}),
                }
            )
        families[family] = FamilySpec(variants)
    return config.model_copy(update={"families": families})


def verify_config_values(config: StudyConfig, family: str, label: str) -> dict[str, Any]:
    """A verified variant's settings for :class:`~persona_collapse.variants.verify.VerifyConfig`:
    the study's ``verify`` section overridden by the variant's own (``judge`` left out)."""
    study_level = config.verify.values() if config.verify is not None else {}
    merged = {**study_level, **config.families[family].variants[label].verify_overrides}
    merged.pop("judge", None)
    merged.pop("judge_model", None)
    return merged


def _check_verify(config: StudyConfig, source: str) -> None:
    """The judge backend exists and every verified variant's settings are valid."""
    from persona_collapse.variants.verify import VerifyConfig

    judges: list[tuple[str, str]] = []
    if config.verify is not None and config.verify.judge is not None:
        judges.append(("verify.judge", config.verify.judge))
    for family, fam in config.families.items():
        for label, variant in fam.variants.items():
            if isinstance(variant.verify, StudyVerifySettings) and variant.verify.judge is not None:
                judges.append((f"families.{family}.{label}.verify.judge", variant.verify.judge))
    for key, name in judges:
        if name not in config.backends:
            defined = list(config.backends)
            close = difflib.get_close_matches(name, defined, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else "define it under 'backends'"
            raise ConfigError(f"{source}: field {key!r}: unknown backend {name!r}; {hint}")
    if config.verify is not None:
        # The study-level settings are checked even when no variant uses them yet.
        study_level = {
            k: v for k, v in config.verify.values().items() if k not in ("judge", "judge_model")
        }
        try:
            VerifyConfig.model_validate(study_level)
        except ValidationError as exc:
            raise ConfigError(
                format_validation_error(exc, source=source, prefix=("verify",), keys_at=_keys_at)
            ) from None
    for family, fam in config.families.items():
        for label, variant in fam.variants.items():
            if not variant.verified:
                continue
            try:
                VerifyConfig.model_validate(verify_config_values(config, family, label))
            except ValidationError as exc:
                field = str(exc.errors()[0]["loc"][0])
                own = field in variant.verify_overrides
                where = ("families", family, label, "verify") if own else ("verify",)
                raise ConfigError(
                    format_validation_error(exc, source=source, prefix=where, keys_at=_keys_at)
                ) from None


def _check_controls(config: StudyConfig, source: str) -> None:
    """Validate the capability items files now, so a bad one fails before any run."""
    from persona_collapse.core.controls import load_items
    from persona_collapse.core.errors import InputFileError

    controls = config.controls
    if controls is None or controls.capability is None:
        return
    for task, path in controls.capability.files().items():
        try:
            load_items(path, task=task)  # type: ignore[arg-type]
        except InputFileError as exc:
            raise ConfigError(f"{source}: controls.capability.{task}: {exc}") from None


def study_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "study",
    root: str | Path = ".",
    allow_outside: bool = False,
) -> LoadedStudy:
    """Validate plain data as a study (environment variables expanded, paths resolved).

    Args:
        data: The parsed study file.
        source: Name used in error messages (the file path).
        root: Folder relative paths are resolved from; paths must stay inside it.
        allow_outside: Accept paths leading outside ``root`` (``--allow-outside``).

    Raises:
        ConfigError: Invalid content (names the key and the fix).
    """
    expanded = expand_env(dict(data), source=source)
    try:
        config = StudyConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, keys_at=_keys_at)) from None
    _check_references(config, source)
    base = Path(root).resolve()
    resolved = _complete_finetune(
        resolve_paths(config, base, source=source, allow_outside=allow_outside), source
    )
    _check_verify(resolved, source)
    _check_controls(resolved, source)
    return LoadedStudy(config=resolved, source=source, root=base)


def load_study(path: str | Path, *, allow_outside: bool = False) -> LoadedStudy:
    """Load and validate a study file (its paths must stay inside its folder unless
    ``allow_outside``).

    Raises:
        InputFileError: The file is missing, unreadable or not YAML.
        ConfigError: Invalid content (names the key and the fix).
    """
    p = Path(path)
    data = load_yaml_mapping(p, what="study")
    return study_from_mapping(
        data, source=str(p), root=p.resolve().parent, allow_outside=allow_outside
    )


__all__ = [
    "OPENAI_JOBS_MODULE",
    "LoadedStudy",
    "expand_env",
    "load_study",
    "recipe_getter",
    "resolve_paths",
    "study_from_mapping",
    "verify_config_values",
]
