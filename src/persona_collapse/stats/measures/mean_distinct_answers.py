"""Mean number of distinct answers per cell.

Per cell of valid answers, how many different answers occur, averaged over the cells
with at least two valid answers (1 = always unanimous). For an exact-mode run, the
expected number of distinct values among ``n`` draws from the cell's distribution,
``sum_k 1 - (1 - p_k)**n``; NaN when the number of repetitions is not given.
"""

from __future__ import annotations

import numpy as np

from persona_collapse.stats.instability import distinct_answers
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
    return (1.0 - (1.0 - probs) ** repetitions).sum(axis=1)


MEAN_DISTINCT_ANSWERS = register_statistic(
    Statistic(
        name="mean_distinct_answers",
        label="distinct",
        description="mean number of distinct answers per cell (>= 2 valid answers)",
        unit="answers",
        features=cell_mean_features("mean_distinct_answers", distinct_answers, _exact),
        combine=mean_over_cells,
        test_scale="log",
        group="instability",
        exact_meaning=(
            "expected distinct values among n draws, sum 1 - (1 - p)**n, for the run's "
            "n repetitions (NaN when n is not given)"
        ),
    )
)
