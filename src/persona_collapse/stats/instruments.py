"""Is a fine-tune's instability persona-specific? Instability compared across instruments.

A *cell set* holds one run's repeated answers grouped in cells: (persona, item) for a
persona-conditioned Likert run (MFQ-30, BFI-44), item for a self-mode run, a capability
task (valid answers only) or a lookup table. Every set is summarised on the same
scale-free footing (:mod:`.instability`), over its cells with at least two answers:

* ``non_unanimity_rate``, ``mean_gini`` (``1 - sum p^2``), ``mean_gini_norm`` (divided by
  ``1 - 1/k`` for an answer set of ``k`` options; undefined for open answers such as
  GSM8K numbers), ``n_cells`` and ``mean_reps`` (answers per cell);
* ``R`` for Likert sets: ``1 / mean`` over cells of the sample standard deviation
  (pooled; no complete-persona filter, unlike the persona pipeline's R);
* ``accuracy`` where answers have ground truth: mean correctness over valid answers
  (every cell, single answers included); ``accuracy_all`` over every row, a reply that
  did not parse counting as wrong (the authors' variant deltas use this one).

A family's variants are compared with its base: per set the relative change
``(variant - base) / base`` of each measure, the absolute accuracy change, and the key
contrast: the mean change of the persona-conditioned sets minus that of the others
(self mode, capability, lookup), on one instability measure. The change is relative by
default (scale-free, but large where a base value is small) or absolute (``variant -
base``, on the measure's own 0-1 scale). A positive contrast whose interval excludes 0
says the persona instability rose more than the non-persona instability; a significant
accuracy drop (:attr:`VariantComparison.accuracy_drops`, on ``accuracy_all``) says the
model degraded broadly.

Uncertainty: a percentile bootstrap that resamples *units* with replacement, persona
for persona-conditioned sets (all of a persona's cells together) and the cell itself
otherwise (item or table). Within a family one draw of units serves every run: the same
personas for every persona set of base and variants (persona ids name the same personas
across instruments, as in the reference studies), the same items for one instrument's
self, capability or lookup sets. Base and variant are thus paired, and the persona and
non-persona groups keep their correlation; a persona (or item) absent from a set
contributes nothing to it when drawn. Repetitions are not resampled separately: a
cell's statistic already carries its repetitions' noise, and resampling whole units
captures it. Percentiles take observed draws (no interpolation), so a draw whose base
value is 0 (relative change infinite) widens an interval honestly rather than breaking it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persona_collapse.stats.instability import (
    answer_counts,
    draw_chunks,
    gini_impurity,
    non_unanimity,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
RngLike = int | np.random.Generator | None
Conditioning = Literal["persona", "none"]

MEASURES = ("non_unanimity_rate", "mean_gini", "mean_gini_norm", "R")
"""Measures whose relative change vs base is reported (R falls as instability rises)."""
CONTRAST_MEASURES = ("non_unanimity_rate", "mean_gini", "mean_gini_norm")
"""Instability measures the persona vs non-persona contrast can be built on."""
SCALES = ("relative", "absolute")
"""How the contrast measures a change: ``(v - b) / b`` or ``v - b``."""

# Columns of the per-unit sums a bootstrap draw reweights.
_N, _NU, _GINI, _REPS, _SD, _CORRECT, _ANSWERS, _CORRECT_ALL, _ROWS = range(9)
_SUMS = 9


def _generator(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int | np.integer) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be an int seed, a numpy Generator or None, got {rng!r}")


def _check_options(n_options: int | None) -> int | None:
    if n_options is None:
        return None
    if isinstance(n_options, bool) or not isinstance(n_options, int | np.integer) or n_options < 2:
        raise ValueError(f"n_options must be an integer >= 2 or None, got {n_options!r}")
    return int(n_options)


def _check_1d(name: str, values: ArrayLike, n: int | None = None) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} must have length {n}, got {len(arr)}")
    return arr


def _check_ids(name: str, values: ArrayLike, n: int | None = None) -> IntArray:
    arr = _check_1d(name, values, n)
    if len(arr) and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


# --- cell sets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellSet:
    """One run's repeated answers grouped in cells (build with :func:`likert_cells` or
    :func:`answer_cells`).

    Attributes:
        instrument: Label of the instrument or task (``MFQ``, ``BFI-44``, ``MMLU``...).
        conditioning: ``persona`` (cells are persona x item) or ``none``.
        unit_id: ``(C,)`` resampling unit of each cell: persona id, or the cell's own key.
        counts: ``(C, K)`` valid answer counts of each cell.
        n_options: Size ``k`` of the answer set, or None for open answers.
        sd: ``(C,)`` sample standard deviation of numeric answers (NaN under two
            answers), or None when answers are not on an ordinal scale.
        n_correct: ``(C,)`` correct valid answers per cell, or None without ground truth.
        n_correct_all, n_rows: ``(C,)`` correct rows and all rows (unparsed replies
            included) per cell; None when only valid answers were given.
    """

    instrument: str
    conditioning: Conditioning
    unit_id: IntArray
    counts: IntArray
    n_options: int | None
    sd: FloatArray | None = None
    n_correct: FloatArray | None = None
    n_correct_all: FloatArray | None = None
    n_rows: FloatArray | None = None

    @property
    def key(self) -> tuple[str, Conditioning]:
        """``(instrument, conditioning)``: what identifies the set within a run."""
        return self.instrument, self.conditioning

    @property
    def label(self) -> str:
        """``MFQ (persona)``, ``MFQ (self)``, ``MMLU``: the set's name in messages and tables."""
        if self.conditioning == "persona":
            return f"{self.instrument} (persona)"
        return f"{self.instrument} (self)" if self.sd is not None else self.instrument


def likert_cells(
    item_id: ArrayLike,
    rating: ArrayLike,
    *,
    persona_id: ArrayLike | None = None,
    instrument: str,
    n_options: int,
) -> CellSet:
    """Cells of Likert ratings: (persona, item) with ``persona_id``, else item (self mode).

    Args:
        item_id: ``(N,)`` item of each rating.
        rating: ``(N,)`` valid ratings only (leave unparsed ones, e.g. -1, out).
        persona_id: ``(N,)`` persona of each rating; None for a self-mode run.
        instrument: Label of the instrument.
        n_options: Points on the scale (6 for MFQ-30's 0-5, 5 for BFI-44's 1-5).

    Raises:
        ValueError: Mismatched lengths, non-integer ids, non-finite ratings, no rating.
    """
    items = _check_ids("item_id", item_id)
    n = len(items)
    values = _check_1d("rating", rating, n).astype(np.float64)
    if n == 0:
        raise ValueError("rating must not be empty")
    if not np.all(np.isfinite(values)):
        raise ValueError("rating must hold only finite values (leave invalid ratings out)")
    k = _check_options(n_options)
    if persona_id is None:
        personas = np.zeros(n, dtype=np.int64)
        conditioning: Conditioning = "none"
    else:
        personas = _check_ids("persona_id", persona_id, n)
        conditioning = "persona"
    span = int(items.max()) - int(items.min()) + 1
    key = (personas - personas.min()) * span + (items - items.min())
    cells, inverse = np.unique(key, return_inverse=True)
    _, _, counts = answer_counts(inverse, values)
    n_per = counts.sum(axis=1).astype(np.float64)
    total = np.bincount(inverse, values, minlength=len(cells))
    mean = total / n_per
    ss = np.bincount(inverse, (values - mean[inverse]) ** 2, minlength=len(cells))
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.where(n_per >= 2, np.sqrt(ss / (n_per - 1)), np.nan)
    # Units: the persona of a persona cell; the item of a self-mode cell (its own id).
    unit = cells // span + personas.min() if conditioning == "persona" else cells + items.min()
    return CellSet(instrument, conditioning, unit.astype(np.int64), counts, k, sd=sd)


def answer_cells(
    cell_id: ArrayLike,
    answer: ArrayLike,
    *,
    correct: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    instrument: str,
    n_options: int | None,
) -> CellSet:
    """Cells of categorical answers without a persona (capability items, lookup tables).

    Args:
        cell_id: ``(N,)`` item (or table) of each answer.
        answer: ``(N,)`` answers (text or numbers); only valid ones unless ``valid`` is given.
        correct: ``(N,)`` 1 / 0 correctness of each answer, or None.
        valid: ``(N,)`` True where the answer parsed: the rows then include unparsed
            replies, which count for ``accuracy_all`` (as wrong unless marked correct)
            and nowhere else.
        instrument: Label of the task.
        n_options: Size of the answer set (4 for A-D), or None for open answers.

    Raises:
        ValueError: Mismatched lengths, non-integer ids, correctness other than 0/1.
    """
    ids = _check_ids("cell_id", cell_id)
    n = len(ids)
    answers = _check_1d("answer", answer, n)
    if n == 0:
        raise ValueError("answer must not be empty")
    k = _check_options(n_options)
    ok = np.ones(n, dtype=bool) if valid is None else _check_1d("valid", valid, n).astype(bool)
    if not ok.any():
        raise ValueError("valid must mark at least one answer")
    cells, inverse = np.unique(ids, return_inverse=True)
    _, _, found = answer_counts(inverse[ok], answers[ok])
    # answer_counts numbers only the cells it sees: place them among every cell.
    counts = np.zeros((len(cells), found.shape[1]), dtype=np.int64)
    counts[np.unique(inverse[ok])] = found
    n_correct: FloatArray | None = None
    n_correct_all: FloatArray | None = None
    n_rows: FloatArray | None = None
    if correct is not None:
        corr = _check_1d("correct", correct, n).astype(np.float64)
        if not np.all((corr == 0) | (corr == 1)):
            raise ValueError("correct must hold only 0 and 1")
        n_correct = np.bincount(inverse[ok], corr[ok], minlength=len(cells)).astype(np.float64)
        if valid is not None:
            n_correct_all = np.bincount(inverse, corr, minlength=len(cells)).astype(np.float64)
            n_rows = np.bincount(inverse, minlength=len(cells)).astype(np.float64)
    return CellSet(
        instrument,
        "none",
        cells.astype(np.int64),
        counts,
        k,
        n_correct=n_correct,
        n_correct_all=n_correct_all,
        n_rows=n_rows,
    )


# --- summaries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellSetSummary:
    """Point values of one cell set (see the module docstring); NaN where undefined."""

    instrument: str
    conditioning: Conditioning
    accuracy: float
    R: float
    non_unanimity_rate: float
    mean_gini: float
    mean_gini_norm: float
    n_cells: int
    mean_reps: float
    accuracy_all: float = math.nan

    def value(self, measure: str) -> float:
        """The value of ``measure`` (one of :data:`MEASURES` or ``accuracy``)."""
        if measure not in (*MEASURES, "accuracy"):
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
        return float(getattr(self, measure))


def _cell_sums(cells: CellSet) -> FloatArray:
    """``(C, 9)`` per-cell contributions to the sums the measures are ratios of."""
    n = cells.counts.sum(axis=1)
    multi = (n >= 2).astype(np.float64)
    out = np.zeros((len(n), _SUMS), dtype=np.float64)
    out[:, _N] = multi
    ok = multi > 0
    out[ok, _NU] = non_unanimity(cells.counts[ok])
    out[ok, _GINI] = gini_impurity(cells.counts[ok])
    out[:, _REPS] = n * multi
    if cells.sd is not None:
        out[ok, _SD] = cells.sd[ok]
    if cells.n_correct is not None:
        out[:, _CORRECT] = cells.n_correct
    out[:, _ANSWERS] = n
    if cells.n_correct_all is not None and cells.n_rows is not None:
        out[:, _CORRECT_ALL] = cells.n_correct_all
        out[:, _ROWS] = cells.n_rows
    return out


def _measures(sums: FloatArray, cells: CellSet) -> dict[str, FloatArray]:
    """Every measure from summed contributions ``(..., 9)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = sums[..., _N]
        gini = sums[..., _GINI] / n
        nan = np.full(n.shape, np.nan)
        k = cells.n_options
        return {
            "non_unanimity_rate": sums[..., _NU] / n,
            "mean_gini": gini,
            "mean_gini_norm": gini / (1 - 1 / k) if k else nan,
            "R": n / sums[..., _SD] if cells.sd is not None else nan,
            "accuracy": (
                sums[..., _CORRECT] / sums[..., _ANSWERS] if cells.n_correct is not None else nan
            ),
            "mean_reps": sums[..., _REPS] / n,
            "accuracy_all": (
                sums[..., _CORRECT_ALL] / sums[..., _ROWS] if cells.n_rows is not None else nan
            ),
        }


def summarize_cells(cells: CellSet) -> CellSetSummary:
    """Point values of a cell set over its cells with at least two answers."""
    sums = _cell_sums(cells)
    m = _measures(sums.sum(axis=0), cells)
    return CellSetSummary(
        instrument=cells.instrument,
        conditioning=cells.conditioning,
        accuracy=float(m["accuracy"]),
        R=float(m["R"]),
        non_unanimity_rate=float(m["non_unanimity_rate"]),
        mean_gini=float(m["mean_gini"]),
        mean_gini_norm=float(m["mean_gini_norm"]),
        n_cells=int(sums[:, _N].sum()),
        mean_reps=float(m["mean_reps"]),
        accuracy_all=float(m["accuracy_all"]),
    )


# --- comparison with the base ---------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change vs base with its percentile interval."""

    point: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.lo > 0 or self.hi < 0)


@dataclass(frozen=True)
class SetComparison:
    """One cell set of a variant against the same set of the base.

    Attributes:
        base, variant: Point values of the two sets.
        relative: Per measure of :data:`MEASURES`, ``(variant - base) / base`` (NaN when
            the base value is 0 or undefined).
        accuracy_delta: ``variant - base`` accuracy (valid answers), or None without
            ground truth; ``accuracy_all_delta`` likewise over every row.
    """

    base: CellSetSummary
    variant: CellSetSummary
    relative: Mapping[str, Change]
    accuracy_delta: Change | None
    variant_label: str = ""
    accuracy_all_delta: Change | None = None


@dataclass(frozen=True)
class PersonaContrast:
    """Mean change of the persona sets minus that of the non-persona sets.

    Attributes:
        measure: The instability measure compared.
        scale: ``relative`` (``(v - b) / b``) or ``absolute`` (``v - b``).
        persona_sets, other_sets: Labels of the sets averaged on each side.
        excluded: Sets left out because their change is undefined (a relative change
            from a base of 0, or a measure the set lacks, such as GSM8K's normalised Gini).
        persona_change, other_change: The two means, with intervals.
        difference: ``persona_change - other_change``: > 0 means the persona
            instability rose more.
    """

    measure: str
    scale: str
    persona_sets: tuple[str, ...]
    other_sets: tuple[str, ...]
    excluded: tuple[str, ...]
    persona_change: Change
    other_change: Change
    difference: Change


@dataclass(frozen=True)
class VariantComparison:
    """A variant's sets against the base, and the persona contrast (None when a side has
    no set with a defined relative change)."""

    variant: str
    sets: tuple[SetComparison, ...]
    contrast: PersonaContrast | None

    @property
    def accuracy_drops(self) -> tuple[str, ...]:
        """Labels of the sets whose accuracy fell significantly (interval below 0): over
        every row where the rows were given (an unparsed reply is a failure too), else
        over valid answers."""
        drops = []
        for s in self.sets:
            delta = s.accuracy_all_delta or s.accuracy_delta
            if delta is not None and delta.hi < 0:
                drops.append(s.variant_label)
        return tuple(drops)


@dataclass(frozen=True)
class FamilyComparison:
    """A family's instrument comparison (see :func:`compare_instruments`)."""

    family: str
    base_variant: str
    base: tuple[CellSetSummary, ...]
    variants: tuple[VariantComparison, ...]
    measure: str
    scale: str
    n_boot: int
    confidence: float
    resampling: str = field(
        default="units (personas for persona sets, items otherwise), shared within the family"
    )

    def rows(self) -> list[dict[str, Any]]:
        """Long rows, one per (variant, set), base first: the reference's columns, then
        ``<measure>_change`` (relative) with ``_lo`` / ``_hi`` and ``accuracy_delta``."""
        out: list[dict[str, Any]] = []
        for summary in self.base:
            out.append(_row(self.family, self.base_variant, summary, None))
        for var in self.variants:
            for cmp in var.sets:
                out.append(_row(self.family, var.variant, cmp.variant, cmp))
        return out

    def contrasts(self) -> list[dict[str, Any]]:
        """One flat record per variant with a contrast."""
        out: list[dict[str, Any]] = []
        for var in self.variants:
            c = var.contrast
            if c is None:
                continue
            rec: dict[str, Any] = {"family": self.family, "variant": var.variant}
            rec |= {"measure": c.measure, "scale": c.scale}
            rec |= {"persona_sets": list(c.persona_sets)}
            rec |= {"other_sets": list(c.other_sets), "excluded": list(c.excluded)}
            for name in ("persona_change", "other_change", "difference"):
                est: Change = getattr(c, name)
                rec |= {name: est.point, f"{name}_lo": est.lo, f"{name}_hi": est.hi}
            rec["significant"] = c.difference.significant
            rec["accuracy_drops"] = list(var.accuracy_drops)
            rec["confidence"] = self.confidence
            out.append(rec)
        return out


ROW_COLUMNS = (
    "family",
    "variant",
    "instrument",
    "conditioning",
    "accuracy",
    "R",
    "non_unanimity_rate",
    "mean_gini",
    "mean_gini_norm",
    "n_cells",
    "mean_reps",
    *(f"{m}_change{s}" for m in MEASURES for s in ("", "_lo", "_hi")),
    "accuracy_delta",
    "accuracy_delta_lo",
    "accuracy_delta_hi",
    "accuracy_all",
    "accuracy_all_delta",
    "accuracy_all_delta_lo",
    "accuracy_all_delta_hi",
)
"""Columns of :meth:`FamilyComparison.rows`."""


def _row(family: str, variant: str, s: CellSetSummary, cmp: SetComparison | None) -> dict[str, Any]:
    row: dict[str, Any] = {"family": family, "variant": variant}
    row |= {c: getattr(s, c) for c in ROW_COLUMNS[2:11]}
    for m in MEASURES:
        ch = cmp.relative[m] if cmp is not None else None
        for suffix, attr in (("", "point"), ("_lo", "lo"), ("_hi", "hi")):
            row[f"{m}_change{suffix}"] = getattr(ch, attr) if ch is not None else math.nan
    row["accuracy_all"] = s.accuracy_all
    for name in ("accuracy_delta", "accuracy_all_delta"):
        acc = getattr(cmp, name) if cmp is not None else None
        for suffix, attr in (("", "point"), ("_lo", "lo"), ("_hi", "hi")):
            row[f"{name}{suffix}"] = getattr(acc, attr) if acc is not None else math.nan
    return row


def _unit_space(cells: CellSet) -> str:
    return "persona" if cells.conditioning == "persona" else f"cell:{cells.instrument}"


def _interval(draws: FloatArray, point: float, confidence: float) -> Change:
    d = draws[~np.isnan(draws)]
    if not math.isfinite(point) or len(d) == 0:
        return Change(point, math.nan, math.nan)
    tail = (1 - confidence) / 2
    lo = float(np.quantile(d, tail, method="lower"))
    hi = float(np.quantile(d, 1 - tail, method="higher"))
    return Change(point, lo, hi)


def _relative(variant: FloatArray | float, base: FloatArray | float) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(variant, dtype=np.float64) / np.asarray(base, dtype=np.float64) - 1


def _check_runs(
    runs: Mapping[str, Sequence[CellSet]], base: str
) -> dict[str, dict[tuple[str, Conditioning], CellSet]]:
    if base not in runs:
        raise ValueError(f"runs has no base variant {base!r} (variants: {', '.join(runs)})")
    if len(runs) < 2:
        raise ValueError("runs must hold the base and at least one variant")
    keyed: dict[str, dict[tuple[str, Conditioning], CellSet]] = {}
    for variant, sets in runs.items():
        by_key: dict[tuple[str, Conditioning], CellSet] = {}
        for cells in sets:
            if not isinstance(cells, CellSet):
                raise ValueError(f"runs[{variant!r}] must hold CellSet values")
            if cells.key in by_key:
                raise ValueError(f"runs[{variant!r}] holds two {cells.label} sets")
            by_key[cells.key] = cells
        keyed[variant] = by_key
    for variant, by_key in keyed.items():
        for key, cells in by_key.items():
            ref = keyed[base].get(key)
            if ref is None:
                raise ValueError(f"runs[{variant!r}]: {cells.label} has no set in the base")
            if ref.n_options != cells.n_options or (ref.sd is None) != (cells.sd is None):
                raise ValueError(
                    f"runs[{variant!r}]: {cells.label} is not on the base's answer set "
                    f"(k = {cells.n_options} vs {ref.n_options})"
                )
    return keyed


def compare_instruments(
    runs: Mapping[str, Sequence[CellSet]],
    *,
    family: str = "",
    base: str = "base",
    measure: str = "non_unanimity_rate",
    scale: str = "relative",
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: RngLike = None,
) -> FamilyComparison:
    """Compare each variant's instability with the base's, per cell set and across them.

    Args:
        runs: Variant name -> that run's cell sets (at most one per instrument and
            conditioning); every set of a variant must also be in the base.
        family: Label of the family (carried into the rows).
        base: Name of the base variant in ``runs``.
        measure: Instrument-free measure of the persona contrast, one of
            :data:`CONTRAST_MEASURES`.
        scale: How the contrast measures change, one of :data:`SCALES`.
        n_boot: Bootstrap draws (see the module docstring), >= 2.
        confidence: Level of the percentile intervals, in (0, 1).
        rng: Seed or generator.

    Raises:
        ValueError: A missing base, a set the base lacks, a bad option.
    """
    if measure not in CONTRAST_MEASURES:
        raise ValueError(f"measure must be one of {', '.join(CONTRAST_MEASURES)}, got {measure!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    gen = _generator(rng)
    keyed = _check_runs(runs, base)
    variants = [v for v in runs if v != base]

    # Unit spaces and each set's per-unit sums.
    spaces: dict[str, IntArray] = {}
    for by_key in keyed.values():
        for cells in by_key.values():
            name = _unit_space(cells)
            spaces[name] = np.union1d(spaces.get(name, np.zeros(0, np.int64)), cells.unit_id)
    unit_sums: dict[tuple[str, tuple[str, Conditioning]], FloatArray] = {}
    for variant, by_key in keyed.items():
        for key, cells in by_key.items():
            ids = spaces[_unit_space(cells)]
            pos = np.searchsorted(ids, cells.unit_id)
            sums = np.zeros((len(ids), _SUMS), dtype=np.float64)
            np.add.at(sums, pos, _cell_sums(cells))
            unit_sums[(variant, key)] = sums

    # Draws: multinomial unit counts per space, shared by every set in it.
    boot: dict[tuple[str, tuple[str, Conditioning]], dict[str, list[FloatArray]]] = {
        k: {} for k in unit_sums
    }
    widest = max(len(ids) for ids in spaces.values())
    for size in draw_chunks(n_boot, widest):
        weights = {
            name: gen.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=size).astype(
                np.float64
            )
            for name, ids in spaces.items()
        }
        for (variant, key), sums in unit_sums.items():
            cells = keyed[variant][key]
            for m, values in _measures(weights[_unit_space(cells)] @ sums, cells).items():
                boot[(variant, key)].setdefault(m, []).append(values)
    draws = {k: {m: np.concatenate(v) for m, v in d.items()} for k, d in boot.items()}

    base_summaries = {key: summarize_cells(cells) for key, cells in keyed[base].items()}
    out: list[VariantComparison] = []
    for variant in variants:
        comparisons: list[SetComparison] = []
        rel_draws: dict[tuple[str, Conditioning], FloatArray] = {}
        rel_points: dict[tuple[str, Conditioning], float] = {}
        for key, cells in keyed[variant].items():
            b, v = base_summaries[key], summarize_cells(cells)
            db, dv = draws[(base, key)], draws[(variant, key)]
            relative = {}
            for m in MEASURES:
                point = float(_relative(v.value(m), b.value(m)))
                rel = _relative(dv[m], db[m])
                relative[m] = _interval(rel, point, confidence)
                if m == measure:
                    if scale == "absolute":
                        point = v.value(m) - b.value(m)
                        with np.errstate(invalid="ignore"):
                            rel = dv[m] - db[m]
                    if math.isfinite(point):
                        rel_draws[key], rel_points[key] = rel, point
            acc = None
            if cells.n_correct is not None:
                acc = _interval(
                    dv["accuracy"] - db["accuracy"], v.accuracy - b.accuracy, confidence
                )
            acc_all = None
            if cells.n_rows is not None and keyed[base][key].n_rows is not None:
                acc_all = _interval(
                    dv["accuracy_all"] - db["accuracy_all"],
                    v.accuracy_all - b.accuracy_all,
                    confidence,
                )
            comparisons.append(SetComparison(b, v, relative, acc, cells.label, acc_all))
        out.append(
            VariantComparison(
                variant,
                tuple(comparisons),
                _contrast(keyed[variant], rel_points, rel_draws, measure, scale, confidence),
            )
        )
    return FamilyComparison(
        family=family,
        base_variant=base,
        base=tuple(base_summaries.values()),
        variants=tuple(out),
        measure=measure,
        scale=scale,
        n_boot=int(n_boot),
        confidence=float(confidence),
    )


def _contrast(
    sets: Mapping[tuple[str, Conditioning], CellSet],
    points: Mapping[tuple[str, Conditioning], float],
    draws: Mapping[tuple[str, Conditioning], FloatArray],
    measure: str,
    scale: str,
    confidence: float,
) -> PersonaContrast | None:
    persona = [k for k in sets if k[1] == "persona" and k in points]
    other = [k for k in sets if k[1] == "none" and k in points]
    excluded = tuple(sets[k].label for k in sets if k not in points)
    if not persona or not other:
        return None

    def side(keys: list[tuple[str, Conditioning]]) -> tuple[float, FloatArray]:
        with np.errstate(invalid="ignore"):
            return (
                float(np.mean([points[k] for k in keys])),
                np.mean(np.stack([draws[k] for k in keys]), axis=0),
            )

    p_point, p_draws = side(persona)
    o_point, o_draws = side(other)
    with np.errstate(invalid="ignore"):
        diff_draws = p_draws - o_draws
    return PersonaContrast(
        measure=measure,
        scale=scale,
        persona_sets=tuple(sets[k].label for k in persona),
        other_sets=tuple(sets[k].label for k in other),
        excluded=excluded,
        persona_change=_interval(p_draws, p_point, confidence),
        other_change=_interval(o_draws, o_point, confidence),
        difference=_interval(diff_draws, p_point - o_point, confidence),
    )


__all__ = [
    "CONTRAST_MEASURES",
    "MEASURES",
    "ROW_COLUMNS",
    "SCALES",
    "CellSet",
    "CellSetSummary",
    "Change",
    "FamilyComparison",
    "PersonaContrast",
    "SetComparison",
    "VariantComparison",
    "answer_cells",
    "compare_instruments",
    "likert_cells",
    "summarize_cells",
]
