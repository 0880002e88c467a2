"""Producing, verifying and measuring everything a study needs, resumably.

Order of work (:func:`collect_study`):

1. *produce*: variants with a ``finetune`` block are fine-tuned (a LoRA adapter
   trained here, or an OpenAI job submitted and waited for), or their finished
   result reused (:mod:`~persona_collapse.study.produce`);
2. *verify*: variants with ``verify`` get the emergent-misalignment check
   (:mod:`~persona_collapse.study.verification`);
3. *measure*: every variant gets a persona run (``<family>/<variant>``), a self run
   (``<family>/<variant>/self``) when ``protocol.self_run`` is on, and base
   variants a toxic-persona control (``<family>/<variant>/toxic``) when
   ``protocol.toxic_control`` is on. Collected variants ask their backend through
   the collection engine, which only asks for what the store lacks; imported
   variants import their files (a no-op when already imported).

Each step resumes: a finished study run again trains nothing and makes no judge
or model call. One backend is built per variant and shares its runs and its
verification (a local model is loaded once). Everything that can fail on bad
input -- persona sets, instrument, template, files, datasets, recipes, API-key
variables, backend options -- is checked before the first model call or
training step (the options of a fine-tuned variant's backend, which needs the
adapter, are checked once it exists).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from persona_collapse.backends import (
    ModelBackendSpec,
    create_backend,
    model_option,
    resolve_options,
)
from persona_collapse.backends.base import Backend, EndpointBehaviour, ProbeMode
from persona_collapse.core.errors import ConfigError, InputFileError, UserError
from persona_collapse.core.instrument import Instrument, load_instrument
from persona_collapse.core.personas import BUILTIN_PERSONA_SETS, PersonaSet, get_persona_set
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, PromptTemplate, load_template
from persona_collapse.engine.collect import CollectionSummary, collect, make_run_spec
from persona_collapse.engine.costs import EndpointSupport, RunEstimate, estimate_run
from persona_collapse.engine.preflight import (
    discard_if_empty,
    endpoint_support,
    make_check,
    run_preflight,
)
from persona_collapse.store.inspect_log import (
    check_inspect_log,
    import_inspect_log,
    is_inspect_log,
)
from persona_collapse.store.sqlite import RunSpec, RunStore
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.produce import (
    OpenAIRunner,
    ProducedVariant,
    Trainer,
    finetune_folder,
    openai_api,
    plan_finetunes,
    produce_variants,
    read_produced,
)
from persona_collapse.study.spec import StudyConfig
from persona_collapse.study.verification import (
    JudgeChoice,
    VerificationTarget,
    judge_choice,
    judge_key_variable,
    read_index,
    verify_config,
    verify_variants,
)

logger = logging.getLogger(__name__)

RunKindInStudy = Literal[
    "persona", "self", "toxic", "bfi44", "mmlu", "gsm8k", "lookup", "sensitivity"
]
"""Kinds of study runs; ``bfi44`` to ``lookup`` are the persona-specificity controls,
``sensitivity`` the runs of the sensitivity suite (:mod:`persona_collapse.study.sensitivity`)."""

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
        produced: ``family/label`` -> each fine-tuned variant (``trained``: in this session).
        verified: ``family/label`` -> answers asked and judged in this session.
    """

    store: Path
    summaries: Mapping[str, CollectionSummary]
    imported: tuple[str, ...]
    produced: Mapping[str, ProducedVariant] = field(default_factory=dict)
    verified: Mapping[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """Backend requests made in this session to measure the variants."""
        return sum(s.requests for s in self.summaries.values())

    @property
    def trained(self) -> tuple[str, ...]:
        """Variants fine-tuned in this session."""
        return tuple(k for k, p in self.produced.items() if p.trained)

    @property
    def verified_answers(self) -> int:
        """Answers asked and judged in this session."""
        return sum(self.verified.values())


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


def run_identity(config: StudyConfig, family: str, label: str, kind: RunKindInStudy) -> str:
    """What makes a collected run: backend settings, model, options and run kind."""
    variant = config.families[family].variants[label]
    if variant.finetune is not None:
        # A fine-tuned variant is its own model: never shared with another variant.
        return json.dumps({"finetune": [family, label], "run": kind})
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
    per_cell = 1 if proto.mode == "exact" else proto.repetitions
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
                owner = owners.setdefault(run_identity(cfg, family, label, kind), name)
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

    The variant's ``model`` (else the backend's) becomes the backend's model option
    (the simulator's ``preset``); backends that ask for them get the study's
    instrument and template, endpoint backends the connection settings. A
    fine-tuned variant gets its produced model: the base model and ``adapter``
    (local), or the fine-tuned model id (openai).

    Raises:
        ConfigError: An imported variant, or a fine-tuned one not produced yet.
    """
    variant = config.families[family].variants[label]
    if variant.backend is None:
        raise ConfigError(f"variant {family}/{label} is imported, it has no backend")
    spec = config.backends[variant.backend]
    options: dict[str, Any] = {**spec.options, **variant.options}
    model = variant.model or spec.model
    if variant.finetune is not None:
        produced = read_produced(config, family, label)
        if produced is None:
            raise ConfigError(
                f"variant {family}/{label} is not fine-tuned yet; run 'pcollapse study run'"
            )
        model = produced.model
        # The produced model, whatever the backend's or the variant's default.
        options[model_option(spec.kind)] = model
        if produced.adapter is not None:
            options["adapter"] = str(produced.adapter)
    built = ModelBackendSpec(
        spec.kind,
        model,
        connection=spec.connection_options(),
        options=options,
        context={"instrument": instrument, "template": template},
    )
    return spec.kind, resolve_options(built)


def model_label(config: StudyConfig, family: str, label: str) -> str:
    """The model label stored with a variant's runs."""
    variant = config.families[family].variants[label]
    if variant.imported:
        return variant.model or f"{family}/{label}"
    if variant.finetune is not None:
        produced = read_produced(config, family, label)
        if produced is not None:
            return produced.model_label
        return f"{variant.finetune.base_model} fine-tune (not produced yet)"
    spec = config.backends[variant.backend or ""]
    return variant.model or spec.model or spec.kind


def check_credentials(study: LoadedStudy) -> None:
    """Every API-key variable a collected variant needs is set (before any model call).

    Raises:
        ConfigError: A variable is unset or empty (names the key and the fix).
    """
    cfg = study.config
    used = {v.backend for fam in cfg.families.values() for v in fam.variants.values() if v.backend}
    needed: dict[str, str] = {}
    for name in sorted(used):
        var = cfg.backends[name].api_key_env
        if var is not None:
            needed.setdefault(var, f"backends.{name}.api_key_env")
    for family, fam in cfg.families.items():
        for label, variant in fam.variants.items():
            ft = variant.finetune
            if ft is not None and ft.platform == "openai":
                var = openai_api(cfg, family, label)["api_key_env"]
                if var is not None:
                    needed.setdefault(var, f"families.{family}.{label}.finetune.api_key_env")
            if variant.verified:
                judge = judge_key_variable(cfg, family, label)
                if judge is not None:
                    needed.setdefault(judge[1], judge[0])
    for var, key in needed.items():
        if not os.environ.get(var):
            raise ConfigError(
                f"{study.source}: field {key!r}: environment variable "
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


def _build_variant_backend(
    study: LoadedStudy, inputs: StudyInputs, family: str, label: str, builder: BackendBuilder
) -> Backend:
    """The backend of one collected variant (no model call yet)."""
    cfg = study.config
    kind, options = backend_options(cfg, family, label, inputs.instrument, inputs.template)
    name = cfg.families[family].variants[label].backend
    try:
        return builder(kind, options)
    except UserError as exc:
        raise ConfigError(
            f"{study.source}: backend {name!r} of variant {family}/{label}: "
            f"{exc}; fix 'backends.{name}' or the variant's 'model'/'options'"
        ) from None


def _build_judge(study: LoadedStudy, choice: JudgeChoice, builder: BackendBuilder) -> Backend:
    where = f"backend {choice.backend!r}" if choice.backend else "the default judge (openai)"
    try:
        return builder(choice.kind, dict(choice.options))
    except UserError as exc:
        raise ConfigError(
            f"{study.source}: judge {where} of the verification: {exc}; fix 'verify.judge' "
            "or that backend"
        ) from None


def _run_spec(
    study: LoadedStudy, inputs: StudyInputs, run: PlannedRun, backend: Backend
) -> RunSpec:
    proto = study.config.protocol
    return make_run_spec(
        backend=backend,
        instrument=inputs.instrument,
        personas=None if run.personas is None else list(run.personas),
        template=inputs.template,
        name=run.name,
        model=model_label(study.config, run.family, run.label),
        protocol=proto,
    )


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
    for run in plan:  # inspect logs: refused before anything is collected or imported
        if run.file is not None and is_inspect_log(run.file):
            check_inspect_log(run.file, **_log_expects(run, inputs, study))
    return inputs, plan


def _log_expects(run: PlannedRun, inputs: StudyInputs, study: LoadedStudy) -> dict[str, Any]:
    """What an inspect log named by a variant must hold: its kind, the study's
    instrument, and the persona texts where the study names a persona file."""
    return {
        "expect_kind": "self" if run.kind == "self" else "persona",
        "expect_instrument_hash": inputs.instrument.content_hash,
        "expect_personas": imported_persona_texts(study, inputs, run.kind),
    }


def collect_study(
    study: LoadedStudy,
    *,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
    trainer: Trainer | None = None,
    openai_runner: OpenAIRunner | None = None,
    preflight: bool = True,
) -> StudyCollection:
    """Produce, verify and measure every variant of a study; resumes every step.

    Fine-tuned variants are trained (or their jobs run) first, then variants with
    ``verify`` are verified, then every run is collected or imported into the run
    store. Finished work is reused: a finished study run again trains nothing and
    makes no judge or model call. Every input, file, dataset, recipe, API-key
    variable and backend option is checked before the first model call.

    Args:
        study: The loaded study.
        backend_builder: Builds backends, the judge's included (override to inject
            one in tests).
        progress: Show progress bars.
        trainer: Replaces the LoRA trainer (tests).
        openai_runner: Replaces the OpenAI fine-tuning runner (tests).
        preflight: Ask every distinct endpoint and model once before anything is
            trained or collected (fine-tuned variants: once produced); problems stop
            the study with :class:`~persona_collapse.engine.preflight.PreflightError`.

    Raises:
        ConfigError: Bad input, before anything is collected.
        BackendError: A backend failed; what was collected is stored, rerun to resume.
    """
    cfg = study.config
    builder = backend_builder or _default_builder
    inputs, plan = prepare_study(study)
    check_credentials(study)
    finetunes = plan_finetunes(study)
    verified = [
        (family, label)
        for family, fam in cfg.families.items()
        for label, variant in fam.variants.items()
        if variant.verified
    ]
    wanted = list(
        dict.fromkeys(
            [(r.family, r.label) for r in plan if r.backend is not None and not r.shared] + verified
        )
    )
    tuned = {(p.family, p.label) for p in finetunes}
    built: list[Backend] = []
    backends: dict[tuple[str, str], Backend] = {}
    judges: dict[str, Backend] = {}
    try:
        # Bad options fail here, before anything is trained, asked or stored.
        for family, label in verified:
            choice = judge_choice(cfg, family, label)
            if choice.key not in judges:
                judges[choice.key] = _build_judge(study, choice, builder)
                built.append(judges[choice.key])
        for key in wanted:
            if key not in tuned:
                backends[key] = _build_variant_backend(study, inputs, *key, builder)
                built.append(backends[key])
        if preflight:
            _preflight(study, inputs, plan, backends)
        produced = produce_variants(
            study, finetunes, progress=progress, trainer=trainer, openai_runner=openai_runner
        )
        fresh: dict[tuple[str, str], Backend] = {}
        for key in wanted:
            if key in tuned:
                backends[key] = fresh[key] = _build_variant_backend(study, inputs, *key, builder)
                built.append(backends[key])
        if preflight:
            _preflight(study, inputs, plan, fresh)
        jobs = {
            run.name: _run_spec(study, inputs, run, backends[(run.family, run.label)])
            for run in plan
            if run.backend is not None and not run.shared
        }
        targets = [
            VerificationTarget(
                family,
                label,
                verify_config(
                    cfg,
                    family,
                    label,
                    backend_kind=backends[(family, label)].name,
                    model_label=model_label(cfg, family, label),
                ),
                backends[(family, label)],
                judges[judge_choice(cfg, family, label).key],
            )
            for family, label in verified
        ]
    except BaseException:
        _close_all(built)
        raise

    summaries: dict[str, CollectionSummary] = {}
    imported: list[str] = []
    new_store = not cfg.store_path.exists()
    try:
        cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
        opened = RunStore.open(cfg.store_path)
    except BaseException:
        _close_all(built)
        raise
    with discard_if_empty(cfg.store_path, new=new_store), opened as store:

        async def main() -> dict[str, int]:
            # One event loop for every request, so connection pools live as long as
            # their backends, which are closed once at the end (whatever happens).
            try:
                for run in plan:
                    if run.file is None:
                        continue
                    if is_inspect_log(run.file):  # a log of `inspect eval persona_collapse/…`
                        expects = _log_expects(run, inputs, study)
                        import_inspect_log(store, run.file, name=run.name, **expects)
                        imported.append(run.name)
                        continue
                    store.import_csv(
                        run.file,
                        name=run.name,
                        kind="self" if run.kind == "self" else "persona",
                        model=model_label(cfg, run.family, run.label),
                        personas=imported_persona_texts(study, inputs, run.kind),
                        temperature=cfg.protocol.temperature,
                        instrument=inputs.instrument,
                    )
                    imported.append(run.name)
                outcomes = await verify_variants(study, targets)
                for run in plan:
                    if run.name not in jobs:
                        continue
                    backend_spec = cfg.backends[run.backend or ""]
                    logger.info("study %s: collecting %s", cfg.name, run.name)
                    summaries[run.name] = await collect(
                        store,
                        jobs[run.name],
                        backends[(run.family, run.label)],
                        None if run.personas is None else list(run.personas),
                        inputs.instrument,
                        inputs.template,
                        pacing=backend_spec.pacing(cfg.protocol.max_retries),
                        progress=progress,
                        prices=backend_spec.prices,
                    )
                return {key: o.asked for key, o in outcomes.items()}
            finally:
                await asyncio.gather(*(b.aclose() for b in built), return_exceptions=True)

        verified_counts = asyncio.run(main())
    return StudyCollection(
        store=cfg.store_path,
        summaries=summaries,
        imported=tuple(imported),
        produced=produced,
        verified=verified_counts,
    )


def estimate_study(
    study: LoadedStudy, *, preflight: bool = False
) -> list[tuple[PlannedRun, RunEstimate]]:
    """Forecast requests, tokens and cost of every run the study still has to collect,
    with the estimator of ``run --dry-run`` (:func:`persona_collapse.engine.costs.estimate_run`).

    Imported and shared runs cost nothing and are left out. With ``preflight``, each
    distinct endpoint of the variants that exist already (not the fine-tunes) is asked
    first what it supports (``n``, replies that parse); otherwise nothing is sent and
    no key is needed.

    Raises:
        ConfigError: Bad input; PreflightError: an endpoint cannot serve the study.
    """
    cfg = study.config
    inputs, plan = prepare_study(study)
    collected = [r for r in plan if r.backend is not None and not r.shared]
    support: dict[tuple[str, str], EndpointSupport] = {}
    if preflight:
        check_credentials(study)
        tuned = {(p.family, p.label) for p in plan_finetunes(study)}
        keys = list(dict.fromkeys((r.family, r.label) for r in collected))
        built = {
            key: _build_variant_backend(study, inputs, *key, _default_builder)
            for key in keys
            if key not in tuned
        }
        try:
            learned = _preflight(study, inputs, plan, built)
        finally:
            _close_all(list(built.values()))
        support = {key: endpoint_support(learned.get(f"{key[0]}/{key[1]}", [])) for key in built}
    return [
        (
            run,
            estimate_run(
                run.stored_as,
                run.kind,
                instrument=inputs.instrument,
                template=inputs.template,
                personas=None if run.personas is None else list(run.personas),
                mode=cfg.protocol.store_mode,
                repetitions=cfg.protocol.repetitions,
                store=cfg.store_path,
                prices=cfg.backends[run.backend or ""].prices,
                support=support.get((run.family, run.label)),
            ),
        )
        for run in collected
    ]


def _preflight(
    study: LoadedStudy,
    inputs: StudyInputs,
    plan: list[PlannedRun],
    backends: Mapping[tuple[str, str], Backend],
) -> dict[str, list[EndpointBehaviour]]:
    """Check each variant backend's endpoint and model once, with its first run's prompt."""
    mode: ProbeMode = study.config.protocol.store_mode
    checks = []
    for (family, label), backend in backends.items():
        runs = [r for r in plan if (r.family, r.label) == (family, label) and r.backend]
        personas = next((r.personas for r in runs if r.personas is not None), None)
        checks.append(
            make_check(
                f"{family}/{label}", backend, inputs.instrument, inputs.template, personas, mode
            )
        )
    return run_preflight(checks)


def _close_all(backends: list[Backend]) -> None:
    """Close backends outside any event loop (after a failure before collection)."""
    if not backends:
        return

    async def close() -> None:
        await asyncio.gather(*(b.aclose() for b in backends), return_exceptions=True)

    asyncio.run(close())


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


@dataclass(frozen=True)
class StepProgress:
    """Whether a variant's fine-tuning or verification step is done (read from disk only).

    Attributes:
        family, label: The variant.
        step: ``"finetune"`` or ``"verify"``.
        state: ``"done"``, ``"started"`` (files exist, not finished) or ``"pending"``.
    """

    family: str
    label: str
    step: Literal["finetune", "verify"]
    state: Literal["done", "started", "pending"]


def preparation_status(study: LoadedStudy) -> list[StepProgress]:
    """Fine-tuning and verification state of every variant that has those steps.

    Reads ``produced.json``, the fine-tuning folders and the verification index;
    makes no model, training or judge call.
    """
    config = study.config
    verified = read_index(config)
    out: list[StepProgress] = []
    for family, spec in config.families.items():
        for label, variant in spec.root.items():
            if variant.finetune is not None:
                folder = finetune_folder(config, family, label)
                ft_state: Literal["done", "started", "pending"] = (
                    "done"
                    if read_produced(config, family, label) is not None
                    else ("started" if folder.exists() else "pending")
                )
                out.append(StepProgress(family, label, "finetune", ft_state))
            if variant.verified:
                state: Literal["done", "started", "pending"] = (
                    "done" if f"{family}/{label}" in verified else "pending"
                )
                out.append(StepProgress(family, label, "verify", state))
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
    "StepProgress",
    "StudyCollection",
    "StudyInputs",
    "backend_options",
    "check_credentials",
    "collect_study",
    "imported_persona_texts",
    "model_label",
    "plan_study",
    "preparation_status",
    "prepare_study",
    "require_store",
    "resolve_inputs",
    "run_name",
    "study_status",
]
