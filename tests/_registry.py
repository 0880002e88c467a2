"""Test support: statistics registered for one test only.

The registry has no ``unregister``; :func:`register_for_test` puts a statistic in it
through ``monkeypatch``, which removes it again when the test ends.
"""

from __future__ import annotations

import numpy as np
import pytest

from persona_collapse.stats import registry
from persona_collapse.stats.registry import Statistic


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # sigma_bar = 0: no ratio
        return np.asarray(a / b, dtype=np.float64)


SPREAD_TO_NOISE = Statistic(
    name="spread_to_noise",
    label="S/σ̄",
    description="test-only: susceptibility in units of the rating noise",
    unit="ratio",
    point=lambda mu, sigma: float(_ratio(np.mean(np.std(mu, axis=0, ddof=1)), np.mean(sigma))),
    draws=lambda spread, noise: _ratio(spread.mean(axis=1), noise.mean(axis=1)),
)
"""A positive statistic, tested on the log scale."""

SPREAD_MINUS_NOISE = Statistic(
    name="spread_minus_noise",
    label="S−σ̄",
    description="test-only: susceptibility less the rating noise (may be 0 or negative)",
    unit="rating points",
    point=lambda mu, sigma: float(np.mean(np.std(mu, axis=0, ddof=1)) - np.mean(sigma)),
    draws=lambda spread, noise: spread.mean(axis=1) - noise.mean(axis=1),
    test_scale="difference",
    digits=4,
)
"""A statistic tested as a plain difference."""

TEST_STATISTICS: tuple[Statistic, ...] = (SPREAD_TO_NOISE, SPREAD_MINUS_NOISE)


def register_for_test(monkeypatch: pytest.MonkeyPatch, *stats: Statistic) -> None:
    """Register ``stats`` (default :data:`TEST_STATISTICS`) until the test ends."""
    for stat in stats or TEST_STATISTICS:
        monkeypatch.setitem(registry._REGISTRY, stat.name, stat)


def _wide_cells(counts: np.ndarray) -> np.ndarray:
    """1 for a cell whose answers span at least three scale points, else 0."""
    points = np.arange(counts.shape[1])
    present = counts > 0
    high = np.where(present, points, -1).max(axis=1)
    low = np.where(present, points, counts.shape[1]).min(axis=1)
    return (high - low >= 2).astype(np.float64)


WIDE_CELL_RATE = Statistic(
    name="wide_cell_rate",
    label="wide",
    description="test-only: share of cells whose answers span three or more scale points",
    unit="share of cells",
    features=registry.cell_mean_features("wide_cell_rate", _wide_cells),
    combine=registry.mean_over_cells,
    test_scale="difference",
    group="instability",
)
"""A count statistic (per-cell feature averaged over cells), tested as a plain difference."""


def _pooled_sd(sums: np.ndarray, scale: np.ndarray) -> np.ndarray:
    shares = registry.pooled_shares(sums)
    mean = shares @ scale
    return np.asarray(np.sqrt(np.maximum(shares @ (scale * scale) - mean * mean, 0.0)))


POOLED_SD = Statistic(
    name="pooled_sd",
    label="sd(pool)",
    description="test-only: sd of the pooled rating distribution",
    unit="rating points",
    features=registry.SCALE_COUNTS,
    combine=_pooled_sd,
    group="distribution",
)
"""A count statistic of the pooled distribution, tested on the log scale."""

COUNT_TEST_STATISTICS: tuple[Statistic, ...] = (WIDE_CELL_RATE, POOLED_SD)
