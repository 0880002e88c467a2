"""The sensitivity suite of a study: the finding under other wordings, orders, persona
samples and temperatures.

A study's ``sensitivity:`` section (:class:`~persona_collapse.study.spec.SensitivitySpec`)
names factor levels; :func:`plan_levels` resolves each into a condition (template,
instrument in a seeded item order, persona sample, temperature), one factor changed at a
time. Every collected variant of every family whose base is collected gets a persona run
per level (``<family>/<variant>/sensitivity/<factor>-<level>``), collected resumably
through the collection engine by :func:`collect_sensitivity`; levels equal to the
protocol's own setting are the headline and reuse the study's persona runs (never
collected twice). :func:`study_sensitivity` tests every variant against its base under
every condition (:func:`~persona_collapse.stats.sensitivity.analyze_sensitivity`) and
:func:`write_sensitivity_outputs` writes ``sensitivity/robustness.csv``, ``.json`` and
``robustness.png``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from persona_collapse.core.csvio import records_csv_text
from persona_collapse.core.errors import ConfigError, UserError
from persona_collapse.core.files import write_text_atomic
from persona_collapse.core.formatting import json_safe
from persona_collapse.core.instrument import Instrument
from persona_collapse.core.personas import PersonaSet, get_persona_set
from persona_collapse.core.prompts import PromptTemplate, builtin_template_name, get_template
from persona_collapse.engine.collect import CollectionSummary, collect, make_run_spec
from persona_collapse.engine.costs import RunEstimate, estimate_run
from persona_collapse.stats.sensitivity import (
    HEADLINE,
    Condition,
    SensitivityResult,
    analyze_sensitivity,
)
from persona_collapse.stats.significance import RunCells, run_cells
from persona_collapse.stats.sources import loaded_run
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.orchestrate import (
    BackendBuilder,
    PlannedRun,
    RunProgress,
    StudyInputs,
    backend_options,
    model_label,
    plan_study,
    prepare_study,
    run_identity,
)

logger = logging.getLogger(__name__)

OUTPUT_FOLDER = "sensitivity"
"""Subfolder of the study's output folder holding the suite's outputs."""


@dataclass(frozen=True)
class SensitivityLevel:
    """One factor level, resolved: what is asked under it.

    Attributes:
        condition: The factor and level.
        template: Prompt wording.
        instrument: The questionnaire (items in this level's order).
        personas: The persona set.
        temperature: Sampling temperature.
    """

    condition: Condition
    template: PromptTemplate
    instrument: Instrument
    personas: PersonaSet
    temperature: float


@dataclass(frozen=True)
class SensitivityRun:
    """One run of the suite: a variant under a level.

    Attributes:
        family, label: The variant.
        level: The level.
        name: Run name in the store.
        stored_as: Name of the stored run holding its answers (an earlier run of the
            suite asking the same model under the same level, else ``name``).
        planned: Slots (cells in exact mode) the run needs.
    """

    family: str
    label: str
    level: SensitivityLevel
    name: str
    stored_as: str
    planned: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "level"


def run_name(family: str, label: str, condition: Condition) -> str:
    """Store name of a sensitivity run: ``family/label/sensitivity/factor-level``."""
    return f"{family}/{label}/sensitivity/{condition.factor}-{_slug(condition.level)}"


def shuffled(instrument: Instrument, seed: int, index: int) -> Instrument:
    """The instrument with its items in a seeded random order (shuffle ``index``)."""
    rng = np.random.default_rng([seed, index])
    order = rng.permutation(len(instrument.items))
    return Instrument(
        instrument.name,
        instrument.scale_min,
        instrument.scale_max,
        instrument.blocks,
        tuple(instrument.items[int(k)] for k in order),
        instrument.include_catch,
        instrument.group_noun,
    )


def persona_samples(
    source: PersonaSet, *, size: int, samples: int, method: str, seed: int, where: str
) -> list[PersonaSet]:
    """Seeded persona samples of ``source``: disjoint, or each drawn afresh.

    Raises:
        ConfigError: The source holds too few personas (names ``where``).
    """
    n = len(source)
    if size > n:
        raise ConfigError(
            f"{where}: samples of {size} personas, but {source.source} holds only {n}; "
            f"use 'size' of at most {n} or a larger persona file"
        )
    if method == "disjoint" and size * samples > n:
        raise ConfigError(
            f"{where}: {samples} disjoint samples of {size} need {size * samples} personas, "
            f"but {source.source} holds only {n}; lower 'size' or 'samples', or use "
            "'method: resample'"
        )
    rng = np.random.default_rng([seed, 1])
    picks: list[np.ndarray] = []
    if method == "disjoint":
        perm = rng.permutation(n)
        picks = [perm[k * size : (k + 1) * size] for k in range(samples)]
    else:
        picks = [rng.choice(n, size=size, replace=False) for _ in range(samples)]
    return [
        PersonaSet(
            f"{source.name} sample {k + 1}",
            source.source,
            tuple(source[int(i)] for i in np.sort(pick)),
        )
        for k, pick in enumerate(picks)
    ]


def plan_levels(study: LoadedStudy, inputs: StudyInputs) -> list[SensitivityLevel]:
    """Every non-headline level of the study's ``sensitivity`` section, in factor order.

    Levels equal to the protocol's setting (its template, its temperature) are the
    headline and left out.

    Raises:
        ConfigError: An unknown template name (with suggestions), an unreadable file,
            a persona sample larger than its source (names the key).
    """
    cfg = study.config
    spec = cfg.sensitivity
    if spec is None:
        return []
    proto = cfg.protocol
    levels: list[SensitivityLevel] = []

    def level(factor: str, name: str, **changes: object) -> SensitivityLevel:
        values: dict[str, object] = {
            "template": inputs.template,
            "instrument": inputs.instrument,
            "personas": inputs.personas,
            "temperature": float(proto.temperature),
            **changes,
        }
        return SensitivityLevel(Condition(factor, name), **values)  # type: ignore[arg-type]

    for i, name in enumerate(spec.templates):
        key = f"sensitivity.templates[{i}]"
        try:
            template = get_template(name)
        except UserError as exc:
            raise ConfigError(
                f"{study.source}: field {key!r}: {exc}; use a built-in name or a template "
                f"YAML file (relative paths start at {study.root})"
            ) from None
        if template == inputs.template:
            continue
        label = builtin_template_name(template) or Path(name).stem
        levels.append(level("template", label, template=template))
    for k in range(1, spec.orders + 1):
        order = shuffled(inputs.instrument, spec.seed, k)
        levels.append(level("order", f"shuffle {k}", instrument=order))
    sampling = spec.personas
    if sampling is not None:
        key = "sensitivity.personas"
        name = sampling.source if sampling.source is not None else proto.personas
        try:
            source = get_persona_set(name)
        except UserError as exc:
            raise ConfigError(
                f"{study.source}: field '{key}.source': {exc}; use a built-in set or a file"
            ) from None
        sets = persona_samples(
            source,
            size=sampling.size,
            samples=sampling.samples,
            method=sampling.method,
            seed=spec.seed,
            where=f"{study.source}: field {key!r}",
        )
        for k, personas in enumerate(sets, start=1):
            levels.append(level("personas", f"sample {k}", personas=personas))
    for t in spec.temperatures:
        if float(t) == float(proto.temperature):
            continue
        levels.append(level("temperature", f"{t:g}", temperature=float(t)))
    return levels


def _measured_families(study: LoadedStudy) -> dict[str, list[str]]:
    """Family -> collected variants (base first) of the families whose base is collected."""
    out: dict[str, list[str]] = {}
    for family, fam in study.config.families.items():
        variants = fam.variants
        if variants[fam.base].imported:
            continue
        labels = [fam.base] + [
            label for label, v in variants.items() if label != fam.base and not v.imported
        ]
        if len(labels) >= 2:
            out[family] = labels
    return out


def plan_sensitivity(study: LoadedStudy, inputs: StudyInputs | None = None) -> list[SensitivityRun]:
    """Every run of the suite, in level, family, variant order (empty without the section).

    Runs asking the same model under the same level share one stored run.
    """
    if study.config.sensitivity is None:
        return []
    if inputs is None:
        inputs, _ = prepare_study(study)
    cfg = study.config
    per_cell = 1 if cfg.protocol.mode == "exact" else cfg.protocol.repetitions
    owners: dict[tuple[str, str], str] = {}
    runs: list[SensitivityRun] = []
    for lvl in plan_levels(study, inputs):
        n_items = len(lvl.instrument.active_items)
        for family, labels in _measured_families(study).items():
            for label in labels:
                name = run_name(family, label, lvl.condition)
                who = run_identity(cfg, family, label, "persona")
                owner = owners.setdefault((who, lvl.condition.label), name)
                runs.append(
                    SensitivityRun(
                        family=family,
                        label=label,
                        level=lvl,
                        name=name,
                        stored_as=owner,
                        planned=len(lvl.personas) * n_items * per_cell,
                    )
                )
    return runs


def _planned(study: LoadedStudy, run: SensitivityRun) -> PlannedRun:
    variant = study.config.families[run.family].variants[run.label]
    return PlannedRun(
        run.family,
        run.label,
        "sensitivity",
        run.name,
        run.level.personas,
        None,
        variant.backend,
        run.planned,
        stored_as=run.stored_as,
    )


def collect_sensitivity(
    study: LoadedStudy,
    *,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
) -> dict[str, CollectionSummary]:
    """Collect (resuming) every run of the suite into the study's store.

    Call after :func:`~persona_collapse.study.orchestrate.collect_study` (fine-tuned
    variants must be produced first). Every level and backend is built before the
    first request, so bad input fails before anything is asked.

    Raises:
        ConfigError: Bad ``sensitivity`` settings or backend options.
        BackendError: A backend failed; what was collected is stored, rerun to resume.
    """
    plan = [r for r in plan_sensitivity(study) if r.stored_as == r.name]
    if not plan:
        return {}
    from persona_collapse.backends import create_backend

    cfg = study.config
    builder = backend_builder or (lambda kind, options: create_backend(kind, **options))
    jobs = []
    try:
        for run in plan:
            lvl = run.level
            kind, options = backend_options(
                cfg, run.family, run.label, lvl.instrument, lvl.template
            )
            try:
                backend = builder(kind, options)
            except UserError as exc:
                raise ConfigError(
                    f"{study.source}: backend of variant {run.family}/{run.label} "
                    f"({lvl.condition.label}): {exc}"
                ) from None
            jobs.append((run, backend))
        specs = [
            make_run_spec(
                backend=backend,
                instrument=run.level.instrument,
                personas=list(run.level.personas),
                template=run.level.template,
                name=run.name,
                model=model_label(cfg, run.family, run.label),
                protocol=cfg.protocol.model_copy(update={"temperature": run.level.temperature}),
            )
            for run, backend in jobs
        ]
    except BaseException:
        _close([b for _, b in jobs])
        raise
    summaries: dict[str, CollectionSummary] = {}
    with RunStore.open(cfg.store_path) as store:

        async def main() -> None:
            try:
                for (run, backend), spec in zip(jobs, specs, strict=True):
                    backend_spec = cfg.backends[
                        cfg.families[run.family].variants[run.label].backend or ""
                    ]
                    logger.info("study %s: collecting %s", cfg.name, run.name)
                    summaries[run.name] = await collect(
                        store,
                        spec,
                        backend,
                        list(run.level.personas),
                        run.level.instrument,
                        run.level.template,
                        pacing=backend_spec.pacing(cfg.protocol.max_retries),
                        progress=progress,
                        prices=backend_spec.prices,
                    )
            finally:
                await asyncio.gather(*(b.aclose() for _, b in jobs), return_exceptions=True)

        asyncio.run(main())
    return summaries


def _close(backends: list[object]) -> None:
    async def close() -> None:
        await asyncio.gather(*(b.aclose() for b in backends), return_exceptions=True)  # type: ignore[attr-defined]

    if backends:
        asyncio.run(close())


def sensitivity_status(study: LoadedStudy) -> list[RunProgress]:
    """Stored progress of every run of the suite (reads the store only; no model call)."""
    plan = plan_sensitivity(study)
    if not plan:
        return []
    path = study.config.store_path
    if not path.is_file():
        return [RunProgress(_planned(study, r), 0, 0, "missing") for r in plan]
    out = []
    with RunStore.open(path, create=False) as store:
        by_name = {r.name: r for r in store.list_runs()}
        for run in plan:
            record = by_name.get(run.stored_as)
            if record is None:
                out.append(RunProgress(_planned(study, run), 0, 0, "missing"))
                continue
            counts = store.counts(record.run_id)
            stored = counts.distributions if record.mode == "exact" else counts.slots
            out.append(RunProgress(_planned(study, run), stored, counts.failed, record.status))
    return out


def estimate_sensitivity(study: LoadedStudy) -> list[tuple[PlannedRun, RunEstimate]]:
    """Requests, tokens and cost still to spend on the suite (``study run --dry-run``)."""
    cfg = study.config
    out = []
    for run in plan_sensitivity(study):
        if run.stored_as != run.name:
            continue
        variant = cfg.families[run.family].variants[run.label]
        estimate = estimate_run(
            run.name,
            "persona",
            instrument=run.level.instrument,
            template=run.level.template,
            personas=list(run.level.personas),
            mode=cfg.protocol.store_mode,
            repetitions=cfg.protocol.repetitions,
            store=cfg.store_path,
            prices=cfg.backends[variant.backend or ""].prices,
        )
        out.append((_planned(study, run), estimate))
    return out


def _key(study: LoadedStudy, family: str, label: str) -> str:
    role = study.config.families[family].role_of(label)
    return role if role is not None else label


def study_sensitivity(study: LoadedStudy) -> SensitivityResult | None:
    """Every variant against its base under every condition, from the study's store.

    The headline is the study's own persona runs; conditions whose runs are missing or
    incomplete (no persona answered every item) are left out with a warning. None when
    the study has no ``sensitivity`` section or nothing to test.
    """
    cfg = study.config
    if cfg.sensitivity is None or cfg.sensitivity.empty:
        return None
    inputs, _ = prepare_study(study)
    plan = plan_sensitivity(study, inputs)
    headline = {
        (r.family, r.label): r.stored_as for r in plan_study(study, inputs) if r.kind == "persona"
    }
    measured = _measured_families(study)
    path = cfg.store_path
    if not path.is_file():
        return None
    conditions: dict[Condition, dict[str, dict[str, RunCells]]] = {}
    labels: dict[str, dict[str, str]] = {}
    with RunStore.open(path, create=False) as store:
        stored = {r.name: r for r in store.list_runs()}

        def cells(name: str) -> RunCells | None:
            record = stored.get(name)
            if record is None:
                return None
            try:
                return run_cells(loaded_run(store, record))
            except ValueError as exc:
                logger.warning("study %s: run %s left out: %s", cfg.name, name, exc)
                return None

        head = Condition(HEADLINE, "protocol")
        wanted: list[tuple[Condition, str, str, str]] = [
            (head, family, label, headline[(family, label)])
            for family, fam_labels in measured.items()
            for label in fam_labels
        ]
        wanted += [(r.level.condition, r.family, r.label, r.stored_as) for r in plan]
        for cond, family, label, name in wanted:
            got = cells(name)
            if got is None:
                continue
            key = _key(study, family, label)
            conditions.setdefault(cond, {}).setdefault(family, {})[key] = got
            labels.setdefault(family, {})[key] = label
    for cond in list(conditions):
        # A family needs its base under the condition.
        conditions[cond] = {f: r for f, r in conditions[cond].items() if "base" in r}
    if head not in conditions or not any(len(r) >= 2 for r in conditions[head].values()):
        return None
    a = cfg.analysis
    result = analyze_sensitivity(
        conditions,
        labels=labels,
        alpha=a.alpha,
        n_boot=max(a.n_persona_boot, 2),
        n_rerun_boot=a.n_rerun_boot,
        seed=a.seed,
    )
    missing = {
        r.level.condition.label: "not collected yet; run 'pcollapse study run' or "
        "'pcollapse sensitivity --collect'"
        for r in plan
        if r.level.condition not in conditions
    }
    for family in cfg.families:
        if family not in measured:
            missing[f"family {family}"] = (
                "its base, or every other variant, is imported: nothing to ask again"
            )
    if missing:
        logger.warning("study %s: sensitivity suite, not tested: %s", cfg.name, ", ".join(missing))
        result = replace(result, skipped={**missing, **result.skipped})
    return result


def robustness_csv(result: SensitivityResult) -> str:
    """The robustness table as CSV text."""
    return records_csv_text(result.records())


def write_sensitivity_outputs(
    result: SensitivityResult, output_dir: str | Path, *, figures: bool = True
) -> list[Path]:
    """Write ``sensitivity/robustness.csv``, ``robustness.json`` and (with ``figures``)
    ``robustness.png`` under ``output_dir``; returns the files written."""
    folder = Path(output_dir) / OUTPUT_FOLDER
    text = json.dumps(json_safe(result.to_dict()), indent=2, ensure_ascii=False) + "\n"
    written = [
        write_text_atomic(folder / "robustness.csv", robustness_csv(result)),
        write_text_atomic(folder / "robustness.json", text),
    ]
    if figures:
        from persona_collapse.report.sensitivity import write_robustness_figure

        written.append(write_robustness_figure(result, folder / "robustness.png"))
    level = logging.INFO if result.robust else logging.WARNING
    logger.log(level, "%s", result.summary())
    return written


__all__ = [
    "OUTPUT_FOLDER",
    "SensitivityLevel",
    "SensitivityRun",
    "collect_sensitivity",
    "estimate_sensitivity",
    "persona_samples",
    "plan_levels",
    "plan_sensitivity",
    "robustness_csv",
    "run_name",
    "run_sensitivity",
    "sensitivity_status",
    "shuffled",
    "study_sensitivity",
    "write_sensitivity_outputs",
]


def run_sensitivity(
    study: LoadedStudy,
    *,
    collect: bool = False,
    backend_builder: BackendBuilder | None = None,
    progress: bool = True,
    preflight: bool = True,
) -> SensitivityResult:
    """The suite's result (``pcollapse sensitivity``): optionally collect first, resuming.

    With ``collect``, the study's own runs and then the suite's runs are collected
    (only what the store lacks); otherwise the store is read as it is.

    Raises:
        ConfigError: The study has no ``sensitivity`` section or varies nothing, or bad
            settings (before anything is collected).
        InputFileError: No run store yet (without ``collect``).
        UserError: Nothing to test (no family with a collected base and another variant
            measured under the headline).
    """
    from persona_collapse.study.orchestrate import collect_study, require_store

    spec = study.config.sensitivity
    if spec is None or spec.empty:
        raise ConfigError(
            f"{study.source}: no 'sensitivity' section varying anything; add e.g. "
            "'sensitivity: {templates: [plain], orders: 2}'"
        )
    inputs, _ = prepare_study(study)
    plan_levels(study, inputs)  # bad settings fail before anything is collected
    if collect:
        collect_study(
            study, backend_builder=backend_builder, progress=progress, preflight=preflight
        )
        collect_sensitivity(study, backend_builder=backend_builder, progress=progress)
    else:
        require_store(study)
    result = study_sensitivity(study)
    if result is None:
        raise UserError(
            f"{study.source}: nothing to test: no family has its base and another variant "
            "collected; run 'pcollapse sensitivity --collect' or 'pcollapse study run' first"
        )
    return result
