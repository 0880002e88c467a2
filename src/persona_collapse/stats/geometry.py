r"""Geometry of persona clouds in hidden states (pure numpy).

A *cloud* is an ``(N, d)`` array: one hidden state per persona at one layer. A
*stack* is ``(N, L, d)``: the same personas at every layer slot (slot 0 = the
embeddings, slot ``i`` = after block ``i``). Everything is computed in float64.

Per cloud, with :math:`X_c` the column-centred states and :math:`\lambda` the
eigenvalues of its covariance :math:`X_c^\top X_c/(N-1)` (from the SVD):

* participation ratio :math:`PR = (\sum\lambda)^2/\sum\lambda^2` (1: one direction;
  :math:`k` for :math:`k` equal directions), raw and after scaling each row to unit length;
* clumpiness: mean nearest-neighbour distance over mean pairwise distance (Euclidean);
* distance bimodality: Sarle's coefficient :math:`(g_1^2+1)/g_2` of all pairwise
  distances (biased skewness, biased non-excess kurtosis; above 5/9 hints at two modes);
* mean pairwise distance and RMS radius :math:`\sqrt{\mathrm{mean}_i\|x_i-\mu\|^2}`.

Against the base model's cloud of the same personas: the centroid offset over the
base RMS radius, the gain (RMS radius ratio) and the Spearman correlation of the two
representational dissimilarity matrices (condensed pairwise-distance vectors).

The *excess* compares a treatment and a control fine-tune of one base:
:math:`\Delta PR\%(v) = 100 (PR_v - PR_{base})/PR_{base}` and excess =
:math:`\Delta PR\%(treatment) - \Delta PR\%(control)` in percentage points, with
percentile intervals from paired subsamples (the same personas in all three
variants of a draw).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
RngLike = np.random.Generator | int | None

SATURATION_SIZES = (50, 100, 200, 500, 1000, 2000)
"""Persona counts of :func:`pr_saturation` (those below ``N``; ``N`` itself is always added)."""

DISPLACEMENT_REFERENCE = 300
"""Base personas whose mean pairwise distance is the unit of displacement."""


# --- validation --------------------------------------------------------------------------------


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _cloud(states: ArrayLike, name: str = "states", *, min_rows: int = 2) -> FloatArray:
    arr = np.asarray(states, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (personas, dim) array, got shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(
            f"{name}: expected at least {min_rows} rows and 1 column, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: holds NaN or infinite values")
    return arr


def _stack(states: ArrayLike, name: str = "states", *, min_rows: int = 2) -> NDArray[np.floating]:
    # Kept in its own float dtype (float16 states of a large model would take 4x the
    # memory in float64); each layer is converted to float64 where it is used.
    arr = np.asarray(states)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.ndim != 3:
        raise ValueError(
            f"{name}: expected a 3-D (personas, layers, dim) array, got shape {arr.shape}"
        )
    if arr.shape[0] < min_rows or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"{name}: expected at least {min_rows} personas, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: holds NaN or infinite values")
    return arr


def _same_shape(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b}: shape {b.shape} differs from {name_a}'s {a.shape} "
            "(the same personas, in the same order, are needed)"
        )


# --- single cloud ------------------------------------------------------------------------------


def unit_rows(states: ArrayLike) -> FloatArray:
    """Each row scaled to unit Euclidean length.

    Raises:
        ValueError: a row is all zeros.
    """
    x = _cloud(states, min_rows=1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("states: a row is all zeros and has no direction")
    return x / norms


def covariance_eigenvalues(states: ArrayLike) -> FloatArray:
    """Eigenvalues (descending) of the covariance of the column-centred states, ``s**2/(N-1)``."""
    x = _cloud(states)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return s**2 / (x.shape[0] - 1)


def participation_ratio(states: ArrayLike, *, unit_norm: bool = False) -> float:
    """``(sum lambda)**2 / sum lambda**2`` of the covariance eigenvalues (NaN for a point cloud).

    Args:
        states: ``(N, d)``.
        unit_norm: Scale each row to unit length first (direction only).
    """
    x = unit_rows(states) if unit_norm else _cloud(states)
    lam = covariance_eigenvalues(x)
    total_sq = float(np.sum(lam**2))
    return float(np.sum(lam) ** 2 / total_sq) if total_sq > 0 else math.nan


def gram_participation_ratio(states: ArrayLike) -> float:
    """The participation ratio as ``tr(M)**2/||M||_F**2`` of the smaller of the Gram and
    scatter matrices of the centred states: the same value as :func:`participation_ratio`,
    faster when it is computed many times (subsampling)."""
    x = _cloud(states)
    xc = x - x.mean(axis=0)
    m = xc @ xc.T if xc.shape[0] <= xc.shape[1] else xc.T @ xc
    frob = float(np.sum(m * m))
    return float(np.trace(m) ** 2 / frob) if frob > 0 else math.nan


def distance_matrix(states: ArrayLike) -> FloatArray:
    """``(N, N)`` Euclidean distances (from the Gram matrix of the centred states)."""
    x = _cloud(states)
    xc = x - x.mean(axis=0)  # centring first keeps the Gram trick accurate
    sq = np.einsum("ij,ij->i", xc, xc)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def condensed(matrix: ArrayLike) -> FloatArray:
    """Upper triangle (``i < j``, row-major) of a square matrix: ``N(N-1)/2`` values."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix: expected a square 2-D array, got shape {m.shape}")
    return m[np.triu_indices(m.shape[0], k=1)]


def pairwise_distances(states: ArrayLike) -> FloatArray:
    """Condensed Euclidean distances of all pairs ``i < j``."""
    return condensed(distance_matrix(states))


def mean_pairwise_distance(states: ArrayLike) -> float:
    """Mean Euclidean distance over all pairs."""
    return float(pairwise_distances(states).mean())


def rms_radius(states: ArrayLike) -> float:
    """Root mean squared distance of the states from their centroid."""
    x = _cloud(states, min_rows=1)
    return float(np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1))))


def _clumpiness(d: FloatArray) -> float:
    mean_pair = condensed(d).mean()
    if mean_pair == 0:
        return math.nan
    off = d + np.diag(np.full(d.shape[0], np.inf))
    return float(off.min(axis=1).mean() / mean_pair)


def clumpiness(states: ArrayLike) -> float:
    """Mean nearest-neighbour distance over mean pairwise distance (low: tight clumps)."""
    return _clumpiness(distance_matrix(states))


def sarle_bimodality(values: ArrayLike) -> float:
    """Sarle's bimodality coefficient ``(g1**2 + 1)/g2`` with the biased skewness ``g1`` and
    the biased (non-excess) kurtosis ``g2`` (NaN for constant values)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ValueError(f"values: expected at least 2 values, got {v.size}")
    dev = v - v.mean()
    m2 = float(np.mean(dev**2))
    if m2 == 0:
        return math.nan
    g1 = float(np.mean(dev**3)) / m2**1.5
    g2 = float(np.mean(dev**4)) / m2**2
    return (g1**2 + 1.0) / g2


def distance_bimodality(states: ArrayLike) -> float:
    """:func:`sarle_bimodality` of all pairwise Euclidean distances."""
    return sarle_bimodality(pairwise_distances(states))


@dataclass(frozen=True)
class CloudGeometry:
    """Shape of one persona cloud (see the module docstring)."""

    participation_ratio: float
    participation_ratio_unitnorm: float
    clumpiness: float
    distance_bimodality: float
    mean_pairwise_distance: float
    rms_radius: float


def cloud_geometry(states: ArrayLike) -> CloudGeometry:
    """Every single-cloud measure of ``(N, d)`` states (distances computed once)."""
    x = _cloud(states)
    d = distance_matrix(x)
    pairs = condensed(d)
    return CloudGeometry(
        participation_ratio=participation_ratio(x),
        participation_ratio_unitnorm=participation_ratio(x, unit_norm=True),
        clumpiness=_clumpiness(d),
        distance_bimodality=sarle_bimodality(pairs),
        mean_pairwise_distance=float(pairs.mean()),
        rms_radius=rms_radius(x),
    )


# --- against the base --------------------------------------------------------------------------


def average_ranks(values: ArrayLike) -> FloatArray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank."""
    v = np.asarray(values, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks; NaN if either is constant)."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"b: length {y.size} differs from a's {x.size}")
    if x.size < 2:
        raise ValueError(f"a: expected at least 2 values, got {x.size}")
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


@dataclass(frozen=True)
class BaseComparison:
    """A variant's cloud against the base model's cloud of the same personas."""

    offset_over_base_radius: float
    gain_over_base: float
    rdm_spearman_vs_base: float


def compare_to_base(states: ArrayLike, base: ArrayLike) -> BaseComparison:
    """Centroid offset / base RMS radius, RMS-radius ratio and RDM Spearman correlation.

    Args:
        states: ``(N, d)`` the variant's states.
        base: ``(N, d)`` the base model's states of the same personas in the same order.
    """
    x, b = _cloud(states), _cloud(base, "base")
    _same_shape(x, b, "states", "base")
    base_radius = rms_radius(b)
    offset = float(np.linalg.norm(x.mean(axis=0) - b.mean(axis=0)))
    return BaseComparison(
        offset_over_base_radius=offset / base_radius if base_radius > 0 else math.nan,
        gain_over_base=rms_radius(x) / base_radius if base_radius > 0 else math.nan,
        rdm_spearman_vs_base=spearman(pairwise_distances(x), pairwise_distances(b)),
    )


# --- per layer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSummary:
    """Per-layer geometry of one variant; each field is ``(L,)`` (comparisons NaN without base)."""

    layers: IntArray
    participation_ratio: FloatArray
    participation_ratio_unitnorm: FloatArray
    clumpiness: FloatArray
    distance_bimodality: FloatArray
    mean_pairwise_distance: FloatArray
    rms_radius: FloatArray
    offset_over_base_radius: FloatArray
    gain_over_base: FloatArray
    rdm_spearman_vs_base: FloatArray

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per layer (for CSV)."""
        names = [f for f in self.__dataclass_fields__ if f != "layers"]
        return [
            {"layer": int(layer), **{n: float(getattr(self, n)[k]) for n in names}}
            for k, layer in enumerate(self.layers)
        ]


def layer_summary(
    states: ArrayLike, *, base: ArrayLike | None = None, layers: ArrayLike | None = None
) -> LayerSummary:
    """:func:`cloud_geometry` (and :func:`compare_to_base` when ``base`` is given) per layer.

    Args:
        states: ``(N, L, d)``.
        base: ``(N, L, d)`` the base model's states, or None.
        layers: ``(L,)`` layer indices (default ``0..L-1``).
    """
    x = _stack(states)
    b = None if base is None else _stack(base, "base")
    if b is not None:
        _same_shape(x, b, "states", "base")
    idx = _layers(layers, x.shape[1])
    n_layers = x.shape[1]
    geo = [cloud_geometry(x[:, k]) for k in range(n_layers)]
    nan = np.full(n_layers, np.nan)
    cmp = [compare_to_base(x[:, k], b[:, k]) for k in range(n_layers)] if b is not None else None

    def col(values: Sequence[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    return LayerSummary(
        layers=idx,
        participation_ratio=col([g.participation_ratio for g in geo]),
        participation_ratio_unitnorm=col([g.participation_ratio_unitnorm for g in geo]),
        clumpiness=col([g.clumpiness for g in geo]),
        distance_bimodality=col([g.distance_bimodality for g in geo]),
        mean_pairwise_distance=col([g.mean_pairwise_distance for g in geo]),
        rms_radius=col([g.rms_radius for g in geo]),
        offset_over_base_radius=nan
        if cmp is None
        else col([c.offset_over_base_radius for c in cmp]),
        gain_over_base=nan.copy() if cmp is None else col([c.gain_over_base for c in cmp]),
        rdm_spearman_vs_base=nan.copy()
        if cmp is None
        else col([c.rdm_spearman_vs_base for c in cmp]),
    )


def _layers(layers: ArrayLike | None, n: int) -> IntArray:
    if layers is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(layers, dtype=np.int64).ravel()
    if idx.size != n:
        raise ValueError(f"layers: expected {n} layer indices, got {idx.size}")
    return idx


# --- saturation and resolution -----------------------------------------------------------------


@dataclass(frozen=True)
class PRSaturation:
    """PR against persona count: ``values[k]`` are the subsample PRs at ``sizes[k]``."""

    sizes: IntArray
    mean: FloatArray
    sd: FloatArray
    values: tuple[FloatArray, ...]
    near_rank_limit: bool
    """PR over 0.9 (N - 1) with all N personas: the cloud is limited by the persona count."""


def pr_saturation(
    states: ArrayLike,
    *,
    sizes: Sequence[int] = SATURATION_SIZES,
    draws: int = 5,
    rng: RngLike = 0,
) -> PRSaturation:
    """PR of random persona subsets (without replacement) of each size below ``N``, and of all.

    Args:
        states: ``(N, d)``.
        sizes: Subset sizes; those of at least ``N`` are dropped, ``N`` is added (one value).
        draws: Subsets per size.
        rng: Generator or seed.
    """
    x = _cloud(states)
    if draws < 1:
        raise ValueError(f"draws: must be >= 1, got {draws}")
    n = x.shape[0]
    if any(int(s) < 2 for s in sizes):
        raise ValueError(f"sizes: every size must be >= 2, got {list(sizes)}")
    gen = _rng(rng)
    kept = [*sorted({int(s) for s in sizes if int(s) < n}), n]
    values: list[FloatArray] = []
    for size in kept:
        if size == n:
            values.append(np.array([gram_participation_ratio(x)]))
            continue
        picks = [gen.choice(n, size=size, replace=False) for _ in range(draws)]
        values.append(np.array([gram_participation_ratio(x[p]) for p in picks]))
    full = float(values[-1][0])
    return PRSaturation(
        sizes=np.asarray(kept, dtype=np.int64),
        mean=np.array([v.mean() for v in values]),
        sd=np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in values]),
        values=tuple(values),
        near_rank_limit=bool(full > 0.9 * (n - 1)),
    )


@dataclass(frozen=True)
class ResolutionFloor:
    """How far apart personas are compared with the spread one persona shows across templates."""

    within: float
    """Mean over personas of the mean squared distance of its template states to their centroid."""
    between: float
    """Mean squared distance of the persona centroids to the grand mean."""
    fisher: float
    eta_squared: float
    nn_centroid_over_within_sd: float
    """Mean nearest-neighbour distance between persona centroids over sqrt(within)."""


def resolution_floor(states: ArrayLike) -> ResolutionFloor:
    """Template noise against persona signal at one layer.

    Args:
        states: ``(P, T, d)``: ``P >= 2`` personas, each under ``T >= 2`` templates.
    """
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"states: expected (personas, templates, dim), got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"states: expected >= 2 personas and >= 2 templates, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("states: holds NaN or infinite values")
    centroids = x.mean(axis=1)
    within = float(np.mean(np.sum((x - centroids[:, None, :]) ** 2, axis=2)))
    between = float(np.mean(np.sum((centroids - centroids.mean(axis=0)) ** 2, axis=1)))
    d = distance_matrix(centroids) + np.diag(np.full(centroids.shape[0], np.inf))
    nn = float(d.min(axis=1).mean())
    total = between + within
    return ResolutionFloor(
        within=within,
        between=between,
        fisher=between / within if within > 0 else math.inf,
        eta_squared=between / total if total > 0 else math.nan,
        nn_centroid_over_within_sd=nn / math.sqrt(within) if within > 0 else math.inf,
    )


# --- excess ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Mean excess over the layer slots ``[lo, hi)`` with its percentile interval."""

    name: str
    lo: int
    hi: int
    excess_pp: float
    ci_lo: float
    ci_hi: float

    @property
    def significant(self) -> bool:
        return not (self.ci_lo <= 0.0 <= self.ci_hi)


@dataclass(frozen=True)
class ExcessResult:
    """Per-layer ΔPR % of treatment and control against base, their excess and its CI."""

    layers: IntArray
    pr_base: FloatArray
    pr_treatment: FloatArray
    pr_control: FloatArray
    dpr_treatment_pct: FloatArray
    dpr_control_pct: FloatArray
    excess_pp: FloatArray
    ci_lo: FloatArray
    ci_hi: FloatArray
    displacement_treatment_pct: FloatArray
    displacement_control_pct: FloatArray
    bands: tuple[Band, ...]
    draws: int
    subsample: int
    confidence: float

    @property
    def significant(self) -> NDArray[np.bool_]:
        """Per layer: the interval excludes 0."""
        return np.asarray((self.ci_lo > 0) | (self.ci_hi < 0))

    @property
    def dpr_per_push_treatment(self) -> FloatArray:
        return _ratio(self.dpr_treatment_pct, self.displacement_treatment_pct)

    @property
    def dpr_per_push_control(self) -> FloatArray:
        return _ratio(self.dpr_control_pct, self.displacement_control_pct)

    def rows(self) -> list[dict[str, float | int | bool]]:
        """One dict per layer (the columns of the excess CSV)."""
        sig = self.significant
        push_t, push_c = self.dpr_per_push_treatment, self.dpr_per_push_control
        return [
            {
                "layer": int(layer),
                "pr_base": float(self.pr_base[k]),
                "pr_treatment": float(self.pr_treatment[k]),
                "pr_control": float(self.pr_control[k]),
                "dpr_treatment_pct": float(self.dpr_treatment_pct[k]),
                "dpr_control_pct": float(self.dpr_control_pct[k]),
                "excess_pp": float(self.excess_pp[k]),
                "excess_ci_lo": float(self.ci_lo[k]),
                "excess_ci_hi": float(self.ci_hi[k]),
                "significant": bool(sig[k]),
                "displacement_treatment_pct": float(self.displacement_treatment_pct[k]),
                "displacement_control_pct": float(self.displacement_control_pct[k]),
                "dpr_per_push_treatment": float(push_t[k]),
                "dpr_per_push_control": float(push_c[k]),
            }
            for k, layer in enumerate(self.layers)
        ]


def _ratio(a: FloatArray, b: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def default_bands(n_slots: int) -> tuple[tuple[str, int, int], ...]:
    """Slot bands: all ``[1, n)``, early ``[1, n//2+1)``, late ``[n//2+1, n)`` (empty: dropped)."""
    half = n_slots // 2 + 1
    bands = (("all", 1, n_slots), ("early", 1, min(half, n_slots)), ("late", half, n_slots))
    return tuple(b for b in bands if b[2] > b[1])


def displacement_pct(states: ArrayLike, base: ArrayLike) -> float:
    """100 x mean per-persona distance to its base state / mean pairwise distance among the
    first :data:`DISPLACEMENT_REFERENCE` base personas."""
    x, b = _cloud(states), _cloud(base, "base")
    _same_shape(x, b, "states", "base")
    unit = mean_pairwise_distance(b[: min(DISPLACEMENT_REFERENCE, b.shape[0])])
    shift = float(np.mean(np.linalg.norm(x - b, axis=1)))
    return 100.0 * shift / unit if unit > 0 else math.nan


def _dpr(pr: FloatArray, pr_base: FloatArray) -> FloatArray:
    """100 (PR - PR_base) / PR_base; NaN where the base cloud is a point (PR undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pr_base > 0, 100.0 * (pr - pr_base) / pr_base, np.nan)


def excess_pr(
    treatment: ArrayLike,
    control: ArrayLike,
    base: ArrayLike,
    *,
    layers: ArrayLike | None = None,
    draws: int = 60,
    fraction: float = 0.8,
    replace: bool = False,
    confidence: float = 0.95,
    bands: Sequence[tuple[str, int, int]] | None = None,
    rng: RngLike = 0,
) -> ExcessResult:
    """Excess ΔPR % (treatment minus control, both against base) per layer, with paired CIs.

    Each draw takes ``round(fraction * N)`` persona indices (without replacement, or a
    bootstrap of ``N`` with ``replace``) and uses the same indices for all three
    variants; the interval is the percentile interval of the draws. A band's value is
    the mean excess over its layer slots; its interval is that of the per-draw band means.

    Args:
        treatment, control, base: ``(N, L, d)`` stacks of the same personas in the same order.
        layers: ``(L,)`` layer indices (default ``0..L-1``); bands refer to slot positions.
        draws: Paired subsamples.
        fraction: Share of personas per subsample (ignored with ``replace``).
        replace: Bootstrap (``N`` with replacement) instead of subsampling.
        confidence: Interval level.
        bands: ``(name, lo, hi)`` slot ranges; default :func:`default_bands`.
        rng: Generator or seed.
    """
    t, c, b = _stack(treatment, "treatment"), _stack(control, "control"), _stack(base, "base")
    _same_shape(b, t, "base", "treatment")
    _same_shape(b, c, "base", "control")
    if draws < 2:
        raise ValueError(f"draws: must be >= 2, got {draws}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    n, n_slots = b.shape[0], b.shape[1]
    size = n if replace else round(fraction * n)
    if size < 2:
        raise ValueError(f"fraction: a subsample of {size} personas is too small (N = {n})")
    band_list = tuple(default_bands(n_slots) if bands is None else bands)
    for name, lo, hi in band_list:
        if not 0 <= lo < hi <= n_slots:
            raise ValueError(f"bands: {name!r} [{lo}, {hi}) is not inside [0, {n_slots})")
    idx = _layers(layers, n_slots)

    def prs(sel: IntArray | slice) -> tuple[FloatArray, FloatArray, FloatArray]:
        out = np.array(
            [[gram_participation_ratio(v[sel, k]) for k in range(n_slots)] for v in (b, t, c)]
        )
        return out[0], out[1], out[2]

    pr_b, pr_t, pr_c = prs(slice(None))
    dpr_t, dpr_c = _dpr(pr_t, pr_b), _dpr(pr_c, pr_b)
    excess = dpr_t - dpr_c

    gen = _rng(rng)
    per_draw = np.empty((draws, n_slots))
    for k in range(draws):
        sel = np.sort(gen.choice(n, size=size, replace=replace))
        db, dt, dc = prs(sel)
        per_draw[k] = _dpr(dt, db) - _dpr(dc, db)
    q = (100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2)
    lo, hi = np.percentile(per_draw, q, axis=0)
    band_results = []
    for name, blo, bhi in band_list:
        means = per_draw[:, blo:bhi].mean(axis=1)
        blo_ci, bhi_ci = np.percentile(means, q)
        band_results.append(
            Band(name, blo, bhi, float(excess[blo:bhi].mean()), float(blo_ci), float(bhi_ci))
        )
    return ExcessResult(
        layers=idx,
        pr_base=pr_b,
        pr_treatment=pr_t,
        pr_control=pr_c,
        dpr_treatment_pct=dpr_t,
        dpr_control_pct=dpr_c,
        excess_pp=excess,
        ci_lo=np.asarray(lo, dtype=np.float64),
        ci_hi=np.asarray(hi, dtype=np.float64),
        displacement_treatment_pct=np.array(
            [displacement_pct(t[:, k], b[:, k]) for k in range(n_slots)]
        ),
        displacement_control_pct=np.array(
            [displacement_pct(c[:, k], b[:, k]) for k in range(n_slots)]
        ),
        bands=tuple(band_results),
        draws=draws,
        subsample=size,
        confidence=confidence,
    )


__all__ = [
    "DISPLACEMENT_REFERENCE",
    "SATURATION_SIZES",
    "Band",
    "BaseComparison",
    "CloudGeometry",
    "ExcessResult",
    "LayerSummary",
    "PRSaturation",
    "ResolutionFloor",
    "average_ranks",
    "cloud_geometry",
    "clumpiness",
    "compare_to_base",
    "condensed",
    "covariance_eigenvalues",
    "default_bands",
    "displacement_pct",
    "distance_bimodality",
    "distance_matrix",
    "excess_pr",
    "gram_participation_ratio",
    "layer_summary",
    "mean_pairwise_distance",
    "pairwise_distances",
    "participation_ratio",
    "pr_saturation",
    "resolution_floor",
    "rms_radius",
    "sarle_bimodality",
    "spearman",
    "unit_rows",
]
