"""Top-1 share: the largest share any one rating takes in the pooled distribution.

Pooled over every analysed valid rating (see ``entropy_bits``); for an exact-mode
run, of the mean of the cells' stored distributions.
"""

from __future__ import annotations

from persona_collapse.stats.instability import row_max
from persona_collapse.stats.registry import (
    SCALE_COUNTS,
    FloatArray,
    Statistic,
    pooled_shares,
    register_statistic,
)


def _top_share(sums: FloatArray, scale: FloatArray) -> FloatArray:
    return row_max(pooled_shares(sums))


TOP1_SHARE = register_statistic(
    Statistic(
        name="top1_share",
        label="top-1",
        description="largest share of one rating in the pooled rating distribution",
        unit="share of ratings",
        features=SCALE_COUNTS,
        combine=_top_share,
        test_scale="difference",
        group="distribution",
        exact_meaning="largest share in the mean of the cells' stored distributions",
    )
)
