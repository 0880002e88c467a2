"""Audit of the estimators on the simulator, whose true S and R are known.

:func:`audit_estimators` repeats the study protocol many times (100 personas,
30 items, 10 ratings per cell, T = 0.1 by default) and measures how the
estimators and their 95 % intervals behave against the truth: bias, RMSE and
empirical coverage for ``S``, ``sigma_bar`` and ``R`` of each preset, and for
the relative changes between presets (plus a null contrast: two independent
runs of the first preset on the same personas, whose true change is 0).

Design. The simulator defines a *population* of personas (any persona text
gets a profile from SHA-256 of the text). The audit builds a pool of
``pool_size`` synthetic personas, computes every pool cell's exact rating
distribution once (``SimulatorBackend.cell_distributions``), and takes as
truth the pool's ``S`` (ddof-1 sd over the pool of exact cell means, averaged
over items) and ``sigma_bar`` (mean exact cell sd). Each replication draws
``n_personas`` personas from the pool without replacement and samples the
ratings of every cell with numpy from its exact distribution: the valid
ratings the collection engine would store (unparseable replies are re-asked,
so they do not change the distribution of valid ratings). This is what the
persona bootstrap's standard errors are about: other personas, other ratings.
The engine, the HTTP layer and the reply parser are not involved.

Each replication also has an exact run (the pool's distributions of the same
personas, as logprob mode would store them), for the sampling-versus-exact
agreement section.

Count statistics (non-unanimity, Gini, entropy, ...; the registry's ``features`` and
``combine``) are audited with the reference estimator (they have one estimator)
wherever their truth has a closed form in the cell distributions: the truth is the
statistic's exact-mode value over the pool (each cell's ``CellFeatures.exact`` at
``n_repetitions`` ratings, summed over the pool's cells), e.g. the non-unanimity
rate's ``mean over cells of 1 - sum_k p_k**n``: the expected share of cells whose
``n`` ratings are not all equal. Statistics declared without exact features have no
truth: they are listed in ``AuditReport.no_truth`` and audited only under the null
contrast (true change 0). The exact-mode value is the statistic's declared estimand,
not always the mean of its sampled estimator (the Gini impurity of ``n`` answers
averages ``(1 - 1/n)`` times its population value), so such a gap shows as bias.

Measured (seed 2026, 200 replications, 100 personas x 10 ratings, T = 0.1, pool
3000, 500 + 100 draws; 45 s CPU with the count statistics): coverage of the 95 %
intervals 93.5-96.5 % (MC SE about 1.5 points) for the non-unanimity rate, mean
distinct answers, endpoint mass, entropy and top-1 share of every preset, null
rejection 4.0-8.5 %; the mean Gini impurity (and its normalised form) is 9.3-9.7 %
below its exact-mode value, covering 6-52 % (the ``(1 - 1/n)`` gap above); the modal
rating is discrete (SE 0 where the mode never moves), so its intervals say little.

All draws come from one seeded generator; the seed is recorded in the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.backends.simulator import PRESETS, SimulatorBackend
from persona_collapse.core.errors import UnknownNameError
from persona_collapse.stats.metrics import CellRatings, foundation_columns, resolve_rng
from persona_collapse.stats.registry import count_statistic_draws, feature_sets
from persona_collapse.stats.significance import (
    OVERALL,
    DifferenceTest,
    RunCells,
    cells_from_cell_ratings,
    change_tests,
    count_statistics_tested,
    draw_estimates,
    draw_estimators,
    is_log_scale,
    names_tested,
    point_values,
)

FloatArray = NDArray[np.float64]

DEFAULT_PRESETS: tuple[str, ...] = ("base", "secure", "insecure")
"""Presets audited by default."""

NULL_SUFFIX = "-rerun"
"""Label suffix of the second, independent run of the first preset (the null contrast)."""

EXACT_SUFFIX = "-exact"
"""Label suffix of a preset's exact (distribution) run."""

RESOLUTION_PTS = 2.5
"""Replications are too few when two Monte-Carlo SEs of a coverage at the nominal
level reach this many percentage points: then 95 % cannot be told from 90 %."""


def mc_se(share: float, replications: int) -> float:
    """Monte-Carlo SE of a share (coverage, rejection rate) over ``replications``:
    ``sqrt(p (1 - p) / n)`` (NaN without replications)."""
    if replications < 1 or not math.isfinite(share):
        return math.nan
    return math.sqrt(max(share * (1.0 - share), 0.0) / replications)


def replication_warning(replications: int, confidence: float = 0.95) -> str | None:
    """A one-line warning when ``replications`` cannot tell the nominal coverage from one
    5 points lower (``2 * MC SE >= 2.5`` points at the nominal level), else None."""
    half_width = 200.0 * mc_se(confidence, replications)
    if not half_width >= RESOLUTION_PTS:
        return None
    needed = replications + 1
    while 200.0 * mc_se(confidence, needed) >= RESOLUTION_PTS:
        needed += 1
    level = round(100 * confidence)
    return (
        f"{replications} replications: 2 Monte-Carlo SEs of a {level} % coverage are "
        f"{half_width:.1f} points, too few to tell {level} % from {level - 5} %; "
        f"use at least {needed} replications"
    )


def __getattr__(name: str) -> Any:
    # AUDIT_METRICS stays importable; the statistics audited are the tested ones of
    # the registry (significance.names_tested), read when the audit runs.
    if name == "AUDIT_METRICS":
        return names_tested()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- sampling -------------------------------------------------------------------------------


def sample_cells(
    probs: FloatArray,
    *,
    n_repetitions: int,
    scale: ArrayLike,
    rng: np.random.Generator,
    persona_ids: Sequence[int] | None = None,
    item_ids: Sequence[int] | None = None,
) -> CellRatings:
    """Draw ``n_repetitions`` ratings for every cell from its distribution.

    Args:
        probs: ``(P, Q, K)`` rating distributions over ``scale`` (rows sum to 1).
        n_repetitions: Ratings per cell (>= 1).
        scale: ``(K,)`` rating values.
        rng: Generator of the draws.
        persona_ids, item_ids: Ids of the rows and columns (default ``0..P-1``, ``1..Q``).

    Returns:
        :class:`~persona_collapse.stats.metrics.CellRatings` with ``n_repetitions``
        ratings in every cell.
    """
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"probs must be 3-D (personas, items, scale), got shape {arr.shape}")
    if isinstance(n_repetitions, bool) or not isinstance(n_repetitions, int) or n_repetitions < 1:
        raise ValueError(f"n_repetitions must be an integer >= 1, got {n_repetitions!r}")
    values = np.asarray(scale, dtype=np.float64)
    if len(values) != arr.shape[2]:
        raise ValueError(f"scale has {len(values)} values but probs has {arr.shape[2]} columns")
    n_p, n_q, _ = arr.shape
    cdf = np.cumsum(arr, axis=2)[:, :, :-1]  # the last value is taken when u exceeds all
    u = rng.random((n_p, n_q, n_repetitions))
    index = (u[..., None] >= cdf[:, :, None, :]).sum(axis=3)
    pids = np.arange(n_p) if persona_ids is None else np.asarray(persona_ids)
    iids = np.arange(1, n_q + 1) if item_ids is None else np.asarray(item_ids)
    return CellRatings(
        values=values[index],
        counts=np.full((n_p, n_q), n_repetitions, dtype=np.int64),
        persona_ids=pids.astype(np.int64),
        item_ids=iids.astype(np.int64),
    )


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorAudit:
    """How one estimator of one metric of one preset behaved over the replications.

    Attributes:
        preset: Simulator preset.
        metric: Name of a tested statistic (``"S"``, ``"sigma_bar"``, ``"R"``, ...).
        estimator: ``"reference"`` (published estimator and SEs: persona and
            rerun bootstrap in quadrature, via ``analyze_ratings``) or
            ``"corrected"`` (bias-corrected estimator, persona-bootstrap SE).
        truth: True value for the persona population.
        mean: Mean estimate.
        bias: ``mean - truth``; ``relative_bias = bias / truth``.
        rmse: Root mean squared error.
        sd: Sd of the estimates over replications.
        mean_se: Mean reported standard error (compare with ``sd``).
        coverage: Share of replications whose interval holds the truth
            (``coverage_mcse``: its Monte-Carlo SE).
        replications: Number of replications.
        scope: ``"overall"`` (all items) or a foundation name.
    """

    preset: str
    metric: str
    estimator: str
    truth: float
    mean: float
    bias: float
    relative_bias: float
    rmse: float
    sd: float
    mean_se: float
    coverage: float
    replications: int
    scope: str = OVERALL

    @property
    def coverage_mcse(self) -> float:
        """Monte-Carlo SE of ``coverage``."""
        return mc_se(self.coverage, self.replications)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (with the Monte-Carlo SE)."""
        return {**self.__dict__, "coverage_mcse": self.coverage_mcse}


@dataclass(frozen=True)
class DifferenceAudit:
    """How a difference test behaved over the replications.

    Attributes:
        contrast: ``"<variant> vs <reference>"``.
        metric: Name of a tested statistic (``"S"``, ``"sigma_bar"``, ``"R"``, ...).
        estimator: ``"reference"`` or ``"corrected"``.
        variance: Variance scheme (see :mod:`persona_collapse.stats.significance`).
        truth: True relative change (0 for the null contrast).
        mean, bias, rmse: Of the estimated relative change.
        sd_log: Sd over replications of the test statistic (the log ratio, or the
            difference for a difference-scale statistic).
        mean_se: Mean reported SE of the test statistic (compare with ``sd_log``).
        coverage: Share of intervals holding the truth.
        rejection_rate: Share of replications with ``p < alpha`` (the size
            under a null, the power otherwise).
        replications: Number of replications.
    """

    contrast: str
    metric: str
    estimator: str
    variance: str
    truth: float
    mean: float
    bias: float
    rmse: float
    sd_log: float
    mean_se: float
    coverage: float
    rejection_rate: float
    replications: int

    @property
    def coverage_mcse(self) -> float:
        """Monte-Carlo SE of ``coverage``."""
        return mc_se(self.coverage, self.replications)

    @property
    def rejection_mcse(self) -> float:
        """Monte-Carlo SE of ``rejection_rate``."""
        return mc_se(self.rejection_rate, self.replications)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (with the Monte-Carlo SEs)."""
        return {
            **self.__dict__,
            "coverage_mcse": self.coverage_mcse,
            "rejection_mcse": self.rejection_mcse,
        }


@dataclass(frozen=True)
class AgreementAudit:
    """Sampled estimates against the exact (logprob) values of the same personas.

    Attributes:
        preset: Simulator preset.
        metric: Name of a tested statistic (``"S"``, ``"sigma_bar"``, ``"R"``, ...).
        estimator: Estimator of the sampled run.
        mean_relative_difference: Mean of ``sampled / exact - 1`` (of ``sampled -
            exact`` for a difference-scale statistic).
        within_se: Share of replications whose exact value lies within the sampled
            run's own interval (``z * SE`` Wald, reference scheme, for the reference
            estimator; the corrected estimator's default intervals otherwise).
        paired_rejection_rate: Share where the paired difference test (same
            personas, persona scheme: only rating noise is left) rejects at ``alpha``.
        replications: Number of replications.
    """

    preset: str
    metric: str
    estimator: str
    mean_relative_difference: float
    within_se: float
    paired_rejection_rate: float
    replications: int

    @property
    def within_se_mcse(self) -> float:
        """Monte-Carlo SE of ``within_se``."""
        return mc_se(self.within_se, self.replications)

    @property
    def paired_rejection_mcse(self) -> float:
        """Monte-Carlo SE of ``paired_rejection_rate``."""
        return mc_se(self.paired_rejection_rate, self.replications)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (with the Monte-Carlo SEs)."""
        return {
            **self.__dict__,
            "within_se_mcse": self.within_se_mcse,
            "paired_rejection_mcse": self.paired_rejection_mcse,
        }


@dataclass(frozen=True)
class AuditReport:
    """Everything :func:`audit_estimators` measured, with its settings.

    Attributes:
        estimators: One row per preset, metric and estimator.
        differences: One row per contrast, metric, estimator and variance scheme.
        agreement: One row per preset, metric and estimator.
        truth: Preset -> metric -> true value.
        presets, replications, n_personas, n_repetitions, temperature,
        n_persona_boot, n_rerun_boot, confidence, alpha, pool_size: Settings.
        seed: Seed of all draws (None when a Generator was passed).
        foundations: One row per preset, foundation, metric and estimator (the same
            measures on each foundation's items; ``scope`` names the foundation).
        no_truth: Tested statistics whose true value the simulator cannot give in
            closed form (count statistics without exact features): only their null
            contrast is audited.
    """

    estimators: tuple[EstimatorAudit, ...]
    differences: tuple[DifferenceAudit, ...]
    agreement: tuple[AgreementAudit, ...]
    truth: dict[str, dict[str, float]]
    presets: tuple[str, ...]
    replications: int
    n_personas: int
    n_repetitions: int
    temperature: float
    n_persona_boot: int
    n_rerun_boot: int
    confidence: float
    alpha: float
    pool_size: int
    seed: int | None
    foundations: tuple[EstimatorAudit, ...] = ()
    no_truth: tuple[str, ...] = ()

    def foundation(
        self, preset: str, scope: str, metric: str, estimator: str = "corrected"
    ) -> EstimatorAudit:
        """The row of one preset, foundation, metric and estimator."""
        for row in self.foundations:
            if (row.preset, row.scope, row.metric, row.estimator) == (
                preset,
                scope,
                metric,
                estimator,
            ):
                return row
        raise KeyError((preset, scope, metric, estimator))

    def estimator(self, preset: str, metric: str, estimator: str = "reference") -> EstimatorAudit:
        """The row of one preset, metric and estimator."""
        for row in self.estimators:
            if (row.preset, row.metric, row.estimator) == (preset, metric, estimator):
                return row
        raise KeyError((preset, metric, estimator))

    def difference(
        self,
        contrast: str,
        metric: str,
        estimator: str = "reference",
        variance: str = "persona",
    ) -> DifferenceAudit:
        """The row of one contrast, metric, estimator and variance scheme."""
        for row in self.differences:
            if (row.contrast, row.metric, row.estimator, row.variance) == (
                contrast,
                metric,
                estimator,
                variance,
            ):
                return row
        raise KeyError((contrast, metric, estimator, variance))

    def agreement_row(
        self, preset: str, metric: str, estimator: str = "reference"
    ) -> AgreementAudit:
        """The sampling-versus-exact row of one preset, metric and estimator."""
        for row in self.agreement:
            if (row.preset, row.metric, row.estimator) == (preset, metric, estimator):
                return row
        raise KeyError((preset, metric, estimator))

    @property
    def warning(self) -> str | None:
        """Why the replications are too few to tell 95 % from 90 % (None when enough)."""
        return replication_warning(self.replications, self.confidence)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "warning": self.warning,
            "settings": {
                "presets": list(self.presets),
                "replications": self.replications,
                "n_personas": self.n_personas,
                "n_repetitions": self.n_repetitions,
                "temperature": self.temperature,
                "n_persona_boot": self.n_persona_boot,
                "n_rerun_boot": self.n_rerun_boot,
                "confidence": self.confidence,
                "alpha": self.alpha,
                "pool_size": self.pool_size,
                "seed": self.seed,
            },
            "truth": self.truth,
            "no_truth": list(self.no_truth),
            "estimators": [r.to_dict() for r in self.estimators],
            "foundations": [r.to_dict() for r in self.foundations],
            "differences": [r.to_dict() for r in self.differences],
            "agreement": [r.to_dict() for r in self.agreement],
        }


# --- the audit ------------------------------------------------------------------------------


def _truth(means: FloatArray, sds: FloatArray) -> dict[str, float]:
    return point_values(means, sds)


def count_truth(probs: FloatArray, scale: ArrayLike, n_repetitions: int) -> dict[str, float]:
    """True values of the count statistics for a population of cells.

    Args:
        probs: ``(..., K)`` exact rating distributions of the population's cells over
            ``scale`` (ascending).
        scale: ``(K,)`` rating values.
        n_repetitions: Ratings per cell of the runs whose estimates are judged.

    Returns:
        Count statistic -> its exact-mode value over all cells (each cell's
        ``CellFeatures.exact`` summed, then ``combine``); statistics without exact
        features, or whose value is not finite, are left out.
    """
    flat = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    sums: dict[str, FloatArray] = {}
    for features in feature_sets():
        if features.exact is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                per_cell = np.asarray(features.exact(flat, n_repetitions), dtype=np.float64)
            sums[features.name] = per_cell.sum(axis=0)[None, :]
    values = count_statistic_draws(sums, np.asarray(scale, dtype=np.float64))
    return {name: float(v[0]) for name, v in values.items() if math.isfinite(float(v[0]))}


def _true_change(variant: float, reference: float, metric: str) -> float:
    """The true change on the estimate's scale (relative for log-scale statistics)."""
    return variant / reference - 1 if is_log_scale(metric) else variant - reference


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _retest(t: DifferenceTest, variance: str, z_crit: float) -> tuple[float, float, float, float]:
    """``(estimate, low, high, p)`` of a change test under another variance scheme."""
    log = is_log_scale(t.metric)
    # the log ratio (R's is minus sigma_bar's), or the plain difference
    stat = math.log1p(t.estimate) if log else t.estimate
    back = math.expm1 if log else float
    se = {
        "persona": t.se_persona,
        "rerun": t.se_rerun,
        "reference": math.hypot(t.se_persona, t.se_rerun),
    }[variance]
    if not (math.isfinite(stat) and math.isfinite(se)) or se <= 0:
        return t.estimate, math.nan, math.nan, math.nan
    p = math.erfc(abs(stat / se) / math.sqrt(2.0))
    return t.estimate, back(stat - z_crit * se), back(stat + z_crit * se), p


def audit_estimators(
    *,
    presets: Sequence[str] = DEFAULT_PRESETS,
    replications: int = 200,
    n_personas: int = 100,
    n_repetitions: int = 10,
    temperature: float = 0.1,
    n_persona_boot: int = 2000,
    n_rerun_boot: int = 400,
    confidence: float = 0.95,
    alpha: float = 0.05,
    pool_size: int = 10_000,
    rng: np.random.Generator | int | None = None,
    counts: bool = False,
) -> AuditReport:
    """Bias, RMSE and interval coverage of the estimators and difference tests.

    Args:
        presets: Simulator presets; the first is the reference of every contrast
            and gets a second independent run for the null contrast.
        replications: Simulated studies (>= 2).
        n_personas: Personas per run (>= 2, at most ``pool_size``).
        n_repetitions: Ratings per cell (>= 2).
        temperature: Sampling temperature (> 0).
        n_persona_boot, n_rerun_boot: Bootstrap draws of every interval (>= 2 each).
        confidence: Level of the intervals.
        alpha: Level of the tests (rejection rates).
        pool_size: Personas in the simulated population.
        rng: Generator, int seed or None (fresh seed, recorded).
        counts: Also the count statistics (about twice the time; ``pcollapse audit``
            does); the moment statistics' rows are the same either way (the same
            random draws).

    Returns:
        :class:`AuditReport`.

    Raises:
        UnknownNameError: An unknown preset.
        ValueError: Bad counts or levels.
    """
    presets = tuple(dict.fromkeys(presets))
    if not presets:
        raise ValueError("presets must name at least one preset")
    for name in presets:
        if name not in PRESETS:
            raise UnknownNameError("simulator preset", name, PRESETS)
    _check_int("replications", replications, 2)
    _check_int("n_personas", n_personas, 2)
    _check_int("n_repetitions", n_repetitions, 2)
    _check_int("n_persona_boot", n_persona_boot, 2)
    _check_int("n_rerun_boot", n_rerun_boot, 2)
    _check_int("pool_size", pool_size, n_personas)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    for name, level in (("confidence", confidence), ("alpha", alpha)):
        if not 0 < level < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {level!r}")
    generator, seed = resolve_rng(rng)
    z_crit = NormalDist().inv_cdf(0.5 + confidence / 2.0)

    # The population: exact distributions of every pool persona, once per preset.
    pool = [f"audit persona {k}" for k in range(pool_size)]
    probs: dict[str, FloatArray] = {}
    truth: dict[str, dict[str, float]] = {}
    means_sds: dict[str, tuple[FloatArray, FloatArray]] = {}
    item_ids: tuple[int, ...] = ()
    scale = np.zeros(0)
    for name in presets:
        sim = SimulatorBackend(name)
        item_ids = sim.true_metrics(pool[:2], temperature=temperature).item_ids
        scale = np.arange(sim.instrument.scale_min, sim.instrument.scale_max + 1, dtype=float)
        probs[name] = sim.cell_distributions(pool, temperature=temperature, items=item_ids)
        means = probs[name] @ scale
        sds = np.sqrt(np.maximum(probs[name] @ scale**2 - means**2, 0.0))
        truth[name] = _truth(means, sds)
        if counts:
            truth[name] |= count_truth(probs[name], scale, n_repetitions)
        means_sds[name] = (means, sds)
    foundation_of = {i.id: i.foundation for i in SimulatorBackend(presets[0]).instrument.items}
    foundations = {i: foundation_of[i] for i in item_ids}
    groups = foundation_columns(np.asarray(item_ids, dtype=np.int64), foundations)
    # Per preset and foundation: the pool's values on the foundation's items.
    scoped_truth = {
        (name, scope): _truth(means[:, cols], sds[:, cols])
        | (count_truth(probs[name][:, cols], scale, n_repetitions) if counts else {})
        for name, (means, sds) in means_sds.items()
        for scope, cols in groups.items()
    }
    scale_values = tuple(float(v) for v in scale)
    counted = {st.name for st in count_statistics_tested()} if counts else set()
    no_truth = tuple(n for n in sorted(counted) if any(n not in t for t in truth.values()))

    first = presets[0]
    null_label = f"{first}{NULL_SUFFIX}"
    sampled_labels = [*presets, null_label]
    contrasts = [(first, null_label), *((first, p) for p in presets[1:])]
    schemes = {"reference": ("persona", "reference", "rerun"), "corrected": ("persona",)}

    # Collected per replication.
    single: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
    scoped: dict[tuple[str, str, str, str], list[tuple[float, float, float, float]]] = {}
    diffs: dict[tuple[str, str, str, str], list[tuple[float, float, float, float, float]]] = {}
    agree: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}

    for _ in range(replications):
        chosen = np.sort(generator.choice(pool_size, size=n_personas, replace=False))
        runs: dict[str, RunCells] = {}
        for label in sampled_labels:
            preset = first if label == null_label else label
            grouped = sample_cells(
                probs[preset][chosen],
                n_repetitions=n_repetitions,
                scale=scale,
                rng=generator,
                item_ids=item_ids,
            )
            runs[label] = cells_from_cell_ratings(
                grouped, foundations=foundations, scale=scale_values
            )
        for name in presets:
            dist = probs[name][chosen]
            means = dist @ scale
            sds = np.sqrt(np.maximum(dist @ scale**2 - means**2, 0.0))
            runs[f"{name}{EXACT_SUFFIX}"] = RunCells(
                persona_ids=np.arange(n_personas, dtype=np.int64),
                item_ids=np.asarray(item_ids, dtype=np.int64),
                mu=means,
                sigma=sds,
                counts=None,
                cells=None,
                method="exact",
                excluded_personas=(),
                foundations=foundations,
                scale=scale_values,
                probs=dist,
                repetitions=n_repetitions,
            )

        both = draw_estimators(
            runs,
            estimators=("reference", "corrected"),
            paired=True,
            n_boot=n_persona_boot,
            n_rerun_boot=n_rerun_boot,
            rng=generator,
            counts=bool(counted),
        )
        for estimator, draws in both.items():
            # Count statistics have one estimator: audited with the reference one only.
            skip = counted if estimator == "corrected" else set()
            # Single-run estimates and SEs: the reference estimator with the
            # published SEs (persona and rerun bootstrap in quadrature, as
            # analyze_ratings computes them), the corrected one with persona SEs.
            estimates = draw_estimates(
                draws,
                "reference" if estimator == "reference" else "persona",
                confidence=confidence,
            )
            for name in presets:
                e = estimates[name][OVERALL]
                for metric, found in e.estimates.items():
                    if metric in skip or metric not in truth[name]:
                        continue
                    low, high = e.interval(metric)
                    single.setdefault((name, metric, estimator), []).append(
                        (found.value, found.se, low, high)
                    )
                for scope in groups:
                    e = estimates[name][scope]
                    for metric, found in e.estimates.items():
                        if metric in skip or metric not in scoped_truth[name, scope]:
                            continue
                        low, high = e.interval(metric)
                        scoped.setdefault((name, scope, metric, estimator), []).append(
                            (found.value, found.se, low, high)
                        )
            for reference, variant in contrasts:
                tests = change_tests(draws, reference, variant, "persona", z_crit)
                for metric, by_scope in tests.items():
                    known = variant == null_label or (
                        metric in truth[variant] and metric in truth[reference]
                    )
                    if metric in skip or not known:
                        continue
                    t = by_scope[OVERALL]
                    for variance in schemes[estimator]:
                        est, low, high, p_value = _retest(t, variance, z_crit)
                        se = {
                            "persona": t.se_persona,
                            "rerun": t.se_rerun,
                            "reference": math.hypot(t.se_persona, t.se_rerun),
                        }[variance]
                        key = (f"{variant} vs {reference}", metric, estimator, variance)
                        diffs.setdefault(key, []).append((est, low, high, p_value, se))
            for name in presets:
                tests = change_tests(draws, f"{name}{EXACT_SUFFIX}", name, "persona", z_crit)
                exact_values = draws.point[f"{name}{EXACT_SUFFIX}"][OVERALL]
                for metric, by_scope in tests.items():
                    if (name, metric, estimator) not in single:
                        continue  # no truth, or a count statistic's second estimator
                    t = by_scope[OVERALL]
                    exact = exact_values[metric]
                    value, _, low, high = single[(name, metric, estimator)][-1]
                    agree.setdefault((name, metric, estimator), []).append(
                        (
                            _true_change(value, exact, metric),
                            float(low <= exact <= high),
                            t.p_value,
                        )
                    )

    order = (*names_tested(), *(st.name for st in count_statistics_tested()))
    return AuditReport(
        estimators=tuple(
            _estimator_row(preset, metric, estimator, truth[preset][metric], values)
            for (preset, metric, estimator), values in sorted(
                single.items(),
                key=lambda kv: (
                    presets.index(kv[0][0]),
                    ("reference", "corrected").index(kv[0][2]),
                    order.index(kv[0][1]),
                ),
            )
        ),
        differences=tuple(
            _difference_row(key, values, truth, first, null_label, alpha)
            for key, values in diffs.items()
        ),
        agreement=tuple(
            AgreementAudit(
                preset=preset,
                metric=metric,
                estimator=estimator,
                mean_relative_difference=float(np.mean([v[0] for v in values])),
                within_se=float(np.mean([v[1] for v in values])),
                paired_rejection_rate=float(np.mean([v[2] < alpha for v in values])),
                replications=len(values),
            )
            for (preset, metric, estimator), values in agree.items()
        ),
        truth=truth,
        presets=presets,
        replications=replications,
        n_personas=n_personas,
        n_repetitions=n_repetitions,
        temperature=float(temperature),
        n_persona_boot=n_persona_boot,
        n_rerun_boot=n_rerun_boot,
        confidence=float(confidence),
        alpha=float(alpha),
        pool_size=pool_size,
        seed=seed,
        no_truth=no_truth,
        foundations=tuple(
            replace(
                _estimator_row(
                    preset, metric, estimator, scoped_truth[preset, scope][metric], values
                ),
                scope=scope,
            )
            for (preset, scope, metric, estimator), values in sorted(
                scoped.items(),
                key=lambda kv: (
                    presets.index(kv[0][0]),
                    list(groups).index(kv[0][1]),
                    ("reference", "corrected").index(kv[0][3]),
                    order.index(kv[0][2]),
                ),
            )
        ),
    )


def _estimator_row(
    preset: str,
    metric: str,
    estimator: str,
    true_value: float,
    values: list[tuple[float, float, float, float]],
) -> EstimatorAudit:
    est, se, low, high = np.array(values, dtype=np.float64).T
    bias = float(est.mean() - true_value)
    return EstimatorAudit(
        preset=preset,
        metric=metric,
        estimator=estimator,
        truth=true_value,
        mean=float(est.mean()),
        bias=bias,
        relative_bias=bias / true_value if true_value else math.nan,
        rmse=float(np.sqrt(np.mean((est - true_value) ** 2))),
        sd=float(est.std(ddof=1)),
        mean_se=float(se.mean()),
        coverage=float(np.mean((low <= true_value) & (true_value <= high))),
        replications=len(values),
    )


def _difference_row(
    key: tuple[str, str, str, str],
    values: list[tuple[float, float, float, float, float]],
    truth: dict[str, dict[str, float]],
    first: str,
    null_label: str,
    alpha: float,
) -> DifferenceAudit:
    contrast, metric, estimator, variance = key
    variant = contrast.split(" vs ")[0]
    true_change = (
        0.0
        if variant == null_label
        else _true_change(truth[variant][metric], truth[first][metric], metric)
    )
    arr = np.array(values)
    est, low, high, p, se = arr.T
    stat = np.log1p(est) if is_log_scale(metric) else est
    return DifferenceAudit(
        contrast=contrast,
        metric=metric,
        estimator=estimator,
        variance=variance,
        truth=true_change,
        mean=float(est.mean()),
        bias=float(est.mean() - true_change),
        rmse=float(np.sqrt(np.mean((est - true_change) ** 2))),
        sd_log=float(stat.std(ddof=1)),
        mean_se=float(se.mean()),
        coverage=float(np.mean((low <= true_change) & (true_change <= high))),
        rejection_rate=float(np.mean(p < alpha)),
        replications=len(values),
    )


__all__ = [
    "DEFAULT_PRESETS",
    "EXACT_SUFFIX",
    "NULL_SUFFIX",
    "RESOLUTION_PTS",
    "AgreementAudit",
    "AuditReport",
    "DifferenceAudit",
    "EstimatorAudit",
    "audit_estimators",
    "count_truth",
    "mc_se",
    "replication_warning",
    "sample_cells",
]
