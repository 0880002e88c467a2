"""Mean Gini impurity of cells: how likely two answers of one cell differ.

Per cell of valid answers with shares ``p_k``, ``1 - sum_k p_k**2`` (the chance that
two draws with replacement differ), averaged over the cells with at least two valid
answers. The plug-in value of a cell of ``n`` answers has expectation
``(1 - 1/n) (1 - sum_k p_k**2)``, so for an exact-mode run with ``n`` repetitions
that expectation is reported (what a sampled run of the same design estimates, as
for ``non_unanimity_rate``), and ``1 - sum_k p_k**2`` itself when ``n`` is not given.
"""

from __future__ import annotations

from persona_collapse.stats.instability import gini_impurity
from persona_collapse.stats.registry import (
    FloatArray,
    Statistic,
    cell_mean_features,
    mean_over_cells,
    register_statistic,
)


def _exact(probs: FloatArray, repetitions: int | None) -> FloatArray:
    population = 1.0 - (probs * probs).sum(axis=1)
    # The sampled statistic's expectation at n answers, so exact and sampled runs of
    # one design (and the audit's truth) agree.
    return population if repetitions is None else (1.0 - 1.0 / repetitions) * population


GINI_FEATURES = cell_mean_features("mean_gini", gini_impurity, _exact)
"""``[used, used * gini]`` per cell (shared with ``mean_gini_norm``)."""

MEAN_GINI = register_statistic(
    Statistic(
        name="mean_gini",
        label="Gini",
        description="mean Gini impurity 1 - sum p^2 of cells (>= 2 valid answers)",
        unit="probability",
        features=GINI_FEATURES,
        combine=mean_over_cells,
        test_scale="difference",
        group="instability",
        digits=4,
        exact_meaning=(
            "(1 - 1/n)(1 - sum p**2) of each cell's stored distribution for the run's n "
            "repetitions (the sampled value's expectation; 1 - sum p**2 when n is not "
            "given), averaged"
        ),
    )
)
