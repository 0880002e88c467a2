"""Diagnostics of how a model uses the rating scale, as pure functions over arrays.

* :func:`scale_usage`: share of valid ratings at the floor and at the ceiling of
  the scale and the Shannon entropy of the rating histogram (bits).
* :func:`ceiling_saturation_index`: share of cells whose mean rating lies within
  ``margin`` of the top of the scale (``mu >= max - margin``). Saturation near the
  ceiling squeezes the spread across personas and is characteristic of the
  insecure-code self-profiles.
* :func:`parse_failures`: share of answers without a valid rating, overall and
  per persona.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.core.frames import INVALID_RATING

DEFAULT_CEILING_MARGIN = 0.5
"""Cells with mean rating ``>= scale max - margin`` count as saturated (rating points)."""


@dataclass(frozen=True)
class ScaleUsage:
    """How the valid ratings spread over the scale.

    Attributes:
        scale: The scale values.
        shares: ``(len(scale),)`` share of ratings (or probability mass) on each value.
        n: Number of valid ratings (0 for distribution input).
        floor_share: Share at the lowest scale value.
        ceiling_share: Share at the highest scale value.
        entropy_bits: Shannon entropy of ``shares``, bits.
        max_entropy_bits: ``log2(len(scale))``, the entropy of uniform use.
    """

    scale: tuple[int, ...]
    shares: tuple[float, ...]
    n: int
    floor_share: float
    ceiling_share: float
    entropy_bits: float
    max_entropy_bits: float


@dataclass(frozen=True)
class ParseFailures:
    """Answers without a valid rating.

    Attributes:
        answers: Number of answers (rows).
        failed: Number of answers without a valid rating.
        rate: ``failed / answers`` (NaN when there are none).
        persona_ids: ``(P,)`` sorted persona ids.
        persona_rates: ``(P,)`` failure rate of each persona.
    """

    answers: int
    failed: int
    rate: float
    persona_ids: tuple[int, ...]
    persona_rates: tuple[float, ...]


def _check_scale(scale: Sequence[int]) -> NDArray[np.int64]:
    values = np.asarray(scale, dtype=np.int64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"scale must list at least 2 values, got {list(scale)!r}")
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"scale must be strictly increasing, got {list(scale)!r}")
    return values


def rating_entropy(shares: ArrayLike) -> float:
    """Shannon entropy ``-sum p log2 p`` (bits) of a histogram or distribution.

    Args:
        shares: Non-negative counts or probabilities (normalised here).

    Raises:
        ValueError: Negative or non-finite entries, or an all-zero input.
    """
    p = np.asarray(shares, dtype=np.float64).ravel()
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("shares must be finite and non-negative")
    total = p.sum()
    if total <= 0:
        raise ValueError("shares sum to 0")
    p = p[p > 0] / total
    return float(-(p * np.log2(p)).sum())


def _usage(scale: NDArray[np.int64], shares: NDArray[np.float64], n: int) -> ScaleUsage:
    return ScaleUsage(
        scale=tuple(int(v) for v in scale),
        shares=tuple(float(s) for s in shares),
        n=n,
        floor_share=float(shares[0]),
        ceiling_share=float(shares[-1]),
        entropy_bits=rating_entropy(shares) if shares.sum() > 0 else math.nan,
        max_entropy_bits=math.log2(len(scale)),
    )


def scale_usage(
    ratings: ArrayLike, *, scale: Sequence[int], invalid: float = INVALID_RATING
) -> ScaleUsage:
    """Floor share, ceiling share and entropy of sampled ratings.

    Args:
        ratings: ``(N,)`` ratings; ``invalid`` (and NaN) entries are ignored.
        scale: The scale values, ascending (e.g. ``0..5``).
        invalid: Marker of an answer without a valid rating.

    Returns:
        :class:`ScaleUsage`; shares are NaN when there is no valid rating.
    """
    values = _check_scale(scale)
    r = np.asarray(ratings, dtype=np.float64).ravel()
    r = r[np.isfinite(r) & (r != invalid)]
    counts = np.array([(r == v).sum() for v in values], dtype=np.float64)
    n = int(counts.sum())
    if n:
        return _usage(values, counts / n, n)
    return ScaleUsage(
        scale=tuple(int(v) for v in values),
        shares=tuple(math.nan for _ in values),
        n=0,
        floor_share=math.nan,
        ceiling_share=math.nan,
        entropy_bits=math.nan,
        max_entropy_bits=math.log2(len(values)),
    )


def scale_usage_from_distributions(probs: ArrayLike, *, scale: Sequence[int]) -> ScaleUsage:
    """:func:`scale_usage` of stored per-cell distributions: their average is the histogram.

    Args:
        probs: ``(N, len(scale))`` non-negative rows (each renormalised).
        scale: The scale values, ascending.
    """
    values = _check_scale(scale)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(values) or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (N >= 1, {len(values)}), got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ValueError("probs must be finite, non-negative rows with a positive sum")
    mean = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
    return _usage(values, mean, 0)


def ceiling_saturation_index(
    cell_means: ArrayLike, *, scale_max: float, margin: float = DEFAULT_CEILING_MARGIN
) -> float:
    """Share of cells whose mean rating is within ``margin`` of the ceiling.

    ``CSI = #{cells: mu >= scale_max - margin} / #cells``, NaN entries ignored.

    Args:
        cell_means: Mean rating per cell (any shape): persona-item means of a
            persona run, or item means of a self run.
        scale_max: Top of the rating scale.
        margin: Distance from the top that still counts as saturated, rating points (> 0).

    Returns:
        A share in ``[0, 1]``; NaN when there is no finite mean.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    mu = np.asarray(cell_means, dtype=np.float64).ravel()
    mu = mu[np.isfinite(mu)]
    if mu.size == 0:
        return math.nan
    return float(np.mean(mu >= scale_max - margin))


def parse_failures(
    persona_ids: ArrayLike, ratings: ArrayLike, *, invalid: float = INVALID_RATING
) -> ParseFailures:
    """Share of answers without a valid rating, overall and per persona.

    Args:
        persona_ids: ``(N,)`` persona of each answer.
        ratings: ``(N,)`` ratings; ``invalid`` (or NaN) marks a failed parse.
        invalid: Marker of an answer without a valid rating.
    """
    pid = np.asarray(persona_ids).ravel()
    rat = np.asarray(ratings, dtype=np.float64).ravel()
    if pid.shape != rat.shape:
        raise ValueError(
            f"persona_ids and ratings must have equal lengths, got {len(pid)} and {len(rat)}"
        )
    failed = ~np.isfinite(rat) | (rat == invalid)
    if pid.size == 0:
        return ParseFailures(0, 0, math.nan, (), ())
    personas, index = np.unique(pid, return_inverse=True)
    per_total = np.bincount(index, minlength=len(personas))
    per_failed = np.bincount(index, weights=failed.astype(np.float64), minlength=len(personas))
    return ParseFailures(
        answers=int(pid.size),
        failed=int(failed.sum()),
        rate=float(failed.mean()),
        persona_ids=tuple(int(p) for p in personas),
        persona_rates=tuple(float(x) for x in per_failed / per_total),
    )


__all__ = [
    "DEFAULT_CEILING_MARGIN",
    "ParseFailures",
    "ScaleUsage",
    "ceiling_saturation_index",
    "parse_failures",
    "rating_entropy",
    "scale_usage",
    "scale_usage_from_distributions",
]
