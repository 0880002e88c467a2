r"""Difference tests between runs: intervals and p-values for ΔS, ΔR, Δσ̄ and the excess.

Every registered statistic is tested (:mod:`persona_collapse.stats.registry`): those
computed from cell moments (:func:`statistics_tested`) and the count statistics
(:func:`count_statistics_tested`: non-unanimity, Gini, entropy, ...), each on its
``test_scale``: the log ratio below for ``log`` statistics, the plain difference
``X_b - X_a`` (and ``X_treatment - X_control`` for the excess) for ``difference``
ones. Statistics that share a test (``same_test_as``) share its p-values. A count
statistic's point value and replicates come from the registry's draw hook
(:func:`~persona_collapse.stats.registry.count_statistic_draws`) applied to each run's
cell-feature sums over the resampled personas (the same persona draws as every other
statistic, so paired runs stay paired) and over the rerun-bootstrap redraws of each
cell; a statistic registered in a new module is thus tested, Holm-corrected and
written to ``significance.csv`` with no change here. Count statistics have a single
estimator: the ``corrected`` results carry the same values for them, and their
verdicts rest on them.

For two runs ``a`` (reference, e.g. the base model) and ``b`` (variant) and a
metric ``X`` (``S``, ``R`` or ``sigma_bar``) the relative change is
``ΔX = X_b / X_a - 1``. For a family with a control (secure-code) and a
treatment (insecure-code) variant the misalignment-specific *excess* is
``ΔX_treatment - ΔX_control = (X_treatment - X_control) / X_base``.

Bootstrap. Every draw resamples personas with replacement; when the runs hold
the same persona ids the *same* personas are drawn for every run (paired), so
what the personas have in common cancels out of the differences. Optionally a
rerun bootstrap resamples each cell's valid ratings, independently per run.

Variance schemes (``variance=``):

* ``"persona"`` (default): the persona bootstrap alone. A persona's cell means
  and sds carry their own rating noise, so resampling personas already
  propagates the rerun noise (personas are the independent units, the ratings
  nest inside them).
* ``"reference"``: persona and rerun bootstrap variances added, the convention of
  the published standard errors. It counts the rerun noise twice: negligible for
  a single run (the persona part dominates), but in a paired difference the
  persona part cancels and the rerun noise is most of what is left, so the
  test becomes conservative (measured on the simulator, 1000 replications:
  0.7-0.9 % rejections at α = 0.05 under a true null, against 4.5-5 % for
  ``"persona"``; see :mod:`persona_collapse.stats.audit`).
* ``"rerun"``: the rerun bootstrap alone: uncertainty for *this* persona set only
  (would re-asking the same personas give the same difference?).

Every result reports both components (``se_persona``, ``se_rerun``).

Tests. For a change, the statistic is the log ratio
:math:`L = \log X_b - \log X_a` (``R`` and ``sigma_bar`` give the same test,
since :math:`\log R = -\log \bar\sigma`), its standard error the sd of the
bootstrap replicates of :math:`L`; the interval is
:math:`\exp(L \pm z_{1-(1-c)/2}\,\mathrm{se}) - 1` and the two-sided p-value
:math:`2\,(1 - \Phi(|L| / \mathrm{se}))`. The excess is zero exactly when
:math:`X_\text{treatment} = X_\text{control}`, so its p-value is that of
:math:`\log X_\text{treatment} - \log X_\text{control}`; its interval is a
Wald interval on the excess itself (bootstrap sd of its replicates). A normal
p-value, unlike a count of bootstrap replicates beyond zero, is not floored at
``2 / (B + 1)``, which matters once Holm multiplies the smallest p-value by the
number of tests.

Estimators (``estimator=``): ``"reference"`` are the published estimators
(:mod:`persona_collapse.stats.metrics`); ``"corrected"`` are the bias-corrected ones:

* :math:`S_c = \operatorname{mean}_q \sqrt{\max(0, \operatorname{var}_p \hat\mu_{pq}
  - \operatorname{mean}_p s^2_{pq} / n_{pq})}`: the spread of the cell means
  across personas, less what the noise of a mean of :math:`n_{pq}` ratings adds
  to it (:math:`E[\operatorname{var}_p \hat\mu] = \operatorname{var}_p \mu +
  \operatorname{mean}_p \sigma^2/n`, and :math:`s^2` with ddof=1 is unbiased for
  :math:`\sigma^2`).
* :math:`\bar\sigma_c = \operatorname{mean}_{pq} s_{pq} / c_4(n_{pq})` with
  :math:`c_4(n) = \sqrt{2/(n-1)}\,\Gamma(n/2)/\Gamma((n-1)/2)`, the factor by
  which the sample sd of ``n`` normal draws underestimates the sd on average
  (0.9727 at ``n = 10``); ``R_c = 1 / sigma_bar_c``. Cells with one rating keep
  ``s = 0``.

Only ``S`` and ``sigma_bar`` (and ``R``) have a corrected estimator (hooks keyed by
name); other statistics are left out of ``estimator="corrected"`` results.

Intervals of one run (``MetricEstimate.intervals``). The corrected ``S`` (overall
and per foundation) gets :math:`S_c \pm t_{\nu}\,\mathrm{se}_J`, with
:math:`\mathrm{se}_J` the delete-one jackknife SE over personas (closed form,
:func:`jackknife_se_corrected_s`) and :math:`t_{\nu}` Student's quantile
(``"jackknife-t"``) with :math:`\nu = P - 1` lowered by the excess kurtosis of the
jackknife pseudo-values (:func:`jackknife_df`); the corrected ``sigma_bar`` likewise (a
mean over personas: its jackknife SE is the textbook ``sd / sqrt(P)``,
:func:`jackknife_se_corrected_sigma_bar`, and its pseudo-values are light-tailed, so
:math:`\nu` stays ``P - 1``), and ``R = 1 / sigma_bar`` gets the delta-method SE and the
same t quantile. Every other statistic, and the reference estimator, keeps estimate ± z ×
bootstrap SE (``"wald"``; the published convention). Why: the
persona-bootstrap SE of a spread is a plug-in estimate and runs a few per cent
small at 50-100 personas, while the jackknife variance is biased upward
(Efron-Stein), and the t quantile accounts for estimating the SE from P personas.
Measured on the simulator (1500 replications per cell of the table, 10 ratings per
cell, T = 0.1, 10 000-persona pool, 1000 bootstrap draws; coverage in %, Monte-Carlo
SE 0.5-0.7 pp):

==========  ==========  ===========  ==========  ===========  ==========
P, preset   boot ± z    boot ± t     jack ± z    jack ± t     percentile
==========  ==========  ===========  ==========  ===========  ==========
50 base     93.3        94.3         94.2        **94.7**     -
50 secure   93.1        93.9         93.7        **94.3**     -
50 insec.   94.7        95.7         95.5        **96.1**     -
100 base    94.7        95.1         95.5        **95.7**     -
100 secure  93.0        93.9         93.9        **94.2**     -
100 insec.  94.6        94.7         94.8        **95.1**     -
200 base    94.6        95.1         95.1        **95.3**     -
200 secure  94.5        94.5         94.8        **94.8**     -
200 insec.  94.1        94.3         94.1        **94.5**     -
==========  ==========  ===========  ==========  ===========  ==========

(``boot ± t`` also scales the bootstrap SE by :math:`\sqrt{P/(P-1)}`; the bootstrap
percentile interval covered only 92.0-94.2 % at 100 personas, 500 replications.)
Jackknife-t is the only one inside 93-97 % in every cell, needs no extra random
draws, and costs one pass over the cells (the table's t uses P - 1 degrees of freedom).

Per foundation (S over 6 items) the jackknife SE is unbiased (mean SE / sd of the
estimates 0.99-1.03) and the bias small (-0.02 to -0.08 sd), but the misses are
lopsided (truth above the interval 2.9-5.6 %, below it 0.9-1.9 % at 50 personas): a
spread's pseudo-values are squared deviations, heavy-tailed when averaged over only 6
items, so the SE is noisier than ``t(P - 1)`` allows and small when the estimate is.
Hence the degrees of freedom of :func:`jackknife_df` (Satterthwaite: the relative
variance of a sample variance is :math:`2/(P-1) + \gamma_2/P`); median :math:`\nu` at
50 / 100 personas: 15-20 / 27-34 per foundation (base), 41 / 74 overall. Alternatives
measured on the same replications (simulator, 4000 replications per preset and P, MC
SE 0.35 pp; per-foundation coverage, range over the 15 foundation x preset cells, %):

==================================  =============  =============  =============
interval (jackknife SE)             P = 50         P = 100        P = 200
==================================  =============  =============  =============
± z                                 93.0-94.7      93.7-94.8      94.2-95.3
± t(P - 1)                          93.5-95.2      93.9-95.0      94.3-95.4
± t(P - 1), jackknife bias-corr.    93.8-95.5      94.1-95.1      94.4-95.5
log scale, ± t(P - 1)               93.8-96.0      94.2-95.3      94.5-95.5
**± t(ν), ν from the kurtosis**     **94.2-95.7**  **94.6-95.5**  **94.8-95.7**
==================================  =============  =============  =============

(overall S with ``t(ν)``: 95.2-95.9 %; ``t(ν)`` on the log scale 95.0-96.1 % per
foundation, base and insecure at P = 50, 100.) ``t(ν)`` centres every cell nearest 95 %
and leaves the estimate and SE as they were; for ``sigma_bar`` (and ``R``) the
pseudo-values are light-tailed and :math:`\nu` stays ``P - 1`` (R coverage unchanged:
94.4-96.1 % per foundation at 50 personas, base and insecure).
The shipped intervals through the audit (``bench/stats_bench.py --coverage --seed 16``,
500 replications per preset and P,
2000 draws, MC SE 0.7-1.2 pp): corrected S 94.2/94.6/95.8 % (P = 50; base, secure,
insecure), 94.2/94.2/95.2 % (100), 94.6/95.6/94.8 % (200); corrected R
93.8/93.6/93.0, 94.6/96.6/94.8, 95.4/94.2/95.0 %; per foundation, corrected S
92.8-97.4 % (41 of 45 cells in 93-97 %, mean 95.1 %, sd over cells 1.1 pp: the MC SE)
and corrected R 92.6-96.8 % (43 of 45); null rejection of the corrected tests 4.2-7.2 %
(S) and 4.8-7.2 % (R). With 45 cells at 500 replications a few fall outside 93-97 % by
Monte-Carlo noise alone even at a true 95 % (each with probability 4 %). At 2000
replications (``--reps 2000 --boot 50 --seed 17``; the corrected intervals draw no
bootstrap samples, so few draws leave them unchanged; MC SE 0.4-0.5 pp) all 45 cells
are inside: per foundation corrected S 94.0-96.2 % (mean 95.3 %) and R 94.0-96.3 %
(mean 95.1 %); overall S 94.5-96.0 % and R 94.0-95.5 % at 50, 100 and 200 personas.
``pcollapse audit`` and ``bench/stats_bench.py --coverage`` re-measure it. Difference
tests keep their bootstrap SEs (their null rejection is already 4.5-5 %).
For exact (distribution) runs there is no rating noise and both estimators agree.
The rerun bootstrap is only defined for the reference estimator.

Holm. :func:`holm` adjusts p-values step-down. :func:`family_significance`
corrects within a family over its scopes (overall and each foundation), for
each contrast and statistic; :func:`study_significance` corrects over all
families and scopes together, for each contrast and statistic. ``R`` and
``sigma_bar`` share one test and so one adjusted p-value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.core.errors import UnknownNameError
from persona_collapse.core.frames import INVALID_RATING
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.types import RunMode
from persona_collapse.stats.metrics import (
    CellRatings,
    CountFeatures,
    cell_moments,
    cell_ratings,
    complete_cells,
    exact_count_features,
    excluded_personas,
    foundation_columns,
    persona_bootstrap_replicates,
    persona_bootstrap_sums,
    rerun_bootstrap_replicates,
    rerun_bootstrap_sums,
    resolve_rng,
    sampled_count_features,
    tempered,
)
from persona_collapse.stats.registry import (
    Estimate,
    Statistic,
    count_statistic_draws,
    estimates_to_dict,
    get_statistic,
    reciprocal,
    statistics,
)

if TYPE_CHECKING:
    from persona_collapse.stats.sources import LoadedRun

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

Estimator = Literal["reference", "corrected"]
Variance = Literal["persona", "reference", "rerun"]
Method = RunMode

ESTIMATORS: tuple[str, ...] = ("reference", "corrected")
"""Estimator names: the published estimators and the bias-corrected ones."""

VARIANCES: tuple[str, ...] = ("persona", "reference", "rerun")
"""Variance schemes of the bootstrap (see the module docstring)."""


def statistics_tested() -> tuple[Statistic, ...]:
    """The registered statistics the difference tests cover, in registration order.

    A statistic is tested when it is computed from the per-item spread of cell means
    and mean cell sd (the built-in ``S`` and ``sigma_bar``, or any statistic with
    ``draws(spread, noise)``), or is the reciprocal of one (``R``).
    """
    direct = {st.name for st in statistics() if _direct_fn(st) is not None}
    return tuple(
        st for st in statistics() if st.name in direct or getattr(st, "inverse_of", None) in direct
    )


def count_statistics_tested() -> tuple[Statistic, ...]:
    """The registered count statistics (``features`` and ``combine``), in registration order.

    Difference tests between runs (:func:`family_significance`, :func:`study_significance`,
    :func:`compare_runs`) cover them besides :func:`statistics_tested`: their point values
    and bootstrap replicates come from each run's per-persona cell-feature sums, through
    the registry's draw hook
    (:func:`~persona_collapse.stats.registry.count_statistic_draws`), resampled with the
    same persona (and rerun) draws as the moment statistics. Power planning
    (:mod:`persona_collapse.stats.planning`) and the audit
    (:mod:`persona_collapse.stats.audit`, truths from the exact cell features) cover
    them too.
    """
    return tuple(st for st in statistics() if getattr(st, "features", None) is not None)


def _has_correction(name: str) -> bool:
    """Whether statistic ``name`` has a bias-corrected estimator (or is the reciprocal of
    one that has), i.e. whether its ``corrected`` results differ from its reference ones."""
    if name in _CORRECTED_HOOKS:
        return True
    try:
        return getattr(get_statistic(name), "inverse_of", None) in _CORRECTED_HOOKS
    except UnknownNameError:
        return False


def names_tested() -> tuple[str, ...]:
    """Names of :func:`statistics_tested` (computed when called: the registry may grow)."""
    return tuple(st.name for st in statistics_tested())


def __getattr__(name: str) -> Any:
    # METRICS stays importable, but follows the registry rather than a fixed tuple.
    if name == "METRICS":
        return names_tested()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


OVERALL = "overall"
"""Scope name of the all-items statistics (the others are foundation names)."""

EXCESS = "excess"
"""Contrast key of the misalignment-specific excess."""

ESTIMATES_EXPLANATION = (
    "The paper's S counts the rating noise of each persona's mean answer as persona "
    "spread and its R uses sample sds that run small, so with a handful of ratings per "
    "cell it overstates S and R; the bias-corrected estimates remove both effects "
    "(subtracting the noise variance of the cell means, dividing each sd by c4(n))."
)
"""One sentence on why the paper's and the bias-corrected estimates differ (for reports)."""

INTERVAL_WALD = "wald"
"""Interval method: estimate +- z x bootstrap SE (delta method for a reciprocal)."""

INTERVAL_JACKKNIFE_T = "jackknife-t"
"""Interval method: estimate +- t(nu) x delete-one jackknife SE (corrected ``S``,
``sigma_bar``, ``R``); ``nu`` from :func:`jackknife_df` (at most ``P - 1``)."""

INTERVAL_METHODS: dict[str, str] = {
    INTERVAL_WALD: "estimate ± z × bootstrap SE (normal quantile)",
    INTERVAL_JACKKNIFE_T: (
        "estimate ± t(ν) × delete-one jackknife SE (Student-t quantile; ν = P−1, "
        "reduced by the kurtosis of the jackknife pseudo-values)"
    ),
}
"""Interval method name -> description."""

DEFAULT_N_BOOT = 2000
"""Default persona-bootstrap draws of the tests."""

DEFAULT_N_RERUN_BOOT = 400
"""Default rerun-bootstrap draws of the tests (0 skips the rerun bootstrap)."""


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCells:
    """One persona run reduced to its cells, ready for the bootstrap.

    Attributes:
        persona_ids: ``(P,)`` sorted ids of the personas kept.
        item_ids: ``(Q,)`` sorted item ids.
        mu: ``(P, Q)`` cell means.
        sigma: ``(P, Q)`` cell sds: ddof=1 sample sds (``sampling``, 0 for one
            rating) or population sds of the distributions (``exact``).
        counts: ``(P, Q)`` valid ratings per cell (``sampling``), None for ``exact``.
        cells: The ratings themselves (``sampling``, for the rerun bootstrap), or None.
        method: ``"sampling"`` or ``"exact"``.
        excluded_personas: Ids dropped for lacking a valid rating on some item.
        foundations: Item id -> foundation of the items present.
        scale: The instrument's scale values, ascending (None: MFQ-30's 0..5), over
            which answers are counted for the count statistics.
        probs: ``(P, Q, K)`` stored distributions over ``scale`` (``exact``), else None.
        repetitions: Repetitions per cell an exact run stands for (count statistics such
            as the non-unanimity rate need it), or None.
    """

    persona_ids: IntArray
    item_ids: IntArray
    mu: FloatArray
    sigma: FloatArray
    counts: IntArray | None
    cells: CellRatings | None
    method: Method
    excluded_personas: tuple[int, ...]
    foundations: Mapping[int, str]
    scale: tuple[float, ...] | None = None
    probs: FloatArray | None = None
    repetitions: int | None = None

    @property
    def n_personas(self) -> int:
        """Number of personas kept."""
        return int(self.mu.shape[0])


def _mapping(item_ids: IntArray, foundations: Mapping[int, str] | None) -> dict[int, str]:
    full = mfq30(include_catch=True).foundation_of() if foundations is None else foundations
    missing = [int(i) for i in item_ids if int(i) not in full]
    if missing:
        raise ValueError(f"foundations has no entry for item id(s) {missing}")
    return {int(i): full[int(i)] for i in item_ids}


def cells_from_ratings(
    persona_ids: ArrayLike,
    item_ids: ArrayLike,
    ratings: ArrayLike,
    *,
    foundations: Mapping[int, str] | None = None,
    invalid: float = INVALID_RATING,
    scale: Sequence[float] | None = None,
) -> RunCells:
    """Cells of a sampled run, with the exclusions of ``analyze_ratings``.

    Args:
        persona_ids, item_ids, ratings: ``(N,)`` arrays, one entry per answer.
        foundations: Item id -> foundation (default MFQ-30 with catch items).
        invalid: Rating value marking an answer without a valid rating.
        scale: The scale's values (default MFQ-30's 0..5), for the count statistics.
    """
    grouped = cell_ratings(persona_ids, item_ids, ratings, invalid=invalid)
    return cells_from_cell_ratings(grouped, foundations=foundations, scale=scale)


def _ascending(scale: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if scale is None else tuple(sorted(float(v) for v in scale))


def cells_from_cell_ratings(
    cells: CellRatings,
    *,
    foundations: Mapping[int, str] | None = None,
    scale: Sequence[float] | None = None,
) -> RunCells:
    """:func:`cells_from_ratings` for ratings already grouped into cells."""
    mapping = _mapping(cells.item_ids, foundations)
    cells, excluded = complete_cells(cells)
    mu, sigma = cell_moments(cells)
    return RunCells(
        persona_ids=cells.persona_ids,
        item_ids=cells.item_ids,
        mu=mu,
        sigma=sigma,
        counts=cells.counts,
        cells=cells,
        method="sampling",
        excluded_personas=excluded,
        foundations=mapping,
        scale=_ascending(scale),
    )


def cells_from_distributions(
    persona_ids: ArrayLike,
    item_ids: ArrayLike,
    probs: ArrayLike,
    *,
    scale: Sequence[float],
    foundations: Mapping[int, str] | None = None,
    temperature: float | None = None,
    repetitions: int | None = None,
) -> RunCells:
    """Cells of an exact run: each cell's mean and population sd from its distribution.

    The same moments as :func:`~persona_collapse.stats.metrics.analyze_distributions`
    (rows renormalised, optional re-temperaturing ratio ``temperature``).

    Args:
        persona_ids, item_ids: ``(N,)`` cell keys, each (persona, item) at most once.
        probs: ``(N, K)`` probabilities over ``scale``.
        scale: ``(K,)`` rating value of each column.
        foundations: Item id -> foundation (default MFQ-30 with catch items).
        temperature: Optional re-temperaturing ratio (new / collection temperature).
        repetitions: Repetitions per cell the run stands for (count statistics), or None.
    """
    pid = np.asarray(persona_ids)
    iid = np.asarray(item_ids)
    p = np.asarray(probs, dtype=np.float64)
    grid = np.asarray(scale, dtype=np.float64)
    if pid.ndim != 1 or iid.ndim != 1 or len(pid) != len(iid):
        raise ValueError("persona_ids and item_ids must be 1-D arrays of equal length")
    if p.ndim != 2 or p.shape != (len(pid), len(grid)):
        raise ValueError(
            f"probs must have shape (len(persona_ids), len(scale)) = {(len(pid), len(grid))}, "
            f"got {p.shape}"
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ValueError("probs must be finite, non-negative, and each row must sum to > 0")
    p = p / p.sum(axis=1, keepdims=True)
    if temperature is not None:
        p = tempered(p, temperature)
    personas, p_idx = np.unique(pid.astype(np.int64), return_inverse=True)
    items, q_idx = np.unique(iid.astype(np.int64), return_inverse=True)
    mapping = _mapping(items, foundations)
    n_p, n_q = len(personas), len(items)
    cell = p_idx * n_q + q_idx
    if np.any(np.bincount(cell, minlength=n_p * n_q) > 1):
        raise ValueError("persona_ids/item_ids: a cell appears more than once")
    mean = p @ grid
    sd = np.sqrt(np.maximum(p @ (grid * grid) - mean * mean, 0.0))
    mu = np.full(n_p * n_q, np.nan)
    sigma = np.full(n_p * n_q, np.nan)
    mu[cell] = mean
    sigma[cell] = sd
    mu_m, sigma_m = mu.reshape(n_p, n_q), sigma.reshape(n_p, n_q)
    complete = ~np.isnan(mu_m).any(axis=1)
    excluded = excluded_personas(complete, personas)
    order = np.argsort(grid, kind="stable")  # count statistics read the scale ascending
    cell_probs = np.zeros((n_p * n_q, len(grid)))
    cell_probs[cell] = p[:, order]
    return RunCells(
        persona_ids=personas[complete],
        item_ids=items,
        mu=mu_m[complete],
        sigma=sigma_m[complete],
        counts=None,
        cells=None,
        method="exact",
        excluded_personas=excluded,
        foundations=mapping,
        scale=tuple(float(v) for v in grid[order]),
        probs=cell_probs.reshape(n_p, n_q, len(grid))[complete],
        repetitions=repetitions,
    )


def run_cells(run: LoadedRun) -> RunCells:
    """Cells of a loaded persona run (stored distributions for exact runs, else ratings)."""
    if run.kind != "persona":
        raise ValueError(f"run {run.name!r} is a self run; difference tests need persona runs")
    if run.distributions is not None and len(run.distributions):
        d = run.distributions
        scale = run.instrument.scale
        return cells_from_distributions(
            d["persona_id"].to_numpy(),
            d["item_id"].to_numpy(),
            d[[f"p{k}" for k in scale]].to_numpy(dtype=float),
            scale=scale,
            foundations=run.foundations,
            repetitions=run.planned_repetitions,
        )
    r = run.columns  # numpy columns: a CSV run needs no pandas frame here
    if not len(r):
        raise ValueError(f"run {run.name!r} has no answers yet")
    return cells_from_ratings(
        r.persona_id,
        r.item_id,
        r.rating,
        foundations=run.foundations,
        scale=run.instrument.scale,
    )


# --- estimators -----------------------------------------------------------------------------


def c4(n: ArrayLike) -> FloatArray:
    r"""Bias factor of the sample sd: :math:`E[s] = c_4(n)\,\sigma` for ``n`` normal draws.

    :math:`c_4(n) = \sqrt{2/(n-1)}\;\Gamma(n/2) / \Gamma((n-1)/2)`; NaN for ``n < 2``.

    Args:
        n: Sample sizes (any shape).

    Returns:
        Float array of the shape of ``n``.
    """
    given = np.asarray(n)
    if given.dtype.kind in "iu" and given.size and given.min() >= 0 and given.max() <= 65536:
        # Cell sizes (whole numbers): a lookup table by size instead of sorting the
        # cells to find the distinct sizes; the same factors (NaN below 2).
        table = np.full(int(given.max()) + 1, np.nan)
        for m in np.flatnonzero(np.bincount(given.ravel())).tolist():
            if m >= 2:
                table[m] = math.sqrt(2.0 / (m - 1.0)) * math.exp(
                    math.lgamma(m / 2.0) - math.lgamma((m - 1.0) / 2.0)
                )
        return np.asarray(table[given], dtype=np.float64)
    arr = given.astype(np.float64)
    out = np.full(arr.shape, np.nan)
    ok = arr >= 2
    if np.any(ok):
        # a run has few distinct cell sizes: evaluate the gamma functions once per size
        sizes, where = np.unique(arr[ok], return_inverse=True)
        factors = np.array(
            [
                math.sqrt(2.0 / (m - 1.0))
                * math.exp(math.lgamma(m / 2.0) - math.lgamma((m - 1.0) / 2.0))
                for m in sizes.tolist()
            ]
        )
        out[ok] = factors[where]
    return out


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _averaged(run: RunCells, estimator: str) -> FloatArray:
    """Per-cell columns averaged over personas: ``sigma`` (reference) or
    ``[sigma / c4(n), s**2 / n]`` (corrected, ``(P, 2Q)``)."""
    if estimator == "reference":
        return run.sigma
    if run.counts is None:  # exact run: no rating noise to correct for
        return np.concatenate([run.sigma, np.zeros_like(run.sigma)], axis=1)
    counts = run.counts
    factor = c4(counts)
    sigma_c = np.where(counts >= 2, run.sigma / np.where(counts >= 2, factor, 1.0), run.sigma)
    noise = run.sigma * run.sigma / counts
    return np.concatenate([sigma_c, noise], axis=1)


ColumnsFn = Callable[[FloatArray, FloatArray], Any]
"""``(spread, noise) -> value(s)``: per-item columns (``(..., C)``) to a statistic."""

CorrectedFn = Callable[[FloatArray, FloatArray, NDArray[np.intp]], Any]
"""``(sd_mu, averaged, cols) -> value(s)`` of a bias-corrected estimator (see :func:`_averaged`)."""


def _mean_spread(spread: FloatArray, noise: FloatArray) -> Any:
    return spread.mean(axis=-1)


def _mean_noise(spread: FloatArray, noise: FloatArray) -> Any:
    return noise.mean(axis=-1)


def _corrected_s(sd_mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]) -> Any:
    n_q = sd_mu.shape[-1]
    spread = sd_mu[..., cols] ** 2 - averaged[..., n_q + cols]
    return np.sqrt(np.maximum(spread, 0.0)).mean(axis=-1)


def _corrected_sigma_bar(sd_mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]) -> Any:
    return averaged[..., cols].mean(axis=-1)


# Statistic-specific hooks, keyed by name. The built-in ones keep the exact
# arithmetic of the published estimators; a statistic without a reference hook
# uses its registered ``draws(spread, noise)``; one without a corrected hook has
# no corrected estimator (it is left out of ``estimator="corrected"`` results).
_REFERENCE_HOOKS: dict[str, ColumnsFn] = {"S": _mean_spread, "sigma_bar": _mean_noise}
_CORRECTED_HOOKS: dict[str, CorrectedFn] = {"S": _corrected_s, "sigma_bar": _corrected_sigma_bar}


JackknifeFn = Callable[[FloatArray, FloatArray, NDArray[np.intp]], FloatArray]
"""``(mu, averaged, cols) -> (P,)`` leave-one-persona-out values of a corrected statistic
from the ``(P, Q)`` cell means and the ``(P, 2Q)`` columns of :func:`_averaged`."""


def _leave_one_out_corrected_s(
    mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]
) -> FloatArray:
    """Each persona's leave-one-out corrected ``S`` over ``cols``, in closed form from the
    column sums (no refitting; needs at least 3 personas)."""
    n_q = mu.shape[1]
    values: FloatArray = _leave_one_out_corrected_cells(mu[:, cols], averaged[:, n_q + cols])
    return values.mean(axis=1)


def _leave_one_out_corrected_cells(columns: FloatArray, noise: FloatArray) -> FloatArray:
    """``(P, q)``: per persona left out, each column's corrected across-persona sd, from
    the ``(P, q)`` cell means ``columns`` and their noise terms (closed form from the
    column sums; at least 3 personas)."""
    n_p = columns.shape[0]
    centred = columns - columns.mean(axis=0)
    s1, s2, sn = centred.sum(axis=0), (centred * centred).sum(axis=0), noise.sum(axis=0)
    mean = (s1 - centred) / (n_p - 1)
    var = ((s2 - centred * centred) - (n_p - 1) * mean * mean) / (n_p - 2)
    cells: FloatArray = np.sqrt(np.maximum(var - (sn - noise) / (n_p - 1), 0.0))
    return cells


def _leave_one_out_corrected_sigma_bar(
    mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]
) -> FloatArray:
    """Each persona's leave-one-out corrected ``sigma_bar`` over ``cols`` (a mean over
    personas of each persona's mean corrected cell sd)."""
    n_p = mu.shape[0]
    per_persona = averaged[:, cols].mean(axis=1)
    values: FloatArray = (per_persona.sum() - per_persona) / (n_p - 1)
    return values


def jackknife_se(leave_one_out: FloatArray) -> float:
    r"""Delete-one jackknife SE from the ``P`` leave-one-out values of a statistic:
    :math:`\mathrm{se}^2 = \frac{P-1}{P}\sum_p (\theta_{(-p)} - \bar\theta_{(\cdot)})^2`
    (NaN with fewer than 3 values)."""
    if len(leave_one_out) < 3:
        return math.nan
    return _jackknife_rows(np.asarray(leave_one_out, dtype=np.float64)[None, :])[0][0]


def jackknife_df(leave_one_out: FloatArray) -> int:
    r"""Degrees of freedom of the jackknife-t quantile, from the pseudo-values' kurtosis.

    The jackknife variance is the sample variance of the ``P`` pseudo-values
    :math:`P\hat\theta - (P-1)\,\theta_{(-p)}`, divided by ``P``. A sample variance
    of ``P`` values with excess kurtosis :math:`\gamma_2` has relative variance
    :math:`2/(P-1) + \gamma_2/P`; matching a scaled :math:`\chi^2_\nu` (Satterthwaite)
    gives :math:`\nu = 2 / (2/(P-1) + \hat\gamma_2/P)`, which is ``P - 1`` for normal
    pseudo-values and smaller when they are heavy-tailed (a spread's pseudo-values are
    squared deviations: median :math:`\nu` 15-20 for a 6-item foundation at 50
    personas). :math:`\hat\gamma_2` is the plug-in excess kurtosis (the same for the
    leave-one-out values, an affine map of the pseudo-values); :math:`\nu` is rounded
    and kept within ``[1, P - 1]``, so a light-tailed sample never gets a narrower
    interval than ``t(P - 1)``.

    Args:
        leave_one_out: ``(P,)`` leave-one-out values (``P >= 3``).

    Returns:
        The degrees of freedom (``P - 1`` when the values do not vary).
    """
    n_p = len(leave_one_out)
    if n_p < 3:
        raise ValueError(f"need at least 3 leave-one-out values, got {n_p}")
    return _jackknife_rows(np.asarray(leave_one_out, dtype=np.float64)[None, :])[1][0]


def _jackknife_rows(leave_one_out: FloatArray) -> tuple[list[float], list[int]]:
    """:func:`jackknife_se` and :func:`jackknife_df` of each row of ``(S, P)``
    leave-one-out values (``P >= 3``), the array work done once for all rows (a row's
    means and sums are numpy's 1-D ones: each row is reduced on its own)."""
    n_p = leave_one_out.shape[1]
    spread = leave_one_out - leave_one_out.mean(axis=1, keepdims=True)
    m2s = (spread * spread).mean(axis=1).tolist()
    m4s = (spread**4).mean(axis=1).tolist()
    ses: list[float] = []
    dfs: list[int] = []
    for row, m2, m4 in zip(spread, m2s, m4s, strict=True):
        ses.append(float(math.sqrt((n_p - 1) / n_p * float(row @ row))))
        if not (math.isfinite(m2) and m2 > 0):
            dfs.append(n_p - 1)
            continue
        excess_kurtosis = m4 / (m2 * m2) - 3.0
        relative_variance = 2.0 / (n_p - 1) + excess_kurtosis / n_p
        if relative_variance <= 2.0 / (n_p - 1):
            dfs.append(n_p - 1)
        else:
            dfs.append(max(1, min(n_p - 1, int(2.0 / relative_variance + 0.5))))
    return ses, dfs


def jackknife_se_corrected_s(mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]) -> float:
    r"""Delete-one jackknife SE of the corrected ``S`` over the item columns ``cols``.

    Each persona's leave-one-out value of :math:`S_c` comes in closed form from the
    column sums (no refitting), so the whole jackknife costs one pass over the cells:
    :math:`\mathrm{se}^2 = \frac{P-1}{P}\sum_p (S_{c,(-p)} - \bar S_{c,(\cdot)})^2`.

    Args:
        mu: ``(P, Q)`` cell means.
        averaged: ``(P, 2Q)`` per-cell columns of the corrected estimator
            (``[sigma / c4(n), s**2 / n]``).
        cols: Item columns in scope.

    Returns:
        The SE (NaN with fewer than 3 personas).
    """
    if mu.shape[0] < 3:
        return math.nan
    return jackknife_se(_leave_one_out_corrected_s(mu, averaged, cols))


def jackknife_se_corrected_sigma_bar(
    mu: FloatArray, averaged: FloatArray, cols: NDArray[np.intp]
) -> float:
    """Delete-one jackknife SE of the corrected ``sigma_bar`` over the item columns
    ``cols``: a mean over personas, so it is the textbook ``sd / sqrt(P)`` of each
    persona's mean corrected cell sd (NaN with fewer than 3 personas)."""
    if mu.shape[0] < 3:
        return math.nan
    return jackknife_se(_leave_one_out_corrected_sigma_bar(mu, averaged, cols))


# Statistics whose corrected-estimator interval is jackknife SE x t quantile (see
# INTERVAL_JACKKNIFE_T; R, the reciprocal of sigma_bar, follows by the delta method);
# the others keep the persona-bootstrap SE x normal quantile.
_JACKKNIFE_HOOKS: dict[str, JackknifeFn] = {
    "S": _leave_one_out_corrected_s,
    "sigma_bar": _leave_one_out_corrected_sigma_bar,
}


def _leave_one_out_corrected_s_scopes(
    mu: FloatArray, averaged: FloatArray, scopes: Sequence[NDArray[np.intp]]
) -> FloatArray:
    """:func:`_leave_one_out_corrected_s` of every scope, ``(S, P)``: the per-cell terms
    are computed once over all items, then averaged per scope.

    The same floats as scope by scope: the columns are taken as that function takes
    them (fancy indexing, which lays them out column by column), so each column's sums
    over personas are the same reductions of the same contiguous numbers, and each
    scope's average over its items reads its columns in the same layout. A scope of
    one item (where layouts may coincide differently) is done on its own.
    """
    n_q = mu.shape[1]
    if any(len(cols) < 2 for cols in scopes):
        return np.stack([_leave_one_out_corrected_s(mu, averaged, cols) for cols in scopes])
    every = np.arange(n_q)
    per_cell = _leave_one_out_corrected_cells(mu[:, every], averaged[:, n_q + every])
    return np.stack([per_cell[:, cols].mean(axis=1) for cols in scopes])


def _leave_one_out_scopes(
    name: str, mu: FloatArray, averaged: FloatArray, scopes: Sequence[NDArray[np.intp]]
) -> FloatArray:
    """``(S, P)`` leave-one-out values of statistic ``name`` (a key of
    :data:`_JACKKNIFE_HOOKS`) on each scope."""
    if name == "S" and _JACKKNIFE_HOOKS["S"] is _leave_one_out_corrected_s:
        return _leave_one_out_corrected_s_scopes(mu, averaged, scopes)
    hook = _JACKKNIFE_HOOKS[name]
    return np.stack([hook(mu, averaged, cols) for cols in scopes])


def _jackknife_scopes(
    run: RunCells,
    columns: FloatArray,
    scopes: Mapping[str, NDArray[np.intp]],
    point: Mapping[str, Mapping[str, float]],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Scope -> jackknife SE and degrees of freedom of each corrected statistic with a
    jackknife hook (those in the scope's ``point`` values; none under 3 personas)."""
    se: dict[str, dict[str, float]] = {scope: {} for scope in scopes}
    df: dict[str, dict[str, int]] = {scope: {} for scope in scopes}
    if run.n_personas < 3:
        return se, df
    for name in _JACKKNIFE_HOOKS:
        names = [scope for scope in scopes if name in point[scope]]
        if not names:
            continue
        loo = _leave_one_out_scopes(name, run.mu, columns, [scopes[n] for n in names])
        ses, dfs = _jackknife_rows(loo)
        for scope, se_s, df_s in zip(names, ses, dfs, strict=True):
            se[scope][name] = se_s
            df[scope][name] = df_s
    return se, df


def _t_two_sided(t: float, df: int) -> float:
    """``P(|T| < t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, sin = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:
        term = total = 1.0
        for k in range(2, df, 2):
            term *= c2 * (k - 1) / k
            total += term
            if term < 1e-17 * total:
                break
        return sin * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(3, df - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
        if term < 1e-17 * total:
            break
    return 2.0 / math.pi * (theta + sin * total)


@lru_cache(maxsize=256)
def t_quantile(confidence: float, df: int) -> float:
    """Two-sided critical value of Student's t: ``P(|T| < t) = confidence``.

    Exact (bisection on the closed-form distribution function for integer ``df``),
    so no statistics library is needed; e.g. 2.0096 for ``df = 49``, 1.9842 for 99.

    Args:
        confidence: Level in (0, 1).
        df: Degrees of freedom (>= 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    # Newton's method from the Cornish-Fisher start (A&S 26.7.5), which converges in a
    # few steps for every df but the smallest; bisection below is the fallback.
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    t = z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)
    for _ in range(8):
        if not (math.isfinite(t) and t > 0):
            break
        density = math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        step = (_t_two_sided(t, df) - confidence) / (2.0 * density)
        t -= step
        if abs(step) < 1e-12 * max(t, 1.0):
            return t
    low = z  # t's quantile is never below z's
    high = low
    while _t_two_sided(high, df) < confidence:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_two_sided(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


def _direct_fn(stat: Statistic) -> ColumnsFn | None:
    """How ``stat`` follows from per-item columns (None: it does not, or it is derived)."""
    if stat.name in _REFERENCE_HOOKS:
        return _REFERENCE_HOOKS[stat.name]
    draws = getattr(stat, "draws", None)
    if getattr(stat, "inverse_of", None) is not None or not callable(draws):
        return None

    def from_draws(spread: FloatArray, noise: FloatArray) -> Any:
        if spread.ndim == 1:  # a point value: one "draw"
            return draws(spread[None, :], noise[None, :])[0]
        return draws(spread, noise)

    return from_draws


def _scope_values(
    sd_mu: FloatArray,
    averaged: FloatArray,
    cols: NDArray[np.intp] | slice,
    estimator: str,
    tested: Sequence[Statistic] | None = None,
) -> dict[str, Any]:
    """Every tested statistic over item columns ``cols``, by name.

    ``sd_mu`` is ``(..., Q)`` and ``averaged`` ``(..., Q)`` or ``(..., 2Q)`` as
    made by :func:`_averaged`; leading axes are bootstrap draws. ``tested``:
    :func:`statistics_tested`, when the caller already has it.
    """
    tested = statistics_tested() if tested is None else tested
    direct: dict[str, Any] = {}
    for stat in tested:
        if estimator == "reference":
            fn = _direct_fn(stat)
            if fn is not None:
                direct[stat.name] = fn(sd_mu[..., cols], averaged[..., cols])
        elif stat.name in _CORRECTED_HOOKS and not isinstance(cols, slice):
            direct[stat.name] = _CORRECTED_HOOKS[stat.name](sd_mu, averaged, cols)
    out: dict[str, Any] = {}
    for stat in tested:
        base = getattr(stat, "inverse_of", None)
        if base is None and stat.name in direct:
            out[stat.name] = direct[stat.name]
        elif base is not None and base in direct:
            with np.errstate(divide="ignore"):
                out[stat.name] = 1.0 / np.asarray(direct[base], dtype=np.float64)
    return out


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricEstimate:
    """One run's tested statistics on one scope, with standard errors, by name.

    SEs follow the chosen variance scheme; a reciprocal statistic's SE follows by the
    delta method (``R_se = sigma_bar_se / sigma_bar**2``). ``e.S`` / ``e.S_se`` and
    ``e["S"]`` (an :class:`~persona_collapse.stats.registry.Estimate`) read one.
    ``intervals`` holds each statistic's confidence interval and ``interval_methods``
    how it was made (see :data:`INTERVAL_METHODS`).
    """

    estimates: Mapping[str, Estimate]
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    interval_methods: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Estimate:
        return self.estimates[name]

    def __getattr__(self, name: str) -> float:
        # Only reached for names that are not attributes: statistics and their SEs.
        estimates = self.__dict__.get("estimates", {})
        if name in estimates:
            return float(estimates[name].value)
        if name.endswith("_se") and name[:-3] in estimates:
            return float(estimates[name[:-3]].se)
        raise AttributeError(f"{type(self).__name__!r} has no statistic {name!r}")

    def interval(self, name: str) -> tuple[float, float]:
        """The confidence interval of statistic ``name`` (NaNs when none was made)."""
        return self.intervals.get(name, (math.nan, math.nan))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``{name: value, name_se: se, ...}``, then, where intervals
        were made, ``name_ci_low``, ``name_ci_high`` and ``name_interval`` (method)."""
        out: dict[str, Any] = dict(estimates_to_dict(self.estimates))
        for name, (low, high) in self.intervals.items():
            out[f"{name}_ci_low"] = low
            out[f"{name}_ci_high"] = high
            out[f"{name}_interval"] = self.interval_methods.get(name, "")
        return out


@dataclass(frozen=True)
class DifferenceTest:
    """One metric of one contrast on one scope.

    Attributes:
        metric: Name of the registered statistic tested.
        scope: ``"overall"`` or a foundation name.
        estimate: Relative change (fraction, 0.5 = +50 %) or excess (difference of
            fractions) of a log-scale statistic; plain difference (change) or
            difference of differences (excess) of a difference-scale one.
        ci_low, ci_high: Confidence interval of ``estimate``.
        se: Standard error of the test statistic under the chosen variance
            scheme. The statistic is a log ratio: ``log(X_variant / X_reference)``
            for a change, ``log(X_treatment / X_control)`` for an excess (zero
            exactly when the excess is zero). ``R`` and ``sigma_bar`` thus share
            one test. The interval of a change is the back-transformed log-scale
            interval; that of an excess is a Wald interval on the excess itself.
        se_persona, se_rerun: Its persona- and rerun-bootstrap components
            (``se_rerun`` NaN when no rerun bootstrap was run).
        z: Test statistic / ``se``.
        p_value: Two-sided p-value of "no difference".
        p_holm: Holm-adjusted p-value (NaN until a correction was applied).
    """

    metric: str
    scope: str
    estimate: float
    ci_low: float
    ci_high: float
    se: float
    se_persona: float
    se_rerun: float
    z: float
    p_value: float
    p_holm: float = math.nan

    def significant(self, alpha: float = 0.05, *, adjusted: bool = True) -> bool:
        """Whether the (Holm-adjusted, by default) p-value is below ``alpha``."""
        p = self.p_holm if adjusted else self.p_value
        return bool(p < alpha)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Contrast:
    """All tests of one contrast: a variant against the reference run, or the excess.

    Attributes:
        kind: ``"change"`` (``variant`` against ``reference``) or ``"excess"``
            (``variant`` = treatment against ``reference`` = control, relative to ``base``).
        reference, variant: Run labels.
        base: Base run the excess is relative to (``None`` for a change).
        tests: Metric -> scope -> :class:`DifferenceTest`.
    """

    kind: Literal["change", "excess"]
    reference: str
    variant: str
    base: str | None
    tests: Mapping[str, Mapping[str, DifferenceTest]]

    def test(self, metric: str, scope: str = OVERALL) -> DifferenceTest:
        """The test of ``metric`` on ``scope``."""
        return self.tests[metric][scope]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "kind": self.kind,
            "reference": self.reference,
            "variant": self.variant,
            "base": self.base,
            "tests": {
                m: {s: t.to_dict() for s, t in by_scope.items()}
                for m, by_scope in self.tests.items()
            },
        }


@dataclass(frozen=True)
class FamilySignificance:
    """Difference tests of one family (variants against the base, and the excess).

    Attributes:
        base: Label of the base run.
        contrasts: Variant label -> its change against the base; ``"excess"`` ->
            the excess (when control and treatment are both present).
        estimates: Run label -> scope -> :class:`MetricEstimate` (chosen estimator).
        paired: Whether personas were resampled jointly across the runs.
        estimator, variance: See the module docstring.
        confidence: Level of the intervals.
        n_boot, n_rerun_boot: Bootstrap draws.
        seed: Seed of the draws (None when a Generator was passed).
        holm: What the Holm correction of ``p_holm`` ran over.
        other: The same family under the other estimator, from the same persona
            draws (persona scheme), so that the paper's and the bias-corrected
            estimates travel together; None when not computed. ``reference`` and
            ``corrected`` pick either; verdicts (:meth:`verdict`) follow the
            corrected one.
    """

    base: str
    contrasts: Mapping[str, Contrast]
    estimates: Mapping[str, Mapping[str, MetricEstimate]]
    paired: bool
    estimator: str
    variance: str
    confidence: float
    n_boot: int
    n_rerun_boot: int
    seed: int | None
    holm: str
    other: FamilySignificance | None = None

    def test(self, contrast: str, metric: str, scope: str = OVERALL) -> DifferenceTest:
        """Shortcut: ``contrasts[contrast].tests[metric][scope]``."""
        return self.contrasts[contrast].tests[metric][scope]

    def _under(self, estimator: str) -> FamilySignificance | None:
        if self.estimator == estimator:
            return self
        if self.other is not None and self.other.estimator == estimator:
            return self.other
        return None

    @property
    def reference(self) -> FamilySignificance | None:
        """The results under the published estimators (None when not computed)."""
        return self._under("reference")

    @property
    def corrected(self) -> FamilySignificance | None:
        """The results under the bias-corrected estimators (None when not computed)."""
        return self._under("corrected")

    def verdict(self, contrast: str, metric: str, scope: str = OVERALL) -> DifferenceTest:
        """The test the verdict on ``metric`` rests on: the corrected estimator's where
        it has one (``S``, ``sigma_bar``, ``R``), else this result's own (the count
        statistics have a single estimator)."""
        corrected = self.corrected
        if corrected is not None and _has_correction(metric):
            tests = corrected.contrasts.get(contrast)
            if tests is not None and scope in tests.tests.get(metric, {}):
                return tests.tests[metric][scope]
        return self.test(contrast, metric, scope)

    @property
    def verdict_estimator(self) -> str:
        """The estimator the verdicts follow (:meth:`verdict`)."""
        return "corrected" if self.corrected is not None else self.estimator

    def both_estimates(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Run -> scope -> the paper's estimates (``S``, ``S_se``, ...) side by side with
        the corrected ones (``S_corrected``, ``S_corrected_se``, ``S_corrected_ci_low``,
        ``S_corrected_ci_high``, ``S_corrected_interval``), where both were computed."""
        reference, corrected = self.reference, self.corrected
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for run, by_scope in (reference or self).estimates.items():
            out[run] = {}
            for scope, estimate in by_scope.items():
                row = dict(estimate.to_dict()) if reference is not None else {}
                if corrected is not None and scope in corrected.estimates.get(run, {}):
                    row.update(corrected_keys(_corrected_only(corrected.estimates[run][scope])))
                out[run][scope] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable; non-finite values stay floats)."""
        return {
            "base": self.base,
            "contrasts": {k: c.to_dict() for k, c in self.contrasts.items()},
            "estimates": {
                run: {s: e.to_dict() for s, e in by_scope.items()}
                for run, by_scope in self.estimates.items()
            },
            "paired": self.paired,
            "estimator": self.estimator,
            "variance": self.variance,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "n_rerun_boot": self.n_rerun_boot,
            "seed": self.seed,
            "holm": self.holm,
            **self._both_dict(),
        }

    def _both_dict(self) -> dict[str, Any]:
        """The keys that carry both estimators (empty without :attr:`other`)."""
        if self.other is None:
            return {}
        return {
            "other": {k: v for k, v in self.other.to_dict().items() if k != "other"},
            "verdict_estimator": self.verdict_estimator,
            "estimates_both": self.both_estimates(),
            "estimates_explanation": ESTIMATES_EXPLANATION,
        }


@dataclass(frozen=True)
class StudySignificance:
    """Difference tests of several families, Holm-corrected across families and scopes.

    Attributes:
        families: Family name -> its :class:`FamilySignificance` (``p_holm`` over
            the whole study).
        seed: Seed the per-family seeds were drawn from.
        holm: What the Holm correction ran over.
    """

    families: Mapping[str, FamilySignificance]
    seed: int | None
    holm: str

    def rows(self, alpha: float = 0.05) -> list[dict[str, Any]]:
        """One flat row per family, contrast, metric and scope (for tables and CSV)."""
        out = []
        for family, fam in self.families.items():
            for key, contrast in fam.contrasts.items():
                for metric, by_scope in contrast.tests.items():
                    for scope, t in by_scope.items():
                        row = {
                            "family": family,
                            "contrast": key,
                            "metric": metric,
                            "scope": scope,
                            **t.to_dict(),
                            "significant": t.significant(alpha),
                        }
                        if fam.other is not None:
                            v = fam.verdict(key, metric, scope)
                            row["verdict_estimator"] = (
                                fam.verdict_estimator if v is not t else fam.estimator
                            )
                            row["verdict_estimate"] = v.estimate
                            row["verdict_p_holm"] = v.p_holm
                            row["verdict_significant"] = v.significant(alpha)
                        out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "families": {k: f.to_dict() for k, f in self.families.items()},
            "seed": self.seed,
            "holm": self.holm,
        }


def _corrected_only(estimate: MetricEstimate) -> MetricEstimate:
    """``estimate`` restricted to the statistics that have a bias-corrected estimator."""
    keep = [name for name in estimate.estimates if _has_correction(name)]
    return MetricEstimate(
        {n: estimate.estimates[n] for n in keep},
        {n: v for n, v in estimate.intervals.items() if n in keep},
        {n: v for n, v in estimate.interval_methods.items() if n in keep},
    )


def corrected_keys(estimate: MetricEstimate) -> dict[str, Any]:
    """``estimate.to_dict()`` with every key labelled as corrected: ``S`` ->
    ``S_corrected``, ``S_se`` -> ``S_corrected_se``, ``sigma_bar_ci_low`` ->
    ``sigma_bar_corrected_ci_low``, ..."""
    # The keys of to_dict, in its order, built with the label in place (no prefix
    # matching of every key against every name).
    out: dict[str, Any] = {}
    for name, est in estimate.estimates.items():
        out[f"{name}_corrected"] = est.value
        out[f"{name}_corrected_se"] = est.se
    for name, (low, high) in estimate.intervals.items():
        out[f"{name}_corrected_ci_low"] = low
        out[f"{name}_corrected_ci_high"] = high
        out[f"{name}_corrected_interval"] = estimate.interval_methods.get(name, "")
    return out


def corrected_fields(
    run: RunCells,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
    per_foundation: bool = False,
) -> dict[str, Any]:
    """The bias-corrected estimates of one run as labelled output fields.

    ``S_corrected``, ``S_corrected_se``, ``S_corrected_ci_low``/``_ci_high`` and
    ``S_corrected_interval`` (and the same for ``sigma_bar`` and ``R``) of the whole
    run; ``corrected_by_foundation`` (foundation -> the same keys) when
    ``per_foundation``; ``estimates_explanation``: why they differ from the paper's.
    """
    found = run_estimates(
        run, estimator="corrected", n_boot=max(int(n_boot), 2), confidence=confidence, rng=rng
    )
    out: dict[str, Any] = corrected_keys(found[OVERALL])
    if per_foundation:
        out["corrected_by_foundation"] = {
            scope: corrected_keys(e) for scope, e in found.items() if scope != OVERALL
        }
    out["estimates_explanation"] = ESTIMATES_EXPLANATION
    return out


# --- Holm -----------------------------------------------------------------------------------


def holm(p_values: ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values.

    With the ``m`` finite p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted
    value is ``max_{j <= i} min(1, (m - j + 1) p_(j))``. Rejecting where the
    adjusted value is below ``alpha`` controls the family-wise error rate at
    ``alpha``. NaN entries stay NaN and do not count in ``m``.

    Args:
        p_values: p-values in [0, 1] (any shape).

    Returns:
        Adjusted p-values, same shape.
    """
    p = np.asarray(p_values, dtype=np.float64)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p_values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    values = p[finite]
    m = len(values)
    if m == 0:
        return out
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    out[finite] = adjusted
    return out


def _test_groups() -> dict[str, list[str]]:
    """Statistics sharing one test (``same_test_as``), keyed by the shared name, in
    registration order; the first member's p-values stand for the group."""
    groups: dict[str, list[str]] = {}
    for stat in statistics():
        groups.setdefault(getattr(stat, "same_test_as", None) or stat.name, []).append(stat.name)
    return groups


def _with_holm(
    contrast_sets: Sequence[Mapping[str, Contrast]],
) -> list[dict[str, Contrast]]:
    """Holm-correct, per contrast key and test, over every scope of every set.

    Statistics that share a test (R and sigma_bar) are corrected once, over the
    tests of the group's first registered member, and share its adjusted p-values.
    """
    keys: dict[str, None] = {}
    for cs in contrast_sets:
        keys.update(dict.fromkeys(cs))
    adjusted: dict[tuple[int, str, str, str], float] = {}
    for key in keys:
        for members in _test_groups().values():
            present = [
                m for m in members if any(key in cs and m in cs[key].tests for cs in contrast_sets)
            ]
            if not present:
                continue
            lead = present[0]
            where = [
                (i, scope, t.p_value)
                for i, cs in enumerate(contrast_sets)
                if key in cs and lead in cs[key].tests
                for scope, t in cs[key].tests[lead].items()
            ]
            adj = holm([p for _, _, p in where])
            for (i, scope, _), a in zip(where, adj, strict=True):
                for metric in present:
                    adjusted[i, key, metric, scope] = float(a)
    out = []
    for i, cs in enumerate(contrast_sets):
        new: dict[str, Contrast] = {}
        for key, contrast in cs.items():
            tests = {
                metric: {
                    scope: replace(t, p_holm=adjusted.get((i, key, metric, scope), math.nan))
                    for scope, t in by_scope.items()
                }
                for metric, by_scope in contrast.tests.items()
            }
            new[key] = replace(contrast, tests=tests)
        out.append(new)
    return out


# --- the bootstrap --------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorDraws:
    """Point values and replicates of the tested statistics, per run label and scope.

    ``point[run][scope][name]`` is a value; ``persona`` and ``rerun`` hold ``(B,)``
    replicate arrays the same way (``rerun`` is None when skipped; an exact run's
    rerun replicates equal its point values). ``jackknife`` holds the delete-one
    jackknife SEs of the statistics with a jackknife hook (corrected estimator only;
    None otherwise), ``jackknife_df`` the degrees of freedom of their t quantiles
    (:func:`jackknife_df`; ``n_personas - 1`` where absent) and ``n_personas`` each
    run's persona count.
    """

    point: dict[str, dict[str, dict[str, float]]]
    persona: dict[str, dict[str, dict[str, FloatArray]]]
    rerun: dict[str, dict[str, dict[str, FloatArray]]] | None
    jackknife: dict[str, dict[str, dict[str, float]]] | None = None
    n_personas: Mapping[str, int] = field(default_factory=dict)
    jackknife_df: dict[str, dict[str, dict[str, int]]] | None = None


def _scopes(runs: Mapping[str, RunCells]) -> dict[str, NDArray[np.intp]]:
    first = next(iter(runs.values()))
    groups = foundation_columns(first.item_ids, first.foundations)
    return {OVERALL: np.arange(len(first.item_ids), dtype=np.intp), **groups}


def _check_runs(runs: Mapping[str, RunCells], paired: bool | None) -> bool:
    if len(runs) < 2:
        raise ValueError(f"runs: need at least 2 runs to compare, got {len(runs)}")
    first_label, first = next(iter(runs.items()))
    for label, run in runs.items():
        if not np.array_equal(run.item_ids, first.item_ids):
            raise ValueError(
                f"runs: {label!r} and {first_label!r} cover different items; "
                "differences need the same items"
            )
        if dict(run.foundations) != dict(first.foundations):
            raise ValueError(
                f"runs: {label!r} and {first_label!r} map items to foundations differently"
            )
    same = all(np.array_equal(r.persona_ids, first.persona_ids) for r in runs.values())
    if paired is None:
        return same
    if paired and not same:
        raise ValueError(
            "paired=True needs the same persona ids in every run (after exclusions); "
            + ", ".join(f"{k}: {r.n_personas} personas" for k, r in runs.items())
        )
    return bool(paired)


def _draw(
    runs: Mapping[str, RunCells],
    *,
    estimator: str,
    paired: bool,
    n_boot: int,
    n_rerun_boot: int,
    rng: np.random.Generator,
) -> EstimatorDraws:
    """Point values and bootstrap replicates of every run for one estimator."""
    return draw_estimators(
        runs,
        estimators=(estimator,),
        paired=paired,
        n_boot=n_boot,
        n_rerun_boot=n_rerun_boot,
        rng=rng,
    )[estimator]


def draw_estimators(
    runs: Mapping[str, RunCells],
    *,
    estimators: Sequence[str],
    paired: bool,
    n_boot: int,
    n_rerun_boot: int,
    rng: np.random.Generator,
    counts: bool = False,
) -> dict[str, EstimatorDraws]:
    """:func:`_draw` for several estimators from the same persona draws (one matrix product).

    The rerun bootstrap (``n_rerun_boot > 0``) only feeds the reference estimator.
    ``counts``: also the count statistics (:func:`count_statistics_tested`), from the
    same persona and rerun draws; they have one estimator, so every estimator's draws
    hold the same values for them. The moment statistics' numbers are the same with or
    without them (the same random draws; their sums in separate products).
    """
    scopes = _scopes(runs)
    labels = list(runs)
    tested = statistics_tested()  # the registry, read once for every scope and run
    # Per run, the averaged columns of every estimator side by side.
    parts = {k: [_averaged(r, e) for e in estimators] for k, r in runs.items()}
    averaged = {k: np.concatenate(parts[k], axis=1) for k in labels}
    count_names = [st.name for st in count_statistics_tested()] if counts else []
    groups = {name: cols for name, cols in scopes.items() if name != OVERALL}
    feats = {k: _count_features(runs[k], groups) for k in labels} if count_names else {}
    extras = {
        k: f.by_persona.reshape(runs[k].n_personas, -1) for k, f in feats.items() if f is not None
    }
    persona_feats: dict[str, FloatArray] = {}

    per_run: dict[str, tuple[FloatArray, FloatArray]] = {}
    if paired:
        mu_all = np.concatenate([runs[k].mu for k in labels], axis=1)
        avg_cat = np.concatenate([averaged[k] for k in labels], axis=1)
        if extras:
            sd_all, avg_all, extra_all = persona_bootstrap_sums(
                mu_all,
                avg_cat,
                np.concatenate([extras[k] for k in labels if k in extras], axis=1),
                n_boot=n_boot,
                rng=rng,
            )
            e0 = 0
            for k in labels:
                if k in extras and extra_all is not None:
                    width = extras[k].shape[1]
                    persona_feats[k] = extra_all[:, e0 : e0 + width]
                    e0 += width
        else:
            sd_all, avg_all = persona_bootstrap_replicates(mu_all, avg_cat, n_boot=n_boot, rng=rng)
        q0 = a0 = 0
        for k in labels:
            q, a = runs[k].mu.shape[1], averaged[k].shape[1]
            per_run[k] = (sd_all[:, q0 : q0 + q], avg_all[:, a0 : a0 + a])
            q0, a0 = q0 + q, a0 + a
    else:
        for k in labels:
            if k in extras:
                sd_k, avg_k, extra_k = persona_bootstrap_sums(
                    runs[k].mu, averaged[k], extras[k], n_boot=n_boot, rng=rng
                )
                per_run[k] = (sd_k, avg_k)
                if extra_k is not None:
                    persona_feats[k] = extra_k
            else:
                per_run[k] = persona_bootstrap_replicates(
                    runs[k].mu, averaged[k], n_boot=n_boot, rng=rng
                )

    rerun_items: dict[str, tuple[FloatArray, FloatArray] | None] = {}
    rerun_feats: dict[str, FloatArray] = {}
    if n_rerun_boot > 0 and "reference" in estimators:
        for k in labels:
            cells = runs[k].cells
            feat = feats.get(k)
            if cells is None:
                rerun_items[k] = None  # exact run: nothing to resample
            elif feat is not None:
                sd_r, sig_r, feat_r = rerun_bootstrap_sums(
                    cells, feat, n_boot=n_rerun_boot, rng=rng
                )
                rerun_items[k] = (sd_r, sig_r)
                if feat_r is not None:
                    rerun_feats[k] = feat_r
            else:
                rerun_items[k] = rerun_bootstrap_replicates(cells, n_boot=n_rerun_boot, rng=rng)

    # Count statistics per run and scope: point values, persona and rerun replicates.
    count_point: dict[str, dict[str, dict[str, float]]] = {}
    count_persona: dict[str, dict[str, dict[str, FloatArray]]] = {}
    count_rerun: dict[str, dict[str, dict[str, FloatArray]]] = {}
    for k in labels if count_names else ():
        feat = feats.get(k)
        grid: Sequence[float] = runs[k].scale or tuple(float(v) for v in mfq30().scale)
        nan_p = dict.fromkeys(count_names, math.nan)
        if feat is None:
            count_point[k] = {scope: dict(nan_p) for scope in scopes}
            count_persona[k] = {
                scope: {n: np.full(n_boot, math.nan) for n in count_names} for scope in scopes
            }
            count_rerun[k] = {
                scope: {n: np.full(max(n_rerun_boot, 1), math.nan) for n in count_names}
                for scope in scopes
            }
            continue
        point_k = _count_values(
            feat, feat.by_persona.sum(axis=0)[None], grid, count_names, list(groups)
        )
        count_point[k] = {
            scope: {n: float(v[0]) for n, v in values.items()} for scope, values in point_k.items()
        }
        reps = persona_feats[k].reshape(n_boot, feat.n_groups, feat.width)
        count_persona[k] = _count_values(feat, reps, grid, count_names, list(groups))
        if k in rerun_feats:
            count_rerun[k] = _count_values(feat, rerun_feats[k], grid, count_names, list(groups))

    out: dict[str, EstimatorDraws] = {}
    for index, estimator in enumerate(estimators):
        point: dict[str, dict[str, dict[str, float]]] = {}
        persona: dict[str, dict[str, dict[str, FloatArray]]] = {}
        for k, run in runs.items():
            start = sum(part.shape[1] for part in parts[k][:index])
            width = parts[k][index].shape[1]
            sd = np.std(run.mu, axis=0, ddof=1)
            avg = parts[k][index].mean(axis=0)
            sd_boot, avg_boot = per_run[k]
            avg_boot = avg_boot[:, start : start + width]
            point[k] = {}
            persona[k] = {}
            for scope, cols in scopes.items():
                values = _scope_values(sd, avg, cols, estimator, tested)
                point[k][scope] = {name: float(v) for name, v in values.items()}
                persona[k][scope] = _scope_values(sd_boot, avg_boot, cols, estimator, tested)
                if k in count_point:
                    point[k][scope].update(count_point[k][scope])
                    persona[k][scope].update(count_persona[k][scope])
        rerun = None
        if rerun_items and estimator == "reference":
            rerun = {}
            for k in labels:
                item_reps = rerun_items[k]
                if item_reps is None:
                    rerun[k] = {
                        scope: {name: np.full(n_rerun_boot, v) for name, v in values.items()}
                        for scope, values in point[k].items()
                    }
                    continue
                sd_r, sig_r = item_reps
                rerun[k] = {
                    scope: _scope_values(sd_r, sig_r, cols, "reference", tested)
                    for scope, cols in scopes.items()
                }
                if k in count_point:
                    for scope in scopes:
                        rerun[k][scope].update(
                            count_rerun[k][scope]
                            if k in count_rerun
                            else {n: np.full(n_rerun_boot, math.nan) for n in count_names}
                        )
        jackknife: dict[str, dict[str, dict[str, float]]] | None = None
        jack_df: dict[str, dict[str, dict[str, int]]] | None = None
        if estimator == "corrected":
            jackknife, jack_df = {}, {}
            for k, run in runs.items():
                jackknife[k], jack_df[k] = _jackknife_scopes(run, parts[k][index], scopes, point[k])
        out[estimator] = EstimatorDraws(
            point=point,
            persona=persona,
            rerun=rerun,
            jackknife=jackknife,
            n_personas={k: run.n_personas for k, run in runs.items()},
            jackknife_df=jack_df,
        )
    return out


def _count_features(run: RunCells, groups: Mapping[str, NDArray[np.intp]]) -> CountFeatures | None:
    """The count statistics' cell features of ``run`` per foundation group (None: none
    registered, ratings off the scale, or no cells to count)."""
    if run.cells is not None:
        return sampled_count_features(run.cells, groups, run.scale)
    if run.probs is not None:
        return exact_count_features(run.probs, groups, run.repetitions)
    return None


def _count_values(
    feat: CountFeatures,
    sums: FloatArray,
    scale: Sequence[float],
    names: Sequence[str],
    groups: Sequence[str],
) -> dict[str, dict[str, FloatArray]]:
    """Scope (foundations, then ``overall``) -> count statistic -> ``(N,)`` values, from
    ``(N, G, width)`` feature sums per group (the foundations partition the items, so
    their sums add up to the overall ones)."""
    full = np.concatenate([sums, sums.sum(axis=1, keepdims=True)], axis=1)
    n, n_scopes, width = full.shape
    flat = full.reshape(n * n_scopes, width)
    values = count_statistic_draws({name: flat[:, sl] for name, sl in feat.slices.items()}, scale)
    scopes = [*groups, OVERALL]
    out: dict[str, dict[str, FloatArray]] = {}
    for j, scope in enumerate(scopes):
        out[scope] = {
            name: values[name].reshape(n, n_scopes)[:, j] if name in values else np.full(n, np.nan)
            for name in names
        }
    return out


def _sd(values: FloatArray) -> float:
    """Sample sd of finite replicates (NaN when any replicate is not finite)."""
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return math.nan
    return float(np.std(values, ddof=1))


def _combine(se_persona: float, se_rerun: float, variance: str) -> float:
    if variance == "persona":
        return se_persona
    if variance == "rerun":
        return se_rerun
    return math.hypot(se_persona, se_rerun)


def _log(x: FloatArray | float) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def is_log_scale(metric: str) -> bool:
    """Whether ``metric`` is tested on the log scale (else as a plain difference)."""
    try:
        stat = get_statistic(metric)  # a dict lookup: called for every test and draw set
    except UnknownNameError:
        return True
    return getattr(stat, "test_scale", "log") == "log"


_is_log = is_log_scale


def scope_values(
    spread: FloatArray, noise: FloatArray, cols: NDArray[np.intp] | slice
) -> dict[str, Any]:
    """Every tested statistic (reference estimator) from per-item columns, by name.

    ``spread`` and ``noise`` are ``(..., Q)``: the across-persona sd of the cell means
    and the mean cell sd per item (leading axes: bootstrap draws); ``cols`` selects
    the items in scope (``slice(None)``: all, keeping the arrays' memory layout).
    """
    return _scope_values(spread, noise, cols, "reference")


def point_values(mu: FloatArray, sigma: FloatArray) -> dict[str, float]:
    """Every tested statistic (reference estimator) of ``(P, Q)`` cell means and sds."""
    cols = np.arange(mu.shape[1], dtype=np.intp)
    values = scope_values(np.std(mu, axis=0, ddof=1), sigma.mean(axis=0), cols)
    return {name: float(v) for name, v in values.items()}


def _normal_test(
    statistic: float, se_persona: float, se_rerun: float, variance: str, z_crit: float
) -> tuple[float, float, float, float, float]:
    """``(se, z, p, low, high)`` of a Wald test of ``statistic = 0``.

    When every persona-bootstrap replicate of the contrast equals its point value
    (``se = se_persona = 0``: a discrete statistic, such as the modal rating, on which
    every resample agrees) the bootstrap distribution is a point mass: p = 1 and the
    interval ``[0, 0]`` for a zero statistic, p = 0 and ``[statistic, statistic]``
    otherwise (the limit of the Wald test). With ``se = 0`` from the rerun scheme
    alone (exact runs have no rerun noise) there is no test (NaN).
    """
    se = _combine(se_persona, se_rerun, variance)
    if se == 0 and se_persona == 0 and math.isfinite(statistic):
        if statistic == 0:
            return se, 0.0, 1.0, 0.0, 0.0
        return se, math.copysign(math.inf, statistic), 0.0, statistic, statistic
    if not (math.isfinite(statistic) and math.isfinite(se)) or se <= 0:
        return se, math.nan, math.nan, math.nan, math.nan
    z = statistic / se
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return se, z, p, statistic - z_crit * se, statistic + z_crit * se


Values = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""Run label -> scope -> statistic name -> value (float or replicates)."""


def _contrast(values: Values, numerator: str, denominator: str, scope: str, metric: str) -> Any:
    """The test statistic of two runs: ``log X_numerator - log X_denominator`` on the log
    scale (R's is minus sigma_bar's; NaN when both are infinite, i.e. every cell
    constant in both runs), ``X_numerator - X_denominator`` on the difference scale."""
    a = values[numerator][scope][metric]
    b = values[denominator][scope][metric]
    with np.errstate(invalid="ignore"):
        if _is_log(metric):
            return _log(a) - _log(b)
        return np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)


def _contrast_ses(
    draws: EstimatorDraws, numerator: str, denominator: str, scope: str, metric: str
) -> tuple[float, float, float]:
    """``(statistic, se_persona, se_rerun)`` of the contrast of two runs."""
    stat = float(_contrast(draws.point, numerator, denominator, scope, metric))
    se_p = _sd(_contrast(draws.persona, numerator, denominator, scope, metric))
    se_r = math.nan
    if draws.rerun is not None:
        se_r = _sd(_contrast(draws.rerun, numerator, denominator, scope, metric))
    return stat, se_p, se_r


def _expm1(value: float) -> float:
    return math.expm1(value) if math.isfinite(value) else math.nan


def _back(metric: str, value: float) -> float:
    """A contrast statistic on the scale of the estimate (relative change for log scale)."""
    return _expm1(value) if _is_log(metric) else value


def change_tests(
    draws: EstimatorDraws, reference: str, variant: str, variance: str, z_crit: float
) -> dict[str, dict[str, DifferenceTest]]:
    """Tests of ``variant`` against ``reference``: statistic -> scope -> test."""
    tests: dict[str, dict[str, DifferenceTest]] = {}
    for scope, values in draws.point[reference].items():
        for metric in values:
            stat, se_p, se_r = _contrast_ses(draws, variant, reference, scope, metric)
            se, z, p, low, high = _normal_test(stat, se_p, se_r, variance, z_crit)
            tests.setdefault(metric, {})[scope] = DifferenceTest(
                metric=metric,
                scope=scope,
                estimate=_back(metric, stat),
                ci_low=_back(metric, low),
                ci_high=_back(metric, high),
                se=se,
                se_persona=se_p,
                se_rerun=se_r,
                z=z,
                p_value=p,
            )
    return tests


def _excess(
    values: Values, base: str, control: str, treatment: str, scope: str, metric: str
) -> Any:
    """``(X_treatment - X_control) / X_base`` (log scale) or ``X_treatment - X_control``."""
    xt = np.asarray(values[treatment][scope][metric], dtype=np.float64)
    xc = np.asarray(values[control][scope][metric], dtype=np.float64)
    if not _is_log(metric):
        return xt - xc
    x0 = np.asarray(values[base][scope][metric], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (xt - xc) / x0


def _excess_tests(
    draws: EstimatorDraws, base: str, control: str, treatment: str, variance: str, z_crit: float
) -> dict[str, dict[str, DifferenceTest]]:
    tests: dict[str, dict[str, DifferenceTest]] = {}
    for scope, values in draws.point[base].items():
        for metric in values:
            # The test: X_treatment against X_control (log ratio or difference), the
            # same hypothesis as a zero excess, and one test for R and sigma_bar.
            # The interval: Wald on the excess itself.
            stat, se_p, se_r = _contrast_ses(draws, treatment, control, scope, metric)
            se, z, p, _, _ = _normal_test(stat, se_p, se_r, variance, z_crit)
            args = (base, control, treatment, scope, metric)
            value = float(_excess(draws.point, *args))
            se_ex = _combine(
                _sd(_excess(draws.persona, *args)),
                math.nan if draws.rerun is None else _sd(_excess(draws.rerun, *args)),
                variance,
            )
            ok = math.isfinite(value) and math.isfinite(se_ex)
            tests.setdefault(metric, {})[scope] = DifferenceTest(
                metric=metric,
                scope=scope,
                estimate=value,
                ci_low=value - z_crit * se_ex if ok else math.nan,
                ci_high=value + z_crit * se_ex if ok else math.nan,
                se=se,
                se_persona=se_p,
                se_rerun=se_r,
                z=z,
                p_value=p,
            )
    return tests


def draw_estimates(
    draws: EstimatorDraws, variance: str, *, confidence: float = 0.95
) -> dict[str, dict[str, MetricEstimate]]:
    """Run label -> scope -> estimates with SEs and intervals under ``variance``.

    A reciprocal statistic (``inverse_of``) gets its SE by the delta method from its
    base's (and its base's interval quantile); a statistic with a jackknife SE in
    ``draws`` (the corrected ``S`` and ``sigma_bar``, under the ``"persona"`` scheme)
    gets that SE and a Student-t interval with the degrees of freedom of
    :func:`jackknife_df` (:data:`INTERVAL_METHODS`); the others the bootstrap sd of their
    replicates and a normal (Wald) interval.
    """
    inverse = {st.name: getattr(st, "inverse_of", None) for st in statistics()}
    z_crit = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    out: dict[str, dict[str, MetricEstimate]] = {}
    for run, by_scope in draws.point.items():
        out[run] = {}
        n_p = draws.n_personas.get(run, 0)
        for scope, values in by_scope.items():
            direct: dict[str, Estimate] = {}
            crit: dict[str, tuple[float, str]] = {}
            for name, value in values.items():
                if inverse.get(name) is None:
                    jack = (draws.jackknife or {}).get(run, {}).get(scope, {}).get(name)
                    if jack is not None and variance == "persona" and n_p >= 3:
                        direct[name] = Estimate(value, jack)
                        df = (draws.jackknife_df or {}).get(run, {}).get(scope, {}).get(name)
                        crit[name] = (
                            t_quantile(confidence, n_p - 1 if df is None else df),
                            INTERVAL_JACKKNIFE_T,
                        )
                        continue
                    rerun_se = math.nan
                    if draws.rerun is not None:
                        rerun_se = _sd(draws.rerun[run][scope][name])
                    se = _combine(_sd(draws.persona[run][scope][name]), rerun_se, variance)
                    direct[name] = Estimate(value, se)
                    crit[name] = (z_crit, INTERVAL_WALD)
            found: dict[str, Estimate] = {}
            intervals: dict[str, tuple[float, float]] = {}
            methods: dict[str, str] = {}
            for name in values:
                base = inverse.get(name)
                if base is None:
                    found[name] = direct[name]
                    q, methods[name] = crit[name]
                else:
                    b = direct[base]
                    found[name] = Estimate(
                        reciprocal(b.value), b.se / b.value**2 if b.value > 0 else math.nan
                    )
                    q, methods[name] = crit[base]  # delta-method SE, the base's quantile
                e = found[name]
                ok = math.isfinite(e.value) and math.isfinite(e.se)
                intervals[name] = (
                    (e.value - q * e.se, e.value + q * e.se) if ok else (math.nan, math.nan)
                )
            out[run][scope] = MetricEstimate(found, intervals, methods)
    return out


def _check_settings(
    estimator: str, variance: str, n_boot: int, n_rerun_boot: int, confidence: float
) -> None:
    _check_choice("estimator", estimator, ESTIMATORS)
    _check_choice("variance", variance, VARIANCES)
    for name, value, minimum in (("n_boot", n_boot, 2), ("n_rerun_boot", n_rerun_boot, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if variance != "persona" and n_rerun_boot < 2:
        raise ValueError(f"variance={variance!r} needs n_rerun_boot >= 2, got {n_rerun_boot}")
    if variance != "persona" and estimator != "reference":
        raise ValueError(
            f"variance={variance!r} uses the rerun bootstrap, which is only defined for "
            "estimator='reference'"
        )
    if not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def family_significance(
    runs: Mapping[str, RunCells],
    *,
    base: str = "base",
    control: str | None = "secure",
    treatment: str | None = "insecure",
    estimator: Estimator = "reference",
    variance: Variance = "persona",
    paired: bool | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    n_rerun_boot: int = DEFAULT_N_RERUN_BOOT,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
    both: bool = True,
) -> FamilySignificance:
    """Test every run of a family against its base, and the excess, from one joint bootstrap.

    Args:
        runs: Run label -> cells; must include ``base`` and at least one other run,
            all on the same items.
        base: Label of the base run.
        control, treatment: Labels whose difference is the excess (skipped when
            either is None or absent).
        estimator: ``"reference"`` or ``"corrected"`` (see the module docstring).
        variance: ``"persona"``, ``"reference"`` or ``"rerun"`` (see the module docstring).
        paired: Resample personas jointly across runs; None: when all runs hold
            the same persona ids (ids must then name the same personas).
        n_boot: Persona-bootstrap draws (>= 2).
        n_rerun_boot: Rerun-bootstrap draws (0 skips it; needed by ``variance``
            ``"reference"`` and ``"rerun"``).
        confidence: Level of the intervals (0.95).
        rng: Generator, int seed or None (fresh seed, recorded).
        both: Also test under the other estimator (``other``: persona scheme, same
            persona draws), so the result carries the paper's and the corrected
            estimates and its verdicts follow the corrected one; ``estimator``'s own
            numbers are the same either way (point values exactly; bootstrap SEs up
            to the last bits of the wider matrix product).

    Returns:
        :class:`FamilySignificance`; ``p_holm`` is corrected over the scopes
        (overall and foundations) of each contrast and metric.

    Raises:
        ValueError: Bad labels or settings, runs on different items, or
            ``paired=True`` with different persona sets.
    """
    _check_settings(estimator, variance, n_boot, n_rerun_boot, confidence)
    if base not in runs:
        raise ValueError(f"base: no run labelled {base!r}; labels: {', '.join(runs) or '(none)'}")
    if control is not None and control == treatment:
        raise ValueError(f"control and treatment must differ, both are {control!r}")
    use_paired = _check_runs(runs, paired)
    # The rerun bootstrap always runs for the reference estimator: with the
    # "persona" scheme it only supplies the reported se_rerun component.
    n_rerun = n_rerun_boot if estimator == "reference" else 0
    generator, seed = resolve_rng(rng)
    other_name = "corrected" if estimator == "reference" else "reference"
    # The other estimator comes from the same persona draws (its columns ride along in
    # the same weight-matrix product), so this run's numbers do not change with it
    # (beyond the last bits of floating-point summation).
    all_draws = draw_estimators(
        runs,
        estimators=(estimator, other_name) if both else (estimator,),
        paired=use_paired,
        n_boot=n_boot,
        n_rerun_boot=n_rerun,
        rng=generator,
        counts=True,
    )
    holm_text = "within the family: over overall and foundations, per contrast and metric"
    other = None
    if both:
        other_draws = all_draws[other_name]
        (other_contrasts,) = _with_holm(
            [_family_contrasts(other_draws, base, control, treatment, "persona", confidence)]
        )
        other = FamilySignificance(
            base=base,
            contrasts=other_contrasts,
            estimates=draw_estimates(other_draws, "persona", confidence=confidence),
            paired=use_paired,
            estimator=other_name,
            variance="persona",
            confidence=float(confidence),
            n_boot=int(n_boot),
            n_rerun_boot=int(n_rerun),
            seed=seed,
            holm=holm_text,
        )
    draws = all_draws[estimator]
    (corrected,) = _with_holm(
        [_family_contrasts(draws, base, control, treatment, variance, confidence)]
    )
    return FamilySignificance(
        base=base,
        contrasts=corrected,
        estimates=draw_estimates(draws, variance, confidence=confidence),
        paired=use_paired,
        estimator=estimator,
        variance=variance,
        confidence=float(confidence),
        n_boot=int(n_boot),
        n_rerun_boot=int(n_rerun),
        seed=seed,
        holm=holm_text,
        other=other,
    )


def _family_contrasts(
    draws: EstimatorDraws,
    base: str,
    control: str | None,
    treatment: str | None,
    variance: str,
    confidence: float,
) -> dict[str, Contrast]:
    """Every run's change against ``base``, and the excess when control and treatment
    are both present (before Holm)."""
    runs = draws.point
    z_crit = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    contrasts: dict[str, Contrast] = {}
    for label in runs:
        if label == base:
            continue
        contrasts[label] = Contrast(
            kind="change",
            reference=base,
            variant=label,
            base=None,
            tests=change_tests(draws, base, label, variance, z_crit),
        )
    if (
        control is not None
        and treatment is not None
        and control in runs
        and treatment in runs
        and base not in (control, treatment)
    ):
        contrasts[EXCESS] = Contrast(
            kind="excess",
            reference=control,
            variant=treatment,
            base=base,
            tests=_excess_tests(draws, base, control, treatment, variance, z_crit),
        )
    return contrasts


def compare_runs(
    reference: RunCells,
    variant: RunCells,
    *,
    labels: tuple[str, str] = ("reference", "variant"),
    **options: Any,
) -> Contrast:
    """Difference tests of ``variant`` against ``reference`` (one contrast).

    Args:
        reference, variant: The two runs (same items).
        labels: Names used in the result.
        **options: Keyword options of :func:`family_significance` (``estimator``,
            ``variance``, ``paired``, ``n_boot``, ``n_rerun_boot``, ``confidence``, ``rng``).

    Returns:
        The :class:`Contrast` (``p_holm`` over its scopes, per metric).
    """
    ref_label, var_label = labels
    if ref_label == var_label:
        raise ValueError(f"labels must differ, both are {ref_label!r}")
    fam = family_significance(
        {ref_label: reference, var_label: variant},
        base=ref_label,
        control=None,
        treatment=None,
        **options,
    )
    return fam.contrasts[var_label]


def run_estimates(
    run: RunCells,
    *,
    estimator: Estimator = "corrected",
    variance: Variance = "persona",
    n_boot: int = DEFAULT_N_BOOT,
    n_rerun_boot: int = DEFAULT_N_RERUN_BOOT,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> dict[str, MetricEstimate]:
    """``S``, ``sigma_bar`` and ``R`` of one run with SEs and intervals, overall and per
    foundation (corrected ``S``: jackknife-t interval; see the module docstring).

    The bias-corrected estimates (the default here) are the documented
    alternative to :func:`~persona_collapse.stats.metrics.analyze_ratings`, which keeps
    the published estimators. With the corrected estimator and the persona scheme every
    SE is a jackknife one, so ``n_boot`` goes unused (3 or more personas).

    Returns:
        Scope (``"overall"`` and foundation names) -> :class:`MetricEstimate`.
    """
    _check_settings(estimator, variance, n_boot, n_rerun_boot, confidence)
    generator, _ = resolve_rng(rng)
    n_rerun = 0 if (estimator == "corrected" or variance == "persona") else n_rerun_boot
    if (
        estimator == "corrected"
        and variance == "persona"
        and run.n_personas >= 3
        and set(_CORRECTED_HOOKS) <= set(_JACKKNIFE_HOOKS)
    ):
        # Every corrected statistic gets its SE from the jackknife: the persona
        # bootstrap's replicates would go unused. With a seed (or None) the generator
        # is this call's own, so no draw is made at all; a caller's Generator still
        # advances as before (the fewest draws the bootstrap allows).
        if not isinstance(rng, np.random.Generator):
            return _jackknife_estimates(run, confidence)
        n_boot = 2
    draws = _draw(
        {"run": run},
        estimator=estimator,
        paired=False,
        n_boot=n_boot,
        n_rerun_boot=n_rerun,
        rng=generator,
    )
    return draw_estimates(draws, variance, confidence=confidence)["run"]


def _jackknife_estimates(run: RunCells, confidence: float) -> dict[str, MetricEstimate]:
    """:func:`run_estimates` of the corrected estimators under the persona scheme when
    every SE is a jackknife one: the point values as :func:`draw_estimators` makes them
    and the jackknife of every scope at once, without bootstrap draws."""
    scopes = _scopes({"run": run})
    tested = statistics_tested()
    columns = _averaged(run, "corrected")
    sd = np.std(run.mu, axis=0, ddof=1)
    avg = columns.mean(axis=0)
    point = {
        scope: {
            name: float(v) for name, v in _scope_values(sd, avg, cols, "corrected", tested).items()
        }
        for scope, cols in scopes.items()
    }
    se, df = _jackknife_scopes(run, columns, scopes, point)
    draws = EstimatorDraws(
        point={"run": point},
        persona={"run": {scope: {} for scope in scopes}},  # never read: all SEs are jackknife
        rerun=None,
        jackknife={"run": se},
        n_personas={"run": run.n_personas},
        jackknife_df={"run": df},
    )
    return draw_estimates(draws, "persona", confidence=confidence)["run"]


def study_significance(
    families: Mapping[str, Mapping[str, RunCells]],
    *,
    rng: np.random.Generator | int | None = None,
    **options: Any,
) -> StudySignificance:
    """:func:`family_significance` for each family, Holm-corrected across the study.

    ``p_holm`` of each test is corrected over all families and scopes (overall
    and each foundation) of the same contrast key and metric, e.g. the 4 x 6
    insecure-vs-base ``S`` tests of four families.

    Args:
        families: Family name -> run label -> cells.
        rng: Generator, int seed or None; each family gets its own seed drawn
            from it (recorded in its result).
        **options: Keyword options of :func:`family_significance`.
    """
    if not families:
        raise ValueError("families must hold at least one family")
    generator, seed = resolve_rng(rng)
    results = {
        name: family_significance(runs, rng=int(generator.integers(0, 2**62)), **options)
        for name, runs in families.items()
    }
    corrected = _with_holm([f.contrasts for f in results.values()])
    holm_text = (
        "across families: over every family, overall and foundations, per contrast and metric"
    )
    others = [f.other for f in results.values() if f.other is not None]
    if len(others) == len(results):
        other_sets = _with_holm([o.contrasts for o in others])
        results = {
            name: replace(fam, other=replace(o, contrasts=new, holm=holm_text))
            for (name, fam), o, new in zip(results.items(), others, other_sets, strict=True)
        }
    return StudySignificance(
        families={
            name: replace(fam, contrasts=new, holm=holm_text)
            for (name, fam), new in zip(results.items(), corrected, strict=True)
        },
        seed=seed,
        holm=holm_text,
    )


__all__ = [
    "DEFAULT_N_BOOT",
    "DEFAULT_N_RERUN_BOOT",
    "ESTIMATES_EXPLANATION",
    "ESTIMATORS",
    "EXCESS",
    "INTERVAL_JACKKNIFE_T",
    "INTERVAL_METHODS",
    "INTERVAL_WALD",
    "OVERALL",
    "VARIANCES",
    "Contrast",
    "DifferenceTest",
    "FamilySignificance",
    "MetricEstimate",
    "RunCells",
    "StudySignificance",
    "c4",
    "cells_from_cell_ratings",
    "cells_from_distributions",
    "cells_from_ratings",
    "compare_runs",
    "corrected_fields",
    "corrected_keys",
    "count_statistics_tested",
    "family_significance",
    "holm",
    "is_log_scale",
    "jackknife_df",
    "jackknife_se",
    "jackknife_se_corrected_s",
    "jackknife_se_corrected_sigma_bar",
    "names_tested",
    "point_values",
    "run_cells",
    "run_estimates",
    "scope_values",
    "statistics_tested",
]
