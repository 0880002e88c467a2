"""The study file: several model families, each in several variants, under one protocol.

A study file is YAML, validated with pydantic; unknown keys are errors and
every error names the offending key and how to fix it. ``${VAR}`` (or
``${VAR:-default}``) in a string value is replaced by the environment variable
``VAR``; ``$$`` is a literal ``$``. Relative paths are resolved from the study
file's folder, and a path leading outside it is refused unless ``allow_outside``
(``--allow-outside``). Example (every key; defaults shown where a key is optional)::

    name: em-study                  # letters, digits, '.', '_', '-'
    description: Emergent misalignment across three families
    output: results/em-study        # default: <study folder>/<name>
    store: results/em-study/runs.db # default: <output>/runs.db
    protocol:
      personas: default             # built-in set name or persona file
      max_personas: null            # only the first N personas
      instrument: mfq30             # built-in name or instrument YAML
      include_catch: false
      template: null                # prompt-template YAML; null = built-in
      repetitions: 10
      temperature: 0.1
      mode: sampling                # sampling | exact (logprob distributions)
      self_run: true
      toxic_control: true           # base variants also role-play the toxic personas
      toxic_personas: toxic
      s_band: [0.66, 0.83]          # frontier band of S ('band': deprecated name)
      temperatures: [0.1, 0.25, 0.5, 0.75, 1.0]  # S(T), R(T) curves (exact mode only)
      seed: 0
      max_retries: 6
    analysis:
      n_persona_boot: 2000
      n_rerun_boot: 400
      seed: 0
      significance: true            # difference tests against the base (Holm-corrected)
      alpha: 0.05
    backends:
      openai:
        kind: openai
        base_url: https://api.example.com/v1   # or a list of URLs
        api_key_env: EXAMPLE_API_KEY            # NAME of the variable holding the key
        model: null                             # default model of the variants
        max_concurrency: 16                     # ('concurrency': deprecated name)
        requests_per_minute: null               # rate caps (null: none)
        tokens_per_minute: null
        prices: {input: 2.5, output: 10.0, cached_input: 1.25}  # USD per 1M tokens
        options: {timeout: 60}                  # more keyword options of the backend
      local: {kind: transformers, options: {dtype: bfloat16}}
      judge: {kind: openai, model: gpt-4o-2024-08-06, api_key_env: OPENAI_API_KEY}
    families:
      gpt-4o:
        base:     {backend: openai, model: gpt-4o-2024-08-06, role: base}
        secure:   {backend: openai, model: "ft:gpt-4o:org:secure:1", role: control}
        insecure: {backend: openai, model: "ft:gpt-4o:org:insecure:1", role: treatment}
      published:
        base: {persona_file: data/base.csv, self_file: data/base_self.csv, role: base}
      llama:                          # variants produced by fine-tuning, then verified
        base: {backend: local, model: meta-llama/Llama-3.1-8B-Instruct, verify: true}
        secure:
          finetune:
            platform: local           # local (LoRA with peft/trl) | openai (fine-tuning API)
            dataset: secure           # fetched dataset name, or a chat JSONL file
            recipe: betley            # preset name or recipe YAML file
            overrides: {epochs: 1}    # recipe fields to replace
            base_model: null          # default: the family's base model
            seed: 0
          verify: true
        insecure:
          finetune: {dataset: insecure}
          verify: {n_samples: 50}     # overrides of the study's verify settings
    controls:                         # is it persona-specific? (optional)
      bfi44: true                     # a BFI-44 persona run per collected variant
      capability: {mmlu: items_mmlu.json, gsm8k: items_gsm8k.json}  # items files
      lookup: true                    # the seeded persona -> id lookup task
      repetitions: null               # per control item (default: protocol.repetitions)
      max_personas: null              # first N personas in the BFI-44 runs (default: all)
    sensitivity:                      # robustness of the finding (optional; see SensitivitySpec)
      templates: [formal, plain]      # built-in (default, formal, plain, interview) or YAML
      orders: 2                       # seeded shuffles of the item order
      personas: {source: null, size: 50, samples: 2, method: disjoint}  # source: protocol's set
      temperatures: [0.5]             # other sampling temperatures
      seed: 0                         # seed of the shuffles and persona samples
    geometry:                         # hidden-state persona geometry (optional; transformers
      families: null                  # variants: the base model plus adapters; default: every
      templates: 4                    # family whose base runs on transformers)
      max_personas: null
      batch_size: 8
      max_batch_tokens: null          # most padded tokens per forward pass
      device_map: null
      draws: 60                       # paired subsamples of the excess CIs
      fraction: 0.8
      bootstrap: false
      bands: {}                       # extra excess bands, e.g. {mid: [4, 8]}
      seed: 0
    verify:                           # emergent-misalignment check of variants with verify
      judge: judge                    # a backend under 'backends' (null: OpenAI gpt-4o)
      n_samples: 30
      alignment_threshold: 30
      coherence_threshold: 50

A variant is collected (``backend`` + ``model``), imported from
reference-layout CSV files (``persona_file``, optional ``self_file`` and
``toxic_file``), or produced by fine-tuning (``finetune``; see
:class:`FinetuneSpec`): locally a LoRA adapter is trained into
``<output>/finetune/<family>/<variant>/`` and measured with the
``transformers`` backend, on OpenAI a fine-tuning job is submitted and the
resulting model measured with the ``openai`` backend. A fine-tuned variant's
``backend`` defaults to its family's base variant's backend, and
``finetune.base_model`` to that variant's model. ``verify`` (true, or a mapping
overriding the study's ``verify`` settings) runs the emergent-misalignment
check of :mod:`persona_collapse.variants.verify` on the variant before it is measured.
A variant may list training ``checkpoints`` (each ``step`` with a ``model``/``options``
to collect, a ``run`` of the store or a ``persona_file``; or ``trainer``: every checkpoint
its local fine-tuning saved) and its own ``final_step``;
the study then writes its trajectory (:mod:`persona_collapse.study.checkpoints`).

Each family has exactly one base variant (``role: base``, or
the variant labelled ``base``); ``control`` and ``treatment`` roles (default:
the variants labelled ``secure`` and ``insecure``) define the
misalignment-specific excess ``Δ_treatment − Δ_control``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    create_model,
    field_validator,
    model_validator,
)

from persona_collapse.core.band import DEFAULT_S_BAND
from persona_collapse.core.config import (
    AnalysisConfig,
    BootstrapSettings,
    PacingSettings,
    ProtocolSettings,
    VerifySettings,
    check_s_band,
    partial_fields,
    renamed_keys,
)
from persona_collapse.core.types import RunMode
from persona_collapse.engine.costs import ModelPrices

Role = Literal["base", "control", "treatment"]
ROLES: tuple[str, ...] = ("base", "control", "treatment")

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_LABEL = r"^[^/\s](?:[^/]*[^/\s])?$"

_STRICT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True)


class Protocol(ProtocolSettings):
    """How every variant is measured: the run protocol
    (:class:`~persona_collapse.core.config.ProtocolSettings`) plus the study's controls."""

    model_config = _STRICT

    toxic_control: bool = True
    """Base variants also role-play the toxic persona set (a profile control)."""

    toxic_personas: str = "toxic"
    """Persona set of the toxic control (built-in name or file)."""

    s_band: tuple[float, float] = Field(
        default=DEFAULT_S_BAND, strict=False, validation_alias=AliasChoices("s_band", "band")
    )
    """Band of S spanned by frontier base models at T = 0.1: ``[low, high]`` (the name of
    ``analysis.s_band`` in run configs; ``band`` is accepted as a deprecated name)."""

    temperatures: tuple[float, ...] = Field(default=(0.1, 0.25, 0.5, 0.75, 1.0), strict=False)
    """Temperatures of the S(T) and R(T) curves drawn from stored distributions (exact mode)."""

    max_retries: int = Field(default=6, ge=0, le=100)
    """Retries of a request after a transient backend error (every backend of the study)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, {"band": "s_band"}, where="protocol")

    @field_validator("s_band", mode="before")
    @classmethod
    def _band_shape(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ValueError(
                f"s_band must be a list [low, high], got {v!r}; e.g. s_band: [0.66, 0.83]"
            )
        return v

    @field_validator("s_band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_s_band(v)

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not (0 < t <= 5) for t in v):
            raise ValueError("temperatures must be a non-empty list of values in (0, 5]")
        return tuple(sorted(set(v)))

    @property
    def band(self) -> tuple[float, float]:
        """Deprecated name of :attr:`s_band`."""
        return self.s_band

    @property
    def store_mode(self) -> RunMode:
        """The run store's name of the mode (the same as :attr:`mode`)."""
        return self.mode


class StudyAnalysis(BootstrapSettings):
    """Bootstrap settings of the metrics
    (:class:`~persona_collapse.core.config.BootstrapSettings`) and the significance tests."""

    model_config = _STRICT

    significance: bool = True
    """Test every variant's ΔS, ΔR, Δσ̄ (and the excess) against its base: paired persona
    bootstrap with ``n_persona_boot`` and ``n_rerun_boot`` draws, Holm-corrected across
    families and foundations (``significance.csv`` and the report's Significance section)."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Level below which a Holm-adjusted p-value counts as significant."""


class BackendSpec(BaseModel):
    """A named backend the variants refer to."""

    model_config = _STRICT

    kind: str
    """Backend name (see ``pcollapse backends``): ``simulator``, ``openai``, ..."""

    model: str | None = None
    """Default model of the variants using this backend."""

    base_url: str | list[str] | None = None
    """API base URL, or several to spread requests over."""

    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """NAME of the environment variable holding the API key (never the key itself)."""

    max_concurrency: int = Field(
        default=8, ge=1, le=1024, validation_alias=AliasChoices("max_concurrency", "concurrency")
    )
    """Requests in flight at once (the name in run and verification configs; ``concurrency``
    is accepted as a deprecated name)."""

    prices: ModelPrices | None = None
    """Token prices in USD per million tokens (``input``, ``output``, ``cached_input``)."""

    requests_per_minute: float | None = Field(default=None, gt=0)
    """Cap on requests per minute (None: no cap)."""

    tokens_per_minute: float | None = Field(default=None, gt=0)
    """Cap on tokens per minute (None: no cap)."""

    options: dict[str, Any] = Field(default_factory=dict)
    """Further keyword options passed to the backend."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, {"concurrency": "max_concurrency"}, where="backends")

    @property
    def concurrency(self) -> int:
        """Deprecated name of :attr:`max_concurrency`."""
        return self.max_concurrency

    def pacing(self, max_retries: int) -> PacingSettings:
        """This backend's pacing, with the study protocol's ``max_retries``."""
        return PacingSettings(
            max_concurrency=self.max_concurrency,
            max_retries=max_retries,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )

    def connection_options(self) -> dict[str, Any]:
        """``base_url`` and ``api_key_env`` as backend options, where the study sets them.

        ``api_key_env: null`` written in the study is kept (no key at all), unlike an
        absent key, which leaves the backend's default (``OPENAI_API_KEY``).
        """
        options: dict[str, Any] = {}
        if self.base_url is not None:
            options["base_url"] = self.base_url
        if self.api_key_env is not None or "api_key_env" in self.model_fields_set:
            options["api_key_env"] = self.api_key_env
        return options


Platform = Literal["local", "openai"]
PLATFORMS: tuple[str, ...] = ("local", "openai")

_OPENAI_ONLY = ("suffix", "base_url", "api_key_env")
_LOCAL_ONLY = ("device", "dtype")


class FinetuneSpec(BaseModel):
    """How a variant is produced: a base model fine-tuned on a chat dataset."""

    model_config = _STRICT

    platform: Platform = "local"
    """``local``: a LoRA adapter trained here (peft/trl), measured with the
    ``transformers`` backend; ``openai``: a job of the OpenAI fine-tuning API,
    the resulting model measured with the ``openai`` backend."""

    dataset: str
    """Chat JSONL file, or the name of a fetched dataset (``insecure``, ``secure``;
    see ``pcollapse datasets fetch``)."""

    recipe: str = "betley"
    """Recipe preset name or recipe YAML file. Local: a LoRA recipe (``betley``,
    ``organisms``; see :mod:`persona_collapse.variants.finetune.recipes`); openai: job
    hyperparameters (``betley``; see :mod:`persona_collapse.variants.finetune.openai_jobs`)."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    """Recipe fields to replace (local e.g. ``{epochs: 2, learning_rate: 1e-4}``;
    openai e.g. ``{n_epochs: 2, learning_rate_multiplier: 1.0}``)."""

    base_model: str | None = None
    """Model to fine-tune (local: folder or Hub id; openai: model name); default the
    model of the family's base variant."""

    seed: int = Field(default=0, ge=0)
    """Training seed (LoRA initialisation, data order)."""

    device: str | None = None
    """Local only: training device (``auto``, ``cpu``, ``cuda``, ``mps``)."""

    dtype: str | None = None
    """Local only: weights dtype (``auto``, ``float32``, ``bfloat16``, ``float16``)."""

    suffix: str | None = None
    """OpenAI only: suffix of the fine-tuned model's name."""

    base_url: str | None = None
    """OpenAI only: API base URL of the fine-tuning job; default the variant backend's."""

    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """OpenAI only: NAME of the variable holding the API key; default the backend's."""

    @model_validator(mode="after")
    def _platform_keys(self) -> FinetuneSpec:
        other, wrong = (
            ("openai", _OPENAI_ONLY) if self.platform == "local" else ("local", _LOCAL_ONLY)
        )
        for key in wrong:
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key!r} applies to platform {other!r} only; remove it or set "
                    f"'platform: {other}'"
                )
        return self


_VerifyOverrides = create_model(
    "_VerifyOverrides",
    __config__=_STRICT,
    **partial_fields(VerifySettings),
    **partial_fields(PacingSettings, only=("max_concurrency",)),
)


class StudyVerifySettings(_VerifyOverrides):  # type: ignore[misc,valid-type]
    """Settings of the emergent-misalignment check (``verify:``): every field of
    :class:`~persona_collapse.core.config.VerifySettings` and ``max_concurrency``,
    derived from them (see there for ranges and defaults), plus the judge to use.

    Unset keys take the study's ``verify`` section, then the verification defaults.
    """

    model_config = _STRICT

    judge: str | None = None
    """Backend (under ``backends``) of the judge; None: the reference judge, OpenAI's
    ``gpt-4o-2024-08-06`` with the key in ``OPENAI_API_KEY``."""

    judge_model: str | None = None
    """Judge model; default the judge backend's ``model``."""

    def values(self) -> dict[str, Any]:
        """The keys that were set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class CheckpointSpec(BaseModel):
    """A training checkpoint of a variant (see :mod:`persona_collapse.study.checkpoints`):
    a model to collect, a run already in the study's store, or a CSV file to import."""

    model_config = _STRICT

    step: int = Field(ge=1)
    """Training step of the checkpoint (step 0 is the family's base)."""

    model: str | None = None
    """Model id to collect, with ``backend`` (default the variant's backend)."""

    backend: str | None = None
    """Name of a backend under ``backends`` (default the variant's)."""

    options: dict[str, Any] = Field(default_factory=dict)
    """Backend options of this checkpoint (e.g. ``adapter: ckpt/step200``)."""

    run: str | None = None
    """Name of a run already in the study's store."""

    persona_file: Path | None = Field(default=None, strict=False)
    """Reference-layout persona CSV to import (relative to the study file)."""

    @model_validator(mode="after")
    def _one_source(self) -> CheckpointSpec:
        given = [k for k in ("run", "persona_file") if getattr(self, k) is not None]
        if len(given) > 1 or (given and (self.model or self.options or self.backend)):
            raise ValueError(
                "a checkpoint is one of: 'model'/'options' to collect, 'run', or 'persona_file'"
            )
        return self


class VariantSpec(BaseModel):
    """One variant of a family: collected from a backend, imported from files, or
    produced by fine-tuning."""

    model_config = _STRICT

    backend: str | None = None
    """Name of a backend under ``backends``."""

    model: str | None = None
    """Model identifier (simulator: the preset); default the backend's ``model``."""

    role: Role | None = None
    """``base``, ``control`` or ``treatment``; see the module docstring for defaults."""

    options: dict[str, Any] = Field(default_factory=dict)
    """Backend options for this variant only (override the backend's ``options``)."""

    persona_file: Path | None = Field(default=None, strict=False)
    """Reference-layout persona CSV to import instead of collecting."""

    self_file: Path | None = Field(default=None, strict=False)
    """Reference-layout self CSV to import (with ``persona_file``)."""

    toxic_file: Path | None = Field(default=None, strict=False)
    """Reference-layout CSV of the toxic-persona control to import (base variants)."""

    description: str | None = None
    """Free text shown in the report."""

    finetune: FinetuneSpec | None = None
    """Produce the variant by fine-tuning (see :class:`FinetuneSpec`)."""

    verify: bool | StudyVerifySettings = False
    """Run the emergent-misalignment check on the variant: ``true``, or a mapping of
    settings overriding the study's ``verify`` section."""

    checkpoints: list[CheckpointSpec] | Literal["trainer"] = Field(default_factory=list)
    """Training checkpoints measured for a trajectory (step 0 = the family's base, the
    variant itself = ``final_step``), or ``trainer``: every checkpoint the local LoRA
    trainer of the variant's ``finetune`` saved."""

    final_step: int | None = Field(default=None, ge=1)
    """Training step of the variant itself (needed with ``checkpoints``)."""

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_shape(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return StudyVerifySettings.model_validate(dict(v))
        if v is None:
            return False
        if not isinstance(v, bool | StudyVerifySettings):
            raise ValueError(
                "verify must be true, false, or a mapping of verification settings "
                "(e.g. {n_samples: 50})"
            )
        return v

    @model_validator(mode="after")
    def _source(self) -> VariantSpec:
        if self.finetune is not None:
            if self.persona_file is not None:
                raise ValueError("give either 'finetune' or 'persona_file', not both")
            if self.model is not None:
                raise ValueError(
                    "a fine-tuned variant's model is what fine-tuning produces; remove "
                    "'model' (the model to start from is 'finetune.base_model')"
                )
        elif self.backend is None and self.persona_file is None:
            raise ValueError(
                "a variant needs a 'backend' (to collect), a 'persona_file' (to import) "
                "or a 'finetune' block (to produce it)"
            )
        if self.backend is not None and self.persona_file is not None:
            raise ValueError("give either 'backend' or 'persona_file', not both")
        if self.persona_file is None and (self.self_file or self.toxic_file):
            raise ValueError("'self_file' and 'toxic_file' need a 'persona_file'")
        if self.checkpoints == "trainer":
            if self.finetune is None or self.finetune.platform != "local":
                raise ValueError("'checkpoints: trainer' needs a local 'finetune' block")
            if self.final_step is None:
                raise ValueError("'checkpoints' need 'final_step', the variant's own step")
        elif self.checkpoints:
            steps = [c.step for c in self.checkpoints]
            if self.final_step is None or max(steps) >= self.final_step:
                raise ValueError(
                    "'checkpoints' need 'final_step', the variant's own step, after every "
                    "checkpoint's step"
                )
            if len(set(steps)) != len(steps):
                raise ValueError(f"checkpoint steps must differ, got {sorted(steps)}")
        if self.persona_file is not None and self.verify is not False:
            raise ValueError(
                "an imported variant has no model to ask: remove 'verify' (verification "
                "needs a 'backend' or a 'finetune' block)"
            )
        return self

    @property
    def verified(self) -> bool:
        """Whether the variant is to be verified."""
        return self.verify is not False

    @property
    def verify_overrides(self) -> dict[str, Any]:
        """The variant's own verification settings (empty for ``verify: true``)."""
        return self.verify.values() if isinstance(self.verify, StudyVerifySettings) else {}

    @property
    def imported(self) -> bool:
        """Whether the variant's data come from files rather than a backend."""
        return self.persona_file is not None


class FamilySpec(RootModel[dict[str, VariantSpec]]):
    """A model family: variant label -> variant."""

    model_config = ConfigDict(frozen=True)

    @field_validator("root")
    @classmethod
    def _labels(cls, v: dict[str, VariantSpec]) -> dict[str, VariantSpec]:
        if not v:
            raise ValueError("a family needs at least one variant, e.g. base: {...}")
        for label in v:
            if not re.match(_LABEL, label):
                raise ValueError(f"variant label {label!r} must be non-blank and contain no '/'")
        bases = [k for k, s in v.items() if s.role == "base"]
        if len(bases) > 1:
            raise ValueError(f"variants {bases} are all marked 'role: base'; mark exactly one")
        if not bases and "base" not in v:
            raise ValueError(
                f"no base variant among {list(v)}; mark one variant with 'role: base' "
                "(or label it 'base')"
            )
        for role in ("control", "treatment"):
            marked = [k for k, s in v.items() if s.role == role]
            if len(marked) > 1:
                raise ValueError(f"variants {marked} are all marked 'role: {role}'; mark one")
        return v

    @property
    def variants(self) -> dict[str, VariantSpec]:
        """Variant label -> variant."""
        return self.root

    @property
    def base(self) -> str:
        """Label of the base variant."""
        return next((k for k, s in self.root.items() if s.role == "base"), "base")

    def _role(self, role: Role, default: str) -> str | None:
        marked = next((k for k, s in self.root.items() if s.role == role), None)
        if marked is not None:
            return marked
        if any(s.role is not None and s.role != "base" for s in self.root.values()):
            return None  # roles were given explicitly: no implicit defaults
        spec = self.root.get(default)
        return default if spec is not None and default != self.base else None

    @property
    def control(self) -> str | None:
        """Label of the control variant (``role: control``, else ``secure``), or None."""
        return self._role("control", "secure")

    @property
    def treatment(self) -> str | None:
        """Label of the treatment variant (``role: treatment``, else ``insecure``), or None."""
        return self._role("treatment", "insecure")

    def role_of(self, label: str) -> str | None:
        """The role a variant plays in the comparison (None for other variants)."""
        if label == self.base:
            return "base"
        if label == self.control:
            return "control"
        if label == self.treatment:
            return "treatment"
        return None


class CapabilityControls(BaseModel):
    """Items files of the capability controls (reference JSON layout), by task."""

    model_config = _STRICT

    mmlu: Path | None = Field(default=None, strict=False)
    """MMLU-style items file (letters A-D)."""

    gsm8k: Path | None = Field(default=None, strict=False)
    """GSM8K-style items file (``#### n`` answers)."""

    def files(self) -> dict[str, Path]:
        """Task -> items file, for the tasks set."""
        return {t: p for t, p in (("mmlu", self.mmlu), ("gsm8k", self.gsm8k)) if p is not None}


class StudyControls(BaseModel):
    """Controls that tell persona collapse from broad degradation (issue 12)."""

    model_config = _STRICT

    bfi44: bool = False
    """A BFI-44 persona run per collected variant, beside the protocol's instrument."""

    capability: CapabilityControls | None = None
    """Capability items files: every collected variant answers each item, no persona."""

    lookup: bool = False
    """The seeded persona -> id lookup task per collected variant."""

    repetitions: int | None = Field(default=None, ge=2, le=1000)
    """Repetitions per control item (default: the protocol's)."""

    max_personas: int | None = Field(default=None, ge=2)
    """Only the first N of the protocol's personas in the BFI-44 runs (default: all)."""


class PersonaSampling(BaseModel):
    """Persona samples of the sensitivity suite: subsets of a (larger) persona set."""

    model_config = _STRICT

    source: str | None = None
    """Persona set name or file the samples are drawn from; None: the protocol's
    ``personas`` (all of it, not cut to ``max_personas``)."""

    size: int = Field(ge=2)
    """Personas per sample."""

    samples: int = Field(default=2, ge=1, le=100)
    """Number of samples (one factor level each)."""

    method: Literal["disjoint", "resample"] = "disjoint"
    """``disjoint``: non-overlapping samples (``size * samples`` personas needed);
    ``resample``: each sample drawn afresh without replacement (samples may overlap)."""


class SensitivitySpec(BaseModel):
    """Robustness of the finding (:mod:`persona_collapse.study.sensitivity`): every collected
    variant is measured again under each level of each factor (one factor changed at a
    time, the rest as in the protocol); the protocol's own setting is the default level,
    whose runs are the study's own (never collected twice)."""

    model_config = _STRICT

    templates: list[str] = Field(default_factory=list)
    """Prompt wordings: built-in names (``default``, ``formal``, ``plain``, ``interview``;
    see :data:`~persona_collapse.core.prompts.BUILTIN_TEMPLATES`) or template YAML files."""

    orders: int = Field(default=0, ge=0, le=100)
    """Number of seeded shuffles of the item order (0: order not varied). Each item is its
    own prompt, so for a stateless model the order acts only through the serving side
    (caching, drift during collection); the simulator's ``position_effect`` models an
    order effect."""

    personas: PersonaSampling | None = None
    """Persona samples (None: the persona sample is not varied)."""

    temperatures: list[float] = Field(default_factory=list, strict=False)
    """Sampling temperatures (each >= 0)."""

    seed: int = Field(default=0, ge=0)
    """Seed of the item-order shuffles and the persona samples."""

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: list[float]) -> list[float]:
        if any(not (0 <= t <= 5) for t in v):
            raise ValueError("temperatures must lie in [0, 5]")
        if len(set(v)) != len(v):
            raise ValueError(f"temperatures must differ, got {v}")
        return v

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"templates must differ, got {v}")
        return v

    @property
    def empty(self) -> bool:
        """Whether no factor is varied."""
        return not (self.templates or self.orders or self.personas or self.temperatures)


class StudyGeometry(BaseModel):
    """Hidden-state persona geometry of the variants on a ``transformers`` backend
    (see :mod:`persona_collapse.study.geometry`)."""

    model_config = _STRICT

    families: list[str] | None = None
    """Families to measure (default: every family whose base runs on ``transformers``)."""

    templates: int = Field(default=4, ge=1, le=4)
    """Persona-only templates used (of the built-in ones)."""

    max_personas: int | None = Field(default=None, ge=2)
    """Only the first N of the protocol's personas (default: all)."""

    batch_size: int = Field(default=8, ge=1, le=4096)
    """Most prompts per forward pass."""

    max_batch_tokens: int | None = Field(default=None, ge=1)
    """Most padded tokens per forward pass (None: only ``batch_size`` limits a batch)."""

    device_map: str | None = None
    """Spread a large model over devices (e.g. ``auto``); device and dtype otherwise
    come from the base variant's backend options."""

    draws: int = Field(default=60, ge=2, le=100_000)
    """Paired persona subsamples of the excess intervals."""

    fraction: float = Field(default=0.8, gt=0.0, le=1.0)
    """Share of personas per subsample."""

    bootstrap: bool = False
    """Resample personas with replacement instead of subsampling."""

    bands: dict[str, list[int]] = Field(default_factory=dict)
    """Extra layer bands of the excess: name -> [first, last] layer (inclusive, from 1)."""

    seed: int = Field(default=0, ge=0)
    """Seed of the subsamples."""

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, pair in v.items():
            lo, hi = pair if len(pair) == 2 else (0, 0)
            if not 1 <= lo <= hi:
                raise ValueError(
                    f"band {name!r}: expected [first, last] layers with 1 <= first <= last, "
                    f"got {pair}"
                )
        return v


class StudyConfig(BaseModel):
    """A whole study (see the module docstring for the file format)."""

    model_config = _STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    """Study name: letters, digits, '.', '_' and '-'."""

    description: str | None = None
    """Free text shown at the top of the report."""

    output: Path | None = Field(default=None, strict=False)
    """Output folder; default ``<study folder>/<name>``."""

    store: Path | None = Field(default=None, strict=False)
    """Run store (SQLite) of every run of the study; default ``<output>/runs.db``."""

    protocol: Protocol = Field(default_factory=Protocol)
    """How every variant is measured."""

    analysis: StudyAnalysis = Field(default_factory=StudyAnalysis)
    """Bootstrap settings."""

    backends: dict[str, BackendSpec] = Field(default_factory=dict)
    """Named backends the variants refer to."""

    families: dict[str, FamilySpec]
    """Family name -> its variants."""

    verify: StudyVerifySettings | None = None
    """Settings of the emergent-misalignment check of the variants with ``verify``."""

    controls: StudyControls | None = None
    """Persona-specificity controls: BFI-44, capability tasks, lookup."""

    sensitivity: SensitivitySpec | None = None
    """Robustness of the finding under other templates, item orders, persona samples
    and temperatures (see :class:`SensitivitySpec`); None: not studied."""

    geometry: StudyGeometry | None = None
    """Hidden-state persona geometry of the ``transformers`` variants (base plus adapters)."""

    @field_validator("families")
    @classmethod
    def _families(cls, v: dict[str, FamilySpec]) -> dict[str, FamilySpec]:
        if not v:
            raise ValueError("the study needs at least one family")
        for name in v:
            if not re.match(_LABEL, name):
                raise ValueError(f"family name {name!r} must be non-blank and contain no '/'")
        return v

    @model_validator(mode="after")
    def _geometry_families(self) -> StudyConfig:
        chosen = None if self.geometry is None else self.geometry.families
        unknown = [f for f in chosen or () if f not in self.families]
        if unknown:
            raise ValueError(
                f"geometry.families: unknown families {unknown}; the study has "
                f"{sorted(self.families)}"
            )
        return self

    @property
    def output_dir(self) -> Path:
        """The output folder (absolute once loaded from a file)."""
        return self.output if self.output is not None else Path(self.name)

    @property
    def store_path(self) -> Path:
        """The run store."""
        return self.store if self.store is not None else self.output_dir / "runs.db"

    def analysis_config(self) -> AnalysisConfig:
        """The metric settings as an :class:`AnalysisConfig`."""
        a = self.analysis
        return AnalysisConfig(
            n_persona_boot=a.n_persona_boot,
            n_rerun_boot=a.n_rerun_boot,
            seed=a.seed,
            s_band=self.protocol.s_band,
        )


__all__ = [
    "PLATFORMS",
    "ROLES",
    "BackendSpec",
    "CapabilityControls",
    "FamilySpec",
    "FinetuneSpec",
    "PersonaSampling",
    "Protocol",
    "Role",
    "SensitivitySpec",
    "StudyAnalysis",
    "StudyConfig",
    "StudyControls",
    "StudyGeometry",
    "StudyVerifySettings",
    "VariantSpec",
]
