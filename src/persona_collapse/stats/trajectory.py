"""Metrics along training checkpoints, on the personas complete at every step.

A fine-tune's checkpoints (step 0 = the untuned base, the last step = the published
variant) are measured like any run, but partially collected steps leave different
personas complete at each step, and S over different persona sets is not comparable.
:func:`analyze_trajectory` therefore:

* finds the *common persona set*: the personas complete at every step, where complete
  means a valid rating for every (scored item, repetition) slot of the step's plan
  (the planned repetitions of a run store, else the usual count per cell of the file);
  at least :data:`MIN_COMMON_PERSONAS` are required;
* computes every registered statistic (S, R, σ̄, entropy, top-1 share, endpoint mass...,
  with bootstrap SEs) per step on that set's valid ratings only;
* checks the endpoints (first and final step) against their stand-alone metrics (as
  ``pcollapse metrics`` computes them: every persona with a valid rating on every item)
  and reports the shift the common set causes;
* tests for non-monotone S (a rise, then a fall as ratings pile up at the ceiling):
  the step of the maximum, the rise from the first step and the drop to the final step,
  each with a seeded paired-bootstrap confidence interval; it is declared only when
  both intervals exclude 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from persona_collapse.core.errors import UserError
from persona_collapse.core.frames import INVALID_RATING
from persona_collapse.stats.metrics import (
    CellRatings,
    RunMetrics,
    analyze_ratings,
    cell_moments,
    cell_ratings,
    persona_bootstrap_replicates,
    rerun_bootstrap_replicates,
)
from persona_collapse.stats.registry import estimates_to_dict
from persona_collapse.stats.sources import Bootstrap, LoadedRun, run_metrics, scored_item_ids

logger = logging.getLogger(__name__)

MIN_COMMON_PERSONAS = 30
"""Fewest personas complete at every step for a trajectory (the reference's threshold)."""

HEADLINE_FIELDS: tuple[str, ...] = (
    "S",
    "R",
    "sigma_bar",
    "entropy_bits",
    "top1_share",
    "top1_rating",
    "endpoint_mass",
)
"""Statistics shown first and compared at the endpoints."""


class TooFewCommonPersonasError(UserError, ValueError):
    """Fewer personas than required are complete at every step."""


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommonPersonas:
    """The personas complete at every step of a trajectory.

    Attributes:
        persona_ids: Ids of the personas complete at every step, ascending.
        present: Step -> personas with at least one row.
        complete: Step -> personas complete at that step alone.
        slots: Step -> valid (item, repetition) slots a persona needs to be complete.
    """

    persona_ids: tuple[int, ...]
    present: Mapping[int, int]
    complete: Mapping[int, int]
    slots: Mapping[int, int]

    def __len__(self) -> int:
        return len(self.persona_ids)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON)."""
        return {
            "personas": len(self.persona_ids),
            "persona_ids": list(self.persona_ids),
            "present": {str(k): v for k, v in self.present.items()},
            "complete": {str(k): v for k, v in self.complete.items()},
            "slots": {str(k): v for k, v in self.slots.items()},
        }


@dataclass(frozen=True)
class TrajectoryPoint:
    """The metrics of one checkpoint on the common persona set.

    Attributes:
        step: Training step.
        name: Run name; ``source``: where it was read from.
        fraction_of_training: ``round(step / final_step, 4)``; None when no final step is known.
        role: ``"first"``, ``"final"`` or ``"intermediate"``.
        metrics: Every registered statistic on the common set's valid ratings.
    """

    step: int
    name: str
    source: str
    fraction_of_training: float | None
    role: Literal["first", "final", "intermediate"]
    metrics: RunMetrics

    def to_dict(self) -> dict[str, Any]:
        """Flat plain-data form: step, personas, every statistic and its ``_se``."""
        out: dict[str, Any] = {"step": self.step}
        if self.fraction_of_training is not None:
            out["fraction_of_training"] = self.fraction_of_training
        out["personas"] = self.metrics.personas
        out.update(estimates_to_dict(self.metrics.estimates))
        out.update(
            role=self.role,
            valid_ratings=self.metrics.valid_ratings,
            name=self.name,
            source=self.source,
        )
        return out


@dataclass(frozen=True)
class EndpointCheck:
    """An endpoint's stand-alone metrics (its own complete personas) beside the common set's.

    Attributes:
        step: The endpoint's step; ``role``: ``"first"`` or ``"final"``.
        standalone: The run's own metrics (personas with a valid rating on every item).
        common: Metrics on the trajectory's common persona set.
    """

    step: int
    role: Literal["first", "final"]
    standalone: RunMetrics
    common: RunMetrics

    def shift(self, name: str) -> float:
        """Common-set value minus stand-alone value of statistic ``name``."""
        return self.common.estimate(name).value - self.standalone.estimate(name).value

    def shift_in_se(self, name: str) -> float:
        """:meth:`shift` in units of the stand-alone SE (NaN when that SE is 0 or NaN)."""
        se = self.standalone.estimate(name).se
        return self.shift(name) / se if se > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: the stand-alone values and the shifts of the headline statistics."""
        standalone = {
            "personas": self.standalone.personas,
            **estimates_to_dict(self.standalone.estimates),
            "valid_ratings": self.standalone.valid_ratings,
            "invalid_ratings": self.standalone.invalid_ratings,
        }
        return {
            "step": self.step,
            "role": self.role,
            "standalone": standalone,
            "shift": {n: self.shift(n) for n in HEADLINE_FIELDS if n in self.common.estimates},
            "shift_in_se": {
                n: self.shift_in_se(n) for n in HEADLINE_FIELDS if n in self.common.estimates
            },
        }


@dataclass(frozen=True)
class Interval:
    """A bootstrap estimate of a difference: value, SE and normal confidence interval."""

    value: float
    se: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies strictly on one side of 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float]:
        """Plain-data form."""
        return {"value": self.value, "se": self.se, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class NonMonotone:
    """Evidence on whether S rises and then falls along the trajectory.

    Attributes:
        peak_step: Step of the largest S.
        peak: S there; ``first``/``final``: S at the first and final steps.
        rise: S at the peak minus S at the first step (paired bootstrap).
        drop: S at the peak minus S at the final step (paired bootstrap).
        top1_share_peak, top1_share_final: Share of the most common rating at the peak
            and final steps (a rising share says ratings pile up at the ceiling).
        confidence: Level of the intervals.
        detected: The peak is an intermediate step and both ``rise`` and ``drop``
            are significantly positive.
    """

    peak_step: int
    first_step: int
    final_step: int
    peak: float
    first: float
    final: float
    rise: Interval
    drop: Interval
    top1_share_peak: float
    top1_share_final: float
    confidence: float
    detected: bool

    def statement(self) -> str:
        """One sentence stating the non-monotone S with its evidence ("" when not detected)."""
        if not self.detected:
            return ""
        level = round(100 * self.confidence)
        return (
            f"S is non-monotone: it rises from {self.first:.3f} at step {self.first_step} to "
            f"{self.peak:.3f} at step {self.peak_step}, then falls by {self.drop.value:.3f} "
            f"({level} % CI {self.drop.low:.3f} to {self.drop.high:.3f}) to {self.final:.3f} "
            f"at step {self.final_step}, while the top-1 rating share goes from "
            f"{self.top1_share_peak:.3f} to {self.top1_share_final:.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "detected": self.detected,
            "peak_step": self.peak_step,
            "peak_S": self.peak,
            "first_S": self.first,
            "final_S": self.final,
            "rise": self.rise.to_dict(),
            "drop": self.drop.to_dict(),
            "top1_share_peak": self.top1_share_peak,
            "top1_share_final": self.top1_share_final,
            "confidence": self.confidence,
            "statement": self.statement(),
        }


@dataclass(frozen=True)
class Trajectory:
    """Metrics along checkpoints on their common persona set (see the module docstring).

    Attributes:
        points: One per step, in step order.
        common: The common persona set and the per-step counts.
        endpoints: Checks of the first and final step against their stand-alone metrics.
        non_monotone: The test for a rise then fall of S (None with fewer than 3 steps).
        final_step: Step of the published variant (fractions of training refer to it).
        seed, n_persona_boot, n_rerun_boot: Bootstrap settings.
    """

    points: tuple[TrajectoryPoint, ...]
    common: CommonPersonas
    endpoints: tuple[EndpointCheck, ...]
    non_monotone: NonMonotone | None
    final_step: int | None
    seed: int
    n_persona_boot: int
    n_rerun_boot: int

    @property
    def steps(self) -> tuple[int, ...]:
        """The steps, ascending."""
        return tuple(p.step for p in self.points)

    def to_records(self) -> list[dict[str, Any]]:
        """One flat record per step (the ``pcollapse trajectory`` JSON), endpoint checks and
        the non-monotone test attached to their steps."""
        checks = {e.step: e for e in self.endpoints}
        records = []
        for point in self.points:
            rec = point.to_dict()
            # How many personas the step has and has complete on its own (the common
            # set is the intersection of the latter).
            rec["personas_present"] = self.common.present[point.step]
            rec["personas_complete"] = self.common.complete[point.step]
            if point.step in checks:
                check = checks[point.step].to_dict()
                rec["standalone"] = check["standalone"]
                rec["shift_from_standalone"] = check["shift"]
                rec["shift_in_standalone_se"] = check["shift_in_se"]
            if point.role == "final" and self.non_monotone is not None:
                rec["non_monotone_S"] = self.non_monotone.to_dict()
            records.append(rec)
        return records


# --- the common persona set -------------------------------------------------------------------


def _scored_rows(run: LoadedRun) -> np.ndarray:
    scored = np.fromiter(scored_item_ids(run.instrument), dtype=np.int64)
    return np.isin(run.columns.item_id, scored)


def _valid(ratings: np.ndarray) -> np.ndarray:
    valid = ratings != INVALID_RATING
    if ratings.dtype.kind == "f":
        valid &= np.isfinite(ratings)
    return np.asarray(valid)


def _planned_slots(run: LoadedRun) -> int:
    """Valid (item, repetition) slots a persona of ``run`` needs: items x repetitions."""
    scored = scored_item_ids(run.instrument)
    n_items = len([i for i in run.instrument.active_items if i.id in scored]) or len(scored)
    if run.planned_repetitions is not None:
        return n_items * run.planned_repetitions
    # A CSV file does not say how many repetitions were planned: the usual count of
    # distinct repetitions per cell (cells cut short by a stopped collection are rarer).
    c = run.columns
    keep = _scored_rows(run)
    cells = np.unique(np.stack([c.persona_id[keep], c.item_id[keep], c.repetition[keep]]), axis=1)
    _, per_cell = np.unique(cells[:2], axis=1, return_counts=True)
    reps = int(np.bincount(per_cell).argmax()) if len(per_cell) else 0
    return n_items * reps


def complete_personas(run: LoadedRun, slots: int | None = None) -> tuple[np.ndarray, int]:
    """Personas of ``run`` with a valid rating in every planned slot, and that slot count.

    Args:
        run: A sampled persona run.
        slots: Valid (item, repetition) slots required (default: the run's plan).
    """
    need = _planned_slots(run) if slots is None else slots
    c = run.columns
    keep = _scored_rows(run) & _valid(c.rating)
    pairs = np.unique(np.stack([c.persona_id[keep], c.item_id[keep], c.repetition[keep]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    return ids[counts >= need].astype(np.int64), need


def common_complete_personas(
    runs: Mapping[int, LoadedRun], *, min_personas: int = MIN_COMMON_PERSONAS
) -> CommonPersonas:
    """The personas complete at every step (see :class:`CommonPersonas`).

    Raises:
        TooFewCommonPersonasError: fewer than ``min_personas`` are complete at every step
            (the message gives the per-step counts).
    """
    common: np.ndarray | None = None
    present: dict[int, int] = {}
    complete: dict[int, int] = {}
    slots: dict[int, int] = {}
    for step in sorted(runs):
        run = runs[step]
        ids, need = complete_personas(run)
        present[step] = len(np.unique(run.columns.persona_id))
        complete[step] = len(ids)
        slots[step] = need
        common = ids if common is None else np.intersect1d(common, ids)
    found = CommonPersonas(
        persona_ids=tuple(int(p) for p in ([] if common is None else common)),
        present=present,
        complete=complete,
        slots=slots,
    )
    if len(found) < min_personas:
        counts = ", ".join(f"step {s}: {n}" for s, n in complete.items())
        raise TooFewCommonPersonasError(
            f"only {len(found)} personas are complete at every step; a trajectory needs at "
            f"least {min_personas} (complete per step: {counts})"
        )
    return found


# --- metrics ----------------------------------------------------------------------------------


def _common_rows(run: LoadedRun, persona_ids: np.ndarray) -> np.ndarray:
    c = run.columns
    return np.asarray(_scored_rows(run) & _valid(c.rating) & np.isin(c.persona_id, persona_ids))


def common_set_metrics(
    run: LoadedRun,
    persona_ids: Sequence[int],
    *,
    n_persona_boot: int,
    n_rerun_boot: int,
    seed: int,
) -> RunMetrics:
    """Every registered statistic of ``run`` on the valid ratings of ``persona_ids`` only."""
    ids = np.asarray(persona_ids, dtype=np.int64)
    c = run.columns
    keep = _common_rows(run, ids)
    return analyze_ratings(
        c.persona_id[keep],
        c.item_id[keep],
        c.rating[keep],
        foundations=run.foundations,
        n_persona_boot=n_persona_boot,
        n_rerun_boot=n_rerun_boot,
        rng=seed,
        scale=run.instrument.scale,
    )


def _common_cells(run: LoadedRun, persona_ids: np.ndarray) -> CellRatings:
    c = run.columns
    keep = _common_rows(run, persona_ids)
    return cell_ratings(c.persona_id[keep], c.item_id[keep], c.rating[keep])


def _interval(persona: np.ndarray, rerun: np.ndarray, value: float, z: float) -> Interval:
    var = float(np.var(persona, ddof=1)) if len(persona) > 1 else 0.0
    if len(rerun) > 1:
        var += float(np.var(rerun, ddof=1))
    se = math.sqrt(var)
    return Interval(value=value, se=se, low=value - z * se, high=value + z * se)


def non_monotone_s(
    cells: Mapping[int, CellRatings],
    top1_share: Mapping[int, float],
    *,
    n_persona_boot: int = 2000,
    n_rerun_boot: int = 400,
    rng: np.random.Generator | int = 0,
    confidence: float = 0.95,
) -> NonMonotone:
    """Test for a rise then fall of S along steps measured on one persona set.

    The persona bootstrap resamples the same personas at every step (paired); the
    rerun bootstrap resamples each step's cells independently; the two SEs of a
    difference combine in quadrature and the interval is normal, ``value ± z·SE``.
    The peak is the step of the largest point S; its choice from the data is not
    corrected for, so the rise and drop must both be significant before the pattern
    is declared (a chance peak among flat steps rarely passes both).

    Args:
        cells: Step -> cells of the common personas (same persona ids, in the same
            order, at every step), at least 3 steps.
        top1_share: Step -> share of the most common rating (reported as evidence).
        n_persona_boot, n_rerun_boot: Bootstrap draws (``n_rerun_boot`` may be 0).
        rng: Seed or Generator of the draws.
        confidence: Level of the intervals, in (0, 1).

    Raises:
        ValueError: fewer than 3 steps, different persona sets, or a bad level.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    steps = sorted(cells)
    if len(steps) < 3:
        raise ValueError(f"a rise then fall needs at least 3 steps, got {len(steps)}")
    first_ids = cells[steps[0]].persona_ids
    for s in steps[1:]:
        if not np.array_equal(cells[s].persona_ids, first_ids):
            raise ValueError(f"step {s} has other personas than step {steps[0]}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    moments = [cell_moments(cells[s]) for s in steps]
    s_point = np.array([float(np.mean(np.std(mu, axis=0, ddof=1))) for mu, _ in moments])
    widths = [mu.shape[1] for mu, _ in moments]
    mu_all = np.concatenate([mu for mu, _ in moments], axis=1)
    sigma_all = np.concatenate([sg for _, sg in moments], axis=1)
    sd, _ = persona_bootstrap_replicates(mu_all, sigma_all, n_boot=n_persona_boot, rng=generator)
    bounds = np.cumsum([0, *widths])
    s_persona = np.stack(
        [sd[:, bounds[k] : bounds[k + 1]].mean(axis=1) for k in range(len(steps))], axis=1
    )
    if n_rerun_boot > 0:
        s_rerun = np.stack(
            [
                rerun_bootstrap_replicates(cells[s], n_boot=n_rerun_boot, rng=generator)[0].mean(
                    axis=1
                )
                for s in steps
            ],
            axis=1,
        )
    else:
        s_rerun = np.zeros((0, len(steps)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    peak = int(np.argmax(s_point))
    last = len(steps) - 1

    def diff(a: int, b: int) -> Interval:
        return _interval(
            s_persona[:, a] - s_persona[:, b],
            s_rerun[:, a] - s_rerun[:, b],
            float(s_point[a] - s_point[b]),
            z,
        )

    rise, drop = diff(peak, 0), diff(peak, last)
    detected = 0 < peak < last and rise.low > 0 and drop.low > 0
    return NonMonotone(
        peak_step=steps[peak],
        first_step=steps[0],
        final_step=steps[last],
        peak=float(s_point[peak]),
        first=float(s_point[0]),
        final=float(s_point[last]),
        rise=rise,
        drop=drop,
        top1_share_peak=float(top1_share.get(steps[peak], math.nan)),
        top1_share_final=float(top1_share.get(steps[last], math.nan)),
        confidence=confidence,
        detected=bool(detected),
    )


def _check_runs(runs: Mapping[int, LoadedRun]) -> None:
    if len(runs) < 2:
        raise UserError(f"a trajectory needs at least 2 steps, got {len(runs)}")
    instruments = {r.instrument.name for r in runs.values()}
    if len(instruments) > 1:
        raise UserError(f"the steps use different instruments: {', '.join(sorted(instruments))}")
    for step, run in sorted(runs.items()):
        if step < 0:
            raise UserError(f"step {step} ({run.source}): steps must be >= 0")
        if run.kind != "persona":
            raise UserError(f"step {step} ({run.source}) is a self run; S and R need personas")
        if run.distributions is not None and len(run.distributions):
            raise UserError(
                f"step {step} ({run.source}) is an exact (distribution) run; "
                "a trajectory needs sampled ratings"
            )
        if not len(run.columns):
            raise UserError(f"step {step} ({run.source}) has no answers")


def analyze_trajectory(
    runs: Mapping[int, LoadedRun],
    *,
    final_step: int | None = None,
    min_personas: int = MIN_COMMON_PERSONAS,
    n_persona_boot: int = 2000,
    n_rerun_boot: int = 400,
    seed: int = 0,
    confidence: float = 0.95,
) -> Trajectory:
    """Metrics of every step on the common persona set, endpoint checks, non-monotone S.

    Args:
        runs: Step -> sampled persona run (step 0 = the base, the largest = the variant).
        final_step: Step of the published variant (default: the largest step);
            fractions of training are ``round(step / final_step, 4)``.
        min_personas: Fewest common personas accepted.
        n_persona_boot, n_rerun_boot: Bootstrap draws of every SE and interval (>= 1).
        seed: Seed of every bootstrap (each step's SEs use it, so the persona
            resamples are the same at every step).
        confidence: Level of the non-monotone intervals.

    Raises:
        ValueError: bad bootstrap settings.
        UserError: fewer than 2 steps, a self or exact run, mixed instruments.
        TooFewCommonPersonasError: fewer than ``min_personas`` common personas.
    """
    if n_persona_boot < 1 or n_rerun_boot < 1 or seed < 0:
        raise ValueError(
            "bootstrap draws must be >= 1 and the seed >= 0, got "
            f"{n_persona_boot}, {n_rerun_boot}, {seed}"
        )
    _check_runs(runs)
    steps = sorted(runs)
    final = steps[-1] if final_step is None else final_step
    if final <= 0:
        raise UserError(f"the final step must be > 0, got {final}")
    common = common_complete_personas(runs, min_personas=min_personas)
    ids = np.asarray(common.persona_ids, dtype=np.int64)
    boot = {"n_persona_boot": n_persona_boot, "n_rerun_boot": n_rerun_boot, "seed": seed}
    points = []
    for step in steps:
        run = runs[step]
        role: Literal["first", "final", "intermediate"] = (
            "first" if step == steps[0] else ("final" if step == steps[-1] else "intermediate")
        )
        metrics = common_set_metrics(run, common.persona_ids, **boot)
        points.append(
            TrajectoryPoint(
                step=step,
                name=run.name,
                source=run.source,
                fraction_of_training=round(step / final, 4),
                role=role,
                metrics=metrics,
            )
        )
    settings = Bootstrap(n_persona_boot=n_persona_boot, n_rerun_boot=n_rerun_boot, seed=seed)
    endpoints = tuple(
        EndpointCheck(
            step=p.step,
            role="first" if p.role == "first" else "final",
            standalone=run_metrics(runs[p.step], settings),
            common=p.metrics,
        )
        for p in (points[0], points[-1])
    )
    non_monotone = None
    if len(steps) >= 3:
        cells = {s: _common_cells(runs[s], ids) for s in steps}
        top1 = {p.step: p.metrics.estimate("top1_share").value for p in points}
        non_monotone = non_monotone_s(
            cells,
            top1,
            n_persona_boot=n_persona_boot,
            n_rerun_boot=n_rerun_boot,
            rng=np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]),
            confidence=confidence,
        )
    return Trajectory(
        points=tuple(points),
        common=common,
        endpoints=endpoints,
        non_monotone=non_monotone,
        final_step=final,
        seed=seed,
        n_persona_boot=n_persona_boot,
        n_rerun_boot=n_rerun_boot,
    )
