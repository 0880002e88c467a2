"""Statistics of the control tasks: capability runs (accuracy and instability) and lookup runs.

Capability run (no persona; each item asked ``n`` times). With *valid* rows those
whose answer parsed:

* ``accuracy_all`` = mean correct over all rows (unparseable = wrong);
  ``accuracy_valid`` over valid rows; ``majority_accuracy`` = share of items (with a
  valid answer) whose most frequent valid answer is correct, ties going to the first
  answer in text sort order (the reference reads answers as text);
* over items with at least two valid answers: ``non_unanimity_rate``, ``mean_gini``
  (``1 - sum p^2``) and ``mean_distinct_answers``, from :mod:`.instability`;
* standard errors from a two-level bootstrap, ``SE = sqrt(SE_item^2 + SE_rep^2)``: items
  resampled with replacement within each subject (stratum), and separately the valid
  repetitions resampled within each item (answer and correctness together). Both
  levels score accuracy as the mean over items of each item's mean correctness on
  its valid rows.

Variant deltas against a base run: point = stat(variant) - stat(base) over the items
both runs share, with accuracy over all repetitions. The paired bootstrap draws the
same item indices for both runs, then repetitions within each drawn item independently
per run and per quantity; the CI is the percentile interval and the p-value inverts it
(:func:`percentile_p_value`: the smallest ``alpha`` whose ``1 - alpha`` percentile
interval excludes 0, so ``p < 1 - confidence`` exactly when the CI excludes 0).

Every bootstrap is vectorised: repetitions are coded per item, padded to a
``(items, reps)`` matrix, and resampled as index arrays in chunks of draws.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.stats.instability import (
    distinct_answers,
    draw_chunks,
    gini_impurity,
    non_unanimity,
)

if TYPE_CHECKING:
    from persona_collapse.store.control_csv import CapabilityRun

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
RngLike = int | np.random.Generator | None


def reference_seed(key: str) -> int:
    """A seed derived from a label like the follow-up scripts do (first 8 bytes of SHA-256)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _generator(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be an int seed, a numpy Generator or None, got {rng!r}")


def _check_draws(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    return int(value)


# --- answers of a run -----------------------------------------------------------------------


@dataclass(frozen=True)
class ControlAnswers:
    """A capability run's rows as arrays (one entry per item x repetition).

    Attributes:
        item_id: ``(N,)`` item of each row.
        answer: ``(N,)`` parsed answers as text; ``""`` where the reply did not parse.
        correct: ``(N,)`` 1 / 0.
        replied: ``(N,)`` True where a reply came at all (default: every row).
        subject: ``(N,)`` stratum of each row for the item bootstrap (default: one stratum).
    """

    item_id: IntArray
    answer: NDArray[np.str_]
    correct: FloatArray
    replied: NDArray[np.bool_]
    subject: NDArray[np.str_]

    @classmethod
    def from_arrays(
        cls,
        item_id: ArrayLike,
        answer: ArrayLike,
        correct: ArrayLike,
        *,
        replied: ArrayLike | None = None,
        subject: ArrayLike | None = None,
    ) -> ControlAnswers:
        """Validate and wrap row arrays (see the attributes)."""
        items = np.asarray(item_id)
        if items.ndim != 1 or items.dtype.kind not in "iu":
            raise ValueError("item_id must be a 1-D integer array")
        n = len(items)
        if n == 0:
            raise ValueError("item_id must not be empty")
        answers = np.asarray(answer, dtype=np.str_)
        corr = np.asarray(correct, dtype=np.float64)
        rep = np.ones(n, dtype=bool) if replied is None else np.asarray(replied, dtype=bool)
        subj = np.full(n, "", dtype=np.str_) if subject is None else np.asarray(subject, np.str_)
        for name, arr in (("answer", answers), ("correct", corr), ("replied", rep)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if subj.shape != (n,):
            raise ValueError(f"subject must have shape ({n},), got {subj.shape}")
        if not np.all((corr == 0) | (corr == 1)):
            raise ValueError("correct must hold only 0 and 1")
        return cls(items.astype(np.int64), answers, corr, rep, subj)

    @classmethod
    def from_run(cls, run: CapabilityRun) -> ControlAnswers:
        """From a :class:`persona_collapse.store.control_csv.CapabilityRun`."""
        return cls.from_arrays(
            run.item_id, run.answer, run.correct, replied=run.replied, subject=run.subject
        )

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Rows whose answer parsed."""
        return np.char.str_len(self.answer) > 0


def _answer_order(answers: NDArray[np.str_]) -> IntArray:
    """Global codes of ``answers`` in text sort order (``"1240" < "2"``, as the reference)."""
    return np.unique(answers, return_inverse=True)[1].astype(np.int64)


@dataclass(frozen=True)
class _Matrix:
    """Rows of a run padded per item: ``codes[i, j]`` is a per-item answer code or -1."""

    item_ids: IntArray  # (I,)
    codes: IntArray  # (I, R) local codes 0..K-1 in answer sort order, -1 = padding
    correct: FloatArray  # (I, R) 0 where padded
    n: IntArray  # (I,) rows per item
    n_codes: int  # K

    @property
    def width(self) -> int:
        return int(self.codes.shape[1])


def _matrix(item_id: IntArray, codes: IntArray, correct: FloatArray, items: IntArray) -> _Matrix:
    """Pad the rows of ``items`` (sorted ids; rows of other items are dropped)."""
    keep = np.isin(item_id, items)
    item_id, codes, correct = item_id[keep], codes[keep], correct[keep]
    pos = np.searchsorted(items, item_id)
    order = np.argsort(pos, kind="stable")  # rows of an item stay in file order
    pos, codes, correct = pos[order], codes[order], correct[order]
    n = np.bincount(pos, minlength=len(items)).astype(np.int64)
    width = max(int(n.max(initial=0)), 1)
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    slot = np.arange(len(pos)) - starts[pos]
    # Local code = rank of the answer among its item's distinct answers (keeps K small;
    # the order of the global codes, i.e. the answers' sort order, is preserved).
    stride = int(codes.max(initial=0)) + 1
    pairs, inverse = np.unique(pos * stride + codes, return_inverse=True)
    pair_item = pairs // stride
    first_pair = np.searchsorted(pair_item, pair_item)
    local_codes = (np.arange(len(pairs)) - first_pair)[inverse].astype(np.int64)
    mat_codes = np.full((len(items), width), -1, dtype=np.int64)
    mat_corr = np.zeros((len(items), width), dtype=np.float64)
    mat_codes[pos, slot] = local_codes
    mat_corr[pos, slot] = correct
    k = int(local_codes.max(initial=0)) + 1
    return _Matrix(items, mat_codes, mat_corr, n, k)


def _counts(codes: IntArray, n_codes: int) -> IntArray:
    """``(..., K)`` answer counts of padded code rows ``(..., R)``."""
    return (codes[..., None] == np.arange(n_codes)).sum(axis=-2, dtype=np.int64)


def _cell_stats(codes: IntArray, n_codes: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per cell non-unanimity, Gini and distinct answers; NaN for cells under two answers."""
    counts = _counts(codes, n_codes)
    shape = counts.shape[:-1]
    flat = counts.reshape(-1, n_codes)
    few = flat.sum(axis=1) < 2
    out = []
    for fn in (non_unanimity, gini_impurity, distinct_answers):
        v = fn(flat)
        v[few] = np.nan
        out.append(v.reshape(shape))
    return out[0], out[1], out[2]


def _nanmean(x: FloatArray, axis: int = -1) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = ~np.isnan(x)
        return np.asarray(np.where(ok, x, 0.0).sum(axis=axis) / ok.sum(axis=axis))


def _nanstd(x: FloatArray) -> float:
    x = x[~np.isnan(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def _rep_stats(
    mat: _Matrix,
    rows: IntArray,
    rng: np.random.Generator,
    *,
    answers: bool = True,
    correctness: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-item accuracy, non-unanimity and Gini after resampling repetitions.

    ``rows`` (any shape) are item positions in ``mat``; each occurrence resamples its
    item's repetitions with replacement (answer and correctness with the same indices).
    Items whose repetitions all agree (or are all right / all wrong) give the same value
    under any resample, so only the others are drawn: exact, and ~10x less work.
    """
    with np.errstate(invalid="ignore", divide="ignore"):  # an item with no valid row: NaN
        acc_i = mat.correct.sum(axis=1) / mat.n
    nu_i, gini_i, dist_i = _cell_stats(mat.codes, mat.n_codes)
    flat = rows.ravel()
    acc, nu, gini = acc_i[flat], nu_i[flat], gini_i[flat]
    varies = np.zeros(len(mat.n), dtype=bool)
    if answers:
        varies |= dist_i > 1
    if correctness:
        varies |= (acc_i > 0) & (acc_i < 1)
    sel = np.flatnonzero(varies[flat])
    if len(sel):
        item = flat[sel]
        n = mat.n[item]
        slot = np.minimum(
            (rng.random((len(sel), mat.width)) * n[:, None]).astype(np.int64), mat.width - 1
        )
        pad = np.arange(mat.width) >= n[:, None]
        lin = item[:, None] * mat.width + slot
        if answers:
            codes = np.where(pad, -1, mat.codes.ravel()[lin])
            nu[sel], gini[sel], _ = _cell_stats(codes, mat.n_codes)
        if correctness:
            acc[sel] = np.where(pad, 0.0, mat.correct.ravel()[lin]).sum(axis=1) / n
    shape = rows.shape
    return acc.reshape(shape), nu.reshape(shape), gini.reshape(shape)


# --- capability metrics ---------------------------------------------------------------------


@dataclass(frozen=True)
class CapabilityMetrics:
    """Accuracy and instability of one capability run (see the module docstring)."""

    n_total: int
    n_replied: int
    n_valid: int
    n_items: int
    format_valid_rate: float
    reply_rate: float
    accuracy_all: float
    accuracy_valid: float
    majority_accuracy: float
    non_unanimity_rate: float
    mean_gini: float
    mean_distinct_answers: float
    accuracy_se: float
    non_unanimity_se: float
    gini_se: float
    accuracy_se_item: float
    accuracy_se_rep: float
    non_unanimity_se_item: float
    non_unanimity_se_rep: float
    gini_se_item: float
    gini_se_rep: float
    n_item_boot: int
    n_rep_boot: int

    def to_dict(self) -> dict[str, Any]:
        """Plain values (NaN where undefined)."""
        return asdict(self)


def capability_metrics(
    answers: ControlAnswers,
    *,
    n_item_boot: int = 2000,
    n_rep_boot: int = 400,
    rng: RngLike = None,
) -> CapabilityMetrics:
    """Accuracy, majority accuracy, format-valid rate and instability with bootstrap SEs.

    Args:
        answers: The run's rows.
        n_item_boot: Item-level bootstrap draws (items resampled within subject), >= 2.
        n_rep_boot: Repetition-level bootstrap draws, >= 2.
        rng: Seed or generator of the bootstrap.

    Raises:
        ValueError: A bad draw count or rng, or no row with a parsed answer.
    """
    n_item_boot = _check_draws(n_item_boot, "n_item_boot")
    n_rep_boot = _check_draws(n_rep_boot, "n_rep_boot")
    gen = _generator(rng)
    valid = answers.valid
    if not valid.any():
        raise ValueError("answers: no row has a parsed answer")
    n_total = len(answers.item_id)
    n_replied = int(answers.replied.sum())
    n_valid = int(valid.sum())
    items = np.unique(answers.item_id[valid])
    codes = _answer_order(answers.answer[valid])
    mat = _matrix(answers.item_id[valid], codes, answers.correct[valid], items)

    acc_i = mat.correct.sum(axis=1) / mat.n
    nu_i, gini_i, dist_i = _cell_stats(mat.codes, mat.n_codes)
    counts = _counts(mat.codes, mat.n_codes)
    mode = counts.argmax(axis=1)  # first maximum = first answer in sort order
    hit = (mat.codes == mode[:, None]) & (mat.correct > 0)
    majority = float(hit.any(axis=1).mean())

    # Item level: resample items within each stratum (subject of the item's first row).
    _, first_row = np.unique(answers.item_id[valid], return_index=True)
    item_subject = answers.subject[valid][first_row]
    draws = np.empty((n_item_boot, len(items)), dtype=np.int64)
    col = 0
    for stratum in np.unique(item_subject):
        members = np.flatnonzero(item_subject == stratum)
        pick = gen.integers(0, len(members), size=(n_item_boot, len(members)))
        draws[:, col : col + len(members)] = members[pick]
        col += len(members)
    item_level = [_nanmean(stat[draws]) for stat in (acc_i, nu_i, gini_i)]

    # Repetition level: resample each item's valid repetitions, items fixed.
    rep_level: list[list[FloatArray]] = [[], [], []]
    rows = np.arange(len(items))
    for size in draw_chunks(n_rep_boot, len(items)):
        acc_b, nu_b, gini_b = _rep_stats(mat, np.broadcast_to(rows, (size, len(items))), gen)
        for store, stat in zip(rep_level, (acc_b, nu_b, gini_b), strict=True):
            store.append(_nanmean(stat))
    se_item = [_nanstd(x) for x in item_level]
    se_rep = [_nanstd(np.concatenate(x)) for x in rep_level]
    se = [math.hypot(a, b) for a, b in zip(se_item, se_rep, strict=True)]
    with np.errstate(invalid="ignore"):
        return CapabilityMetrics(
            n_total=n_total,
            n_replied=n_replied,
            n_valid=n_valid,
            n_items=len(items),
            format_valid_rate=n_valid / n_replied if n_replied else math.nan,
            reply_rate=n_replied / n_total,
            accuracy_all=float(answers.correct.mean()),
            accuracy_valid=float(answers.correct[valid].mean()),
            majority_accuracy=majority,
            non_unanimity_rate=float(np.nanmean(nu_i)) if np.any(~np.isnan(nu_i)) else math.nan,
            mean_gini=float(np.nanmean(gini_i)) if np.any(~np.isnan(gini_i)) else math.nan,
            mean_distinct_answers=(
                float(np.nanmean(dist_i)) if np.any(~np.isnan(dist_i)) else math.nan
            ),
            accuracy_se=se[0],
            non_unanimity_se=se[1],
            gini_se=se[2],
            accuracy_se_item=se_item[0],
            accuracy_se_rep=se_rep[0],
            non_unanimity_se_item=se_item[1],
            non_unanimity_se_rep=se_rep[1],
            gini_se_item=se_item[2],
            gini_se_rep=se_rep[2],
            n_item_boot=n_item_boot,
            n_rep_boot=n_rep_boot,
        )


# --- variant deltas -------------------------------------------------------------------------


def _zero_crossing(d: FloatArray, index: int) -> float:
    """Position ``h`` in ``[index, index + 1]`` where the line through ``d[index]`` and
    ``d[index + 1]`` is 0 (``d[index] <= 0 <= d[index + 1]``, not both 0)."""
    lo, hi = float(d[index]), float(d[index + 1])
    return index + (0.0 - lo) / (hi - lo)


def percentile_p_value(replicates: ArrayLike) -> float:
    """Two-sided p-value of "no difference" by inverting the bootstrap percentile interval.

    With ``Q(q)`` the replicates' empirical quantile as :func:`numpy.nanpercentile`
    computes it (linear interpolation between order statistics, NaNs left out), the
    equal-tailed ``1 - alpha`` interval ``[Q(alpha / 2), Q(1 - alpha / 2)]`` excludes 0
    exactly when ``alpha / 2 > min(a, 1 - b)``, with ``a = sup{q : Q(q) <= 0}`` and
    ``b = inf{q : Q(q) >= 0}``; the p-value is the smallest such ``alpha``,
    ``p = min(1, 2 min(a, 1 - b))`` (Efron & Tibshirani's achieved significance level of
    the percentile interval, with interpolated quantiles). So ``p < 1 - c`` if and only if
    the level-``c`` percentile CI excludes 0; ``p = 0`` when every replicate lies on one
    side of 0 (then ``p`` is below about ``2 / B`` for ``B`` replicates); NaN without a
    finite replicate.

    Args:
        replicates: Bootstrap replicates of the difference.
    """
    d = np.sort(np.asarray(replicates, dtype=np.float64).ravel())
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return math.nan
    if n == 1:
        return 1.0 if d[0] == 0 else 0.0
    last_nonpositive = int(np.searchsorted(d, 0.0, side="right")) - 1
    first_nonnegative = int(np.searchsorted(d, 0.0, side="left"))
    if last_nonpositive < 0:  # every replicate > 0
        a = 0.0
    elif last_nonpositive == n - 1:
        a = 1.0
    else:
        a = _zero_crossing(d, last_nonpositive) / (n - 1)
    if first_nonnegative == 0:
        b = 0.0
    elif first_nonnegative == n:  # every replicate < 0
        b = 1.0
    else:
        b = _zero_crossing(d, first_nonnegative - 1) / (n - 1)
    return float(min(1.0, 2.0 * min(a, 1.0 - b)))


@dataclass(frozen=True)
class DeltaEstimate:
    """One paired difference variant - base with its percentile CI and the p-value that
    inverts it (:func:`percentile_p_value`)."""

    point: float
    lo: float
    hi: float
    p: float = math.nan

    @property
    def significant(self) -> bool:
        """The CI excludes 0."""
        return bool(self.lo > 0 or self.hi < 0)


@dataclass(frozen=True)
class VariantDelta:
    """Differences variant - base of accuracy (all reps), non-unanimity and Gini."""

    n_items: int
    accuracy: DeltaEstimate
    non_unanimity: DeltaEstimate
    gini: DeltaEstimate
    confidence: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        """Flat columns: ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, ``accuracy_sig``..."""
        out: dict[str, Any] = {"n_items": self.n_items}
        for name in ("accuracy", "non_unanimity", "gini"):
            est: DeltaEstimate = getattr(self, name)
            out |= {
                name: est.point,
                f"{name}_lo": est.lo,
                f"{name}_hi": est.hi,
                f"{name}_sig": est.significant,
                f"{name}_p": est.p,
            }
        return out | {"confidence": self.confidence, "n_boot": self.n_boot}


def _delta_parts(answers: ControlAnswers, items: IntArray) -> tuple[_Matrix, _Matrix]:
    """All-rep correctness matrix and valid-rep answer matrix over ``items``."""
    every = _matrix(
        answers.item_id, np.zeros(len(answers.item_id), np.int64), answers.correct, items
    )
    valid = answers.valid
    codes = _answer_order(answers.answer[valid]) if valid.any() else np.zeros(0, dtype=np.int64)
    return every, _matrix(answers.item_id[valid], codes, answers.correct[valid], items)


def _point(every: _Matrix, val: _Matrix) -> tuple[float, float, float]:
    acc = float(np.mean(every.correct.sum(axis=1) / every.n))
    nu, gini, _ = _cell_stats(val.codes, val.n_codes)
    return acc, float(_nanmean(nu)), float(_nanmean(gini))


def variant_delta(
    base: ControlAnswers,
    variant: ControlAnswers,
    *,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    rng: RngLike = None,
) -> VariantDelta:
    """Paired bootstrap of variant - base over the items both runs share.

    Args:
        base: The base model's run.
        variant: The variant's run of the same task.
        n_boot: Bootstrap draws, >= 2.
        confidence: Level of the percentile interval, in (0, 1).
        rng: Seed or generator.

    Raises:
        ValueError: No shared item, or a bad option.
    """
    n_boot = _check_draws(n_boot, "n_boot")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    gen = _generator(rng)
    items = np.intersect1d(base.item_id, variant.item_id)
    if len(items) == 0:
        raise ValueError("base and variant share no item")
    parts = [_delta_parts(base, items), _delta_parts(variant, items)]
    points = [_point(*p) for p in parts]
    point = [v - b for b, v in zip(points[0], points[1], strict=True)]
    n_items = len(items)
    boot: list[list[FloatArray]] = [[], [], []]
    for size in draw_chunks(n_boot, n_items):
        pick = gen.integers(0, n_items, size=(size, n_items))  # same items for both runs
        stats = []
        for every, val in parts:
            acc, _, _ = _rep_stats(every, pick, gen, answers=False)
            _, nu, gini = _rep_stats(val, pick, gen, correctness=False)
            stats.append((acc.mean(axis=-1), _nanmean(nu), _nanmean(gini)))
        for store, b, v in zip(boot, stats[0], stats[1], strict=True):
            store.append(v - b)
    tail = 100 * (1 - confidence) / 2
    ests = []
    for p, draws in zip(point, boot, strict=True):
        d = np.concatenate(draws)
        lo, hi = (
            np.nanpercentile(d, [tail, 100 - tail]) if np.any(~np.isnan(d)) else (math.nan,) * 2
        )
        ests.append(DeltaEstimate(float(p), float(lo), float(hi), percentile_p_value(d)))
    return VariantDelta(n_items, ests[0], ests[1], ests[2], confidence, n_boot)


# --- lookup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LookupMetrics:
    """Lookup-task metrics.

    ``robustness`` is ``1 / uncertainty`` and ``inf`` when every table's answers agree
    (uncertainty 0); the error columns are NaN when there is no wrong answer.
    """

    n_total: int
    n_valid: int
    format_valid_rate: float
    accuracy_valid: float
    accuracy_all: float
    uncertainty: float
    robustness: float
    extremization_all: float
    extremization_errors: float
    mean_abs_error: float
    non_unanimity_rate: float
    mean_gini: float
    n_tables: int

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``inf`` and NaN kept as floats)."""
        return asdict(self)


def lookup_metrics(
    table_id: ArrayLike, rating: ArrayLike, correct_id: ArrayLike, *, midpoint: float = 2.5
) -> LookupMetrics:
    """Accuracy and within-table instability of lookup answers.

    Args:
        table_id: ``(N,)`` table of each row.
        rating: ``(N,)`` the id answered, ``-1`` (or any value off 0-5) when unparseable.
        correct_id: ``(N,)`` the right id.
        midpoint: Centre of the id scale for extremization (2.5 for ids 0-5).

    Returns:
        ``uncertainty`` = mean over tables (with >= 2 valid answers) of the sample
        standard deviation of the ids answered; ``extremization`` = mean of
        ``|rating - midpoint| - |correct - midpoint|``.
    """
    tables = np.asarray(table_id)
    r = np.asarray(rating, dtype=np.float64)
    c = np.asarray(correct_id, dtype=np.float64)
    if not (tables.ndim == r.ndim == c.ndim == 1) or not (len(tables) == len(r) == len(c)):
        raise ValueError("table_id, rating and correct_id must be 1-D of equal length")
    if len(r) == 0:
        raise ValueError("rating must not be empty")
    ok = (r >= 0) & (r <= 5) & (r == np.round(r))
    n_total, n_valid = len(r), int(ok.sum())
    hit = ok & (r == c)
    t, rv, cv = tables[ok], r[ok], c[ok]
    keys, inv = np.unique(t, return_inverse=True)
    n_per = np.bincount(inv, minlength=len(keys)).astype(np.float64)
    mean = np.bincount(inv, rv, minlength=len(keys)) / np.maximum(n_per, 1)
    ss = np.bincount(inv, (rv - mean[inv]) ** 2, minlength=len(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.where(n_per >= 2, np.sqrt(ss / (n_per - 1)), np.nan)
    uncertainty = float(np.nanmean(sd)) if np.any(~np.isnan(sd)) else math.nan
    robustness = (
        math.inf
        if uncertainty == 0
        else (1 / uncertainty if uncertainty == uncertainty else math.nan)
    )
    ext = np.abs(rv - midpoint) - np.abs(cv - midpoint)
    wrong = rv != cv
    counts_cells = np.zeros((len(keys), 6), dtype=np.int64)
    np.add.at(counts_cells, (inv, rv.astype(np.int64)), 1)
    multi = counts_cells.sum(axis=1) >= 2

    def mean_or_nan(x: FloatArray) -> float:
        return float(x.mean()) if len(x) else math.nan

    return LookupMetrics(
        n_total=n_total,
        n_valid=n_valid,
        format_valid_rate=n_valid / n_total,
        accuracy_valid=float(hit.sum() / n_valid) if n_valid else math.nan,
        accuracy_all=float(hit.sum() / n_total),
        uncertainty=uncertainty,
        robustness=robustness,
        extremization_all=mean_or_nan(ext),
        extremization_errors=mean_or_nan(ext[wrong]),
        mean_abs_error=mean_or_nan(np.abs(rv - cv)[wrong]),
        non_unanimity_rate=mean_or_nan(non_unanimity(counts_cells[multi])),
        mean_gini=mean_or_nan(gini_impurity(counts_cells[multi])),
        n_tables=len(keys),
    )


__all__ = [
    "CapabilityMetrics",
    "ControlAnswers",
    "DeltaEstimate",
    "LookupMetrics",
    "VariantDelta",
    "capability_metrics",
    "lookup_metrics",
    "percentile_p_value",
    "reference_seed",
    "variant_delta",
]
