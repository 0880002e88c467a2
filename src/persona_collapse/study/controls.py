"""The study's persona-specificity controls (``controls:`` in the study file).

Every collected variant gets, besides its persona runs:

* ``bfi44``: a BFI-44 persona run (``<family>/<variant>/bfi44``) in the run store,
  with the protocol's personas, repetitions and temperature;
* ``capability``: each items file (``mmlu``, ``gsm8k``) asked without a persona,
  ``repetitions`` times per item, into the control store ``<output>/controls.db``
  (``<family>/<variant>/<task>``);
* ``lookup``: the seeded persona -> id lookup task, likewise.

All of it resumes (the stores never hold a slot twice) and shows in ``study status``
and ``study run --dry-run``. :func:`analyse_controls` compares every variant with its
family's base: instability (non-unanimity, normalised Gini) of MFQ persona cells, BFI
persona cells, the capability tasks and lookup; paired-bootstrap accuracy and
non-unanimity deltas of the control tasks (a two-sided p inverting each percentile CI,
:func:`~persona_collapse.stats.controls.percentile_p_value`, Holm-adjusted across the
study); and the difference between the
rise of persona non-unanimity (persona bootstrap SEs) and that of each control task
(SE from its delta's CI), with a normal 95 % CI, from which
:mod:`persona_collapse.report.controls` words its verdicts. Persona cells are counted
in sampling mode only (exact-mode runs store distributions, not repeated answers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persona_collapse.backends import create_backend
from persona_collapse.backends.base import Backend
from persona_collapse.core.controls import ControlTask, capability_task, load_items, lookup_task
from persona_collapse.core.instrument import Instrument, load_instrument
from persona_collapse.core.personas import PersonaSet
from persona_collapse.core.pricing import count_message_tokens, estimate_cost
from persona_collapse.core.types import Message, Usage
from persona_collapse.engine.collect import collect, make_run_spec
from persona_collapse.engine.controls import MAX_TOKENS, collect_controls, control_spec
from persona_collapse.engine.costs import RunEstimate, estimate_run
from persona_collapse.report.controls import (
    ControlDelta,
    ControlsReport,
    InstabilityRow,
    PersonaGap,
    build_verdicts,
)
from persona_collapse.stats.controls import ControlAnswers, capability_metrics, variant_delta
from persona_collapse.stats.instability import answer_counts, gini_impurity, non_unanimity
from persona_collapse.stats.significance import holm
from persona_collapse.store.control_store import ControlStore
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.orchestrate import (
    BackendBuilder,
    PlannedRun,
    RunKindInStudy,
    RunProgress,
    StudyInputs,
    backend_options,
    model_label,
    resolve_inputs,
)
from persona_collapse.study.orchestrate import estimate_study as _estimate_runs
from persona_collapse.study.orchestrate import study_status as _run_status
from persona_collapse.study.spec import StudyConfig

logger = logging.getLogger(__name__)

CONTROLS_STORE = "controls.db"
"""File name of the control store in the study's output folder."""

N_OPTIONS = {"mmlu": 4, "lookup": 6}
"""Answer-set size of the tasks with a closed answer set (for the normalised Gini)."""


@dataclass(frozen=True)
class PlannedControl:
    """One control run of the study.

    Attributes:
        family, label: The variant.
        task: ``bfi44``, ``mmlu``, ``gsm8k`` or ``lookup``.
        name: Run name (``<family>/<variant>/<task>``).
        planned: Slots the run needs.
    """

    family: str
    label: str
    task: str
    name: str
    planned: int


def controls_path(config: StudyConfig) -> Path:
    """The study's control store."""
    return config.output_dir / CONTROLS_STORE


def control_repetitions(config: StudyConfig) -> int:
    """Repetitions per control item (``controls.repetitions``, else the protocol's)."""
    c = config.controls
    return c.repetitions if c is not None and c.repetitions else config.protocol.repetitions


def bfi_personas(study: LoadedStudy, inputs: StudyInputs) -> PersonaSet:
    """The personas of the BFI-44 runs (``controls.max_personas`` of the protocol's)."""
    c = study.config.controls
    limit = c.max_personas if c is not None else None
    if limit is None or limit >= len(inputs.personas):
        return inputs.personas
    return inputs.personas.head(limit)


def control_tasks(config: StudyConfig) -> dict[str, ControlTask]:
    """The study's capability and lookup tasks, by task name."""
    c = config.controls
    if c is None:
        return {}
    tasks: dict[str, ControlTask] = {}
    if c.capability is not None:
        for name, path in c.capability.files().items():
            tasks[name] = capability_task(load_items(path, task=name))  # type: ignore[arg-type]
    if c.lookup:
        tasks["lookup"] = lookup_task()
    return tasks


def _collected_variants(config: StudyConfig) -> list[tuple[str, str]]:
    return [
        (family, label)
        for family, fam in config.families.items()
        for label, v in fam.variants.items()
        if v.backend is not None
    ]


def plan_controls(study: LoadedStudy, inputs: StudyInputs | None = None) -> list[PlannedControl]:
    """Every control run the study needs (empty without ``controls:``)."""
    cfg = study.config
    if cfg.controls is None:
        return []
    n = control_repetitions(cfg)
    tasks = control_tasks(cfg)
    out: list[PlannedControl] = []
    for family, label in _collected_variants(cfg):
        if cfg.controls.bfi44:
            personas = bfi_personas(study, inputs or resolve_inputs(study))
            bfi = load_instrument("bfi44")
            per_cell = 1 if cfg.protocol.mode == "exact" else cfg.protocol.repetitions
            out.append(
                PlannedControl(
                    family,
                    label,
                    "bfi44",
                    f"{family}/{label}/bfi44",
                    len(personas) * len(bfi.active_items) * per_cell,
                )
            )
        for name, task in tasks.items():
            out.append(
                PlannedControl(
                    family, label, name, f"{family}/{label}/{name}", len(task.item_ids) * n
                )
            )
    return out


def _backend(
    study: LoadedStudy,
    inputs: StudyInputs,
    family: str,
    label: str,
    instrument: Instrument,
    builder: BackendBuilder,
) -> Backend:
    kind, options = backend_options(study.config, family, label, instrument, inputs.template)
    return builder(kind, options)


def collect_study_controls(
    study: LoadedStudy, *, backend_builder: BackendBuilder | None = None, progress: bool = False
) -> dict[str, int]:
    """Collect what the control runs lack; returns run name -> slots added this session.

    Raises:
        BackendError: A backend failed; what was collected is stored, rerun to resume.
    """
    cfg = study.config
    plan = plan_controls(study)
    if not plan:
        return {}
    inputs = resolve_inputs(study)
    tasks = control_tasks(cfg)
    bfi = load_instrument("bfi44")
    builder: BackendBuilder = backend_builder or (lambda kind, opts: create_backend(kind, **opts))
    added: dict[str, int] = {}
    built: list[Backend] = []

    async def main() -> None:
        try:
            with RunStore.open(cfg.store_path) as runs, ControlStore.open(controls_path(cfg)) as cs:
                for run in plan:
                    spec_b = cfg.backends[
                        cfg.families[run.family].variants[run.label].backend or ""
                    ]
                    pacing = spec_b.pacing(cfg.protocol.max_retries)
                    model = model_label(cfg, run.family, run.label)
                    if run.task == "bfi44":
                        backend = _backend(study, inputs, run.family, run.label, bfi, builder)
                        built.append(backend)
                        spec = make_run_spec(
                            backend=backend,
                            instrument=bfi,
                            personas=list(bfi_personas(study, inputs)),
                            template=inputs.template,
                            name=run.name,
                            model=model,
                            protocol=cfg.protocol,
                        )
                        summary = await collect(
                            runs,
                            spec,
                            backend,
                            list(bfi_personas(study, inputs)),
                            bfi,
                            inputs.template,
                            pacing=pacing,
                            progress=progress,
                            prices=spec_b.prices,
                        )
                        added[run.name] = summary.collected
                        continue
                    backend = _backend(
                        study, inputs, run.family, run.label, inputs.instrument, builder
                    )
                    built.append(backend)
                    task = tasks[run.task]
                    cspec = control_spec(
                        task,
                        backend,
                        name=run.name,
                        temperature=cfg.protocol.temperature,
                        repetitions=control_repetitions(cfg),
                        seed=cfg.protocol.seed,
                        model=model,
                    )
                    result = await collect_controls(cs, task, backend, cspec, pacing=pacing)
                    added[run.name] = result.added
        finally:
            await asyncio.gather(*(b.aclose() for b in built), return_exceptions=True)

    asyncio.run(main())
    return added


def controls_status(study: LoadedStudy) -> list[tuple[PlannedControl, int, str]]:
    """(run, slots stored, status) of every control run; reads the stores only."""
    cfg = study.config
    plan = plan_controls(study)
    stored: dict[str, tuple[int, str]] = {}
    if plan and cfg.store_path.is_file():
        with RunStore.open(cfg.store_path, create=False) as runs:
            for record in runs.list_runs():
                if record.name.endswith("/bfi44"):
                    counts = runs.counts(record.run_id)
                    value = counts.distributions if record.mode == "exact" else counts.slots
                    stored[record.name] = (value, record.status)
    if plan and controls_path(cfg).is_file():
        with ControlStore.open(controls_path(cfg), create=False) as cs:
            for crecord in cs.list_runs():
                stored[crecord.name] = (len(cs.completed_slots(crecord.run_id)), crecord.status)
    return [(run, *stored.get(run.name, (0, "missing"))) for run in plan]


def estimate_controls(study: LoadedStudy) -> list[tuple[PlannedControl, RunEstimate]]:
    """Forecast of the control runs still to collect (as ``study run --dry-run`` shows)."""
    cfg = study.config
    plan = plan_controls(study)
    if not plan:
        return []
    inputs = resolve_inputs(study)
    tasks = control_tasks(cfg)
    n = control_repetitions(cfg)
    done: dict[str, set[tuple[int, int]]] = {}
    if controls_path(cfg).is_file():
        with ControlStore.open(controls_path(cfg), create=False) as cs:
            done = {r.name: cs.completed_slots(r.run_id) for r in cs.list_runs()}
    out: list[tuple[PlannedControl, RunEstimate]] = []
    for run in plan:
        prices = cfg.backends[cfg.families[run.family].variants[run.label].backend or ""].prices
        if run.task == "bfi44":
            est = estimate_run(
                run.name,
                "persona",
                instrument=load_instrument("bfi44"),
                template=inputs.template,
                personas=list(bfi_personas(study, inputs)),
                mode=cfg.protocol.store_mode,
                repetitions=cfg.protocol.repetitions,
                store=cfg.store_path,
                prices=prices,
            )
            out.append((run, est))
            continue
        task = tasks[run.task]
        have = done.get(run.name, set())
        requests = missing = prompt_tokens = completion_tokens = 0
        for item_id in task.item_ids:
            lack = sum((item_id, r) not in have for r in range(1, n + 1))
            if lack:
                requests += 1
                missing += lack
                prompt_tokens += count_message_tokens([Message("user", task.prompt(item_id))])
                completion_tokens += lack * MAX_TOKENS.get(run.task, 256)
        usage = Usage(prompt_tokens, completion_tokens)
        cost = None if prices is None else estimate_cost(usage, prices)
        out.append(
            (
                run,
                RunEstimate(
                    name=run.name,
                    kind=run.task,
                    mode="sampling",
                    cells=len(task.item_ids),
                    units=run.planned,
                    missing=missing,
                    requests=requests,
                    requests_without_n=missing,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost,
                ),
            )
        )
    return out


def _control_run(study: LoadedStudy, c: PlannedControl) -> PlannedRun:
    variant = study.config.families[c.family].variants[c.label]
    kind: RunKindInStudy = c.task  # type: ignore[assignment]
    return PlannedRun(c.family, c.label, kind, c.name, None, None, variant.backend, c.planned)


def study_status(study: LoadedStudy) -> list[RunProgress]:
    """Stored progress of every planned run, the control runs included (no model call)."""
    return _run_status(study) + [
        RunProgress(_control_run(study, c), stored, 0, status)
        for c, stored, status in controls_status(study)
    ]


def estimate_study(
    study: LoadedStudy, *, preflight: bool = False
) -> list[tuple[PlannedRun, RunEstimate]]:
    """:func:`~persona_collapse.study.orchestrate.estimate_study` plus the control runs."""
    return _estimate_runs(study, preflight=preflight) + [
        (_control_run(study, c), e) for c, e in estimate_controls(study)
    ]


# --- analysis -------------------------------------------------------------------------------


def _persona_instability(
    frame: Any, n_options: int, rng: np.random.Generator, n_boot: int
) -> tuple[float, float, float, float]:
    """Non-unanimity and normalised Gini of persona x item cells, with persona-bootstrap SEs."""
    valid = frame[frame["rating"] >= 0]
    personas = valid["persona_id"].to_numpy()
    keys = personas.astype(np.int64) * 100_000 + valid["item_id"].to_numpy().astype(np.int64)
    cells, _, counts = answer_counts(keys, valid["rating"].to_numpy())
    multi = counts.sum(axis=1) >= 2
    nu = non_unanimity(counts)
    gini = gini_impurity(counts) / (1.0 - 1.0 / n_options)
    owner = cells // 100_000
    ids, inv = np.unique(owner[multi], return_inverse=True)
    sums_nu = np.bincount(inv, nu[multi], minlength=len(ids))
    sums_g = np.bincount(inv, gini[multi], minlength=len(ids))
    sizes = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boot_nu = sums_nu[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    boot_g = sums_g[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    return (
        float(nu[multi].mean()),
        float(boot_nu.std(ddof=1)),
        float(gini[multi].mean()),
        float(boot_g.std(ddof=1)),
    )


def _answers(cs: ControlStore, name: str) -> ControlAnswers | None:
    record = cs.find_run(name)
    if record is None:
        return None
    rows = cs.answers(record.run_id)
    if not rows or not any(a.format_valid for a in rows):
        return None
    subjects = {i.item_id: i.subject for i in cs.items(record.run_id)}
    return ControlAnswers.from_arrays(
        np.asarray([a.item_id for a in rows], dtype=np.int64),
        [a.answer for a in rows],
        [float(a.correct) for a in rows],
        subject=[subjects.get(a.item_id, "") for a in rows],
    )


def analyse_controls(study: LoadedStudy) -> ControlsReport | None:
    """Instability side by side, capability deltas and verdicts; None without controls."""
    cfg = study.config
    if cfg.controls is None:
        return None
    seed = cfg.analysis.seed
    rng = np.random.default_rng([seed, 12])
    n_boot = max(200, min(cfg.analysis.n_persona_boot, 2000))
    rows: list[InstabilityRow] = []
    persona_stats: dict[tuple[str, str, str], tuple[float, float]] = {}
    if cfg.store_path.is_file():
        inst = resolve_inputs(study).instrument
        with RunStore.open(cfg.store_path, create=False) as runs:
            by_name = {r.name: r for r in runs.list_runs()}
            for family, label in _all_variants(cfg):
                for kind, name, k in (
                    (inst.name, f"{family}/{label}", inst.scale_max - inst.scale_min + 1),
                    ("bfi44", f"{family}/{label}/bfi44", 5),
                ):
                    record = by_name.get(name)
                    if record is None or record.mode == "exact":
                        continue
                    frame = runs.ratings_frame(record.run_id)
                    if frame.empty:
                        continue
                    nu, nu_se, g, g_se = _persona_instability(frame, k, rng, n_boot)
                    kind_label = f"{kind} persona"
                    rows.append(
                        InstabilityRow(family, label, kind_label, nu, nu_se, g, g_se, None, None)
                    )
                    persona_stats[(family, label, kind_label)] = (nu, nu_se)
    answers: dict[tuple[str, str, str], ControlAnswers] = {}
    if controls_path(cfg).is_file():
        with ControlStore.open(controls_path(cfg), create=False) as cs:
            for family, label in _all_variants(cfg):
                for task in control_tasks(cfg):
                    data = _answers(cs, f"{family}/{label}/{task}")
                    if data is None:
                        continue
                    answers[(family, label, task)] = data
                    m = capability_metrics(data, n_item_boot=n_boot, n_rep_boot=200, rng=rng)
                    options = N_OPTIONS.get(task)
                    scale = (1.0 - 1.0 / options) if options else math.nan
                    rows.append(
                        InstabilityRow(
                            family,
                            label,
                            task,
                            m.non_unanimity_rate,
                            m.non_unanimity_se,
                            m.mean_gini / scale,
                            m.gini_se / scale,
                            m.accuracy_all,
                            m.accuracy_se,
                        )
                    )
    deltas: list[ControlDelta] = []
    gaps: list[PersonaGap] = []
    persona_measure = f"{resolve_inputs(study).instrument.name} persona"
    for family, fam in cfg.families.items():
        base = fam.base
        for label in fam.variants:
            if label == base:
                continue
            for task in control_tasks(cfg):
                b, v = answers.get((family, base, task)), answers.get((family, label, task))
                if b is None or v is None:
                    continue
                d = variant_delta(b, v, n_boot=n_boot, rng=rng)
                for measure, est in (("accuracy", d.accuracy), ("non_unanimity", d.non_unanimity)):
                    deltas.append(
                        ControlDelta(
                            family,
                            label,
                            task,
                            measure,
                            est.point,
                            est.lo,
                            est.hi,
                            est.p,
                            math.nan,
                        )
                    )
                mfq = f"{persona_measure}"
                pb, pv = (
                    persona_stats.get((family, base, mfq)),
                    persona_stats.get((family, label, mfq)),
                )
                if pb is None or pv is None:
                    continue
                se_c = (d.non_unanimity.hi - d.non_unanimity.lo) / (2 * 1.959963984540054)
                diff = (pv[0] - pb[0]) - d.non_unanimity.point
                se = math.sqrt(pb[1] ** 2 + pv[1] ** 2 + se_c**2)
                gaps.append(
                    PersonaGap(family, label, task, diff, diff - 1.96 * se, diff + 1.96 * se)
                )
    adjusted: list[float] = [float(p) for p in holm([d.p for d in deltas])] if deltas else []
    deltas = [
        dataclasses.replace(d, p_holm=float(p)) for d, p in zip(deltas, adjusted, strict=True)
    ]
    report = ControlsReport(
        rows=tuple(rows),
        deltas=tuple(deltas),
        gaps=tuple(gaps),
        alpha=cfg.analysis.alpha,
        verdicts=(),
        bases=tuple((f, fam.base) for f, fam in cfg.families.items()),
    )
    return dataclasses.replace(report, verdicts=build_verdicts(report))


def _all_variants(config: StudyConfig) -> list[tuple[str, str]]:
    return [(f, label) for f, fam in config.families.items() for label in fam.variants]


def write_controls_outputs(
    report: ControlsReport, folder: Path, *, study: LoadedStudy | None = None
) -> list[Path]:
    """``controls.csv`` (instability and accuracy per variant and task),
    ``controls_deltas.csv`` (variant - base with CIs and Holm-adjusted p-values) and,
    with ``study``, every control run in the reference CSV layout under
    ``controls/<family>__<variant>_<task>.csv`` (``pcollapse metrics`` reads them)."""
    import pandas as pd

    from persona_collapse.core.files import atomic_path

    out: list[Path] = []
    for name, records in (
        ("controls.csv", [r.__dict__ for r in report.rows]),
        ("controls_deltas.csv", [d.__dict__ for d in report.deltas]),
    ):
        path = folder / name
        with atomic_path(path) as tmp:
            pd.DataFrame.from_records(records).to_csv(tmp, index=False)
        out.append(path)
    if study is not None and controls_path(study.config).is_file():
        with ControlStore.open(controls_path(study.config), create=False) as cs:
            for record in cs.list_runs():
                family, label, task = record.name.rsplit("/", 2)
                safe = f"{family}__{label}".replace("/", "_").replace(" ", "_")
                out.append(cs.export_csv(record.run_id, folder / "controls" / f"{safe}_{task}.csv"))
    return out


__all__ = [
    "CONTROLS_STORE",
    "PlannedControl",
    "analyse_controls",
    "collect_study_controls",
    "control_repetitions",
    "control_tasks",
    "controls_path",
    "controls_status",
    "estimate_controls",
    "estimate_study",
    "plan_controls",
    "study_status",
    "write_controls_outputs",
]
