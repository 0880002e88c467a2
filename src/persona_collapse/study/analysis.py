"""From a study's run store to :class:`~persona_collapse.report.model.StudyResults`.

Reads the stores only (no model call): metrics with standard errors, self and
toxic profiles, comparisons per family and averaged by role, scale-usage and
parse-failure diagnostics, S(T) and R(T) curves for logprobs runs, the data
counts (requests, tokens, cost), the emergent-misalignment verification of
verified variants, and the difference tests of every variant against its base
(:func:`~persona_collapse.stats.significance.study_significance`: paired persona
bootstrap, Holm-corrected across families and foundations).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persona_collapse.backends.base import MIN_SCALE_MASS, Usage
from persona_collapse.core.config import AnalysisConfig
from persona_collapse.core.errors import UserError
from persona_collapse.core.frames import INVALID_RATING
from persona_collapse.core.instrument import Instrument
from persona_collapse.engine.costs import ModelPrices, estimate_cost
from persona_collapse.report.diagnostics import (
    ParseFailures,
    ScaleUsage,
    ceiling_saturation_index,
    parse_failures,
    scale_usage,
    scale_usage_from_distributions,
)
from persona_collapse.report.model import (
    CellMeans,
    DataCounts,
    FamilyResult,
    StudyResults,
    TemperaturePoint,
    VariantDiagnostics,
    VariantResult,
)
from persona_collapse.stats.compare import (
    AverageChange,
    FamilyComparison,
    average_changes,
    compare_family,
)
from persona_collapse.stats.metrics import (
    RunMetrics,
    SelfProfile,
    analyze_distributions,
    self_profile,
    self_profile_from_distributions,
)
from persona_collapse.stats.significance import (
    RunCells,
    StudySignificance,
    corrected_fields,
    run_cells,
    study_significance,
)
from persona_collapse.stats.sources import (
    LoadedRun,
    loaded_run,
    run_metrics,
    run_self_profile,
)
from persona_collapse.store.sqlite import RunRecord, RunStore
from persona_collapse.study.loading import LoadedStudy, verify_config_values
from persona_collapse.study.orchestrate import (
    PlannedRun,
    StudyInputs,
    model_label,
    prepare_study,
    require_store,
)
from persona_collapse.study.produce import read_produced
from persona_collapse.study.spec import StudyConfig
from persona_collapse.study.verification import load_verification, read_index
from persona_collapse.variants.verify.results import VerifyResult

logger = logging.getLogger(__name__)


def _cost(usage: Usage, prices: ModelPrices | None) -> float | None:
    return None if prices is None else estimate_cost(usage, prices)


def _probs(run: LoadedRun) -> np.ndarray[Any, np.dtype[np.float64]]:
    assert run.distributions is not None  # callers check: exact runs only
    cols = [f"p{k}" for k in run.instrument.scale]
    return run.distributions[cols].to_numpy(dtype=float)


def _is_exact(run: LoadedRun) -> bool:
    return run.distributions is not None and len(run.distributions) > 0


def _cell_means(run: LoadedRun, *, by_persona: bool) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Mean rating of each cell (persona x item, or item alone)."""
    if _is_exact(run):
        d = run.distributions
        assert d is not None
        means = _probs(run) @ np.asarray(run.instrument.scale, dtype=float)
        mu = pd.DataFrame({"persona_id": d["persona_id"], "item_id": d["item_id"], "mu": means})
        keys = ["persona_id", "item_id"] if by_persona else ["item_id"]
        return mu.groupby(keys)["mu"].mean().to_numpy(dtype=float)
    r = run.ratings
    valid = r[r["rating"] != INVALID_RATING]
    keys = ["persona_id", "item_id"] if by_persona else ["item_id"]
    return valid.groupby(keys)["rating"].mean().to_numpy(dtype=float)


def _cell_means_table(run: LoadedRun | None) -> CellMeans | None:
    """Persona x item mean ratings of a persona run, items grouped by foundation."""
    if run is None or not _has_answers(run):
        return None
    if _is_exact(run):
        d = run.distributions
        assert d is not None
        means = _probs(run) @ np.asarray(run.instrument.scale, dtype=float)
        frame = pd.DataFrame({"persona_id": d["persona_id"], "item_id": d["item_id"], "mu": means})
    else:
        r = run.ratings
        valid = r[r["rating"] != INVALID_RATING]
        frame = pd.DataFrame(
            {"persona_id": valid["persona_id"], "item_id": valid["item_id"], "mu": valid["rating"]}
        )
    if frame.empty:
        return None
    table = frame.groupby(["persona_id", "item_id"])["mu"].mean().unstack("item_id")
    found = run.foundations
    order = list(dict.fromkeys(found.values()))
    items = sorted(
        (int(i) for i in table.columns),
        key=lambda i: (order.index(found[i]) if i in found else len(order), i),
    )
    table = table[items]
    return CellMeans(
        persona_ids=tuple(int(p) for p in table.index),
        item_ids=tuple(items),
        foundations=tuple(found.get(i, "") for i in items),
        means=tuple(tuple(float(x) for x in row) for row in table.to_numpy(dtype=float)),
    )


def _usage_of(run: LoadedRun) -> ScaleUsage | None:
    scale = run.instrument.scale
    if _is_exact(run):
        return scale_usage_from_distributions(_probs(run), scale=scale)
    if run.ratings.empty:
        return None
    return scale_usage(run.ratings["rating"].to_numpy(), scale=scale)


def _parse_of(store: RunStore, record: RunRecord, run: LoadedRun) -> ParseFailures | None:
    """Parse failures of a sampled run: share of rating requests whose reply held no rating.

    Collected runs count every recorded attempt for a slot (backend errors, which
    have no slot, are not parse failures); imported runs count their rows, since
    reference-layout files keep a row (rating -1) for every failed parse.
    """
    if _is_exact(run):
        return None
    if store.counts(record.run_id).attempts:
        attempts = store.attempts_frame(record.run_id)
        attempts = attempts[attempts["repetition"].notna()]
        ratings = attempts["rating"].to_numpy(dtype=float, na_value=np.nan)
        return parse_failures(attempts["persona_id"].to_numpy(), ratings)
    if run.ratings.empty:
        return None
    return parse_failures(run.ratings["persona_id"].to_numpy(), run.ratings["rating"].to_numpy())


def _pooled_profile(run: LoadedRun) -> SelfProfile:
    """Profile of a persona run pooled over its personas (the toxic control)."""
    if _is_exact(run):
        d = run.distributions
        assert d is not None
        cols = [f"p{k}" for k in run.instrument.scale]
        mean = d.groupby("item_id")[cols].mean()
        return self_profile_from_distributions(
            mean.index.to_numpy(),
            mean.to_numpy(dtype=float),
            scale=run.instrument.scale,
            foundations=run.foundations,
        )
    r = run.ratings
    return self_profile(
        r["item_id"].to_numpy(), r["rating"].to_numpy(), foundations=run.foundations
    )


def _temperature_curve(
    run: LoadedRun, temperatures: Sequence[float], analysis: AnalysisConfig
) -> tuple[TemperaturePoint, ...]:
    collected_at = run.temperature
    if not _is_exact(run) or not collected_at:
        return ()
    d = run.distributions
    assert d is not None
    points = []
    for t in temperatures:
        m = analyze_distributions(
            d["persona_id"].to_numpy(),
            d["item_id"].to_numpy(),
            _probs(run),
            scale=run.instrument.scale,
            foundations=run.foundations,
            n_persona_boot=analysis.n_persona_boot,
            rng=analysis.seed,
            temperature=t / collected_at,
            repetitions=run.planned_repetitions,
        )
        points.append(TemperaturePoint(t, dict(m.estimates)))
    return tuple(points)


@dataclass(frozen=True)
class _StudyContext:
    """What every variant of a study is analysed against (one open store)."""

    config: StudyConfig
    store: RunStore
    records: Mapping[str, RunRecord]
    analysis: AnalysisConfig
    verify_index: Mapping[str, Mapping[str, Any]]


@dataclass
class _VariantRuns:
    """A variant's planned runs by kind, those stored and loaded, and notes so far."""

    by_kind: dict[str, PlannedRun]
    loaded: dict[str, LoadedRun] = field(default_factory=dict)
    stored: dict[str, RunRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def stored_as(self, kind: str) -> str | None:
        """Store name of the ``kind`` run when it was loaded."""
        return self.by_kind[kind].stored_as if kind in self.loaded else None


def _load_runs(ctx: _StudyContext, runs: Sequence[PlannedRun]) -> _VariantRuns:
    """Load every stored run of a variant; note the missing and shared ones."""
    found = _VariantRuns(by_kind={r.kind: r for r in runs})
    for kind, planned in found.by_kind.items():
        record = ctx.records.get(planned.stored_as)
        if record is None:
            found.notes.append(f"{kind} run {planned.stored_as!r} not collected yet")
            continue
        found.loaded[kind] = loaded_run(ctx.store, record)
        found.stored[kind] = record
        if planned.shared:
            found.notes.append(
                f"{planned.name!r} shares the answers of {planned.stored_as!r} "
                "(same model and settings); its requests are counted there"
            )
    return found


@dataclass(frozen=True)
class _PersonaResults:
    """What the persona run gives (all empty when there is none)."""

    metrics: RunMetrics | None = None
    scale_usage: ScaleUsage | None = None
    parse: ParseFailures | None = None
    ceiling: float = math.nan
    curve: tuple[TemperaturePoint, ...] = ()
    corrected: Mapping[str, Any] | None = None


def _corrected(persona: LoadedRun, analysis: AnalysisConfig) -> Mapping[str, Any] | None:
    """The run's bias-corrected S, sigma_bar and R, overall and per foundation (None when
    its cells cannot be formed), shown beside the paper's estimates (issue 16)."""
    try:
        return corrected_fields(
            run_cells(persona),
            n_boot=analysis.n_persona_boot,
            rng=analysis.seed,
            per_foundation=True,
        )
    except ValueError:
        return None


def _persona_results(ctx: _StudyContext, runs: _VariantRuns) -> _PersonaResults:
    """Metrics (every registered statistic), diagnostics and S(T)/R(T) of the persona run."""
    persona = runs.loaded.get("persona")
    if persona is None:
        return _PersonaResults()
    metrics = None
    try:
        metrics = run_metrics(persona, ctx.analysis)
    except (UserError, ValueError) as exc:
        runs.notes.append(f"no S/R for {persona.name!r}: {exc}")
    if persona.protocol is not None and not persona.protocol.follows:
        runs.notes.append(persona.protocol.message(persona.name))
    return _PersonaResults(
        metrics=metrics,
        scale_usage=_usage_of(persona),
        parse=_parse_of(ctx.store, runs.stored["persona"], persona),
        ceiling=ceiling_saturation_index(
            _cell_means(persona, by_persona=True), scale_max=persona.instrument.scale_max
        ),
        curve=_temperature_curve(persona, ctx.config.protocol.temperatures, ctx.analysis),
        corrected=None if metrics is None else _corrected(persona, ctx.analysis),
    )


def _has_answers(run: LoadedRun | None) -> bool:
    return run is not None and (_is_exact(run) or not run.ratings.empty)


def _self_results(
    ctx: _StudyContext, runs: _VariantRuns
) -> tuple[SelfProfile | None, float, float]:
    """``(self profile, ceiling-saturation index, parse-failure rate)`` of the self run."""
    own = runs.loaded.get("self")
    if own is None or not _has_answers(own):
        return None, math.nan, math.nan
    ceiling = ceiling_saturation_index(
        _cell_means(own, by_persona=False), scale_max=own.instrument.scale_max
    )
    own_parse = _parse_of(ctx.store, runs.stored["self"], own)
    return run_self_profile(own), ceiling, own_parse.rate if own_parse is not None else math.nan


def _personas_total(persona: LoadedRun | None) -> int:
    """Distinct personas stored in the persona run (0 without one)."""
    if persona is None:
        return 0
    if not persona.ratings.empty:
        return int(persona.ratings["persona_id"].nunique())
    if _is_exact(persona) and persona.distributions is not None:
        return int(persona.distributions["persona_id"].nunique())
    return 0


def _data_counts(
    ctx: _StudyContext,
    runs: _VariantRuns,
    metrics: RunMetrics | None,
    prices: ModelPrices | None,
) -> DataCounts:
    """Slots, failures, requests, tokens and cost of a variant's runs; notes incomplete ones."""
    slots = failed = requests = 0
    usage = Usage()
    planned_total: int | None = 0
    for kind, planned in runs.by_kind.items():
        record = ctx.records.get(planned.stored_as)
        if planned.planned is None or planned_total is None:
            planned_total = None
        else:
            planned_total += planned.planned
        if record is None:
            continue
        c = ctx.store.counts(record.run_id)
        slots += c.distributions if record.mode == "exact" else c.slots
        failed += c.failed
        if not planned.shared:
            n_req, u = ctx.store.usage(record.run_id)
            requests += n_req
            usage = usage + u
        if planned.planned is not None and c.slots + c.distributions < planned.planned:
            runs.notes.append(
                f"{kind} run {planned.stored_as!r} incomplete: "
                f"{c.slots + c.distributions} of {planned.planned} stored"
            )
    return DataCounts(
        personas_total=_personas_total(runs.loaded.get("persona")),
        personas_kept=0 if metrics is None else metrics.personas,
        slots=slots,
        planned=planned_total,
        failed=failed,
        requests=requests,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd=_cost(usage, prices),
    )


def _variant_model(ctx: _StudyContext, family: str, label: str, notes: list[str]) -> str:
    """The model a variant is shown under (fine-tuned label, backend model or kind)."""
    config = ctx.config
    spec = config.families[family].variants[label]
    backend = config.backends.get(spec.backend or "")
    model = spec.model or (backend.model if backend is not None else None) or ""
    if spec.finetune is not None:
        model = model_label(config, family, label)
        if read_produced(config, family, label) is None:
            notes.append(f"{family}/{label} is not fine-tuned yet")
    if not model and backend is not None:
        model = backend.kind
    return model or (spec.persona_file.name if spec.persona_file else "")


def _verification(
    ctx: _StudyContext, family: str, label: str, notes: list[str]
) -> VerifyResult | None:
    """The variant's emergent-misalignment verification, when it is verified and was run."""
    if not ctx.config.families[family].variants[label].verified:
        return None
    verification = load_verification(ctx.config, family, label, ctx.verify_index)
    if verification is None:
        notes.append(f"{family}/{label}: verification not run yet")
    return verification


def _variant(
    ctx: _StudyContext, family: str, label: str, planned: Sequence[PlannedRun]
) -> tuple[VariantResult, LoadedRun | None]:
    """One variant's results and its loaded persona run (None without one)."""
    fam = ctx.config.families[family]
    spec = fam.variants[label]
    backend = ctx.config.backends.get(spec.backend or "")
    runs = _load_runs(ctx, planned)
    persona = runs.loaded.get("persona")
    found = _persona_results(ctx, runs)
    self_prof, ceiling_self, self_rate = _self_results(ctx, runs)
    toxic = runs.loaded.get("toxic")
    counts = _data_counts(ctx, runs, found.metrics, None if backend is None else backend.prices)
    model = _variant_model(ctx, family, label, runs.notes)
    verification = _verification(ctx, family, label, runs.notes)
    result = VariantResult(
        family=family,
        label=label,
        role=fam.role_of(label),
        model=model,
        backend="import" if spec.imported else (backend.kind if backend else ""),
        description=spec.description,
        persona_run=runs.stored_as("persona"),
        self_run=runs.stored_as("self"),
        toxic_run=runs.stored_as("toxic"),
        metrics=found.metrics,
        self_profile=self_prof,
        toxic_profile=_pooled_profile(toxic) if toxic is not None and _has_answers(toxic) else None,
        diagnostics=VariantDiagnostics(
            scale_usage=found.scale_usage,
            ceiling_persona=found.ceiling,
            ceiling_self=ceiling_self,
            parse=found.parse,
            self_parse_rate=self_rate,
        ),
        counts=counts,
        temperature_curve=found.curve,
        notes=tuple(runs.notes),
        verification=verification,
        protocol=None if persona is None else persona.protocol,
        low_mass_share=_low_mass_share(persona),
        cell_means=_cell_means_table(persona),
        corrected=found.corrected,
    )
    return result, persona


def _low_mass_share(run: LoadedRun | None) -> float:
    """Share of an exact run's cells with on-scale mass below the threshold (else NaN)."""
    if run is None or run.distributions is None or "mass" not in run.distributions:
        return math.nan
    masses = run.distributions["mass"].to_numpy(dtype=float)
    return float((masses < MIN_SCALE_MASS).mean()) if masses.size else math.nan


def _compare(
    base: str, control: str | None, treatment: str | None, variants: Mapping[str, VariantResult]
) -> tuple[FamilyComparison | None, str | None]:
    """The family's comparison, or None and the reason it cannot be made."""
    base_m = variants[base].metrics if base in variants else None
    others = {k: v.metrics for k, v in variants.items() if k != base and v.metrics is not None}
    if base_m is None or not others:
        return None, None
    try:
        comparison = compare_family(
            base_m,
            others,
            control=control if control in others else None,
            treatment=treatment if treatment in others else None,
        )
    except ValueError:
        # A base value of 0 (sigma_bar with every cell constant, or S with identical
        # personas) has no relative change.
        return None, (
            f"no relative changes against {base!r}: its S or σ̄ is 0 "
            "(every answer identical; more repetitions or personas help)"
        )
    return comparison, None


def _average(families: Sequence[FamilyResult]) -> AverageChange | None:
    """Mean changes over families, keyed by role, so differently labelled variants pool."""
    by_role = []
    for fam in families:
        cmp = fam.comparison
        if cmp is None:
            continue
        variants = {}
        for role, label in (("control", fam.control), ("treatment", fam.treatment)):
            if label is not None and label in cmp.variants:
                variants[role] = cmp.variants[label]
        if not variants:
            continue
        by_role.append(
            FamilyComparison(
                variants=variants,
                control="control" if "control" in variants else None,
                treatment="treatment" if "treatment" in variants else None,
                excess=cmp.excess,
            )
        )
    return average_changes(by_role) if by_role else None


def shown_path(value: Any, root: Path) -> str:
    """A path for the report: relative to the study file's folder (``root``), so the
    report never shows an absolute path of the machine it ran on; other text as is."""
    text = str(value)
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        shared = os.path.commonpath([path, root.resolve()])
    except ValueError:  # another drive (Windows): the name alone
        return path.name
    if Path(shared) == Path(path.anchor):
        # Nothing in common but the file system's root: a relative path would spell out
        # the machine's folders ("../../../work/..."), so show only the last two parts.
        return str(Path("…", *path.parts[-2:]))
    return os.path.relpath(path, root)


def _protocol_display(
    config: StudyConfig,
    inputs: StudyInputs,
    analysis: AnalysisConfig,
    *,
    collects: bool,
    root: Path,
) -> dict[str, Any]:
    proto = config.protocol
    personas = shown_path(inputs.personas.source, root)
    return {
        "personas": f"{shown_path(inputs.personas.name, root)} ({len(inputs.personas)} personas)"
        if collects
        else f"from the imported files (persona texts: {personas})",
        "instrument": f"{inputs.instrument.name} ({len(inputs.instrument.active_items)} items, "
        f"scale {inputs.instrument.scale_min}-{inputs.instrument.scale_max})",
        "template": shown_path(proto.template, root) if proto.template else "built-in",
        "repetitions": proto.repetitions,
        "temperature": proto.temperature,
        "mode": proto.mode,
        "self runs": proto.self_run,
        "toxic control": (
            f"{shown_path(inputs.toxic.name, root)} ({len(inputs.toxic)} personas)"
            if inputs.toxic
            else "off"
        ),
        "S band": f"[{proto.band[0]:g}, {proto.band[1]:g}]",
        "bootstrap": f"{analysis.n_persona_boot} persona + {analysis.n_rerun_boot} rerun draws",
        "difference tests": (
            f"paired persona bootstrap ({max(analysis.n_persona_boot, 2)} draws), "
            f"Holm across families and foundations, α = {config.analysis.alpha:g}"
            if config.analysis.significance
            else "off"
        ),
        "max retries": proto.max_retries,
    }


def _seeds(config: StudyConfig) -> dict[str, Any]:
    seeds: dict[str, Any] = {
        "protocol.seed (request seeds derive from it)": config.protocol.seed,
        "analysis.seed (bootstrap draws)": config.analysis.seed,
    }
    for name, backend in config.backends.items():
        if "seed" in backend.options:
            seeds[f"backends.{name}.options.seed"] = backend.options["seed"]
    for family, fam in config.families.items():
        for label, variant in fam.variants.items():
            if variant.finetune is not None:
                seeds[f"families.{family}.{label}.finetune.seed (training)"] = variant.finetune.seed
            if variant.verified:
                values = verify_config_values(config, family, label)
                seeds[f"verification of {family}/{label} (request seeds)"] = values.get("seed", 0)
            for key in ("seed", "world_seed"):
                if key in variant.options:
                    seeds[f"families.{family}.{label}.options.{key}"] = variant.options[key]
    return seeds


def _persona_texts(
    store: RunStore, records: Mapping[str, RunRecord], plan: Sequence[PlannedRun]
) -> dict[int, str]:
    for run in plan:
        if run.kind != "persona" or run.stored_as not in records:
            continue
        texts = store.personas(records[run.stored_as].run_id)
        if texts:
            return dict(enumerate(texts))
    return {}


_ROLE_KEYS = {"base": "base", "control": "control", "treatment": "treatment"}


def _test_key(role: str | None, label: str) -> str:
    """Key of a variant in the difference tests: its role, else its label (kept apart
    from the role keys)."""
    if role is not None:
        return _ROLE_KEYS[role]
    return f"variant:{label}" if label in _ROLE_KEYS.values() or label == "excess" else label


def study_tests(
    config: StudyConfig, persona_runs: Mapping[str, Mapping[str, LoadedRun]], notes: list[str]
) -> tuple[StudySignificance | None, dict[str, dict[str, str]]]:
    """Difference tests of every family with a base and another measured variant.

    Variants are keyed by role (``base``, ``control``, ``treatment``; others by
    label), so the Holm correction runs over the same role across families
    whatever each family calls its variants.

    Returns:
        The tests (None when no family has two measured variants) and, per family,
        test key -> variant label.
    """
    a = config.analysis
    families: dict[str, dict[str, RunCells]] = {}
    labels: dict[str, dict[str, str]] = {}
    for family, runs in persona_runs.items():
        fam = config.families[family]
        if fam.base not in runs or len(runs) < 2:
            continue
        try:
            keyed = {_test_key(fam.role_of(label), label): label for label in runs}
            cells = {key: run_cells(runs[label]) for key, label in keyed.items()}
            base_items = cells["base"].item_ids
            if any(not np.array_equal(c.item_ids, base_items) for c in cells.values()):
                raise ValueError("the variants cover different items")
        except ValueError as exc:
            notes.append(f"{family}: no difference tests ({exc})")
            continue
        families[family] = cells
        labels[family] = keyed
    if not families:
        return None, {}
    try:
        tests = study_significance(
            families,
            rng=a.seed,
            base="base",
            control="control",
            treatment="treatment",
            n_boot=max(a.n_persona_boot, 2),
            n_rerun_boot=a.n_rerun_boot,
        )
    except ValueError as exc:
        notes.append(f"no difference tests ({exc})")
        return None, {}
    return tests, labels


def significance_rows(
    tests: StudySignificance, labels: Mapping[str, Mapping[str, str]], alpha: float
) -> list[dict[str, Any]]:
    """One row per family, contrast, metric and scope, with the draws' settings and seed.

    ``contrast`` is the variant label tested against the base, or ``excess``
    (treatment against control, relative to the base); ``reference`` and
    ``variant`` name the two runs compared.
    """
    rows = []
    for row in tests.rows(alpha):
        fam = tests.families[row["family"]]
        names = labels[row["family"]]
        contrast = fam.contrasts[row["contrast"]]
        # The bias-corrected test beside the paper's; the verdicts follow it (issue 16).
        verdict = fam.verdict(row["contrast"], row["metric"], row["scope"])
        mine = fam.test(row["contrast"], row["metric"], row["scope"])
        corrected = (
            {}
            if verdict is mine
            else {
                "estimate_corrected": verdict.estimate,
                "ci_low_corrected": verdict.ci_low,
                "ci_high_corrected": verdict.ci_high,
                "p_value_corrected": verdict.p_value,
                "p_holm_corrected": verdict.p_holm,
                "significant_corrected": verdict.significant(alpha),
            }
        )
        rows.append(
            {
                "family": row["family"],
                "contrast": names.get(row["contrast"], row["contrast"]),
                "reference": names.get(contrast.reference, contrast.reference),
                "variant": names.get(contrast.variant, contrast.variant),
                "metric": row["metric"],
                "scope": row["scope"],
                "estimate": row["estimate"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "se": row["se"],
                "se_persona": row["se_persona"],
                "se_rerun": row["se_rerun"],
                "z": row["z"],
                "p_value": row["p_value"],
                "p_holm": row["p_holm"],
                "significant": row["significant"],
                "alpha": alpha,
                "n_boot": fam.n_boot,
                "n_rerun_boot": fam.n_rerun_boot,
                "paired": fam.paired,
                "seed": fam.seed,
                **corrected,
                "verdict_estimator": "corrected" if corrected else fam.estimator,
            }
        )
    return rows


def analyse_study(
    study: LoadedStudy,
    *,
    significance: Sequence[Mapping[str, Any]] | None = None,
) -> StudyResults:
    """Compute a study's results from its stores (no model call).

    Args:
        study: The loaded study.
        significance: Rows of difference-test results to show in the report; None
            computes them (when ``analysis.significance`` is on).

    Raises:
        InputFileError: The store does not exist yet.
        ConfigError: The study's inputs do not resolve.
    """
    config = study.config
    inputs, plan = prepare_study(study)
    analysis = config.analysis_config()
    path = require_store(study)
    families: dict[str, FamilyResult] = {}
    notes: list[str] = []
    persona_runs: dict[str, dict[str, LoadedRun]] = {}
    verify_index = read_index(config)
    with RunStore.open(path, create=False) as store:
        ctx = _StudyContext(
            config=config,
            store=store,
            records={r.name: r for r in store.list_runs()},
            analysis=analysis,
            verify_index=verify_index,
        )
        for family, fam in config.families.items():
            persona_runs[family] = {}
            variants: dict[str, VariantResult] = {}
            for label in fam.variants:
                planned = [r for r in plan if r.family == family and r.label == label]
                variants[label], persona = _variant(ctx, family, label, planned)
                if persona is not None:
                    persona_runs[family][label] = persona
            comparison, problem = _compare(fam.base, fam.control, fam.treatment, variants)
            if problem is not None:
                notes.append(f"{family}: {problem}")
            families[family] = FamilyResult(
                name=family,
                base=fam.base,
                control=fam.control,
                treatment=fam.treatment,
                variants=variants,
                comparison=comparison,
            )
        persona_texts = _persona_texts(store, ctx.records, plan)
    seeds = _seeds(config)
    if significance is None and config.analysis.significance:
        tests, labels = study_tests(config, persona_runs, notes)
        if tests is not None:
            significance = significance_rows(tests, labels, config.analysis.alpha)
            for name, tested in tests.families.items():
                seeds[f"difference tests of {name} (drawn from analysis.seed)"] = tested.seed
        else:
            significance = []
    collects = any(r.file is None for r in plan)
    if not persona_texts and collects:
        persona_texts = dict(enumerate(inputs.personas))
    instrument: Instrument = inputs.instrument
    return StudyResults(
        name=config.name,
        description=config.description,
        source=study.source,
        protocol=_protocol_display(config, inputs, analysis, collects=collects, root=study.root),
        band=config.protocol.band,
        analysis=analysis,
        families=families,
        average=_average(list(families.values())),
        foundations=instrument.foundations,
        scale=instrument.scale,
        persona_texts=persona_texts,
        seeds=seeds,
        significance=None if significance is None else tuple(significance),
        alpha=config.analysis.alpha,
        notes=tuple(notes),
    )


__all__ = ["analyse_study", "significance_rows", "study_tests"]
