"""Entropy in bits of the run's pooled rating distribution.

Every analysed valid rating (the complete personas', all items in scope) is pooled;
``H = -sum_k f_k log2 f_k`` over the scale points with ``f_k > 0`` (0 when one
rating takes everything; at most ``log2 k`` for ``k`` scale points). For an
exact-mode run the pooled distribution is the mean of the cells' stored
distributions.
"""

from __future__ import annotations

from persona_collapse.stats.instability import entropy_bits
from persona_collapse.stats.registry import (
    SCALE_COUNTS,
    FloatArray,
    Statistic,
    pooled_shares,
    register_statistic,
)


def _entropy(sums: FloatArray, scale: FloatArray) -> FloatArray:
    return entropy_bits(pooled_shares(sums))


ENTROPY_BITS = register_statistic(
    Statistic(
        name="entropy_bits",
        label="H",
        description="entropy of the pooled rating distribution",
        unit="bits",
        features=SCALE_COUNTS,
        combine=_entropy,
        test_scale="difference",
        group="distribution",
        exact_meaning="entropy of the mean of the cells' stored distributions",
    )
)
