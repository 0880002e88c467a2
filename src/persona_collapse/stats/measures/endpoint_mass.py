"""Endpoint mass: the share of pooled ratings on the scale's two ends (0 and 5 on MFQ-30).

Pooled as ``entropy_bits``; a model pushed to extreme answers has a high value.
"""

from __future__ import annotations

from persona_collapse.stats.registry import (
    SCALE_COUNTS,
    FloatArray,
    Statistic,
    pooled_shares,
    register_statistic,
)


def _ends(sums: FloatArray, scale: FloatArray) -> FloatArray:
    shares = pooled_shares(sums)
    return shares[:, 0] + shares[:, -1]


ENDPOINT_MASS = register_statistic(
    Statistic(
        name="endpoint_mass",
        label="ends",
        description="share of pooled ratings on the lowest or highest scale value",
        unit="share of ratings",
        features=SCALE_COUNTS,
        combine=_ends,
        test_scale="difference",
        group="distribution",
        exact_meaning="mass of the mean of the cells' stored distributions on the two ends",
    )
)
