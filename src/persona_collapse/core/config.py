"""The typed configuration of a run, shared by Python, YAML files and the CLI.

Every field has a documented default. ``RunConfig.from_yaml(path)`` loads a
YAML file with the same keys; the CLI maps its options onto the same fields.
Unknown keys are errors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from persona_collapse.core.errors import ConfigError, format_validation_error
from persona_collapse.core.files import FilePaths
from persona_collapse.core.personas import PersonaSet, get_persona_set
from persona_collapse.core.pricing import ModelPrices
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, PromptTemplate, load_template
from persona_collapse.core.types import RunMode
from persona_collapse.core.yamlio import load_yaml_mapping

logger = logging.getLogger(__name__)

DEPRECATED_MODES = {"logprobs": "exact"}
"""Old names of a collection mode -> the name used everywhere now."""


def canonical_mode(value: Any, *, key: str = "mode") -> Any:
    """The current name of a collection mode; an old name is accepted with a warning."""
    if isinstance(value, str) and value in DEPRECATED_MODES:
        new = DEPRECATED_MODES[value]
        logger.warning("%s: %r is deprecated; write %r (same meaning)", key, value, new)
        return new
    return value


class FileConfig(BaseModel):
    """Base of the configurations users write as YAML: validation with one-line errors."""

    #: What the file is, in error messages ("configuration").
    yaml_what: ClassVar[str] = "configuration"

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "config") -> Self:
        """Validate plain data; errors name the source and the offending field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {format_validation_error(exc)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, allow_outside: bool = False, **overrides: Any) -> Self:
        """Load a YAML file (keys as the fields); ``overrides`` that are not None win.

        Paths in the file are resolved from its folder and must stay inside it unless
        ``allow_outside``; ``overrides`` come from the command line and are taken as given.

        Raises:
            InputFileError: The file is missing or not YAML.
            ConfigError: An invalid value, or a path leading outside the file's folder.
        """
        p = Path(path)
        data = load_yaml_mapping(p, what=cls.yaml_what)
        given = {k: v for k, v in overrides.items() if v is not None}
        paths = FilePaths(p.resolve().parent, str(p), allow_outside)
        # A value the command line replaces is neither resolved nor checked.
        data = cls._resolve_file_paths({k: v for k, v in data.items() if k not in given}, paths)
        data.update(given)
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def _resolve_file_paths(cls, data: dict[str, Any], paths: FilePaths) -> dict[str, Any]:
        """``data`` with the paths it names resolved (subclasses name their path fields)."""
        return data


class PacingSettings(BaseModel):
    """How requests to a backend are paced: concurrency, retries and rate caps.

    Composed into :class:`RunConfig`, the verification config and a study's backends
    (same keys everywhere); the engine's :class:`~persona_collapse.engine.pacing.Pacer`
    is built from it.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    max_concurrency: int = Field(default=8, ge=1, le=1024)
    """Requests in flight at once."""

    max_retries: int = Field(default=6, ge=0, le=100)
    """Retries of a request after a transient backend error (rate limit, timeout, 5xx)."""

    adaptive_concurrency: bool = True
    """Lower the requests in flight when the server rate-limits (429, Retry-After), then recover."""

    requests_per_minute: float | None = Field(default=None, gt=0)
    """Cap on requests sent per minute (all runs of this config); None: no cap."""

    tokens_per_minute: float | None = Field(default=None, gt=0)
    """Cap on tokens (prompt + completion) per minute; None: no cap."""

    @property
    def pacing(self) -> PacingSettings:
        """Just the pacing settings of this (possibly larger) configuration."""
        return PacingSettings(**{name: getattr(self, name) for name in PacingSettings.model_fields})


class AnalysisConfig(BaseModel):
    """How metrics are computed from collected ratings."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    n_persona_boot: int = Field(default=2000, ge=1)
    """Persona-bootstrap draws for standard errors (reference: 2000)."""

    n_rerun_boot: int = Field(default=400, ge=1)
    """Rerun-bootstrap draws, resampling each cell's valid ratings (reference: 400)."""

    seed: int = Field(default=0, ge=0)
    """Seed of the bootstrap draws; recorded with every result."""

    s_band: tuple[float, float] = Field(default=(0.66, 0.83), strict=False)
    """Band of susceptibility S spanned by frontier base models at T = 0.1."""

    @field_validator("s_band")
    @classmethod
    def _ordered_band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError("lower bound must be below upper bound")
        return v


class RunConfig(PacingSettings, FileConfig):
    """One collection run: which model answers which personas, and how."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    name: str | None = None
    """Run label in the store; default ``<model>`` (self runs get ``/self`` appended)."""

    backend: str = "simulator"
    """Backend name (see ``pcollapse backends``)."""

    model: str | None = None
    """Model label or identifier passed to the backend; simulator: the preset name."""

    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword options for the backend (never secrets: keys come from the environment)."""

    personas: str = "default"
    """Built-in persona set name (``default``, ``toxic``) or path to a persona file."""

    max_personas: int | None = Field(default=None, ge=1)
    """Use only the first N personas (quick trials); None uses all."""

    instrument: str = "mfq30"
    """Built-in instrument name or path to an instrument YAML file."""

    include_catch: bool = False
    """Also ask the instrument's catch items."""

    template: str | None = None
    """Path to a prompt-template YAML file; None uses the built-in templates."""

    persona_run: bool = True
    """Collect the persona role-play run."""

    self_run: bool = True
    """Collect the self run (items asked with no persona)."""

    repetitions: int = Field(default=10, ge=1, le=1000)
    """Repetitions n of every persona-item pair (reference: 10)."""

    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    """Sampling temperature (reference: 0.1)."""

    mode: RunMode = "sampling"
    """``sampling`` draws n answers per cell; ``exact`` stores each cell's rating distribution."""

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_alias(cls, v: Any) -> Any:
        return canonical_mode(v)

    prices: ModelPrices | None = None
    """Token prices of the model (USD per 1M tokens) for live and stored cost estimates."""

    seed: int = Field(default=0, ge=0)
    """Run seed: request seeds derive from it, so a resumed run repeats an uninterrupted one."""

    store: Path = Field(default=Path("pcollapse-runs.db"), strict=False)
    """SQLite run store the answers are written to."""

    progress: bool = True
    """Show a progress bar."""

    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    """Metric settings."""

    @classmethod
    def _resolve_file_paths(cls, data: dict[str, Any], paths: FilePaths) -> dict[str, Any]:
        from persona_collapse.core.instrument import BUILTIN_INSTRUMENTS
        from persona_collapse.core.personas import BUILTIN_PERSONA_SETS

        builtins: dict[str, tuple[str, ...]] = {
            "personas": tuple(BUILTIN_PERSONA_SETS),
            "instrument": tuple(BUILTIN_INSTRUMENTS),
            "template": (),
        }
        out = dict(data)
        if isinstance(out.get("store"), str):
            out["store"] = paths.path(out["store"], "store")
        for key, names in builtins.items():
            if isinstance(out.get(key), str):
                out[key] = paths.name_or_path(out[key], key, names)
        options = out.get("backend_options")
        if isinstance(options, dict) and isinstance(options.get("adapter"), str):
            adapter = paths.existing(options["adapter"], "backend_options.adapter")
            out["backend_options"] = {**options, "adapter": adapter}
        return out

    @model_validator(mode="after")
    def _something_to_do(self) -> RunConfig:
        if not (self.persona_run or self.self_run):
            raise ValueError("persona_run and self_run are both false: nothing to collect")
        return self

    @property
    def model_label(self) -> str:
        """The model label: ``model``, else the simulator preset, else the backend name."""
        if self.model:
            return self.model
        preset = self.backend_options.get("preset")
        return str(preset) if preset else self.backend


def resolve_personas(config: RunConfig) -> PersonaSet:
    """The persona set a config names, cut to ``max_personas``."""
    personas = get_persona_set(config.personas)
    if config.max_personas is not None:
        personas = personas.head(config.max_personas)
    return personas


def resolve_template(config: RunConfig) -> PromptTemplate:
    """The prompt template a config names (built-in when ``template`` is None)."""
    return DEFAULT_TEMPLATE if config.template is None else load_template(config.template)
