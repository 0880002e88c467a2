"""Collecting everything a study needs into one run store, resumably.

Every variant gets a persona run (``<family>/<variant>``), a self run
(``<family>/<variant>/self``) when ``protocol.self_run`` is on, and base variants
a toxic-persona control (``<family>/<variant>/toxic``) when
``protocol.toxic_control`` is on. Collected variants ask their backend through
the collection engine, which only asks for what the store lacks; imported
variants import their files (a no-op when already imported). Everything that can
fail on bad input -- persona sets, instrument, template, files, API-key
variables, backend options -- is checked before the first model call.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from persona_collapse.backends import create_backend
from persona_collapse.backends.base import Backend
from persona_collapse.collect import CollectionSummary, RetryPolicy, make_run_spec, run_collection
from persona_collapse.errors import ConfigError, InputFileError, UserError
from persona_collapse.instrument import Instrument, load_instrument
from persona_collapse.personas import BUILTIN_PERSONA_SETS, PersonaSet, get_persona_set
from persona_collapse.prompts import DEFAULT_TEMPLATE, PromptTemplate, load_template
from persona_collapse.store.sqlite import RunSpec, RunStore
from persona_collapse.study.spec import LoadedStudy, StudyConfig

logger = logging.getLogger(__name__)

RunKindInStudy = Literal["persona", "self", "toxic"]

BackendBuilder = Callable[[str, dict[str, Any]], Backend]
"""Builds a backend from its kind and keyword options (default: :func:`create_backend`)."""


def _default_builder(kind: str, options: dict[str, Any]) -> Backend:
    return create_backend(kind, **options)


def run_name(family: str, label: str, kind: RunKindInStudy) -> str:
    """Name of a study run in the store: ``family/label``, ``.../self`` or ``.../toxic``."""
    base = f"{family}/{label}"
    return base if kind == "persona" else f"{base}/{kind}"


@dataclass(frozen=True)
class StudyInputs:
    """The study's protocol, resolved: what is asked and of whom.

    Attributes:
        instrument: The questionnaire.
        template: Prompt wording.
        personas: The persona set (cut to ``max_personas``).
        toxic: The toxic-control persona set (None when the control is off).
    """

    instrument: Instrument
    template: PromptTemplate
    personas: PersonaSet
    toxic: PersonaSet | None


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study.

    Attributes:
        family, label: The variant it belongs to.
        kind: ``persona``, ``self`` or ``toxic``.
        name: Run name in the store.
        personas: Persona texts asked (None for a self run).
        file: CSV file to import (imported variants), else None.
        backend: Name of the study backend (collected variants), else None.
        planned: Units the run needs: slots, or cells in logprobs mode (None for imports).
        stored_as: Name of the stored run holding its answers: ``name``, or the name of
            an earlier run of the study that asks the same model with the same
            settings (its answers are shared, not collected twice).
    """

    family: str
    label: str
    kind: RunKindInStudy
    name: str
    personas: PersonaSet | None
    file: Path | None
    backend: str | None
    planned: int | None
    stored_as: str = ""

    def __post_init__(self) -> None:
        if not self.stored_as:
            object.__setattr__(self, "stored_as", self.name)

    @property
    def shared(self) -> bool:
        """Whether the run reuses the answers of an earlier run of the study."""
        return self.stored_as != self.name


@dataclass(frozen=True)
class RunProgress:
    """Progress of one planned run, as stored.

    Attributes:
        run: The planned run.
        stored: Units stored (slots, cells in logprobs mode).
        failed: Stored slots without a valid rating.
        status: The store's status, or ``missing`` when the run was never started.
    """

    run: PlannedRun
    stored: int
    failed: int
    status: str

    @property
    def complete(self) -> bool:
        """Whether every planned unit is stored (imports: whether the run exists)."""
        if self.run.planned is None:
            return self.status != "missing"
        return self.stored >= self.run.planned


@dataclass(frozen=True)
class StudyCollection:
    """What :func:`collect_study` did.

    Attributes:
        store: The run store.
        summaries: Run name -> summary of this session's collection (collected runs).
        imported: Names of runs imported (or found already imported) from files.
    """

    store: Path
    summaries: Mapping[str, CollectionSummary]
    imported: tuple[str, ...]

    @property
    def requests(self) -> int:
        """Backend requests made in this session."""
        return sum(s.requests for s in self.summaries.values())


def _field_error(study: LoadedStudy, key: str, exc: UserError, fix: str) -> ConfigError:
    return ConfigError(f"{study.source}: field {key!r}: {exc}; {fix}")


def resolve_inputs(study: LoadedStudy) -> StudyInputs:
    """Resolve the protocol's instrument, template and persona sets.

    Raises:
        ConfigError: An unknown name or unreadable file (names the key and the fix).
    """
    proto = study.config.protocol
    fix_path = f"fix the name or the path (relative paths start at {study.root})"
    try:
        instrument = load_instrument(proto.instrument, include_catch=proto.include_catch)
    except UserError as exc:
        raise _field_error(study, "protocol.instrument", exc, fix_path) from None
    try:
        template = DEFAULT_TEMPLATE if proto.template is None else load_template(proto.template)
    except UserError as exc:
        raise _field_error(study, "protocol.template", exc, fix_path) from None
    try:
        personas = get_persona_set(proto.personas)
    except UserError as exc:
        raise _field_error(
            study, "protocol.personas", exc, f"use a built-in set (default, toxic) or {fix_path}"
        ) from None
    if proto.max_personas is not None:
        personas = personas.head(proto.max_personas)
    toxic = None
    if proto.toxic_control:
        try:
            toxic = get_persona_set(proto.toxic_personas)
        except UserError as exc:
            raise _field_error(
                study,
                "protocol.toxic_personas",
                exc,
                f"use the built-in set 'toxic' or {fix_path}",
            ) from None
    return StudyInputs(instrument=instrument, template=template, personas=personas, toxic=toxic)


def _identity(config: StudyConfig, family: str, label: str, kind: RunKindInStudy) -> str:
    """What makes a collected run: backend settings, model, options and run kind."""
    variant = config.families[family].variants[label]
    spec = config.backends[variant.backend or ""]
    return json.dumps(
        {
            "kind": spec.kind,
            "base_url": spec.base_url,
            "model": variant.model or spec.model,
            "options": {**spec.options, **variant.options},
            "run": kind,
        },
        sort_keys=True,
        default=str,
    )


def plan_study(study: LoadedStudy, inputs: StudyInputs) -> list[PlannedRun]:
    """Every run the study needs, in family, variant, kind order.

    Runs that ask the same model with the same settings (say, one base model in two
    families) share one stored run: the later ones have ``stored_as`` set.
    """
    owners: dict[str, str] = {}
    cfg = study.config
    proto = cfg.protocol
    n_items = len(inputs.instrument.active_items)
    per_cell = 1 if proto.mode == "logprobs" else proto.repetitions
    runs: list[PlannedRun] = []
    for family, fam in cfg.families.items():
        for label, variant in fam.variants.items():
            is_base = label == fam.base
            if variant.imported:
                files: list[tuple[RunKindInStudy, Path | None]] = [
                    ("persona", variant.persona_file),
                    ("self", variant.self_file),
                    ("toxic", variant.toxic_file),
                ]
                for kind, file in files:
                    if file is not None:
                        runs.append(
                            PlannedRun(
                                family,
                                label,
                                kind,
                                run_name(family, label, kind),
                                None,
                                file,
                                None,
                                None,
                            )
                        )
                continue
            wanted: list[tuple[RunKindInStudy, PersonaSet | None]] = [("persona", inputs.personas)]
            if proto.self_run:
                wanted.append(("self", None))
            if is_base and inputs.toxic is not None:
                wanted.append(("toxic", inputs.toxic))
            for kind, personas in wanted:
                n_personas = 1 if personas is None else len(personas)
                name = run_name(family, label, kind)
                owner = owners.setdefault(_identity(cfg, family, label, kind), name)
                runs.append(
                    PlannedRun(
                        family=family,
                        label=label,
                        kind=kind,
                        name=name,
                        personas=personas,
                        file=None,
                        backend=variant.backend,
                        planned=n_personas * n_items * per_cell,
                        stored_as=owner,
                    )
                )
    return runs


def backend_options(
    config: StudyConfig, family: str, label: str, instrument: Instrument, template: PromptTemplate
) -> tuple[str, dict[str, Any]]:
    """Backend kind and keyword options of a collected variant.

    The variant's ``model`` (else the backend's) becomes ``model``, or ``preset``
    for the simulator, which also gets the study's instrument and template.
    """
    variant = config.families[family].variants[label]
    if variant.backend is None:
        raise ConfigError(f"variant {family}/{label} is imported, it has no backend")
    spec = config.backends[variant.backend]
    options: dict[str, Any] = {**spec.options, **variant.options}
    model = variant.model or spec.model
    if spec.kind == "simulator":
        if model is not None:
            options.setdefault("preset", model)
        options.setdefault("instrument", instrument)
        options.setdefault("template", template)
    else:
        if model is not None:
            options.setdefault("model", model)
        if spec.base_url is not None:
            options.setdefault("base_url", spec.base_url)
        if spec.api_key_env is not None:
            options.setdefault("api_key_env", spec.api_key_env)
    return spec.kind, options


def model_label(config: StudyConfig, family: str, label: str) -> str:
    """The model label stored with a variant's runs."""
    variant = config.families[family].variants[label]
    if variant.imported:
        return variant.model or f"{family}/{label}"
    spec = config.backends[variant.backend or ""]
    return variant.model or spec.model or spec.kind


def check_credentials(study: LoadedStudy) -> None:
    """Every API-key variable a collected variant needs is set (before any model call).

    Raises:
        ConfigError: A variable is unset or empty (names the key and the fix).
    """
    cfg = study.config
    used = {v.backend for fam in cfg.families.values() for v in fam.variants.values() if v.backend}
    for name in sorted(used):
        var = cfg.backends[name].api_key_env
        if var is not None and not os.environ.get(var):
            raise ConfigError(
                f"{study.source}: field 'backends.{name}.api_key_env': environment variable "
                f"{var!r} is not set; export {var}=<your key> before running the study"
            )


def _check_files(study: LoadedStudy, plan: list[PlannedRun]) -> None:
    for run in plan:
        if run.file is None:
            continue
        key = f"families.{run.family}.{run.label}.{run.kind}_file"
        try:
            with run.file.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problem = (
                "file not found"
                if isinstance(exc, FileNotFoundError)
                else (f"cannot read file ({exc.strerror or exc})")
            )
            raise ConfigError(
                f"{study.source}: field {key!r}: {run.file}: {problem}; fix the path "
                f"(relative paths start at {study.root})"
            ) from None


def _specs(
    study: LoadedStudy,
    inputs: StudyInputs,
    plan: list[PlannedRun],
    builder: BackendBuilder,
) -> dict[str, tuple[Backend, RunSpec]]:
    """Build every collected run's backend and run spec (no model call yet)."""
    cfg = study.config
    proto = cfg.protocol
    out: dict[str, tuple[Backend, RunSpec]] = {}
    for run in plan:
        if run.backend is None or run.shared:
            continue
        kind, options = backend_options(
            cfg, run.family, run.label, inputs.instrument, inputs.template
        )
        try:
            backend = builder(kind, options)
        except UserError as exc:
            raise ConfigError(
                f"{study.source}: backend {run.backend!r} of variant {run.family}/{run.label}: "
                f"{exc}; fix 'backends.{run.backend}' or the variant's 'model'/'options'"
            ) from None
        spec = make_run_spec(
            backend=backend,
            instrument=inputs.instrument,
            personas=None if run.personas is None else list(run.personas),
            template=inputs.template,
            name=run.name,
            model=model_label(cfg, run.family, run.label),
            temperature=proto.temperature,
            n_repetitions=proto.repetitions,
            seed=proto.seed,
            mode=proto.store_mode,
        )
        out[run.name] = (backend, spec)
    return out


def imported_persona_texts(
    study: LoadedStudy, inputs: StudyInputs, kind: RunKindInStudy
) -> list[str] | None:
    """Persona texts stored with an imported run: the protocol's persona file (all of it,
    since file ids index it), or the toxic set for a toxic file; None for built-in sets,
    which cannot be assumed to be the texts an imported file was collected with."""
    proto = study.config.protocol
    if kind == "self":
        return None
    name = proto.toxic_personas if kind == "toxic" else proto.personas
    if name in BUILTIN_PERSONA_SETS and kind == "persona":
        return None
    if kind == "toxic":
        return None if inputs.toxic is None else list(inputs.toxic)
    return list(get_persona_set(name))


def prepare_study(study: LoadedStudy) -> tuple[StudyInputs, list[PlannedRun]]:
    """Resolve inputs and plan the runs; checks files (not credentials)."""
    inputs = resolve_inputs(study)
    plan = plan_study(study, inputs)
    _check_files(study, plan)
    return inputs, plan


def collect_study(
    study: LoadedStudy,
    *,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
) -> StudyCollection:
    """Collect (or import) every run of a study into its run store; resumes.

    Runs already complete make no model call. Every input, file, API-key
    variable and backend option is checked before the first call.

    Args:
        study: The loaded study.
        backend_builder: Builds backends (override to inject one in tests).
        progress: Show a progress bar per run.

    Raises:
        ConfigError: Bad input, before anything is collected.
        BackendError: A backend failed; what was collected is stored, rerun to resume.
    """
    cfg = study.config
    inputs, plan = prepare_study(study)
    check_credentials(study)
    jobs = _specs(study, inputs, plan, backend_builder or _default_builder)
    retry = RetryPolicy(max_retries=cfg.protocol.max_retries)
    summaries: dict[str, CollectionSummary] = {}
    imported: list[str] = []
    with RunStore.open(cfg.store_path) as store:
        for run in plan:
            if run.file is not None:
                texts = imported_persona_texts(study, inputs, run.kind)
                store.import_csv(
                    run.file,
                    name=run.name,
                    kind="self" if run.kind == "self" else "persona",
                    model=model_label(cfg, run.family, run.label),
                    personas=texts,
                    temperature=cfg.protocol.temperature,
                    instrument=inputs.instrument,
                )
                imported.append(run.name)
                continue
            if run.shared:
                continue
            backend, spec = jobs[run.name]
            backend_spec = cfg.backends[run.backend or ""]
            logger.info("study %s: collecting %s", cfg.name, run.name)
            summaries[run.name] = run_collection(
                store,
                spec,
                backend,
                None if run.personas is None else list(run.personas),
                inputs.instrument,
                inputs.template,
                max_concurrency=backend_spec.concurrency,
                retry=retry,
                progress=progress,
                requests_per_minute=backend_spec.requests_per_minute,
                tokens_per_minute=backend_spec.tokens_per_minute,
                prices=backend_spec.prices,
            )
    return StudyCollection(store=cfg.store_path, summaries=summaries, imported=tuple(imported))


def study_status(study: LoadedStudy) -> list[RunProgress]:
    """Stored progress of every planned run (reads the store only; no model call)."""
    _, plan = prepare_study(study)
    path = study.config.store_path
    if not path.is_file():
        return [RunProgress(run, 0, 0, "missing") for run in plan]
    out: list[RunProgress] = []
    with RunStore.open(path, create=False) as store:
        by_name = {r.name: r for r in store.list_runs()}
        for run in plan:
            record = by_name.get(run.stored_as)
            if record is None:
                out.append(RunProgress(run, 0, 0, "missing"))
                continue
            counts = store.counts(record.run_id)
            stored = counts.distributions if record.mode == "exact" else counts.slots
            out.append(RunProgress(run, stored, counts.failed, record.status))
    return out


def require_store(study: LoadedStudy) -> Path:
    """The study's run store path; a clear error when nothing was collected yet."""
    path = study.config.store_path
    if not path.is_file():
        raise InputFileError(
            path, "run store not found; run 'pcollapse study run' on the study file first"
        )
    return path


__all__ = [
    "BackendBuilder",
    "PlannedRun",
    "RunProgress",
    "StudyCollection",
    "StudyInputs",
    "backend_options",
    "check_credentials",
    "collect_study",
    "imported_persona_texts",
    "model_label",
    "plan_study",
    "prepare_study",
    "require_store",
    "resolve_inputs",
    "run_name",
    "study_status",
]
