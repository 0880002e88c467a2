"""Top-1 rating: the scale value holding the largest share of the pooled ratings.

The lowest such value on ties. Its standard error is the bootstrap sd of that value
(0 when every resample agrees on it). Pooled as ``top1_share``.
"""

from __future__ import annotations

import numpy as np

from persona_collapse.stats.instability import row_argmax
from persona_collapse.stats.registry import (
    SCALE_COUNTS,
    FloatArray,
    Statistic,
    pooled_totals,
    register_statistic,
)


def _top_rating(sums: FloatArray, scale: FloatArray) -> FloatArray:
    top = scale[row_argmax(sums)]
    return np.where(pooled_totals(sums) > 0, top, np.nan)


TOP1_RATING = register_statistic(
    Statistic(
        name="top1_rating",
        label="mode",
        description="most frequent rating of the pooled rating distribution",
        unit="rating",
        features=SCALE_COUNTS,
        combine=_top_rating,
        test_scale="difference",
        group="distribution",
        digits=0,
        exact_meaning="mode of the mean of the cells' stored distributions",
    )
)
