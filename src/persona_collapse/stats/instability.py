"""Scale-free instability of repeated answers, defined on any answer set.

R needs an ordinal scale; these measures only need to know whether two answers are
the same, so a moral instrument, a personality inventory and a capability task can
be compared on one footing. A *cell* is a set of repeated answers to one prompt
(persona x item, or an item alone); it is summarised by its answer counts, a row of
a ``(C, K)`` integer array over the ``K`` distinct answers seen.

Per cell, over its ``n = sum_k c_k`` answers with shares ``p_k = c_k / n``:

* non-unanimity: 1 when more than one distinct answer occurs, else 0;
* Gini impurity ``1 - sum_k p_k**2`` (the chance two draws with replacement differ);
* normalised Gini ``gini / (1 - 1/k)`` for an answer set of ``k`` options (1 = uniform);
* distinct answers: number of ``k`` with ``c_k > 0``.

Per run, the pooled rating distribution: entropy in bits, top-1 share and value,
and endpoint mass (share on the scale's two ends).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _check_counts(counts: ArrayLike) -> IntArray:
    arr = np.asarray(counts)
    if arr.ndim != 2:
        raise ValueError(f"counts must be 2-D (cells, answers), got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (
        arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        raise ValueError(f"counts must hold whole numbers, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError("counts must be non-negative")
    return arr.astype(np.int64, copy=False)


def answer_counts(
    cell_keys: ArrayLike, answers: ArrayLike
) -> tuple[IntArray, NDArray[np.generic], IntArray]:
    """Count each cell's answers.

    Args:
        cell_keys: ``(N,)`` integer cell index of each answer.
        answers: ``(N,)`` the answers (numbers or strings); leave invalid ones out.

    Returns:
        ``(cells, options, counts)``: the sorted distinct cell keys ``(C,)``, the
        sorted distinct answers ``(K,)`` and ``counts[c, k]`` ``(C, K)``.
    """
    keys = np.asarray(cell_keys)
    values = np.asarray(answers)
    if keys.ndim != 1 or values.ndim != 1:
        raise ValueError("cell_keys and answers must be 1-D")
    if len(keys) != len(values):
        raise ValueError(
            f"cell_keys and answers must have equal lengths, got {len(keys)} and {len(values)}"
        )
    cells, cell_idx = np.unique(keys, return_inverse=True)
    options, option_idx = np.unique(values, return_inverse=True)
    flat = np.bincount(
        cell_idx.ravel() * len(options) + option_idx.ravel(), minlength=len(cells) * len(options)
    )
    return cells, options, flat.reshape(len(cells), len(options)).astype(np.int64)


def answers_per_cell(counts: ArrayLike) -> IntArray:
    """``(C,)`` number of answers in each cell."""
    return _check_counts(counts).sum(axis=1)


def non_unanimity(counts: ArrayLike) -> FloatArray:
    """``(C,)`` 1.0 where a cell holds more than one distinct answer, else 0.0."""
    return (distinct_answers(counts) > 1).astype(np.float64)


def distinct_answers(counts: ArrayLike) -> FloatArray:
    """``(C,)`` number of distinct answers in each cell."""
    return (_check_counts(counts) > 0).sum(axis=1).astype(np.float64)


def gini_impurity(counts: ArrayLike) -> FloatArray:
    """``(C,)`` Gini impurity ``1 - sum_k p_k**2`` of each cell (NaN for an empty cell)."""
    arr = _check_counts(counts).astype(np.float64)
    n = arr.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (arr * arr).sum(axis=1) / (n * n)


def normalised_gini(gini: ArrayLike, *, n_options: int) -> FloatArray:
    """Gini impurity divided by its maximum ``1 - 1/n_options`` (uniform use of the options).

    Args:
        gini: Gini impurities.
        n_options: Size of the answer set (6 for a 0-5 scale, 4 for A-D), >= 2.
    """
    if isinstance(n_options, bool) or not isinstance(n_options, int | np.integer) or n_options < 2:
        raise ValueError(f"n_options must be an integer >= 2, got {n_options!r}")
    return np.asarray(gini, dtype=np.float64) / (1.0 - 1.0 / int(n_options))


@dataclass(frozen=True)
class RatingDistribution:
    """The pooled distribution of a run's valid ratings over its scale.

    Attributes:
        scale: The scale values, ascending.
        shares: Share of ratings on each scale value (sums to 1; NaN when empty).
        n_ratings: Number of valid ratings pooled.
        entropy_bits: ``-sum p log2 p`` over ``p > 0`` (bits; at most ``log2(len(scale))``).
        top1_share: Largest share.
        top1_value: Scale value holding it (the lowest on ties).
        endpoint_mass: Share on the lowest plus the highest scale value.
    """

    scale: tuple[float, ...]
    shares: tuple[float, ...]
    n_ratings: int
    entropy_bits: float
    top1_share: float
    top1_value: float
    endpoint_mass: float

    @property
    def max_entropy_bits(self) -> float:
        """Entropy of uniform use of the scale, ``log2(len(scale))``."""
        return math.log2(len(self.scale))


_SHORT_ROW = 8
"""numpy sums fewer numbers than this one after another (its pairwise summation starts
at blocks of 8), so :func:`row_sums` may add such rows column by column."""


def row_sums(values: FloatArray) -> FloatArray:
    """``values.sum(axis=1)`` of a 2-D array, bit for bit, cheaper for short rows.

    numpy reduces each short row in a separate inner loop, which costs far more than
    the additions; for rows of fewer than 8 numbers it adds them in order from +0.0,
    so a few whole-column additions give the same floats (the final ``+ 0.0`` turns a
    row of -0.0s into 0.0, as numpy's sum does). ``tests/stats/test_instability.py``
    checks the equality, so a numpy that sums differently is caught.
    """
    n_cols = values.shape[1]
    if not 2 <= n_cols < _SHORT_ROW:
        return np.asarray(values.sum(axis=1), dtype=np.float64)
    out = values[:, 0] + values[:, 1]
    for k in range(2, n_cols):
        out += values[:, k]
    out += 0.0
    return out


def row_max(values: FloatArray) -> FloatArray:
    """``values.max(axis=1)`` of a 2-D array with at least one column (NaN wins, as in
    numpy), cheaper for short rows: a few whole-column maxima instead of one short
    reduction per row."""
    n_cols = values.shape[1]
    if n_cols >= _SHORT_ROW:
        return np.asarray(values.max(axis=1), dtype=np.float64)
    out = values[:, 0].copy()
    for k in range(1, n_cols):
        np.maximum(out, values[:, k], out=out)
    return out


def row_argmax(values: FloatArray) -> IntArray:
    """``values.argmax(axis=1)`` of a 2-D array with at least one column (the first
    maximum; the first NaN when a row holds one), cheaper for short rows: a few
    whole-column comparisons instead of one short search per row."""
    n_cols = values.shape[1]
    if n_cols >= _SHORT_ROW or np.isnan(values).any():
        return np.asarray(values.argmax(axis=1), dtype=np.int64)
    best = values[:, 0].copy()
    index = np.zeros(len(values), dtype=np.int64)
    for k in range(1, n_cols):
        column = values[:, k]
        higher = column > best  # strictly: the first maximum wins a tie
        index[higher] = k
        np.maximum(best, column, out=best)
    return index


def entropy_bits(shares: ArrayLike) -> FloatArray:
    """Shannon entropy in bits of each row of ``shares`` (last axis), ``0 log 0 = 0``."""
    p = np.asarray(shares, dtype=np.float64)
    positive = p > 0
    # The terms -p log2 p where p > 0 and 0 elsewhere, computed in place with masks
    # (one pass each) instead of two np.where copies; the same floats.
    terms = np.zeros_like(p)  # p's memory order: the masked passes stay contiguous
    np.log2(p, out=terms, where=positive)
    np.multiply(np.negative(p), terms, out=terms, where=positive)
    if terms.ndim == 2:
        return row_sums(terms)
    return np.asarray(terms.sum(axis=-1), dtype=np.float64)


def rating_distribution(ratings: ArrayLike, *, scale: Sequence[float]) -> RatingDistribution:
    """Pooled distribution of valid ratings on ``scale``.

    Args:
        ratings: ``(N,)`` valid ratings; every one must be a value of ``scale``.
        scale: The scale's values (e.g. 0..5), at least two.

    Raises:
        ValueError: A rating off the scale, or a scale with fewer than two values.
    """
    grid = np.asarray(sorted(float(v) for v in scale), dtype=np.float64)
    if len(grid) < 2 or len(np.unique(grid)) != len(grid):
        raise ValueError(f"scale must hold at least two distinct values, got {list(scale)}")
    values = np.asarray(ratings, dtype=np.float64).ravel()
    position = np.searchsorted(grid, values)
    off = (position >= len(grid)) | (grid[np.minimum(position, len(grid) - 1)] != values)
    if np.any(off):
        bad = values[np.flatnonzero(off)[0]]
        raise ValueError(f"ratings: {bad:g} is not on the scale {grid.tolist()}")
    counts = np.bincount(position, minlength=len(grid)).astype(np.float64)
    return distribution_from_counts(counts, scale=grid.tolist())


def distribution_from_counts(counts: ArrayLike, *, scale: Sequence[float]) -> RatingDistribution:
    """:class:`RatingDistribution` from counts per scale value (``scale`` ascending)."""
    c = np.asarray(counts, dtype=np.float64)
    grid = tuple(float(v) for v in scale)
    if c.shape != (len(grid),):
        raise ValueError(f"counts must have one entry per scale value ({len(grid)}), got {c.shape}")
    total = float(c.sum())
    if total <= 0:
        nan = math.nan
        return RatingDistribution(grid, tuple([nan] * len(grid)), 0, nan, nan, nan, nan)
    shares = c / total
    top = int(np.argmax(shares))
    return RatingDistribution(
        scale=grid,
        shares=tuple(float(s) for s in shares),
        n_ratings=int(total),
        entropy_bits=float(entropy_bits(shares)),
        top1_share=float(shares[top]),
        top1_value=grid[top],
        endpoint_mass=float(shares[0] + shares[-1]),
    )


__all__ = [
    "RatingDistribution",
    "answer_counts",
    "answers_per_cell",
    "distinct_answers",
    "distribution_from_counts",
    "entropy_bits",
    "gini_impurity",
    "non_unanimity",
    "normalised_gini",
    "rating_distribution",
    "row_argmax",
    "row_max",
    "row_sums",
]


DRAW_CHUNK_SLOTS = 2_000_000
"""Most (draw, unit) slots a bootstrap materialises at once: bounds its memory."""


def draw_chunks(total: int, per_draw: int, *, slots: int = DRAW_CHUNK_SLOTS) -> Iterator[int]:
    """Sizes of the chunks ``total`` bootstrap draws are made in, ``per_draw`` slots
    each, at most ``slots`` slots (and at least one draw) per chunk; they sum to ``total``."""
    size = max(1, slots // max(per_draw, 1))
    done = 0
    while done < total:
        step = min(size, total - done)
        yield step
        done += step
