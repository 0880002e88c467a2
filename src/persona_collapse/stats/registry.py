"""The statistics of a run, each declared once.

A :class:`Statistic` says what it is called (``name`` in tables, JSON and CSV;
``label`` on screen), what it measures and in which unit, how it is computed, and on
which scale differences between runs are tested. :func:`register_statistic` adds one;
metrics, tables and the command line loop over :func:`statistics`.

A statistic is computed in one of three ways:

* from *cell moments* (``point`` and ``draws``): ``mu`` and ``sigma``, ``(P, C)``
  arrays of the per-persona cell means and sds (ddof = 1) over the ``C`` items in
  scope; bootstrap draws ``spread`` and ``noise``, ``(B, C)`` arrays holding, per draw
  and item, the across-persona sd of the cell means and the mean of the cell sds
  (S and σ̄);
* as the reciprocal of another (``inverse_of``), its standard error by the delta
  method, ``se(1/x) = se(x) / x**2`` (R);
* from *answer counts* (``features`` and ``combine``): each persona-item cell's valid
  answers are counted over the scale's ``K`` points; :class:`CellFeatures` turns a
  cell's counts into a few numbers, which are summed over the cells in scope (all
  items, or one foundation's), and ``combine`` turns the sums into the value. The
  bootstrap replicates come from the same sums over resampled personas (persona
  bootstrap) and over resampled cells (rerun bootstrap: each cell's counts
  redrawn), so one declaration gives the value, per-foundation values and SEs.
  Statistics sharing a :class:`CellFeatures` (by ``name``) share its computation.

Built-in statistics beyond S, R and σ̄ live one per module in
:mod:`persona_collapse.stats.measures`; every module of that package is imported the
first time the registry is read, so adding a statistic is adding one module there
(plus its tests) and nothing else.

Statistics are listed by ``group`` (``persona``, then ``instability``, then
``distribution``, then any other), in registration order within a group (for the
built-in measures: module name order).
"""

from __future__ import annotations

import importlib
import logging
import math
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from persona_collapse.core.errors import UnknownNameError
from persona_collapse.stats.instability import row_sums

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

PointFn = Callable[[FloatArray, FloatArray], float]
"""``(mu, sigma) -> value`` over the items in scope."""

DrawsFn = Callable[[FloatArray, FloatArray], FloatArray]
"""``(spread, noise) -> (B,)`` replicates over the items in scope."""

SampledFeaturesFn = Callable[[FloatArray], FloatArray]
"""``(N, K)`` answer counts of ``N`` cells over the ``K`` scale points -> ``(N, F)``."""

ExactFeaturesFn = Callable[[FloatArray, "int | None"], FloatArray]
"""``((N, K)`` stored probabilities, repetitions or None) -> ``(N, F)`` (NaN if undefined)."""

CombineFn = Callable[[FloatArray, FloatArray], FloatArray]
"""``((B, F)`` feature sums over the cells in scope, ``(K,)`` scale values) -> ``(B,)``.

Row-wise (each replicate on its own); the sums may come in either memory order
(:func:`estimate_count_statistics` passes columns contiguous)."""

GROUPS = ("persona", "instability", "distribution")
"""Display order of statistic groups (others follow, in registration order)."""


@dataclass(frozen=True, eq=False)
class CellFeatures:
    """Numbers computed per cell from its answer counts, summed over the cells in scope.

    Attributes:
        name: Identifies the set; statistics declaring the same name share it (it is
            computed once per run).
        sampled: Features of a sampled cell from its counts (valid answers only).
        exact: Features of an exact-mode cell from its stored distribution over the
            scale and the number of repetitions the run asked for (None when unknown);
            None when the features have no meaning for stored distributions (the
            statistics are then NaN for exact runs).
        linear: Whether ``sampled`` is linear in the counts (``counts @ M``); the
            bootstrap then sums count changes instead of evaluating resampled cells.
    """

    name: str
    sampled: SampledFeaturesFn
    exact: ExactFeaturesFn | None = None
    linear: bool = False


@dataclass(frozen=True)
class Statistic:
    """One statistic of a run.

    Attributes:
        name: Key in outputs (``S``); its standard error is ``<name>_se``.
        label: Short label for tables and figures (``σ̄``).
        description: One line saying what it measures.
        unit: Unit of its values.
        point: Value from cell moments (moment statistics only).
        draws: Replicates from bootstrap draws (moment statistics only).
        inverse_of: Name of the statistic this one is the reciprocal of.
        features: Per-cell features from answer counts (count statistics only).
        combine: Value from the features' sums (count statistics only); vectorised
            over bootstrap replicates.
        test_scale: Scale of difference tests between runs: ``log`` (log ratios, for
            positive statistics such as S, σ̄, R) or ``difference`` (plain differences,
            for rates and shares that may be 0).
        same_test_as: Statistic whose test this one shares (``R`` and ``sigma_bar``:
            ``log R = -log sigma_bar``), so one adjusted p-value serves both.
        digits: Decimals shown in tables (rendering only; values are never rounded).
        group: ``persona`` (persona-dependence and noise of ratings: S, σ̄, R),
            ``instability`` (scale-free per-cell measures) or ``distribution`` (the
            pooled rating distribution); decides the listing order.
        exact_meaning: What the value means for an exact-mode run (stored
            distributions), or why it is NaN there.
    """

    name: str
    label: str
    description: str
    unit: str
    point: PointFn | None = None
    draws: DrawsFn | None = None
    inverse_of: str | None = None
    features: CellFeatures | None = None
    combine: CombineFn | None = None
    test_scale: Literal["log", "difference"] = "log"
    same_test_as: str | None = None
    digits: int = 3
    group: str = "persona"
    exact_meaning: str = "computed from each cell's stored distribution"

    def __post_init__(self) -> None:
        forms = [
            self.point is not None or self.draws is not None,
            self.inverse_of is not None,
            self.features is not None or self.combine is not None,
        ]
        if sum(forms) != 1:
            raise ValueError(
                f"statistic {self.name!r}: give point and draws, or inverse_of, or features "
                "and combine (exactly one, not both)"
            )
        if forms[0] and (self.point is None or self.draws is None):
            raise ValueError(f"statistic {self.name!r}: point and draws go together")
        if forms[2] and (self.features is None or self.combine is None):
            raise ValueError(f"statistic {self.name!r}: features and combine go together")


@dataclass(frozen=True)
class Estimate:
    """A statistic's value and standard error (persona and rerun bootstrap in quadrature)."""

    value: float
    se: float


@dataclass(frozen=True)
class FeatureSums:
    """Sums of one :class:`CellFeatures` over the cells in scope.

    Attributes:
        point: ``(F,)`` sums over the analysed cells.
        draws: Per bootstrap kind (persona, rerun), ``(B, F)`` replicate sums.
    """

    point: FloatArray
    draws: Sequence[FloatArray]


_REGISTRY: dict[str, Statistic] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    """Import every module of :mod:`persona_collapse.stats.measures` (once, on first use).

    Lazy, so that importing the registry (``pcollapse --help``) stays cheap; each
    module registers its statistic when imported.
    """
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True  # before importing: the modules call register_statistic
    package = importlib.import_module("persona_collapse.stats.measures")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def register_statistic(statistic: Statistic) -> Statistic:
    """Add ``statistic`` to the registry.

    Raises:
        ValueError: The name is taken.
    """
    _load_builtins()
    if statistic.name in _REGISTRY:
        raise ValueError(f"statistic {statistic.name!r} is already registered")
    _REGISTRY[statistic.name] = statistic
    return statistic


def _group_rank(stat: Statistic) -> int:
    return GROUPS.index(stat.group) if stat.group in GROUPS else len(GROUPS)


def statistics() -> tuple[Statistic, ...]:
    """Every registered statistic: by group, in registration order within a group."""
    _load_builtins()
    return tuple(sorted(_REGISTRY.values(), key=_group_rank))


def statistic_names() -> tuple[str, ...]:
    """Names of every registered statistic, in the order of :func:`statistics`."""
    return tuple(stat.name for stat in statistics())


def get_statistic(name: str) -> Statistic:
    """The statistic called ``name``.

    Raises:
        UnknownNameError: No such statistic (with suggestions).
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownNameError("statistic", name, list(_REGISTRY))
    return _REGISTRY[name]


def feature_sets() -> tuple[CellFeatures, ...]:
    """The distinct :class:`CellFeatures` of the registered count statistics (by name)."""
    found: dict[str, CellFeatures] = {}
    for stat in statistics():
        if stat.features is not None:
            found.setdefault(stat.features.name, stat.features)
    return tuple(found.values())


def _bootstrap_sd(replicates: FloatArray) -> float:
    """Sample sd (ddof=1) of bootstrap replicates; 0 for a single replicate.

    Replicates that are NaN (a statistic undefined for that resample) are left out;
    NaN when fewer than two remain of several.
    """
    if len(replicates) < 2:
        return 0.0
    with np.errstate(invalid="ignore"):  # an infinite replicate: inf - inf, left out below
        sd = _sd(replicates)
    if math.isfinite(sd):  # then every replicate is finite (any other poisons the sum)
        return sd
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == len(replicates):
        return sd
    return _sd(finite) if len(finite) >= 2 else math.nan


def _sd(values: FloatArray) -> float:
    """``float(np.std(values, ddof=1))`` of a 1-D array: the same operations (pairwise
    sums, the mean subtracted, squared, summed, divided by ``n - 1``) without
    np.std's generic axis and dtype handling, which costs more than the arithmetic for
    the few thousand replicates of a bootstrap."""
    n = len(values)
    deviations = values - np.add.reduce(values) / n
    np.square(deviations, out=deviations)
    return math.sqrt(np.add.reduce(deviations) / (n - 1))


def reciprocal(value: float) -> float:
    """``1 / value``; ``inf`` for 0 (a run whose ratings never vary is infinitely robust)."""
    return math.inf if value == 0 else 1.0 / value


def _column_sd(replicates: FloatArray) -> FloatArray:
    """Per column of ``(B, S)`` replicates, :func:`_bootstrap_sd`."""
    n_boot, n_cols = replicates.shape
    if n_boot < 2:
        return np.zeros(n_cols)
    finite = np.isfinite(replicates)
    if finite.all():
        return np.asarray(np.std(replicates, axis=0, ddof=1), dtype=np.float64)
    return np.array([_bootstrap_sd(replicates[:, s]) for s in range(n_cols)])


def _count_statistics() -> list[Statistic]:
    return [s for s in statistics() if s.features is not None and s.combine is not None]


def _set_name(stat: Statistic) -> str:
    if stat.features is None:
        raise ValueError(f"statistic {stat.name!r} is not a count statistic")
    return stat.features.name


def _combine(stat: Statistic) -> CombineFn:
    if stat.combine is None:
        raise ValueError(f"statistic {stat.name!r} is not a count statistic")
    return stat.combine


def estimate_count_statistics(
    features: Mapping[str, FeatureSums], scale: Sequence[float] | FloatArray
) -> list[dict[str, Estimate]]:
    """The registered count statistics over several scopes at once (one call per statistic).

    Args:
        features: :class:`CellFeatures` name -> sums whose ``point`` is ``(S, F)`` and
            whose draws are ``(B, S, F)``, for ``S`` scopes (e.g. each foundation and
            all items); statistics whose features are missing are NaN.
        scale: The scale's values (ascending), passed to ``combine``.

    Returns:
        Per scope, statistic name -> :class:`Estimate`.
    """
    grid = np.asarray(scale, dtype=np.float64)
    n_scopes = len(next(iter(features.values())).point) if features else 1
    counted = _count_statistics()
    found = [s for s in counted if _set_name(s) in features]
    # Each feature set's replicate sums are flattened once, so statistics sharing a set
    # get the same arrays and the memoised per-draw quantities (pooled_shares) are
    # computed once for all of them. Flattened column by column (Fortran order): the
    # statistics work on whole columns (a feature, or a scale point, over all draws and
    # scopes), which are then contiguous instead of strided by the feature width.
    by_set = {name: [_columns_contiguous(d) for d in sums.draws] for name, sums in features.items()}
    flat_draws = [by_set[_set_name(s)] for s in found]
    values = np.empty((len(found), n_scopes))
    variance = np.zeros((len(found), n_scopes))
    token = _MEMO.set({})
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            for j, stat in enumerate(found):
                values[j] = _combine(stat)(features[_set_name(stat)].point, grid)
            for kind in range(max((len(d) for d in flat_draws), default=0)):
                # The statistics' replicates of one kind side by side, so that one sd
                # call serves them all (grouped by draw count, which they share).
                by_size: dict[int, list[int]] = {}
                for j, draws in enumerate(flat_draws):
                    if kind < len(draws):
                        by_size.setdefault(len(draws[kind]) // max(n_scopes, 1), []).append(j)
                for n_boot, members in by_size.items():
                    block = np.empty((n_boot, len(members), n_scopes))
                    for m, j in enumerate(members):
                        replicates = _combine(found[j])(flat_draws[j][kind], grid)
                        block[:, m, :] = replicates.reshape(n_boot, n_scopes)
                    variance[members] += _block_sd(block) ** 2
    finally:
        _MEMO.reset(token)
    se = np.where(np.isfinite(values), np.sqrt(variance), math.nan)
    nan = Estimate(math.nan, math.nan)
    out: list[dict[str, Estimate]] = [{} for _ in range(n_scopes)]
    rows = {stat.name: j for j, stat in enumerate(found)}
    value_rows, se_rows = values.tolist(), se.tolist()
    for stat in counted:
        row = rows.get(stat.name)
        for s, scope in enumerate(out):
            scope[stat.name] = nan if row is None else Estimate(value_rows[row][s], se_rows[row][s])
    return out


def _columns_contiguous(draws: FloatArray) -> FloatArray:
    """``(B, S, F)`` draws as ``(B * S, F)`` with each column contiguous (one copy)."""
    n_boot, n_scopes, width = draws.shape
    by_column = np.ascontiguousarray(np.moveaxis(draws, 2, 0), dtype=np.float64)
    return by_column.reshape(width, n_boot * n_scopes).T


def _block_sd(block: FloatArray) -> FloatArray:
    """:func:`_column_sd` of each statistic's ``(B, S)`` replicates in ``(B, n, S)``.

    One np.std over all ``n * S`` columns gives each column the same floats as a call
    per statistic (a reduction down the first axis adds row by row, whatever the
    width), except for a single column, which numpy sums pairwise: one scope, or a
    statistic with NaN replicates, is done per statistic as before.
    """
    n_boot, n_stats, n_scopes = block.shape
    if n_scopes >= 2 and (n_boot < 2 or np.isfinite(block).all()):
        return _column_sd(block.reshape(n_boot, n_stats * n_scopes)).reshape(n_stats, n_scopes)
    return np.stack([_column_sd(block[:, j, :]) for j in range(n_stats)])


def count_statistic_draws(
    sums: Mapping[str, FloatArray], scale: Sequence[float] | FloatArray
) -> dict[str, FloatArray]:
    """Every registered count statistic from feature sums: the bootstrap-draw hook.

    What difference tests (:mod:`persona_collapse.stats.significance`) call with the
    point sums and the bootstrap replicate sums of each run and scope, so that a count
    statistic declared here (``features`` and ``combine``) is tested with nothing else
    to write.

    Args:
        sums: :class:`CellFeatures` name -> ``(N, F)`` sums over the cells in scope, one
            row per replicate (or scope); statistics whose features are missing are left
            out.
        scale: The scale's values (ascending), passed to ``combine``.

    Returns:
        Statistic name -> ``(N,)`` values, in the order of :func:`statistics`.
    """
    grid = np.asarray(scale, dtype=np.float64)
    out: dict[str, FloatArray] = {}
    token = _MEMO.set({})
    try:
        for stat in _count_statistics():
            found = sums.get(_set_name(stat))
            if found is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                out[stat.name] = np.asarray(_combine(stat)(found, grid), dtype=np.float64)
    finally:
        _MEMO.reset(token)
    return out


def estimate_statistics(
    mu: FloatArray,
    sigma: FloatArray,
    boots: Sequence[tuple[FloatArray, FloatArray]],
    *,
    features: Mapping[str, FeatureSums] | None = None,
    scale: Sequence[float] | FloatArray | None = None,
    counted: Mapping[str, Estimate] | None = None,
) -> dict[str, Estimate]:
    """Every registered statistic over the items in scope, with its standard error.

    Args:
        mu: ``(P, C)`` cell means of the items in scope.
        sigma: ``(P, C)`` cell sds (ddof=1) of the items in scope.
        boots: Per bootstrap kind (persona, rerun), ``(spread, noise)`` draws ``(B, C)``;
            the standard error adds the kinds' bootstrap variances.
        features: :class:`CellFeatures` name -> its sums over the cells in scope;
            count statistics whose features are missing are NaN.
        scale: The scale's values (ascending), passed to ``combine``.
        counted: The count statistics already estimated (by
            :func:`estimate_count_statistics`), used instead of ``features``.

    Returns:
        Statistic name -> :class:`Estimate`, in the order of :func:`statistics`.
    """
    registered = statistics()
    if counted is None:
        counted = {}
        if features is not None and scale is not None:
            single = {
                name: FeatureSums(sums.point[None, :], [d[:, None, :] for d in sums.draws])
                for name, sums in features.items()
            }
            counted = estimate_count_statistics(single, scale)[0]
    direct: dict[str, Estimate] = {}
    for stat in registered:
        if stat.point is not None and stat.draws is not None:
            variance = sum(_bootstrap_sd(stat.draws(spread, noise)) ** 2 for spread, noise in boots)
            direct[stat.name] = Estimate(stat.point(mu, sigma), math.sqrt(variance))
        elif stat.features is not None:
            direct[stat.name] = counted.get(stat.name, Estimate(math.nan, math.nan))
    out: dict[str, Estimate] = {}
    for stat in registered:
        if stat.inverse_of is None:
            out[stat.name] = direct[stat.name]
            continue
        if stat.inverse_of not in direct:
            raise ValueError(f"statistic {stat.name!r}: inverse_of {stat.inverse_of!r} is unknown")
        base = direct[stat.inverse_of]
        se = base.se / base.value**2 if base.value > 0 else math.nan
        out[stat.name] = Estimate(reciprocal(base.value), se)
    return out


def estimates_to_dict(estimates: Mapping[str, Estimate]) -> dict[str, float]:
    """``{name: value, name_se: se, ...}`` in registration order (JSON and CSV columns)."""
    flat: dict[str, float] = {}
    for name, est in estimates.items():
        flat[name] = est.value
        flat[f"{name}_se"] = est.se
    return flat


# --- building blocks for count statistics -------------------------------------------------


def _scale_counts_exact(probs: FloatArray, repetitions: int | None) -> FloatArray:
    return probs


SCALE_COUNTS = CellFeatures(
    "scale_counts", sampled=lambda counts: counts, exact=_scale_counts_exact, linear=True
)
"""Each cell's counts per scale point; summed, the run's pooled rating distribution.

For an exact run the features are the cell's probabilities, so the pooled
distribution is the mean of the cells' stored distributions."""


def cell_mean_features(
    name: str,
    per_cell: Callable[[FloatArray], FloatArray],
    per_cell_exact: Callable[[FloatArray, int | None], FloatArray] | None = None,
) -> CellFeatures:
    """Features ``[used, used * value]`` of a per-cell measure averaged over cells.

    A sampled cell is *used* when it holds at least two valid answers (a single
    answer cannot disagree with itself); an exact-mode cell always is.

    Args:
        name: Name of the feature set.
        per_cell: ``(N, K)`` counts -> ``(N,)`` values.
        per_cell_exact: ``((N, K)`` probabilities, repetitions or None) -> ``(N,)``
            values for exact runs (None: NaN for exact runs).
    """

    def sampled(counts: FloatArray) -> FloatArray:
        used = (counts.sum(axis=1) >= 2).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(used > 0, per_cell(counts), 0.0)
        return np.stack([used, value], axis=1)

    exact = None
    if per_cell_exact is not None:
        fn = per_cell_exact

        def exact(probs: FloatArray, repetitions: int | None) -> FloatArray:
            return np.stack([np.ones(len(probs)), fn(probs, repetitions)], axis=1)

    return CellFeatures(name, sampled=sampled, exact=exact)


def mean_over_cells(sums: FloatArray, scale: FloatArray) -> FloatArray:
    """``combine`` of :func:`cell_mean_features`: the mean over used cells (NaN if none)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 0] > 0, sums[:, 1] / sums[:, 0], math.nan)


_MEMO: ContextVar[dict[tuple[str, int], tuple[FloatArray, FloatArray]] | None] = ContextVar(
    "per_draw_memo", default=None
)
"""Per-draw quantities already computed, by name and input array, while
:func:`estimate_count_statistics` or :func:`count_statistic_draws` runs (their arrays
are not changed meanwhile); None outside them."""


def _memoised(
    name: str, sums: FloatArray, compute: Callable[[FloatArray], FloatArray]
) -> FloatArray:
    """``compute(sums)``, once per array while an estimate runs (read-only then: it is
    shared by several statistics)."""
    memo = _MEMO.get()
    if memo is None:
        return compute(sums)
    key = (name, id(sums))
    hit = memo.get(key)
    if hit is not None and hit[0] is sums:
        return hit[1]
    out = compute(sums)
    out.flags.writeable = False
    memo[key] = (sums, out)
    return out


def _totals(sums: FloatArray) -> FloatArray:
    return row_sums(np.asarray(sums, dtype=np.float64))


def pooled_totals(sums: FloatArray) -> FloatArray:
    """Row sums of :data:`SCALE_COUNTS` sums: the ratings pooled in each replicate."""
    return _memoised("totals", sums, _totals)


def _shares(sums: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums / pooled_totals(sums)[:, None], dtype=np.float64)


def pooled_shares(sums: FloatArray) -> FloatArray:
    """Row-normalised :data:`SCALE_COUNTS` sums: the pooled distribution per replicate."""
    return _memoised("shares", sums, _shares)


# --- the built-in moment statistics -------------------------------------------------------

_BUILT_IN = (
    Statistic(
        name="S",
        label="S",
        description="susceptibility: mean over items of the across-persona sd of cell means",
        unit="rating points",
        point=lambda mu, sigma: float(np.mean(np.std(mu, axis=0, ddof=1))),
        draws=lambda spread, noise: spread.mean(axis=1),
        exact_meaning="from each cell's stored distribution (its mean)",
    ),
    Statistic(
        name="R",
        label="R",
        description="robustness: 1 / σ̄",
        unit="1 / rating points",
        inverse_of="sigma_bar",
        same_test_as="sigma_bar",
        digits=2,
        exact_meaning="1 / σ̄",
    ),
    Statistic(
        name="sigma_bar",
        label="σ̄",
        description="mean within-cell sd of repeated ratings (ddof = 1)",
        unit="rating points",
        point=lambda mu, sigma: float(np.mean(sigma)),
        draws=lambda spread, noise: noise.mean(axis=1),
        exact_meaning="mean population sd of the stored distributions",
    ),
)
for _stat in _BUILT_IN:
    _REGISTRY[_stat.name] = _stat

__all__ = [
    "GROUPS",
    "SCALE_COUNTS",
    "CellFeatures",
    "Estimate",
    "FeatureSums",
    "Statistic",
    "cell_mean_features",
    "count_statistic_draws",
    "estimate_count_statistics",
    "estimate_statistics",
    "estimates_to_dict",
    "feature_sets",
    "get_statistic",
    "mean_over_cells",
    "pooled_shares",
    "pooled_totals",
    "reciprocal",
    "register_statistic",
    "statistic_names",
    "statistics",
]
