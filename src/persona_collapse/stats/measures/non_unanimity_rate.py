"""Non-unanimity rate: the share of cells whose repeated answers are not all the same.

Per cell (persona x item) of valid answers, 1 when more than one distinct answer
occurs, else 0; averaged over the cells with at least two valid answers (a single
answer cannot disagree with itself). For an exact-mode run it is the probability
that ``repetitions`` independent draws from the cell's stored distribution are not
all equal, ``1 - sum_k p_k**n``; NaN when the number of repetitions is not given.
"""

from __future__ import annotations

import numpy as np

from persona_collapse.stats.instability import non_unanimity
from persona_collapse.stats.registry import (
    FloatArray,
    Statistic,
    cell_mean_features,
    mean_over_cells,
    register_statistic,
)


def _exact(probs: FloatArray, repetitions: int | None) -> FloatArray:
    if repetitions is None:
        return np.full(len(probs), np.nan)
    return 1.0 - (probs**repetitions).sum(axis=1)


NON_UNANIMITY_RATE = register_statistic(
    Statistic(
        name="non_unanimity_rate",
        label="non-unan.",
        description="share of cells (>= 2 valid answers) whose answers are not all equal",
        unit="share of cells",
        features=cell_mean_features("non_unanimity_rate", non_unanimity, _exact),
        combine=mean_over_cells,
        test_scale="difference",
        group="instability",
        exact_meaning=(
            "probability that n draws from the cell's distribution are not all equal, "
            "1 - sum p**n, for the run's n repetitions (NaN when n is not given)"
        ),
    )
)
