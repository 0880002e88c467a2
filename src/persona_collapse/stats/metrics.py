"""Moral susceptibility, robustness and their bootstrap standard errors.

Notation: persona ``p``, item ``q``, the valid ratings of one persona-item *cell*
``x_pq1..x_pqn``.

* ``mu_pq`` = mean of the cell, ``sigma_pq`` = its sample sd (ddof=1; 0 for one rating).
* Susceptibility ``S = mean_q sd_p(mu_pq)`` (sd over personas, ddof=1).
* Mean within-cell spread ``sigma_bar = mean_pq sigma_pq``; robustness ``R = 1 / sigma_bar``.
* Per-foundation values use only the items of that foundation.

Standard errors combine, in quadrature, a *persona bootstrap* (resample personas
with replacement) and a *rerun bootstrap* (resample each cell's valid ratings with
replacement); ``R_se = sigma_bar_se / sigma_bar**2`` (delta method). Per-foundation
values come from the same draws as the overall ones.

Everything is vectorised numpy: the persona bootstrap is a matrix product of
resampling-weight counts with the ``(P, Q)`` cell moments, and the rerun
bootstrap only draws for cells whose ratings are not all equal (a constant cell
resamples to itself), grouped by cell size; a cell with two distinct values needs
one binomial count per replicate instead of ``n`` draws. The reference data (12
runs, 2000 + 400 draws, per-foundation values) takes well under a second.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.core.errors import TooFewPersonasError
from persona_collapse.core.frames import INVALID_RATING
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.types import RunMode
from persona_collapse.stats.registry import (
    CellFeatures,
    Estimate,
    FeatureSums,
    estimate_count_statistics,
    estimate_statistics,
    estimates_to_dict,
    feature_sets,
    get_statistic,
    reciprocal,
)

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
CountArray = NDArray[np.integer[Any]]

DEFAULT_PERSONA_BOOT = 2000
"""Default number of persona-bootstrap draws."""

DEFAULT_RERUN_BOOT = 400
"""Default number of rerun-bootstrap draws."""

# Bootstrap work is done in chunks of about this many array elements, which
# bounds memory for large runs and keeps the working set in cache.
_CHUNK_ELEMENTS = 1 << 18

# Matrix products are split so that rows * inner * columns stays below this.
_SMALL_PRODUCT = 1 << 17
_CELL_SLICE_ELEMENTS = 1 << 20  # rerun bootstrap: replicates x cells drawn at once


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellRatings:
    """Valid ratings grouped by persona-item cell.

    Attributes:
        values: ``(P, Q, K)`` float64, the valid ratings of each cell in input order,
            padded with NaN up to ``K`` = the largest cell size (at least 1).
        counts: ``(P, Q)`` int64, number of valid ratings per cell.
        persona_ids: ``(P,)`` sorted unique persona ids.
        item_ids: ``(Q,)`` sorted unique item ids.
    """

    values: FloatArray
    counts: IntArray
    persona_ids: IntArray
    item_ids: IntArray


class _EstimatesByName:
    """Access to registered statistics by name (``m.S``, ``m.S_se`` for the built-ins)."""

    estimates: Mapping[str, Estimate]

    def estimate(self, name: str) -> Estimate:
        """The :class:`~persona_collapse.stats.registry.Estimate` of statistic ``name``."""
        if name not in self.estimates:
            get_statistic(name)  # unknown names raise with suggestions
            raise KeyError(f"statistic {name!r} was registered after these metrics were computed")
        return self.estimates[name]

    @property
    def S(self) -> float:
        """Susceptibility (rating points)."""
        return self.estimates["S"].value

    @property
    def S_se(self) -> float:
        """Standard error of S."""
        return self.estimates["S"].se

    @property
    def R(self) -> float:
        """Robustness, 1/σ̄ (``inf`` when σ̄ is 0)."""
        return self.estimates["R"].value

    @property
    def R_se(self) -> float:
        """Standard error of R (delta method; NaN when σ̄ is 0)."""
        return self.estimates["R"].se

    @property
    def sigma_bar(self) -> float:
        """Mean within-cell sd (rating points)."""
        return self.estimates["sigma_bar"].value

    @property
    def sigma_bar_se(self) -> float:
        """Standard error of σ̄."""
        return self.estimates["sigma_bar"].se


@dataclass(frozen=True)
class FoundationMetrics(_EstimatesByName):
    """The registered statistics restricted to the items of one foundation.

    Attributes:
        items: Item ids of the foundation present in the data.
        estimates: Statistic name -> estimate (see :mod:`persona_collapse.stats.registry`);
            ``S``, ``R``, ``sigma_bar`` and their ``_se`` are also attributes.
    """

    items: tuple[int, ...]
    estimates: Mapping[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {"items": list(self.items), **estimates_to_dict(self.estimates)}


@dataclass(frozen=True)
class RunMetrics(_EstimatesByName):
    """Metrics of one run (one model, one persona set, one temperature).

    Attributes:
        estimates: Statistic name -> estimate, for every registered statistic (see
            :mod:`persona_collapse.stats.registry`); ``S``, ``R``, ``sigma_bar`` and
            their ``_se`` (moral susceptibility, robustness ``1/sigma_bar``, mean
            within-cell sd) are also attributes.
        personas: Number of personas analysed (after exclusions).
        questions: Number of items analysed.
        excluded_personas: Ids of personas dropped for lacking a valid rating on an item.
        per_foundation: Foundation name -> :class:`FoundationMetrics`.
        method: ``"sampling"`` (repeated ratings) or ``"exact"`` (stored distributions).
        seed: Integer seed the draws came from; None when a Generator was passed.
        n_persona_boot, n_rerun_boot: Bootstrap draws (``n_rerun_boot`` is 0 for "exact").
        valid_ratings, invalid_ratings: Rows used / rows with an invalid rating
            (``sampling``; both 0 for ``exact``).
        temperature_ratio: Re-temperaturing ratio applied (``exact`` only), else None.
    """

    estimates: Mapping[str, Estimate]
    personas: int
    questions: int
    excluded_personas: tuple[int, ...]
    per_foundation: Mapping[str, FoundationMetrics]
    method: RunMode
    seed: int | None
    n_persona_boot: int
    n_rerun_boot: int
    valid_ratings: int = 0
    invalid_ratings: int = 0
    temperature_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable; ``inf``/NaN stay floats)."""
        return {
            **estimates_to_dict(self.estimates),
            "personas": self.personas,
            "questions": self.questions,
            "excluded_personas": list(self.excluded_personas),
            "per_foundation": {k: v.to_dict() for k, v in self.per_foundation.items()},
            "method": self.method,
            "seed": self.seed,
            "n_persona_boot": self.n_persona_boot,
            "n_rerun_boot": self.n_rerun_boot,
            "valid_ratings": self.valid_ratings,
            "invalid_ratings": self.invalid_ratings,
            "temperature_ratio": self.temperature_ratio,
        }


@dataclass(frozen=True)
class SelfProfile:
    """A model's own answers (no persona), summarised per foundation.

    Attributes:
        mean: Foundation -> mean over its items of the item's mean valid rating.
        sd: Foundation -> mean over its items of the item's sd of valid ratings
            (ddof=1; 0 for an item with one valid rating).
        items: Foundation -> item ids that had valid ratings.
        missing_items: Item ids with no valid rating (left out of both means).
    """

    mean: Mapping[str, float]
    sd: Mapping[str, float]
    items: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    missing_items: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "mean": dict(self.mean),
            "sd": dict(self.sd),
            "items": {k: list(v) for k, v in self.items.items()},
            "missing_items": list(self.missing_items),
        }


# --- validation -----------------------------------------------------------------------------


def _as_1d(name: str, values: ArrayLike, dtype: type | None = None) -> NDArray[Any]:
    arr = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _as_int_ids(name: str, values: ArrayLike) -> IntArray:
    arr = _as_1d(name, values)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{name} must hold integers")
    return arr.astype(np.int64, copy=False)


def _check_lengths(**arrays: NDArray[Any]) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"input arrays must have equal lengths, got {shown}")
    if not any(lengths.values()):
        raise ValueError(f"{next(iter(lengths))} is empty: no ratings to analyse")


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_matrix(name: str, values: ArrayLike, *, min_rows: int = 1) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (personas, items), got shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(
            f"{name} needs at least {min_rows} row(s) and 1 column, got shape {arr.shape}"
        )
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (a cell without valid ratings)")
    return arr


def resolve_rng(rng: np.random.Generator | int | None) -> tuple[np.random.Generator, int | None]:
    """Turn an ``rng`` argument into a Generator and the seed to record.

    An int is used as the seed; None draws a fresh 63-bit seed from OS entropy
    (via ``np.random.SeedSequence``) so the result can be reproduced; a Generator
    is used as is and no seed is recorded.
    """
    if isinstance(rng, np.random.Generator):
        return rng, None
    if rng is None:
        state = np.random.SeedSequence().generate_state(1, dtype=np.uint64)
        seed = int(state[0] >> np.uint64(1))
    elif isinstance(rng, bool) or not isinstance(rng, int | np.integer):
        raise ValueError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}")
    else:
        seed = int(rng)
        if seed < 0:
            raise ValueError(f"rng seed must be >= 0, got {seed}")
    return np.random.default_rng(seed), seed


@functools.cache
def _mfq30_foundations() -> Mapping[int, str]:
    """MFQ-30's item -> foundation map (catch items included), built once per process:
    building the instrument costs more than grouping a run's items (read-only view)."""
    return MappingProxyType(mfq30(include_catch=True).foundation_of())


@functools.cache
def _mfq30_scale() -> tuple[int, ...]:
    """MFQ-30's scale values (see :func:`_mfq30_foundations`)."""
    return mfq30().scale


def _foundation_groups(
    item_ids: IntArray, foundations: Mapping[int, str] | None
) -> dict[str, NDArray[np.intp]]:
    """Column indices of each foundation, foundations in mapping order."""
    mapping = _mfq30_foundations() if foundations is None else dict(foundations)
    missing = [int(i) for i in item_ids if int(i) not in mapping]
    if missing:
        raise ValueError(f"foundations has no entry for item id(s) {missing}")
    present = {int(i): col for col, i in enumerate(item_ids)}
    groups: dict[str, list[int]] = {}
    for item, name in mapping.items():
        col = present.get(int(item))
        if col is not None:
            groups.setdefault(name, []).append(col)
    return {name: np.asarray(sorted(cols), dtype=np.intp) for name, cols in groups.items()}


# --- cells and moments ------------------------------------------------------------------------


def cell_ratings(
    persona_ids: ArrayLike,
    item_ids: ArrayLike,
    ratings: ArrayLike,
    *,
    invalid: float = INVALID_RATING,
) -> CellRatings:
    """Group the valid ratings of a long table into persona-item cells.

    Personas and items are taken from all rows, so a cell whose rows all hold the
    ``invalid`` marker (or NaN) is present with count 0.

    Args:
        persona_ids, item_ids, ratings: ``(N,)`` arrays, one entry per answer.
        invalid: Rating value marking an answer without a valid rating.

    Returns:
        :class:`CellRatings` with ratings in input order within each cell.
    """
    pid = _as_1d("persona_ids", persona_ids)
    iid = _as_1d("item_ids", item_ids)
    rat = _as_1d("ratings", ratings)
    for name, arr in (("persona_ids", pid), ("item_ids", iid)):
        _check_int_ids(name, arr)
    if rat.dtype.kind not in "iuf":
        rat = rat.astype(np.float64)
    _check_lengths(persona_ids=pid, item_ids=iid, ratings=rat)
    # Memory matters here (tens of millions of rows): small index types, and every
    # temporary dropped as soon as it is used.
    personas, p_idx = _dense_index(pid)
    items, q_idx = _dense_index(iid)
    n_p, n_q = len(personas), len(items)
    valid = rat != invalid
    if rat.dtype.kind == "f":
        valid &= np.isfinite(rat)
    cell_type = np.int32 if n_p * n_q < 2**31 else np.int64
    every = bool(valid.all())  # then no masked copies
    cell = (p_idx if every else p_idx[valid]).astype(cell_type)
    del p_idx
    cell *= n_q
    np.add(cell, q_idx if every else q_idx[valid], out=cell)
    del q_idx
    counts = np.bincount(cell, minlength=n_p * n_q)
    width = max(int(counts.max(initial=0)), 1)
    order = np.argsort(cell, kind="stable")  # input order within each cell
    cell_sorted = cell[order]
    del cell
    starts = (np.cumsum(counts) - counts).astype(cell_type)
    position = np.arange(len(cell_sorted), dtype=cell_type)
    np.subtract(position, starts[cell_sorted], out=position)
    values = np.full((n_p * n_q, width), np.nan)
    # One flat index instead of a (cell, position) pair: a 1-D scatter is about twice
    # as fast (numpy would make both index arrays intp anyway).
    flat = cell_sorted.astype(np.intp)
    del cell_sorted
    flat *= width
    np.add(flat, position, out=flat)
    del position
    values.reshape(-1)[flat] = (rat if every else rat[valid])[order]
    return CellRatings(
        values=values.reshape(n_p, n_q, width),
        counts=counts.reshape(n_p, n_q).astype(np.int64),
        persona_ids=personas.astype(np.int64),
        item_ids=items.astype(np.int64),
    )


def _check_int_ids(name: str, arr: NDArray[Any]) -> None:
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{name} must hold integers")


def _dense_index(ids: NDArray[Any]) -> tuple[IntArray, NDArray[np.intp]]:
    """Sorted distinct ids and each entry's position among them (``np.unique`` inverse).

    Ids are small non-negative integers in practice: a lookup table then avoids
    sorting the whole column.
    """
    if ids.dtype.kind in "iu" and len(ids):
        low, high = int(ids.min()), int(ids.max())
        if low >= 0 and high < 4 * len(ids) + 1024:
            if ids.dtype != np.uint64:  # bincount takes what casts safely to int64
                present = np.bincount(ids, minlength=high + 1) > 0  # faster than a scatter
            else:
                present = np.zeros(high + 1, dtype=bool)
                present[ids] = True
            distinct = np.flatnonzero(present)
            lookup = np.cumsum(present, dtype=np.int64) - 1
            small = np.int32 if len(distinct) < 2**31 else np.int64
            return distinct.astype(np.int64), np.take(lookup.astype(small), ids)
    distinct, inverse = np.unique(ids.astype(np.int64, copy=False), return_inverse=True)
    return distinct, inverse


def cell_moments(cells: CellRatings) -> tuple[FloatArray, FloatArray]:
    """Mean and sd of each cell.

    Returns:
        ``(mu, sigma)``, both ``(P, Q)``: ``mu`` the mean, ``sigma`` the sample sd
        (ddof=1) of the valid ratings; ``sigma`` is 0 for a cell with one rating,
        both are NaN for a cell with none.
    """
    n = cells.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.nansum(cells.values, axis=2) / n
        dev = cells.values - mu[..., None]
        ss = np.nansum(dev * dev, axis=2)
        sigma = np.sqrt(ss / (n - 1.0))
    sigma[cells.counts == 1] = 0.0
    mu[cells.counts == 0] = np.nan
    sigma[cells.counts == 0] = np.nan
    return mu, sigma


def susceptibility(mu: ArrayLike) -> float:
    """Moral susceptibility ``S = mean_q sd_p(mu[p, q])`` (sd with ddof=1).

    Args:
        mu: ``(P, Q)`` persona-by-item mean ratings, ``P >= 2``, no NaN.
    """
    arr = _check_matrix("mu", mu, min_rows=2)
    return float(np.mean(np.std(arr, axis=0, ddof=1)))


def mean_sigma(sigma: ArrayLike) -> float:
    """Mean within-cell sd ``sigma_bar = mean_pq sigma[p, q]``.

    Args:
        sigma: ``(P, Q)`` persona-by-item sds, no NaN.
    """
    arr = _check_matrix("sigma", sigma)
    return float(np.mean(arr))


def robustness(sigma: ArrayLike) -> float:
    """Robustness ``R = 1 / sigma_bar`` (``inf`` when every cell is constant).

    Args:
        sigma: ``(P, Q)`` persona-by-item sds, no NaN.
    """
    return reciprocal(mean_sigma(sigma))


# --- cell features (statistics computed from answer counts) ------------------------------------


@dataclass(frozen=True)
class _Features:
    """The cell features of every registered count statistic, for one run.

    Attributes:
        sets: The feature sets, in order; ``slices`` locates each in the columns.
        slices: Feature-set name -> its columns among the ``width`` features.
        width: Total number of feature columns.
        group_of_item: ``(Q,)`` group (foundation) index of each item.
        n_groups: Number of groups; they partition the items.
        cells: ``(P, Q, width)`` features of the analysed cells.
        by_persona: ``(P, n_groups, width)`` feature sums per persona and group.
        positions: ``(P, Q, W)`` scale index of each valid rating (sampled runs), else None.
        n_scale: Number of scale points.
        linear_cols: Columns of the linear feature sets.
        linear_map: ``(n_scale, len(linear_cols))``: their features are ``counts @ map``.
        other_cols: Columns of the other feature sets.
        grid: ``(n_scale,)`` the scale's values (sampled runs), else None.
    """

    sets: tuple[CellFeatures, ...]
    slices: Mapping[str, slice]
    width: int
    group_of_item: NDArray[np.intp]
    n_groups: int
    cells: FloatArray
    by_persona: FloatArray
    positions: NDArray[np.intp] | None
    n_scale: int
    linear_cols: NDArray[np.intp]
    linear_map: FloatArray
    other_cols: NDArray[np.intp]
    grid: FloatArray | None = None

    def nonlinear(self, counts: FloatArray) -> FloatArray:
        """``(N, len(other_cols))`` features of the non-linear sets from ``(N, K)`` counts."""
        blocks = [fs.sampled(counts) for fs in self.sets if not fs.linear]
        return np.concatenate(blocks, axis=1) if blocks else np.empty((len(counts), 0))

    def of_counts(self, counts: FloatArray) -> FloatArray:
        """``(N, width)`` features of every set from ``(N, K)`` counts."""
        values = np.empty((len(counts), self.width))
        values[:, self.other_cols] = self.nonlinear(counts)
        values[:, self.linear_cols] = counts @ self.linear_map
        return values


CountFeatures = _Features
"""The cell features of a run's count statistics (see :func:`sampled_count_features`)."""


def _scale_positions(values: FloatArray, grid: FloatArray) -> NDArray[np.intp] | None:
    """Scale index of each value (-1 for NaN padding); None when a value is off the scale."""
    present = ~np.isnan(values)
    filled = np.where(present, values, grid[0])
    last = len(grid) - 1
    if np.array_equal(grid, grid[0] + np.arange(len(grid))):
        # Unit steps (MFQ-30's 0..5): the index is the rounded offset from the first
        # point, checked against the grid below as a search's would be; a binary
        # search per value costs several times more.
        clipped = np.clip(np.rint(filled - grid[0]), 0, last).astype(np.intp)
    else:
        clipped = np.minimum(np.searchsorted(grid, filled), last)
    on_scale = grid[clipped] == values
    if np.any(present & ~on_scale):
        return None
    return np.where(present, clipped, -1).astype(np.intp)


def _groups_of_items(n_items: int, groups: Mapping[str, NDArray[np.intp]]) -> NDArray[np.intp]:
    group_of_item = np.full(n_items, -1, dtype=np.intp)
    for g, cols in enumerate(groups.values()):
        group_of_item[cols] = g
    return group_of_item


def _sampled_features(
    cells: CellRatings, groups: Mapping[str, NDArray[np.intp]], scale: Sequence[float]
) -> _Features | None:
    """Features of a sampled run's cells; None when no count statistic is registered
    or a valid rating is off ``scale`` (the count statistics are then NaN)."""
    sets = feature_sets()
    grid = np.asarray(scale, dtype=np.float64)
    if not sets:
        return None
    positions = _scale_positions(cells.values, grid)
    if positions is None:
        logger.warning(
            "ratings off the scale %s: statistics computed from answer counts are NaN",
            grid.tolist(),
        )
        return None
    n_p, n_q, _ = positions.shape
    k = len(grid)
    key = (np.arange(n_p * n_q).reshape(n_p, n_q, 1) * k + positions)[positions >= 0]
    counts = np.bincount(key, minlength=n_p * n_q * k).reshape(n_p * n_q, k).astype(np.float64)
    blocks = [fs.sampled(counts) for fs in sets]
    return _make_features(sets, blocks, (n_p, n_q), groups, positions, k, grid)


def _exact_features(
    probs: FloatArray,
    groups: Mapping[str, NDArray[np.intp]],
    repetitions: int | None,
) -> _Features | None:
    """Features of an exact run's cells from ``(P, Q, K)`` stored distributions."""
    sets = tuple(fs for fs in feature_sets() if fs.exact is not None)
    if not sets:
        return None
    n_p, n_q, k = probs.shape
    flat = probs.reshape(n_p * n_q, k)
    blocks = [fs.exact(flat, repetitions) for fs in sets if fs.exact is not None]
    return _make_features(sets, blocks, (n_p, n_q), groups, None, k)


def _make_features(
    sets: tuple[CellFeatures, ...],
    blocks: list[FloatArray],
    shape: tuple[int, int],
    groups: Mapping[str, NDArray[np.intp]],
    positions: NDArray[np.intp] | None,
    n_scale: int,
    grid: FloatArray | None = None,
) -> _Features:
    slices: dict[str, slice] = {}
    linear: list[int] = []
    maps: list[FloatArray] = []
    start = 0
    for fs, block in zip(sets, blocks, strict=True):
        slices[fs.name] = slice(start, start + block.shape[1])
        if fs.linear:
            linear += range(start, start + block.shape[1])
            maps.append(fs.sampled(np.eye(n_scale)))
        start += block.shape[1]
    cells = np.concatenate(blocks, axis=1).reshape(*shape, start)
    group_of_item = _groups_of_items(shape[1], groups)
    by_persona = np.zeros((shape[0], len(groups), start))
    for g in range(len(groups)):
        by_persona[:, g] = cells[:, group_of_item == g].sum(axis=1)
    linear_cols = np.asarray(linear, dtype=np.intp)
    linear_mask = np.zeros(start, dtype=bool)  # a mask, not np.isin (which sorts)
    linear_mask[linear_cols] = True
    return _Features(
        sets=sets,
        slices=slices,
        width=start,
        group_of_item=group_of_item,
        n_groups=len(groups),
        cells=cells,
        by_persona=by_persona,
        positions=positions,
        n_scale=n_scale,
        linear_cols=linear_cols,
        linear_map=np.concatenate(maps, axis=1) if maps else np.empty((n_scale, 0)),
        other_cols=np.flatnonzero(~linear_mask).astype(np.intp),
        grid=grid,
    )


def _add_product(out: FloatArray, left: FloatArray, right: FloatArray) -> None:
    """``out += left @ right``, in products small enough for single-threaded BLAS.

    Threaded BLAS on a busy machine spends more CPU time waiting than computing.
    """
    rows = max(1, _SMALL_PRODUCT // max(left.shape[1] * right.shape[1], 1))
    for r in range(0, len(left), rows):
        out[r : r + rows] += left[r : r + rows] @ right


def _segments(key: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """``(order, starts, keys)``: a stable order grouping equal keys, where each run of
    equal keys starts in it, and the key of each run."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts, ordered[starts]


def _two_valued_feature_change(
    feats: _Features,
    p_g: NDArray[np.intp],
    q_g: NDArray[np.intp],
    k_high: CountArray,
    n: int,
    total: FloatArray,
) -> None:
    """Add the feature change of resampled two-valued cells to ``total`` (B, G, width).

    A resampled two-valued cell holds ``n - K`` times its low and ``K`` times its
    high scale point, so its features depend on (low, high, ``K``) only: they are
    tabulated once per pair of scale points present and ``K = 0..n``, and each
    replicate's sums are a histogram of (group, pair, ``K``) times that table. The
    cells' own features are subtracted once.
    """
    positions = feats.positions
    if positions is None:
        raise ValueError("two-valued cells need scale positions")
    n_boot, n_cells = k_high.shape
    n_s = feats.n_scale
    cell_pos = positions[p_g, q_g, :n]
    pair_key = cell_pos.min(axis=1) * n_s + cell_pos.max(axis=1)
    pairs, pair_of = np.unique(pair_key, return_inverse=True)
    n_pairs = len(pairs)
    k_axis = np.arange(n + 1)
    rows = np.arange(n_pairs)[:, None]
    counts = np.zeros((n_pairs, n + 1, n_s))
    counts[rows, k_axis[None, :], (pairs // n_s)[:, None]] = n - k_axis[None, :]
    counts[rows, k_axis[None, :], (pairs % n_s)[:, None]] += k_axis[None, :]
    table = feats.of_counts(counts.reshape(-1, n_s))  # (n_pairs * (n + 1), width)
    group = feats.group_of_item[q_g]
    own = np.zeros((feats.n_groups, feats.width))
    np.add.at(own, group, feats.cells[p_g, q_g])
    total -= own
    per_group = n_pairs * (n + 1)
    cell_key = group * per_group + pair_of.ravel() * (n + 1)  # (C,)
    bins = n_boot * feats.n_groups * per_group
    if bins <= max(4 * n_boot * n_cells, 1 << 16):
        replicate = np.arange(n_boot, dtype=np.intp)[:, None] * (feats.n_groups * per_group)
        # One (B, C) buffer built in place: no second temporary for the drawn K.
        keys = np.empty((n_boot, n_cells), dtype=np.intp)
        np.add(replicate, cell_key, out=keys)
        keys += k_high
        hist = np.bincount(keys.ravel(), minlength=bins).astype(np.float64)
        by_row = hist.reshape(n_boot * feats.n_groups, per_group)
        _add_product(total.reshape(n_boot * feats.n_groups, feats.width), by_row, table)
        return
    # Many scale points or a large n: gather each cell's tabulated row instead.
    picked = pair_of.ravel() * (n + 1) + k_high  # (B, C)
    for g in np.flatnonzero(np.bincount(group)):
        total[:, g] += table[picked[:, group == g]].sum(axis=1)


def _multi_valued_feature_change(
    feats: _Features,
    p_g: NDArray[np.intp],
    q_g: NDArray[np.intp],
    redrawn: _Redrawn,
    total: FloatArray,
) -> None:
    """Add the feature change of resampled cells (any number of values) to ``total``.

    Features are computed once per distinct redrawn count vector, then gathered per
    replicate and cell and summed per group.
    """
    order, starts, keys = _segments(feats.group_of_item[q_g])
    total[:, keys] -= np.add.reduceat(feats.cells[p_g, q_g][order], starts, axis=0)
    if redrawn.distinct is not None and redrawn.which is not None:
        counts, which = redrawn.distinct, redrawn.which[:, order]
    elif redrawn.codes is not None:
        # Float codes hold exact integers below 2**53. Every resample holds n = base - 1
        # answers, so the last digit follows from the others: dropping it keeps codes small.
        base, top_digit = redrawn.base, redrawn.base ** (feats.n_scale - 1)
        distinct, which = _distinct_codes(redrawn.codes[:, order].astype(np.int64) % top_digit)
        counts = _counts_of_codes(distinct, base, feats.n_scale)
    elif redrawn.counts is not None:
        ordered = redrawn.counts[:, order]
        counts = ordered.reshape(-1, feats.n_scale)
        which = np.arange(len(counts)).reshape(ordered.shape[:2])
    else:
        raise ValueError("no redrawn counts")
    values = feats.of_counts(counts)
    sizes = np.diff(np.r_[starts, len(order)])
    # Columns equal for every resample (e.g. "cell is used") need no gathering.
    constant = np.all(values == values[:1], axis=0)
    fixed = np.flatnonzero(constant)
    if len(fixed):
        total[:, keys[:, None], fixed[None, :]] += sizes[:, None] * values[0, fixed][None, :]
    varying = np.flatnonzero(~constant)
    if len(varying):
        sums = _segment_sums(values[:, varying], which, starts, sizes)
        total[:, keys[:, None], varying[None, :]] += sums


def _segment_sums(
    values: FloatArray,
    which: NDArray[np.intp],
    starts: NDArray[np.intp],
    sizes: NDArray[np.intp],
) -> FloatArray:
    """``(B, S, V)`` sums of ``values[which]`` ``(B, C, V)`` over the ``S`` runs of cells
    starting at ``starts`` (``sizes`` long): per column the floats of
    ``np.add.reduceat(values[:, v].take(which), starts, axis=1)``.

    Columns of non-negative integers (answer counts, distinct answers, flags) have
    exact sums whatever the order of the additions, so several are packed as digits
    into one float64 (while every run's sum stays an exact integer below 2**53) and
    summed with one gather and one reduceat, then unpacked: fewer passes over the
    ``(B, C)`` draws. Other columns are summed one at a time, as before.
    """
    n_boot, n_cols = which.shape[0], values.shape[1]
    out = np.empty((n_boot, len(starts), n_cols))
    longest = int(sizes.max(initial=0))
    whole = np.all(np.isfinite(values) & (values == np.round(values)) & ~np.signbit(values), axis=0)
    words: list[list[tuple[int, int]]] = []  # (column, digit base) per packed word
    span = 1
    for col in range(n_cols):
        if not whole[col]:
            out[:, :, col] = np.add.reduceat(values[:, col].take(which), starts, axis=1)
            continue
        # A run's sum of this column is at most its largest value times the run length.
        bound = int(values[:, col].max()) * longest + 1
        if bound >= 2**53:  # sums may round: summed alone, in the order above
            out[:, :, col] = np.add.reduceat(values[:, col].take(which), starts, axis=1)
            continue
        if not words or span * bound >= 2**53:
            words.append([])
            span = 1
        words[-1].append((col, span))
        span *= bound
    for word in words:
        packed = np.zeros(len(values))
        for col, place in word:
            packed += values[:, col] * float(place)  # exact: integers below 2**53
        run_sums = np.add.reduceat(packed.take(which), starts, axis=1).astype(np.int64)
        for j, (col, place) in enumerate(word):
            digits = run_sums // place
            if j + 1 < len(word):
                digits %= word[j + 1][1] // place
            out[:, :, col] = digits
    return out


def _distinct_codes(codes: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.intp]]:
    """Sorted distinct values of ``codes`` and each entry's index among them.

    ``np.unique`` sorts; codes of small runs span a small range, where a presence
    table is several times faster.
    """
    top = int(codes.max(initial=0)) + 1
    if top > 8 * codes.size + (1 << 16):
        distinct, which = np.unique(codes, return_inverse=True)
        return distinct, which.reshape(codes.shape)
    present = np.zeros(top, dtype=bool)
    present[codes.ravel()] = True
    distinct = np.flatnonzero(present)
    lookup = np.empty(top, dtype=np.intp)  # only the entries at codes are read
    lookup[distinct] = np.arange(len(distinct), dtype=np.intp)
    return distinct.astype(np.int64), lookup.take(codes)  # take: faster than indexing


# --- bootstrap engines ------------------------------------------------------------------------


def _persona_bootstrap(
    mu: FloatArray, sigma: FloatArray, n_boot: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Per-item persona-bootstrap replicates (see :func:`_persona_bootstrap_sums`)."""
    sd_mu, mean_sig, _ = _persona_bootstrap_sums(mu, sigma, None, n_boot, rng)
    return sd_mu, mean_sig


def _persona_bootstrap_sums(
    mu: FloatArray,
    sigma: FloatArray,
    extra: FloatArray | None,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Per-item persona-bootstrap replicates, and sums of ``extra`` columns.

    Resampling personas with replacement equals weighting each persona by how
    often it was drawn, so each replicate's per-item sums are a weight-matrix
    product. Items are centred first to keep the sum-of-squares variance accurate.

    Args:
        extra: ``(P, E)`` per-persona columns whose replicate sums over the resampled
            personas are wanted (the cell features of count statistics), or None.

    Returns:
        ``(sd_mu, mean_sigma, extra_sums)``, of shapes ``(n_boot, Q)``, ``(n_boot, C)``
        for ``sigma`` of shape ``(P, C)`` (``C = Q`` for run metrics) and
        ``(n_boot, E)``: per replicate the ddof-1 sd over resampled personas of each
        column of ``mu``, the mean of each column of ``sigma`` and the sum of each
        column of ``extra`` (None without ``extra``).
    """
    n_p, n_q = mu.shape
    centred = mu - mu.mean(axis=0)
    design = np.concatenate([centred, centred * centred, sigma], axis=1)  # (P, 2Q + C)
    sd_mu = np.empty((n_boot, n_q))
    mean_sig = np.empty((n_boot, sigma.shape[1]))
    extra_sums = None if extra is None else np.empty((n_boot, extra.shape[1]))
    chunk = max(1, _CHUNK_ELEMENTS // max(n_p, 1))
    # Products of at most this many rows stay small enough for BLAS to run them
    # single-threaded: threaded BLAS on a busy 2-core machine is several times slower.
    rows = max(1, _SMALL_PRODUCT // max(n_p * design.shape[1], 1))
    sums = np.empty((chunk, design.shape[1]))
    var_buf = np.empty((chunk, n_q))
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        weights = _persona_weights(rng, b, n_p)
        for r in range(0, b, rows):
            np.matmul(weights[r : r + rows], design, out=sums[r : min(r + rows, b)])
        s1, s2, s_sig = sums[:b, :n_q], sums[:b, n_q : 2 * n_q], sums[:b, 2 * n_q :]
        # (s2 - s1 * s1 / n_p) / (n_p - 1), step by step in one buffer (same operations).
        var = np.multiply(s1, s1, out=var_buf[:b])
        var /= n_p
        np.subtract(s2, var, out=var)
        var /= n_p - 1
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=sd_mu[lo : lo + b])
        np.divide(s_sig, n_p, out=mean_sig[lo : lo + b])
        if extra is not None and extra_sums is not None:
            # A separate product, so that the moment columns are computed exactly as
            # without features (same blocks, same rounding).
            e_rows = max(1, _SMALL_PRODUCT // max(n_p * extra.shape[1], 1))
            for r in range(0, b, e_rows):
                top = min(r + e_rows, b)
                np.matmul(weights[r:top], extra, out=extra_sums[lo + r : lo + top])
    return sd_mu, mean_sig, extra_sums


def _persona_weights(rng: np.random.Generator, n_boot: int, n_p: int) -> FloatArray:
    """How often each persona is drawn in each of ``n_boot`` with-replacement resamples.

    Returns:
        ``(n_boot, n_p)`` float64 counts, read-only; the generator advances exactly as
        by drawing them (``n_boot * n_p`` integers below ``n_p``).

    The counts are a function of the generator's state: when that state (and the
    shape) was met recently, the stored counts are returned and the generator is
    moved to the state the draw left it in. Every run analysed with one seed and
    persona count (the runs of a family in ``pcollapse metrics``) draws the same
    matrix, so it is drawn once.
    """
    bit_generator = rng.bit_generator
    key = (_frozen(bit_generator.state), n_boot, n_p)
    with _WEIGHTS_LOCK:
        found = _WEIGHTS_SEEN.pop(key, None)
        if found is not None:
            _WEIGHTS_SEEN[key] = found  # most recently used last
    if found is not None:
        weights, after = found
        bit_generator.state = after
        return weights
    draws = rng.integers(0, n_p, size=(n_boot, n_p))
    draws += (np.arange(n_boot) * n_p)[:, None]  # one bin per replicate and persona
    weights = np.bincount(draws.ravel(), minlength=n_boot * n_p).astype(np.float64)
    weights = weights.reshape(n_boot, n_p)
    weights.flags.writeable = False
    with _WEIGHTS_LOCK:
        _WEIGHTS_SEEN[key] = (weights, bit_generator.state)
        while len(_WEIGHTS_SEEN) > _WEIGHTS_KEPT:
            del _WEIGHTS_SEEN[next(iter(_WEIGHTS_SEEN))]
    return weights


def _frozen(state: Any) -> Any:
    """A bit generator's ``state`` (nested dicts, ints, arrays) as a hashable value."""
    if isinstance(state, dict):
        return tuple((name, _frozen(value)) for name, value in sorted(state.items()))
    if isinstance(state, np.ndarray):
        return (state.dtype.str, state.shape, state.tobytes())
    return state


# Recent persona-weight matrices by generator state (see _persona_weights). Each holds
# at most one chunk (about _CHUNK_ELEMENTS counts, 2 MB), so the store stays small.
_WEIGHTS_KEPT = 4
_WEIGHTS_SEEN: dict[Any, tuple[FloatArray, Mapping[str, Any]]] = {}
_WEIGHTS_LOCK = threading.Lock()


def _resample_sums(
    table: FloatArray, n: int, n_boot: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Sums and sums of squares of ``n_boot`` with-replacement resamples of each row.

    Args:
        table: ``(C, n)`` ratings of ``C`` cells of equal size ``n``.

    Returns:
        ``(s1, s2)``, both ``(n_boot, C)`` float64.
    """
    s1, s2, _ = _resample(table, None, 0, n, n_boot, rng)
    return s1, s2


@dataclass(frozen=True)
class _Redrawn:
    """Scale counts of resampled cells: packed codes, or counts when they do not pack.

    Attributes:
        codes: ``(B, C)`` float64 holding the exact integers
            ``sum_k counts_k * (n + 1)**k`` (< 2**53), or None.
        counts: ``(B, C, K)`` float64 counts, or None (when ``codes`` is given).
        base: ``n + 1``, the base of the digits of ``codes``.
        distinct: ``(D, K)`` the distinct count vectors drawn (then ``codes`` and
            ``counts`` are None), or None.
        which: ``(B, C)`` index in ``distinct`` of each resample's count vector, or None.
    """

    codes: FloatArray | None
    counts: FloatArray | None
    base: int
    distinct: FloatArray | None = None
    which: NDArray[np.intp] | None = None


def _resample_indices(
    n_cells: int, n: int, n_boot: int, rng: np.random.Generator
) -> Iterator[tuple[int, int, NDArray[np.int32]]]:
    """Indices of ``n_boot`` with-replacement resamples of ``n`` values from each of
    ``n_cells`` rows (row ``c`` holds flat indices ``c * n .. c * n + n - 1``).

    Yields:
        ``(start, size, idx)`` per chunk of replicates: ``idx`` ``(n, size, n_cells)``
        int32, laid out so the sum over a resample is a reduction over the outer axis
        (``n`` contiguous vector adds). Its buffer is reused by the next chunk.

    Draws are float32 uniforms ``u < 1`` in this layout, chunk after chunk; the index
    is ``floor(u * n')`` with ``n'`` the float32 just below ``n``: ``u * n`` would round
    up to ``n`` for ``u`` near 1, ``u * n'`` never does. Every caller that resamples
    rows gets the same resamples from the same generator state.
    """
    offsets = np.arange(n_cells, dtype=np.int32) * n
    scale = np.nextafter(np.float32(n), np.float32(0))
    chunk = min(n_boot, max(1, _CHUNK_ELEMENTS // (n_cells * n)))
    # Buffers reused across chunks: fresh large arrays would page-fault every time.
    size = n * chunk * n_cells
    u_buf = np.empty(size, dtype=np.float32)
    idx_buf = np.empty(size, dtype=np.int32)
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        shape = (n, b, n_cells)
        used = n * b * n_cells
        u = u_buf[:used].reshape(shape)
        idx = idx_buf[:used].reshape(shape)
        rng.random(out=u, dtype=np.float32)
        u *= scale
        idx[...] = u
        idx += offsets
        yield lo, b, idx


def _resample(
    table: FloatArray,
    positions: NDArray[np.intp] | None,
    n_scale: int,
    n: int,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, _Redrawn | None]:
    """Sums, sums of squares and (optionally) scale counts of resamples of each row.

    Args:
        table: ``(C, n)`` ratings of ``C`` cells of equal size ``n``.
        positions: ``(C, n)`` index on the scale of each rating, or None.
        n_scale: Number of scale points (with ``positions``).

    Returns:
        ``(s1, s2, redrawn)``: ``(n_boot, C)`` float64 sums and sums of squares, and
        the scale counts of each resample (None without ``positions``).

    Integer ratings are shifted to start at 0 and packed as ``v**2 * base + v``
    (``base`` > any possible sum of ``v``), so one gather and one sum give both
    sums exactly; float32 is used when the packed sums stay below 2**24. Scale
    counts are packed the same way, as digits ``(n + 1)**position``.
    """
    n_cells = table.shape[0]
    low = float(table.min())
    shifted = table - low
    top = float(shifted.max())
    integral = bool(np.all(shifted == np.round(shifted)))
    base = n * top + 1.0
    bound = n * (top * top * base + top)
    packed = integral and bound < 2.0**53
    dtype = np.float32 if packed and bound < 2.0**24 else np.float64
    codes = (shifted * shifted * base + shifted if packed else shifted).astype(dtype).ravel()
    squares = None if packed else (shifted * shifted).astype(dtype).ravel()
    s1 = np.empty((n_boot, n_cells))
    s2 = np.empty((n_boot, n_cells))
    scale_codes = counts = digits = None
    if positions is not None:
        if float(n + 1) ** n_scale < 2.0**53:
            digits = (float(n + 1) ** positions.astype(np.float64)).ravel()
            scale_codes = np.empty((n_boot, n_cells))
        else:
            counts = np.empty((n_boot, n_cells, n_scale))
    x_buf = None
    for lo, b, idx in _resample_indices(n_cells, n, n_boot, rng):
        if x_buf is None:  # the first chunk is the largest
            x_buf = np.empty(idx.size, dtype=dtype)
        x = x_buf[: idx.size].reshape(idx.shape)
        codes.take(idx, out=x, mode="clip")  # indices are in range; "clip" avoids a copy
        total = np.add.reduce(x, axis=0).astype(np.float64)
        if squares is None:  # packed codes
            whole = np.rint(total).astype(np.int64)
            s1_shift = (whole % int(base)).astype(np.float64)
            s2_shift = (whole // int(base)).astype(np.float64)
        else:
            s1_shift = total
            s2_shift = np.add.reduce(squares.take(idx), axis=0).astype(np.float64)
        # Undo the shift: sum(v) = sum(v') + n*low; sum(v^2) = sum(v'^2) + 2 low sum(v') + n low^2.
        s1[lo : lo + b] = s1_shift + n * low
        s2[lo : lo + b] = s2_shift + 2.0 * low * s1_shift + n * low * low
        if scale_codes is not None and digits is not None:
            # Sum of (n+1)**position over the n draws: base-(n+1) digits are the counts.
            np.rint(np.add.reduce(digits.take(idx), axis=0), out=scale_codes[lo : lo + b])
        elif counts is not None and positions is not None:
            key = np.arange(b * n_cells).reshape(1, b, n_cells) * n_scale
            key = key + positions.ravel().take(idx)
            flat = np.bincount(key.ravel(), minlength=b * n_cells * n_scale)
            counts[lo : lo + b] = flat.reshape(b, n_cells, n_scale)
    if positions is None:
        return s1, s2, None
    return s1, s2, _Redrawn(scale_codes, counts, n + 1)


def _redraw_scale_counts(
    positions: NDArray[np.intp], n_scale: int, n: int, n_boot: int, rng: np.random.Generator
) -> tuple[FloatArray, NDArray[np.intp]]:
    """Scale counts of ``n_boot`` with-replacement resamples of each row of ``positions``.

    The indices of :func:`_resample_indices`, as :func:`_resample` draws them, so the same
    resamples; only the scale counts are summed, as digits ``(n + 1)**position``
    (float32 while the codes stay below 2**24), and returned as the distinct count
    vectors and each resample's index among them. Every statistic of a resampled
    cell follows from its counts, so nothing else needs gathering.

    Args:
        positions: ``(C, n)`` index on the scale of each rating of ``C`` cells.
        n_scale: Number of scale points; ``(n + 1)**n_scale < 2**53``.

    Returns:
        ``(distinct, which)``: ``(D, K)`` count vectors and ``(n_boot, C)`` indices.
    """
    n_cells = positions.shape[0]
    base = n + 1
    exact32 = n * float(base) ** (n_scale - 1) < 2.0**24
    # Every resample holds n answers, so the top digit follows from the others: the top
    # scale point counts 0, which keeps the codes small (no remainder to take later).
    digits = np.where(positions == n_scale - 1, 0.0, float(base) ** positions.astype(np.float64))
    digits = digits.astype(np.float32 if exact32 else np.float64).ravel()
    codes = np.empty((n_boot, n_cells), dtype=np.int64)
    x_buf = None
    for lo, b, idx in _resample_indices(n_cells, n, n_boot, rng):
        if x_buf is None:  # the first chunk is the largest
            x_buf = np.empty(idx.size, dtype=digits.dtype)
        x = x_buf[: idx.size].reshape(idx.shape)
        digits.take(idx, out=x, mode="clip")
        total = np.add.reduce(x, axis=0)
        codes[lo : lo + b] = total if exact32 else np.rint(total)
    distinct, which = _distinct_codes(codes)
    return _counts_of_codes(distinct, base, n_scale), which


def _counts_of_codes(codes: NDArray[np.int64], base: int, n_scale: int) -> FloatArray:
    """``(D, n_scale)`` scale counts of resamples of ``base - 1`` answers from their codes
    (the counts of all but the top scale point as base-``base`` digits; the top point
    holds the rest)."""
    digits = [(codes // base**k) % base for k in range(n_scale - 1)]
    digits.append(base - 1 - np.sum(digits, axis=0))
    return np.stack(digits, axis=1).astype(np.float64)


def _scale_count_moments(
    counts: FloatArray, grid: FloatArray, low: float, n: int
) -> tuple[FloatArray, FloatArray]:
    """Mean and sd (ddof=1) of resamples with scale ``counts`` ``(D, K)`` over ``grid``.

    Integral ``grid - low`` only: the sums are then exact integers and the moments
    bit-identical to :func:`_resample`'s packed sums (same expressions, same order).
    """
    shifted = grid - low
    s1_shift = counts @ shifted
    s2_shift = counts @ (shifted * shifted)
    s1 = s1_shift + n * low
    s2 = s2_shift + 2.0 * low * s1_shift + n * low * low
    mean = s1 / n
    sd = np.sqrt(np.maximum((s2 - s1 * mean) / (n - 1), 0.0))
    return mean, sd


def _counts_give_moments(table: FloatArray, grid: FloatArray, n: int, n_scale: int) -> bool:
    """Whether :func:`_redraw_scale_counts` and :func:`_scale_count_moments` reproduce
    :func:`_resample`'s sums exactly for the ratings ``table`` (integral steps from its
    minimum, packed sums and codes below 2**53)."""
    low = float(table.min())
    shifted = grid - low
    top = float(table.max()) - low
    base = n * top + 1.0
    return (
        bool(np.all(shifted == np.round(shifted)))
        and n * (top * top * base + top) < 2.0**53
        and float(n + 1) ** n_scale < 2.0**53
    )


def _binomial_cdf(n: int, q: FloatArray) -> FloatArray:
    """``P(K <= k)`` for ``k = 0..n-1`` of ``K ~ Binomial(n, q)``, one row per entry of ``q``.

    Args:
        n: Number of trials (>= 1).
        q: ``(C,)`` success probabilities strictly between 0 and 1.

    Returns:
        ``(C, n)`` float64, increasing along each row.
    """
    k = np.arange(n + 1)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    log_comb = log_fact[n] - log_fact[k] - log_fact[n - k]
    log_pmf = log_comb + k * np.log(q)[:, None] + (n - k) * np.log1p(-q)[:, None]
    return np.cumsum(np.exp(log_pmf), axis=1)[:, :n]


def _two_valued_draws(
    n_high: IntArray, n: int, n_boot: int, rng: np.random.Generator
) -> CountArray:
    """``K``, the number of ``high`` values among ``n`` resampled ratings of each cell.

    ``K ~ Binomial(n, n_high / n)`` is drawn by inverting its CDF with one uniform per
    cell and replicate: ``K`` = number of CDF values <= u (what a sorted search
    returns), counted by ``n`` vectorised comparisons with each cell's CDF, which is
    several times faster than a search per element for the small ``n`` of repeated
    ratings; a search per distinct ``n_high`` for large ``n``.

    Returns:
        ``(n_boot, C)`` integer counts (uint8 for ``n`` < 256).
    """
    n_cells = len(n_high)
    cdf = _binomial_cdf(n, n_high / n)
    chunk = min(n_boot, max(1, _CHUNK_ELEMENTS // n_cells))
    if n < 64:
        k_high = np.zeros((n_boot, n_cells), dtype=np.uint8)
        below = np.empty((chunk, n_cells), dtype=bool)
        # Contiguous CDF rows and a uint8 view of the comparison: both operands of each
        # pass are then plain vectors, which runs about twice as fast as a strided one.
        steps = np.ascontiguousarray(cdf.T)
        for lo in range(0, n_boot, chunk):
            b = min(chunk, n_boot - lo)
            u = rng.random((b, n_cells))
            k, hit = k_high[lo : lo + b], below[:b]
            as_count = hit.view(np.uint8)
            for step in steps:
                np.greater_equal(u, step, out=hit)
                np.add(k, as_count, out=k)
        return k_high
    k_wide = np.empty((n_boot, n_cells), dtype=np.intp)
    kinds, first, kind_of = np.unique(n_high, return_index=True, return_inverse=True)
    columns = [np.flatnonzero(kind_of == j) for j in range(len(kinds))]
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        u = rng.random((b, n_cells))
        for j, cols in enumerate(columns):
            k_wide[lo : lo + b, cols] = np.searchsorted(cdf[first[j]], u[:, cols], side="right")
    return k_wide


def _resample_two_valued(
    low: FloatArray,
    high: FloatArray,
    n_high: IntArray,
    n: int,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Replicate means and sds of cells holding only two distinct values.

    Resampling ``n`` ratings of a cell with ``n_high`` copies of ``high`` (the rest
    ``low``) only matters through ``K``, the number of ``high`` drawn, which is
    ``Binomial(n, n_high / n)`` (see :func:`_two_valued_draws`).

    Args:
        low, high: ``(C,)`` the two values of each cell, ``low < high``.
        n_high: ``(C,)`` how many of the cell's ``n`` ratings equal ``high``.

    Returns:
        ``(mean, sd)``, both ``(n_boot, C)``; ``sd`` with ddof=1.
    """
    k_high = _two_valued_draws(n_high, n, n_boot, rng)
    return _two_valued_moments(low, high, k_high, n)


def _two_valued_moments(
    low: FloatArray, high: FloatArray, k_high: CountArray, n: int
) -> tuple[FloatArray, FloatArray]:
    gap = high - low
    mean = low + k_high * (gap / n)
    # sqrt(K (n - K) / (n (n - 1))) tabulated over K = 0..n: the same values, fewer passes.
    k = np.arange(n + 1)
    unit_sd = np.sqrt(k * (n - k) / (n * (n - 1.0)))
    sd = gap * unit_sd[k_high]
    return mean, sd


def _rerun_bootstrap(
    cells: CellRatings,
    mu: FloatArray,
    sigma: FloatArray,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Per-item rerun-bootstrap replicates (see :func:`_rerun_bootstrap_features`)."""
    sd_mu, mean_sig, _ = _rerun_bootstrap_features(cells, mu, sigma, None, n_boot, rng)
    return sd_mu, mean_sig


def _rerun_bootstrap_features(
    cells: CellRatings,
    mu: FloatArray,
    sigma: FloatArray,
    feats: _Features | None,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Per-item rerun-bootstrap replicates (resample each cell's ratings).

    A cell whose ratings are all equal resamples to itself, so draws are made only
    for the other cells, grouped by size ``n``. Cells with two distinct values (the
    common case at low temperature) need one binomial count per replicate; the
    others are resampled as ``(B, cells, n)`` index blocks. The per-item persona
    sums are then updated by the change in the drawn cells; so are the per-group
    sums of the cell features (``feats``), from the same draws.

    Returns:
        ``(sd_mu, mean_sigma, features)``: ``(n_boot, Q)`` arrays as for the persona
        bootstrap, and the ``(n_boot, G, width)`` replicate feature sums per group
        (None without ``feats``).
    """
    n_p, n_q = mu.shape
    counts = cells.counts
    values = cells.values
    # fmin/fmax skip NaN padding as nanmin/nanmax do, without their masked copies. One
    # (P, Q) pass per rating slot (the same fmin/fmax sequence as a reduction over the
    # slots, exact counts) is faster than reductions over the short last axis.
    slots = np.moveaxis(values, 2, 0)
    low, high = slots[0].copy(), slots[0].copy()
    for slot in slots[1:]:
        np.fmin(low, slot, out=low)
        np.fmax(high, slot, out=high)
    n_low = np.zeros((n_p, n_q), dtype=np.int64)
    n_high = np.zeros((n_p, n_q), dtype=np.int64)
    for slot in slots:
        n_low += slot == low
        n_high += slot == high
    varying = (counts >= 2) & (high > low)
    two_valued = n_low + n_high == counts
    centre = mu.mean(axis=0)
    centred = mu - centre
    base_s2 = np.sum(centred * centred, axis=0)  # (Q,)
    base_sig = np.sum(sigma, axis=0)  # (Q,)

    d1 = np.zeros((n_boot, n_q))  # change in sum of centred means
    d2 = np.zeros((n_boot, n_q))  # change in sum of squared centred means
    dsig = np.zeros((n_boot, n_q))  # change in sum of sds
    feature_total = None
    if feats is not None:
        base = feats.by_persona.sum(axis=0)  # (G, width)
        feature_total = np.broadcast_to(base, (n_boot, *base.shape)).copy()

    p_all, q_all = np.nonzero(varying)
    sizes = counts[p_all, q_all]
    pair = two_valued[p_all, q_all]
    # Distinct sizes (np.unique without options would import numpy.ma, ~20 ms).
    for n_value in np.flatnonzero(np.bincount(sizes)):
        n = int(n_value)
        for use_pair in (True, False):
            sel = (sizes == n) & (pair == use_pair)
            if not sel.any():
                continue
            p_sel, q_sel = p_all[sel], q_all[sel]
            # Cells in slices, so that replicates are (n_boot, slice), never (n_boot,
            # every varying cell): a large run would need gigabytes. A run of the
            # reference size fits in one slice.
            step = max(1, _CELL_SLICE_ELEMENTS // n_boot)
            for start in range(0, len(p_sel), step):
                p_g, q_g = p_sel[start : start + step], q_sel[start : start + step]
                if use_pair:
                    # Cells in item order, so that the per-item sums below need no
                    # gathering; the draws are made in cell order first (same stream).
                    order, starts, keys = _segments(q_g)
                    k_high = _two_valued_draws(n_high[p_g, q_g], n, n_boot, rng)[:, order]
                    p_g, q_g = p_g[order], q_g[order]
                    if feats is not None and feature_total is not None:
                        _two_valued_feature_change(feats, p_g, q_g, k_high, n, feature_total)
                    # Each cell's changes depend on its K only: tabulated over K = 0..n
                    # (the same expressions as below, so the same values) and gathered.
                    mean_tab, sd_tab = _two_valued_moments(
                        low[p_g, q_g][:, None], high[p_g, q_g][:, None], np.arange(n + 1), n
                    )
                    m_tab = mean_tab - centre[q_g][:, None]
                    m0 = centred[p_g, q_g][:, None]
                    pick = np.arange(len(p_g), dtype=np.intp) * (n + 1) + k_high
                    for change, table in (
                        (d1, m_tab - m0),
                        (d2, m_tab * m_tab - m0 * m0),
                        (dsig, sd_tab - sigma[p_g, q_g][:, None]),
                    ):
                        change[:, keys] += np.add.reduceat(table.take(pick), starts, axis=1)
                    continue
                elif (
                    feats is not None
                    and feats.positions is not None
                    and feats.grid is not None
                    and _counts_give_moments(values[p_g, q_g, :n], feats.grid, n, feats.n_scale)
                ):
                    # One gather per drawn rating (scale digits) instead of two: the
                    # moments follow from each distinct count vector.
                    distinct, drawn = _redraw_scale_counts(
                        feats.positions[p_g, q_g, :n], feats.n_scale, n, n_boot, rng
                    )
                    if feature_total is not None:
                        _multi_valued_feature_change(
                            feats,
                            p_g,
                            q_g,
                            _Redrawn(None, None, n + 1, distinct=distinct, which=drawn),
                            feature_total,
                        )
                    low_value = float(values[p_g, q_g, :n].min())
                    mean_d, sd_d = _scale_count_moments(distinct, feats.grid, low_value, n)
                    order, starts, keys = _segments(q_g)
                    which = drawn[:, order]
                    p_g, q_g = p_g[order], q_g[order]
                    mean, sd = mean_d.take(which), sd_d.take(which)
                else:
                    positions = None if feats is None else feats.positions
                    s1, s2, redrawn = _resample(
                        values[p_g, q_g, :n],
                        None if positions is None else positions[p_g, q_g, :n],
                        0 if feats is None else feats.n_scale,
                        n,
                        n_boot,
                        rng,
                    )
                    if feats is not None and feature_total is not None and redrawn is not None:
                        _multi_valued_feature_change(feats, p_g, q_g, redrawn, feature_total)
                    order, starts, keys = _segments(q_g)
                    s1, s2 = s1[:, order], s2[:, order]
                    p_g, q_g = p_g[order], q_g[order]
                    mean = s1 / n
                    sd = np.sqrt(np.maximum((s2 - s1 * mean) / (n - 1), 0.0))
                # Same sums, in the same order, as before cells were put in item order.
                m_new = mean - centre[q_g]
                m0 = centred[p_g, q_g]
                d1[:, keys] += np.add.reduceat(m_new - m0, starts, axis=1)
                d2[:, keys] += np.add.reduceat(m_new * m_new - m0 * m0, starts, axis=1)
                dsig[:, keys] += np.add.reduceat(sd - sigma[p_g, q_g], starts, axis=1)
    var_mu = (base_s2 + d2 - d1 * d1 / n_p) / (n_p - 1)
    sd_mu = np.sqrt(np.maximum(var_mu, 0.0))
    mean_sig = (base_sig + dsig) / n_p
    return sd_mu, mean_sig, feature_total


def persona_bootstrap_replicates(
    mu: ArrayLike,
    averaged: ArrayLike,
    *,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Persona-bootstrap replicate arrays (the engine behind every persona SE).

    Each draw resamples the rows (personas) with replacement, the same rows for
    both matrices, so columns of several runs on one persona set placed side by
    side are resampled *paired*.

    Args:
        mu: ``(P, A)`` columns whose across-persona sd (ddof=1) is wanted, no NaN.
        averaged: ``(P, C)`` columns whose across-persona mean is wanted, no NaN.
        n_boot: Number of draws (>= 1).
        rng: Generator the draws come from.

    Returns:
        ``(sd, mean)`` of shapes ``(n_boot, A)`` and ``(n_boot, C)``.
    """
    n_boot = _check_count("n_boot", n_boot, 1)
    mu_arr = _check_matrix("mu", mu, min_rows=2)
    avg_arr = _check_matrix("averaged", averaged, min_rows=2)
    if mu_arr.shape[0] != avg_arr.shape[0]:
        raise ValueError(
            f"mu and averaged must have the same rows (personas), got {mu_arr.shape[0]} "
            f"and {avg_arr.shape[0]}"
        )
    return _persona_bootstrap(mu_arr, avg_arr, n_boot, rng)


def rerun_bootstrap_replicates(
    cells: CellRatings, *, n_boot: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Rerun-bootstrap replicate arrays: each cell's valid ratings resampled with replacement.

    Args:
        cells: Cells with at least one valid rating each (drop incomplete personas first).
        n_boot: Number of draws (>= 1).
        rng: Generator the draws come from.

    Returns:
        ``(sd_mu, mean_sigma)``, both ``(n_boot, Q)``: per draw and item the ddof-1
        sd over personas of the resampled cell means and the mean of the resampled
        cell sds.
    """
    n_boot = _check_count("n_boot", n_boot, 1)
    if np.any(cells.counts < 1):
        raise ValueError("cells: every cell needs at least one valid rating")
    if cells.counts.shape[0] < 2:
        raise ValueError(f"cells: need at least 2 personas, got {cells.counts.shape[0]}")
    mu, sigma = cell_moments(cells)
    return _rerun_bootstrap(cells, mu, sigma, n_boot, rng)


def persona_bootstrap_sums(
    mu: FloatArray,
    averaged: FloatArray,
    extra: FloatArray | None,
    *,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """:func:`persona_bootstrap_replicates` plus, from the same draws, the replicate sums
    over the resampled personas of ``extra`` ``(P, E)`` columns (e.g. the cell features
    of count statistics), ``(n_boot, E)``; the first two arrays are bit-identical to
    :func:`persona_bootstrap_replicates`' (same draws, same products)."""
    n_boot = _check_count("n_boot", n_boot, 1)
    mu_arr = _check_matrix("mu", mu, min_rows=2)
    avg_arr = _check_matrix("averaged", averaged, min_rows=2)
    return _persona_bootstrap_sums(mu_arr, avg_arr, extra, n_boot, rng)


def rerun_bootstrap_sums(
    cells: CellRatings, feats: CountFeatures | None, *, n_boot: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """:func:`rerun_bootstrap_replicates` plus, from the same draws, the ``(n_boot, G,
    width)`` replicate sums per group of the cell features ``feats`` (None without);
    the first two arrays equal :func:`rerun_bootstrap_replicates`' (same draws)."""
    n_boot = _check_count("n_boot", n_boot, 1)
    mu, sigma = cell_moments(cells)
    return _rerun_bootstrap_features(cells, mu, sigma, feats, n_boot, rng)


def sampled_count_features(
    cells: CellRatings, groups: Mapping[str, NDArray[np.intp]], scale: Sequence[float] | None
) -> CountFeatures | None:
    """The cell features of every registered count statistic of a sampled run's cells,
    summed per persona and group (``by_persona``); None when no count statistic is
    registered or a valid rating is off ``scale`` (None: MFQ-30's 0..5)."""
    return _sampled_features(cells, groups, _default_scale(scale))


def exact_count_features(
    probs: FloatArray, groups: Mapping[str, NDArray[np.intp]], repetitions: int | None
) -> CountFeatures | None:
    """:func:`sampled_count_features` of an exact run, from its ``(P, Q, K)`` stored
    distributions over the ascending scale."""
    return _exact_features(probs, groups, repetitions)


def foundation_columns(
    item_ids: ArrayLike, foundations: Mapping[int, str] | None = None
) -> dict[str, NDArray[np.intp]]:
    """Column indices of each foundation's items within ``item_ids``.

    Args:
        item_ids: ``(Q,)`` item ids, the columns of a persona-by-item matrix.
        foundations: Item id -> foundation (default MFQ-30 with catch items);
            every item must be mapped.

    Returns:
        Foundation name -> sorted column indices, foundations in mapping order.
    """
    return _foundation_groups(_as_int_ids("item_ids", item_ids), foundations)


def _counted(
    feats: _Features | None,
    draws: Sequence[FloatArray | None],
    scale: Sequence[float] | None,
) -> list[dict[str, Estimate]] | None:
    """Count statistics per group and (last) over all items, from ``(B, G, width)`` draws."""
    if feats is None or scale is None:
        return None
    point = feats.by_persona.sum(axis=0)  # (G, width)
    point = np.concatenate([point, point.sum(axis=0, keepdims=True)])
    reps = [_with_total(d) for d in draws if d is not None]
    sums = {
        name: FeatureSums(point=point[:, cols], draws=[d[:, :, cols] for d in reps])
        for name, cols in feats.slices.items()
    }
    return estimate_count_statistics(sums, scale)


def _with_total(draws: FloatArray) -> FloatArray:
    """``(B, G, width)`` draws with the sum over groups appended, as ``(B, G + 1, width)``.

    The result is a view of a ``(width, B, G + 1)`` array: the count statistics take
    each feature set's columns column by column (``_columns_contiguous`` in the
    registry), which for a slice of features is then a view, not a second copy.
    """
    n_boot, n_groups, width = draws.shape
    by_column = np.empty((width, n_boot, n_groups + 1))
    source = draws.transpose(2, 0, 1)  # (width, B, G): written in by_column's order
    by_column[:, :, :n_groups] = source
    # Groups added one after another, as draws.sum(axis=1) does (same floats).
    total = by_column[:, :, n_groups]
    if n_groups < 2:
        total[...] = source.sum(axis=2)
    else:
        np.add(source[:, :, 0], source[:, :, 1], out=total)
        for g in range(2, n_groups):
            np.add(total, source[:, :, g], out=total)
    return by_column.transpose(1, 2, 0)


def _assemble(
    mu: FloatArray,
    sigma: FloatArray,
    item_ids: IntArray,
    groups: Mapping[str, NDArray[np.intp]],
    boots: Sequence[tuple[FloatArray, FloatArray]],
    *,
    feats: _Features | None = None,
    feature_draws: Sequence[FloatArray | None] = (),
    scale: Sequence[float] | None = None,
    **extra: Any,
) -> RunMetrics:
    counted = _counted(feats, feature_draws, scale)
    # The replicate columns put in foundation order once, so that each foundation's
    # are a slice (a view) instead of a gathered copy per foundation and array.
    order = np.concatenate([np.empty(0, dtype=np.intp), *groups.values()])
    grouped = [(sd[:, order], sg[:, order]) for sd, sg in boots]
    per_foundation = {}
    start = 0
    for g, (name, cols) in enumerate(groups.items()):
        span = slice(start, start + len(cols))
        start += len(cols)
        per_foundation[name] = FoundationMetrics(
            items=tuple(int(i) for i in item_ids[cols]),
            estimates=estimate_statistics(
                mu[:, cols],
                sigma[:, cols],
                [(sd[:, span], sg[:, span]) for sd, sg in grouped],
                counted=None if counted is None else counted[g],
            ),
        )
    return RunMetrics(
        estimates=estimate_statistics(
            mu, sigma, boots, counted=None if counted is None else counted[-1]
        ),
        personas=int(mu.shape[0]),
        questions=int(mu.shape[1]),
        per_foundation=per_foundation,
        **extra,
    )


def excluded_personas(complete: NDArray[np.bool_], persona_ids: IntArray) -> tuple[int, ...]:
    """Ids of the personas to drop (``~complete``); at least two must remain.

    Args:
        complete: ``(P,)`` whether each persona has a valid rating on every item.
        persona_ids: ``(P,)`` their ids.

    Raises:
        TooFewPersonasError: fewer than two complete personas (a ValueError).
    """
    if int(complete.sum()) < 2:
        raise TooFewPersonasError(int(complete.sum()), len(persona_ids))
    return tuple(int(p) for p in persona_ids[~complete])


def complete_cells(cells: CellRatings) -> tuple[CellRatings, tuple[int, ...]]:
    """Drop personas lacking a valid rating on some item.

    Returns:
        The cells of the complete personas, and the ids of the dropped ones.

    Raises:
        ValueError: fewer than two complete personas.
    """
    complete = np.all(cells.counts > 0, axis=1)
    excluded = excluded_personas(complete, cells.persona_ids)
    if not excluded:
        return cells, excluded
    kept = CellRatings(
        values=cells.values[complete],
        counts=cells.counts[complete],
        persona_ids=cells.persona_ids[complete],
        item_ids=cells.item_ids,
    )
    return kept, excluded


# --- public analyses --------------------------------------------------------------------------


def _default_scale(scale: Sequence[float] | None) -> tuple[float, ...]:
    """The scale's values, ascending (MFQ-30's when None)."""
    values = _mfq30_scale() if scale is None else scale
    grid = tuple(sorted(float(v) for v in values))
    if len(grid) < 2 or len(set(grid)) != len(grid):
        raise ValueError(f"scale must hold at least two distinct values, got {list(values)}")
    return grid


def _by_group(sums: FloatArray | None, feats: _Features | None) -> FloatArray | None:
    """``(B, G * width)`` persona-bootstrap sums as ``(B, G, width)``."""
    if sums is None or feats is None:
        return None
    return sums.reshape(len(sums), feats.n_groups, feats.width)


def analyze_ratings(
    persona_ids: ArrayLike,
    item_ids: ArrayLike,
    ratings: ArrayLike,
    *,
    foundations: Mapping[int, str] | None = None,
    n_persona_boot: int = DEFAULT_PERSONA_BOOT,
    n_rerun_boot: int = DEFAULT_RERUN_BOOT,
    rng: np.random.Generator | int | None = None,
    invalid: float = INVALID_RATING,
    scale: Sequence[float] | None = None,
) -> RunMetrics:
    """Every registered statistic of a sampled run (``S``, ``R``, ``sigma_bar``, ...), with SEs.

    Every valid rating of a persona-item cell counts (several rows per slot
    included); ``invalid`` ratings are ignored. Personas lacking a valid rating on
    some item are excluded and listed in ``excluded_personas``; statistics computed
    from answer counts use the same population (the complete personas' valid
    ratings).

    Args:
        persona_ids, item_ids, ratings: ``(N,)`` arrays, one entry per answer.
        foundations: Item id -> foundation name for per-foundation values
            (default: MFQ-30, catch items included). Every item must be mapped.
        n_persona_boot: Persona-bootstrap draws (>= 1).
        n_rerun_boot: Rerun-bootstrap draws (>= 0; 0 skips it).
        rng: Generator, int seed or None (fresh seed, recorded in the result).
        invalid: Rating value marking an answer without a valid rating.
        scale: The scale's values (default: MFQ-30's 0..5), over which answers are
            counted for the count statistics; NaN for those when a valid rating is
            off the scale.

    Returns:
        :class:`RunMetrics` with ``method="sampling"``. SEs are the two bootstrap
        sds combined in quadrature; ``R_se = sigma_bar_se / sigma_bar**2``.

    Raises:
        ValueError: Bad shapes or lengths, bad counts, unmapped items, or fewer
            than 2 complete personas.
    """
    n_persona_boot = _check_count("n_persona_boot", n_persona_boot, 1)
    n_rerun_boot = _check_count("n_rerun_boot", n_rerun_boot, 0)
    cells = cell_ratings(persona_ids, item_ids, ratings, invalid=invalid)
    groups = _foundation_groups(cells.item_ids, foundations)
    generator, seed = resolve_rng(rng)

    n_invalid = int(np.asarray(ratings).size - cells.counts.sum())
    cells, excluded = complete_cells(cells)
    mu, sigma = cell_moments(cells)
    grid = _default_scale(scale)
    feats = _sampled_features(cells, groups, grid)
    extra = None if feats is None else feats.by_persona.reshape(len(mu), -1)
    sd_mu, mean_sig, persona_sums = _persona_bootstrap_sums(
        mu, sigma, extra, n_persona_boot, generator
    )
    boots = [(sd_mu, mean_sig)]
    feature_draws = [_by_group(persona_sums, feats)]
    if n_rerun_boot > 0:
        sd_mu, mean_sig, rerun_sums = _rerun_bootstrap_features(
            cells, mu, sigma, feats, n_rerun_boot, generator
        )
        boots.append((sd_mu, mean_sig))
        feature_draws.append(rerun_sums)
    return _assemble(
        mu,
        sigma,
        cells.item_ids,
        groups,
        boots,
        feats=feats,
        feature_draws=feature_draws,
        scale=grid,
        excluded_personas=excluded,
        method="sampling",
        seed=seed,
        n_persona_boot=n_persona_boot,
        n_rerun_boot=n_rerun_boot,
        valid_ratings=int(cells.counts.sum()),
        invalid_ratings=n_invalid,
    )


def tempered(probs: ArrayLike, ratio: float) -> FloatArray:
    """Re-temperature distributions: ``p_T ∝ p ** (1 / ratio)``, rows renormalised.

    ``ratio`` is the new sampling temperature divided by the one the distributions
    were collected at (for softmax outputs this is exact: ``softmax(z/T')`` =
    ``softmax(z/T) ** (T/T')``). ``ratio < 1`` sharpens, ``> 1`` flattens.

    Args:
        probs: ``(N, S)`` non-negative rows.
        ratio: Temperature ratio, > 0.
    """
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {ratio!r}")
    arr = np.asarray(probs, dtype=np.float64)
    # Work in logs so that a small ratio does not underflow every entry to 0.
    with np.errstate(divide="ignore"):
        logp = np.log(arr) / ratio
    logp -= np.max(logp, axis=1, keepdims=True)
    out = np.exp(logp)
    out /= out.sum(axis=1, keepdims=True)
    return out


def analyze_distributions(
    persona_ids: ArrayLike,
    item_ids: ArrayLike,
    probs: ArrayLike,
    *,
    scale: Sequence[float],
    foundations: Mapping[int, str] | None = None,
    n_persona_boot: int = DEFAULT_PERSONA_BOOT,
    rng: np.random.Generator | int | None = None,
    temperature: float | None = None,
    repetitions: int | None = None,
) -> RunMetrics:
    """Every registered statistic from stored per-cell rating distributions (no sampling noise).

    For each cell ``mu = sum_k p_k x_k`` and ``sigma = sqrt(sum_k p_k (x_k - mu)**2)``
    (the population sd of the distribution, i.e. the sd an infinite number of
    repetitions would show). SEs come from the persona bootstrap only.

    Args:
        persona_ids, item_ids: ``(N,)`` cell keys, each (persona, item) at most once.
        probs: ``(N, S)`` probabilities over ``scale`` (rows are renormalised).
        scale: ``(S,)`` rating value of each column.
        foundations: As for :func:`analyze_ratings`.
        n_persona_boot: Persona-bootstrap draws (>= 1).
        rng: Generator, int seed or None.
        temperature: Optional re-temperaturing ratio (new / collection temperature),
            see :func:`tempered`.
        repetitions: Number of repetitions per cell the run stands for; count
            statistics whose exact meaning depends on it (non-unanimity, distinct
            answers: expected values over that many draws) are NaN without it.

    Count statistics use each cell's distribution in place of its answer shares
    (e.g. Gini impurity ``1 - sum p**2`` exactly; the pooled distribution is the mean
    of the cells' distributions); see each statistic's ``exact_meaning``.

    Returns:
        :class:`RunMetrics` with ``method="exact"`` and ``n_rerun_boot=0``.
    """
    n_persona_boot = _check_count("n_persona_boot", n_persona_boot, 1)
    pid = _as_int_ids("persona_ids", persona_ids)
    iid = _as_int_ids("item_ids", item_ids)
    p = np.asarray(probs, dtype=np.float64)
    grid = _as_1d("scale", scale, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (answers, scale values), got shape {p.shape}")
    _check_lengths(persona_ids=pid, item_ids=iid, probs=p)
    if p.shape[1] != len(grid):
        raise ValueError(f"probs has {p.shape[1]} columns but scale has {len(grid)} values")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probs must be finite and non-negative")
    totals = p.sum(axis=1)
    if np.any(totals <= 0):
        raise ValueError(f"probs row {int(np.flatnonzero(totals <= 0)[0])} sums to 0")
    p = p / totals[:, None]
    if temperature is not None:
        p = tempered(p, temperature)
    generator, seed = resolve_rng(rng)

    personas, p_idx = np.unique(pid, return_inverse=True)
    items, q_idx = np.unique(iid, return_inverse=True)
    groups = _foundation_groups(items, foundations)
    n_p, n_q = len(personas), len(items)
    cell = p_idx * n_q + q_idx
    seen = np.bincount(cell, minlength=n_p * n_q)
    if np.any(seen > 1):
        dup = int(np.flatnonzero(seen > 1)[0])
        raise ValueError(
            f"persona_ids/item_ids: cell (persona {personas[dup // n_q]}, "
            f"item {items[dup % n_q]}) appears more than once"
        )
    if repetitions is not None:
        repetitions = _check_count("repetitions", repetitions, 1)
    order = np.argsort(grid, kind="stable")
    grid, p = grid[order], p[:, order]
    mean = p @ grid
    var = np.maximum(p @ (grid * grid) - mean * mean, 0.0)
    mu_flat = np.full(n_p * n_q, np.nan)
    sigma_flat = np.full(n_p * n_q, np.nan)
    mu_flat[cell] = mean
    sigma_flat[cell] = np.sqrt(var)
    complete = np.asarray((seen > 0).reshape(n_p, n_q).all(axis=1))
    mu = mu_flat.reshape(n_p, n_q)[complete]
    sigma = sigma_flat.reshape(n_p, n_q)[complete]
    excluded = excluded_personas(complete, personas.astype(np.int64))
    cell_probs = np.zeros((n_p * n_q, len(grid)))
    cell_probs[cell] = p
    feats = _exact_features(cell_probs.reshape(n_p, n_q, -1)[complete], groups, repetitions)
    extra = None if feats is None else feats.by_persona.reshape(len(mu), -1)
    sd_mu, mean_sig, persona_sums = _persona_bootstrap_sums(
        mu, sigma, extra, n_persona_boot, generator
    )
    return _assemble(
        mu,
        sigma,
        items.astype(np.int64),
        groups,
        [(sd_mu, mean_sig)],
        feats=feats,
        feature_draws=[_by_group(persona_sums, feats)],
        scale=tuple(float(v) for v in grid),
        excluded_personas=excluded,
        method="exact",
        seed=seed,
        n_persona_boot=n_persona_boot,
        n_rerun_boot=0,
        temperature_ratio=None if temperature is None else float(temperature),
    )


def self_profile(
    item_ids: ArrayLike,
    ratings: ArrayLike,
    *,
    foundations: Mapping[int, str] | None = None,
    invalid: float = INVALID_RATING,
) -> SelfProfile:
    """Per-foundation profile of a self run (the model answering as itself).

    ``mean[f]`` = mean over items of ``f`` of the item's mean valid rating;
    ``sd[f]`` = mean over items of ``f`` of the item's sd (ddof=1, 0 for one rating).
    Items without any valid rating are left out and listed in ``missing_items``.

    Args:
        item_ids, ratings: ``(N,)`` arrays, one entry per answer.
        foundations: Item id -> foundation (default MFQ-30 with catch items).
        invalid: Rating value marking an answer without a valid rating.
    """
    iid = _as_int_ids("item_ids", item_ids)
    rat = _as_1d("ratings", ratings, np.float64)
    _check_lengths(item_ids=iid, ratings=rat)
    cells = cell_ratings(np.zeros(len(iid), dtype=np.int64), iid, rat, invalid=invalid)
    mu, sigma = cell_moments(cells)
    return _profile(cells.item_ids, mu[0], sigma[0], cells.counts[0] > 0, foundations)


def _profile(
    item_ids: IntArray,
    item_mean: FloatArray,
    item_sd: FloatArray,
    has: NDArray[np.bool_],
    foundations: Mapping[int, str] | None,
) -> SelfProfile:
    groups = _foundation_groups(item_ids, foundations)
    means: dict[str, float] = {}
    sds: dict[str, float] = {}
    items: dict[str, tuple[int, ...]] = {}
    for name, cols in groups.items():
        used = cols[has[cols]]
        items[name] = tuple(int(i) for i in item_ids[used])
        means[name] = float(np.mean(item_mean[used])) if len(used) else math.nan
        sds[name] = float(np.mean(item_sd[used])) if len(used) else math.nan
    missing = tuple(int(i) for i in item_ids[~has])
    return SelfProfile(mean=means, sd=sds, items=items, missing_items=missing)


def self_profile_from_distributions(
    item_ids: ArrayLike,
    probs: ArrayLike,
    *,
    scale: Sequence[float],
    foundations: Mapping[int, str] | None = None,
    temperature: float | None = None,
) -> SelfProfile:
    """:func:`self_profile` of an exact run: each item's mean and population sd
    come from its stored rating distribution (``mu = sum_k p_k x_k``).

    Args:
        item_ids: ``(N,)`` distinct item ids.
        probs: ``(N, S)`` distributions over ``scale``.
        scale: The ``S`` scale values.
        foundations: Item id -> foundation (default MFQ-30 with catch items).
        temperature: Optional re-temperaturing ratio (see :func:`tempered`).
    """
    iid = _as_int_ids("item_ids", item_ids)
    p = _check_matrix("probs", probs)
    values = np.asarray(scale, dtype=np.float64)
    if p.shape != (len(iid), len(values)):
        raise ValueError(
            f"probs must have shape (len(item_ids), len(scale)) = {(len(iid), len(values))}, "
            f"got {p.shape}"
        )
    if len(np.unique(iid)) != len(iid):
        raise ValueError("item_ids must be distinct (one distribution per item)")
    if temperature is not None:
        p = tempered(p, temperature)
    p = p / p.sum(axis=1, keepdims=True)
    order = np.argsort(iid)
    iid, p = iid[order], p[order]
    mean = p @ values
    sd = np.sqrt(np.maximum(p @ values**2 - mean**2, 0.0))
    return _profile(iid, mean, sd, np.ones(len(iid), dtype=bool), foundations)
