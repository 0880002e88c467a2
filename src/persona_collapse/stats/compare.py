"""Compare fine-tuned variants of one model family with their base model.

For a registered statistic ``X`` (``S``, ``R``, ``sigma_bar``, ...) the relative
change of a variant is ``dX = (X - X_base) / X_base`` (the plain difference
``X - X_base`` for a statistic whose ``test_scale`` is ``difference``). With a
*control* variant (e.g. fine-tuned on secure code) and a *treatment* variant (e.g.
on insecure code), the
misalignment-specific excess is ``dX_treatment - dX_control``: the part of the
change that the fine-tuning alone does not explain. Family results are averaged
with :func:`average_changes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# The S band lives in core (configuration defaults use it); re-exported here, where it
# has always been importable from.
from persona_collapse.core.band import DEFAULT_S_BAND as DEFAULT_S_BAND
from persona_collapse.core.band import BandCheck as BandCheck
from persona_collapse.core.band import check_band as check_band
from persona_collapse.core.band import in_band as in_band
from persona_collapse.stats.registry import statistic_names, statistics

METRIC_NAMES: tuple[str, ...] = statistic_names()
"""The metrics compared: every registered statistic (:mod:`persona_collapse.stats.registry`)."""


class HasMetrics(Protocol):
    """Anything with ``S``, ``R`` and ``sigma_bar`` (RunMetrics, FoundationMetrics...).

    Other registered statistics are read from an ``estimates`` mapping when there is
    one (RunMetrics, FoundationMetrics), else from the attribute of that name.
    """

    @property
    def S(self) -> float: ...

    @property
    def R(self) -> float: ...

    @property
    def sigma_bar(self) -> float: ...


@dataclass(frozen=True)
class MetricValues:
    """Plain ``S``, ``R``, ``sigma_bar`` values, for comparing numbers from elsewhere.

    ``per_foundation`` optionally maps foundation names to their own values.
    """

    S: float
    R: float
    sigma_bar: float
    per_foundation: Mapping[str, MetricValues] | None = None


@dataclass(frozen=True, init=False)
class Change:
    """Relative changes (fractions: 0.5 = +50 %) of every registered statistic.

    Built as ``Change(S=..., R=..., sigma_bar=...)`` (one keyword per statistic);
    ``change.S`` and ``change["S"]`` read one.
    """

    values: Mapping[str, float]

    def __init__(self, values: Mapping[str, float] | None = None, **by_name: float) -> None:
        merged = {**(values or {}), **by_name}
        object.__setattr__(self, "values", {n: float(merged[n]) for n in merged})

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def __getattr__(self, name: str) -> float:
        # Only reached for names that are not attributes: the statistics' changes.
        values = self.__dict__.get("values", {})
        if name in values:
            return float(values[name])
        raise AttributeError(f"{type(self).__name__!r} has no statistic {name!r}")

    def to_dict(self) -> dict[str, float]:
        """Plain-data form (statistic name -> relative change)."""
        return dict(self.values)

    def __sub__(self, other: Change) -> Change:
        return Change({n: v - other.values[n] for n, v in self.values.items() if n in other.values})


@dataclass(frozen=True)
class VariantChange:
    """Change of one variant relative to the base, overall and per foundation."""

    overall: Change
    per_foundation: Mapping[str, Change]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "overall": self.overall.to_dict(),
            "per_foundation": {k: v.to_dict() for k, v in self.per_foundation.items()},
        }


@dataclass(frozen=True)
class FamilyComparison:
    """All variants of one family compared with its base.

    Attributes:
        variants: Variant label -> its change relative to the base.
        control, treatment: Labels used for the excess (None where absent).
        excess: ``treatment - control`` changes, or None when either is missing.
    """

    variants: Mapping[str, VariantChange]
    control: str | None
    treatment: str | None
    excess: VariantChange | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "control": self.control,
            "treatment": self.treatment,
            "excess": None if self.excess is None else self.excess.to_dict(),
        }


@dataclass(frozen=True)
class AverageChange:
    """Mean changes over families.

    Attributes:
        families: Number of families averaged.
        variants: Variant label -> mean change over the families having it
            (per-foundation means only over foundations every such family has).
        excess: Mean excess over the families that have one, or None.
    """

    families: int
    variants: Mapping[str, VariantChange]
    excess: VariantChange | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "families": self.families,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "excess": None if self.excess is None else self.excess.to_dict(),
        }


def relative_change(value: float, base: float) -> float:
    """``(value - base) / base``; NaN when either is not finite.

    Raises:
        ValueError: ``base`` is 0.
    """
    if base == 0:
        raise ValueError("base must be non-zero for a relative change")
    if not (math.isfinite(value) and math.isfinite(base)):
        return math.nan
    return (value - base) / base


def _value(run: HasMetrics, name: str) -> float | None:
    estimates = getattr(run, "estimates", None)
    if isinstance(estimates, Mapping):
        found = estimates.get(name)
        return None if found is None else float(found.value)
    value = getattr(run, name, None)
    return None if value is None else float(value)


def _change(after: float, before: float, log_scale: bool) -> float:
    if log_scale:
        return relative_change(after, before)
    return after - before if math.isfinite(after) and math.isfinite(before) else math.nan


def metric_change(base: HasMetrics, variant: HasMetrics) -> Change:
    """Changes of every registered statistic both runs have, ``base`` to ``variant``.

    Relative changes for statistics tested on the log scale; plain differences for
    those tested as differences (rates and shares that may be 0).

    Raises:
        ValueError: A log-scale statistic of ``base`` is 0 (no relative change).
    """
    changes: dict[str, float] = {}
    for stat in statistics():
        before, after = _value(base, stat.name), _value(variant, stat.name)
        if before is not None and after is not None:
            log_scale = getattr(stat, "test_scale", "log") == "log"
            changes[stat.name] = _change(after, before, log_scale)
    return Change(changes)


def _foundations(run: HasMetrics) -> Mapping[str, HasMetrics]:
    found: Mapping[str, HasMetrics] | None = getattr(run, "per_foundation", None)
    return found or {}


def variant_change(base: HasMetrics, variant: HasMetrics) -> VariantChange:
    """Overall and per-foundation changes (foundations present in both runs)."""
    base_f, var_f = _foundations(base), _foundations(variant)
    per_foundation = {
        name: metric_change(base_f[name], var_f[name]) for name in base_f if name in var_f
    }
    return VariantChange(overall=metric_change(base, variant), per_foundation=per_foundation)


def _difference(a: VariantChange, b: VariantChange) -> VariantChange:
    return VariantChange(
        overall=a.overall - b.overall,
        per_foundation={
            k: a.per_foundation[k] - b.per_foundation[k]
            for k in a.per_foundation
            if k in b.per_foundation
        },
    )


def compare_family(
    base: HasMetrics,
    variants: Mapping[str, HasMetrics],
    *,
    control: str | None = "secure",
    treatment: str | None = "insecure",
) -> FamilyComparison:
    """Compare each variant of a family with its base.

    Args:
        base: Metrics of the base model.
        variants: Variant label -> metrics (the base itself need not be included;
            an entry identical to ``base`` just gives zero changes).
        control, treatment: Labels whose difference is the excess; None, or a label
            missing from ``variants``, gives ``excess=None``.

    Raises:
        ValueError: ``variants`` is empty, or ``control`` equals ``treatment``.
    """
    if not variants:
        raise ValueError("variants must hold at least one variant")
    if control is not None and control == treatment:
        raise ValueError(f"control and treatment must differ, both are {control!r}")
    changes = {label: variant_change(base, run) for label, run in variants.items()}
    excess = None
    if control is not None and treatment is not None and {control, treatment} <= set(changes):
        excess = _difference(changes[treatment], changes[control])
    return FamilyComparison(
        variants=changes,
        control=control if control in changes else None,
        treatment=treatment if treatment in changes else None,
        excess=excess,
    )


def compare_labeled(
    runs: Mapping[str, HasMetrics],
    *,
    base: str = "base",
    control: str | None = "secure",
    treatment: str | None = "insecure",
) -> FamilyComparison:
    """:func:`compare_family` on one mapping of label -> metrics, the base named by ``base``.

    Raises:
        ValueError: ``base`` is not a key of ``runs``, or no other run is given.
    """
    if base not in runs:
        raise ValueError(f"base: no run labelled {base!r}; labels: {', '.join(runs) or '(none)'}")
    others = {label: run for label, run in runs.items() if label != base}
    return compare_family(runs[base], others, control=control, treatment=treatment)


def _mean_change(changes: Sequence[Change]) -> Change:
    n = len(changes)
    names = [k for k in changes[0].values if all(k in c.values for c in changes)]
    return Change({k: sum(c.values[k] for c in changes) / n for k in names})


def _mean_variant(changes: Sequence[VariantChange]) -> VariantChange:
    common = [k for k in changes[0].per_foundation if all(k in c.per_foundation for c in changes)]
    return VariantChange(
        overall=_mean_change([c.overall for c in changes]),
        per_foundation={k: _mean_change([c.per_foundation[k] for c in changes]) for k in common},
    )


def average_changes(families: Sequence[FamilyComparison]) -> AverageChange:
    """Mean changes over families, per variant label and for the excess.

    Raises:
        ValueError: ``families`` is empty.
    """
    if not families:
        raise ValueError("families must hold at least one family comparison")
    labels: dict[str, None] = {}
    for fam in families:
        labels.update(dict.fromkeys(fam.variants))
    variants = {
        label: _mean_variant([f.variants[label] for f in families if label in f.variants])
        for label in labels
    }
    excesses = [f.excess for f in families if f.excess is not None]
    return AverageChange(
        families=len(families),
        variants=variants,
        excess=_mean_variant(excesses) if excesses else None,
    )
