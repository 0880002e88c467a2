"""Top-1 rating: the scale value holding the largest share of the pooled ratings.

The lowest such value on ties. Its standard error is the bootstrap sd of that value
(0 when every resample agrees on it). Pooled as ``top1_share``.
"""

from __future__ import annotations

import numpy as np

from persona_collapse.stats.registry import (
    SCALE_COUNTS,
    FloatArray,
    Statistic,
    register_statistic,
)


def _top_rating(sums: FloatArray, scale: FloatArray) -> FloatArray:
    top = scale[np.argmax(sums, axis=1)]
    return np.where(sums.sum(axis=1) > 0, top, np.nan)


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
