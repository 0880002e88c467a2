"""Normalised mean Gini impurity: mean Gini divided by its maximum ``1 - 1/k``.

``k`` is the number of points on the run's scale (6 for MFQ-30's 0-5, 5 for BFI-44's
1-5), so 1 means every cell spreads its answers uniformly over the scale and values
are comparable across answer sets. Computed from the same cell features as
``mean_gini``; exact runs likewise.
"""

from __future__ import annotations

from persona_collapse.stats.measures.mean_gini import GINI_FEATURES
from persona_collapse.stats.registry import (
    FloatArray,
    Statistic,
    mean_over_cells,
    register_statistic,
)


def _normalised(sums: FloatArray, scale: FloatArray) -> FloatArray:
    return mean_over_cells(sums, scale) / (1.0 - 1.0 / len(scale))


MEAN_GINI_NORM = register_statistic(
    Statistic(
        name="mean_gini_norm",
        label="Gini/max",
        description="mean Gini impurity over its maximum 1 - 1/k (k scale points)",
        unit="share of maximum",
        features=GINI_FEATURES,
        combine=_normalised,
        test_scale="difference",
        group="instability",
        digits=4,
        exact_meaning="mean_gini's exact value over 1 - 1/k",
    )
)
