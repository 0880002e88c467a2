"""Robustness of the finding: ΔS and ΔR under other prompt templates, item orders,
persona samples and temperatures.

A *condition* is one level of one factor (``template``, ``order``, ``personas``,
``temperature``), every other setting as in the protocol; the *headline* is the
protocol's own condition. Under each condition every variant of a family is compared
with its family's base measured under the same condition, with the difference tests of
:func:`~persona_collapse.stats.significance.study_significance` (paired persona
bootstrap, Holm-corrected across the families of the condition, as the study's
headline tests are). :func:`analyze_sensitivity` then asks, per variant and metric,
whether the headline's sign and significance survive every condition:

* a significant headline *holds* under a condition when the change there has the
  same sign and is significant too; it *flips* when the sign is opposite, and *loses
  significance* when the sign is the same but the test is not significant;
* a headline that is not significant holds when the change stays non-significant
  (its sign is noise); a significant change there *appears*.

The finding is *robust* when the treatments' headline ΔS and ΔR hold under every
condition (every variant's, when no family names a treatment), *fragile* otherwise; the
other variants' verdicts (the control's) are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from persona_collapse.stats.significance import (
    DEFAULT_N_BOOT,
    DEFAULT_N_RERUN_BOOT,
    RunCells,
    study_significance,
)

FACTORS: tuple[str, ...] = ("template", "order", "personas", "temperature")
"""Factors a sensitivity study may vary, in report order."""

HEADLINE = "headline"
"""Factor name of the headline (protocol) condition."""

METRICS: tuple[str, ...] = ("S", "R")
"""Statistics whose change is checked."""

Status = Literal["headline", "holds", "flips", "loses significance", "appears"]


@dataclass(frozen=True)
class Condition:
    """One factor level.

    Attributes:
        factor: One of :data:`FACTORS`, or :data:`HEADLINE` for the protocol's condition.
        level: The level's label (template name, ``shuffle 1``, ``sample 2``, ``T=0.5``).
    """

    factor: str
    level: str

    @property
    def is_headline(self) -> bool:
        """Whether this is the protocol's own condition."""
        return self.factor == HEADLINE

    @property
    def label(self) -> str:
        """``factor=level`` (``headline`` for the headline)."""
        return HEADLINE if self.is_headline else f"{self.factor}={self.level}"


@dataclass(frozen=True)
class ChangeRow:
    """The change of one variant's metric against its base under one condition.

    Attributes:
        family, variant: The variant (its label); ``role`` its role in the family.
        condition: The factor level.
        metric: ``S`` or ``R``.
        estimate: Relative change (0.1 = +10 %), with its ``ci_low``/``ci_high`` interval.
        p_value, p_holm: Raw and Holm-adjusted p-values.
        significant: Whether ``p_holm`` is below the level ``alpha``.
        n_personas: Personas in the comparison (complete in both runs).
        status: How the change compares with the headline's (see the module docstring).
    """

    family: str
    variant: str
    role: str
    condition: Condition
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    significant: bool
    n_personas: int
    status: Status = "headline"

    @property
    def sign(self) -> int:
        """+1, -1 or 0: the sign of the estimate."""
        return (
            0
            if self.estimate == 0 or math.isnan(self.estimate)
            else (1 if self.estimate > 0 else -1)
        )

    @property
    def holds(self) -> bool:
        """Whether the headline survives this condition."""
        return self.status in ("headline", "holds")

    def to_dict(self) -> dict[str, Any]:
        """One flat record (the robustness table's row)."""
        return {
            "family": self.family,
            "variant": self.variant,
            "role": self.role,
            "factor": self.condition.factor,
            "level": self.condition.level,
            "metric": self.metric,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "significant": self.significant,
            "n_personas": self.n_personas,
            "status": self.status,
        }


@dataclass(frozen=True)
class Robustness:
    """Whether one variant's change in one metric survives every condition.

    Attributes:
        family, variant, role, metric: What is checked.
        headline: The headline row.
        rows: Every other condition's row, in factor order.
    """

    family: str
    variant: str
    role: str
    metric: str
    headline: ChangeRow
    rows: tuple[ChangeRow, ...]

    @property
    def failures(self) -> tuple[ChangeRow, ...]:
        """The conditions under which the headline does not hold."""
        return tuple(r for r in self.rows if not r.holds)

    @property
    def robust(self) -> bool:
        """Whether the headline holds under every condition."""
        return not self.failures

    def factor_holds(self, factor: str) -> bool | None:
        """Whether the headline holds at every level of ``factor`` (None: not varied)."""
        mine = [r for r in self.rows if r.condition.factor == factor]
        return None if not mine else all(r.holds for r in mine)

    def statement(self) -> str:
        """One sentence, e.g. ``fam/insecure ΔS +45.1 % (significant): fragile, flips
        under template=plain (-38.2 %)``."""
        h = self.headline
        what = f"{self.family}/{self.variant} Δ{self.metric} {100 * h.estimate:+.1f} %"
        sig = "significant" if h.significant else "not significant"
        if not self.rows:
            return f"{what} ({sig}): no other condition measured"
        if self.robust:
            return f"{what} ({sig}): robust, holds under all {len(self.rows)} other conditions"
        parts = [
            f"{r.status} under {r.condition.label} ({100 * r.estimate:+.1f} %)"
            for r in self.failures
        ]
        return f"{what} ({sig}): fragile, " + "; ".join(parts)


@dataclass(frozen=True)
class SensitivityResult:
    """Every change under every condition and the robustness verdicts.

    Attributes:
        rows: Every :class:`ChangeRow` (headline first, then factor by factor).
        robustness: One verdict per family, variant and metric.
        alpha, confidence: Significance level and interval level.
        n_boot, n_rerun_boot, seed: Bootstrap settings (the same seed under every condition).
        skipped: Conditions (labels) without tests, with the reason.
    """

    rows: tuple[ChangeRow, ...]
    robustness: tuple[Robustness, ...]
    alpha: float
    confidence: float
    n_boot: int
    n_rerun_boot: int
    seed: int
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def decisive(self) -> tuple[Robustness, ...]:
        """The verdicts the finding rests on: the treatments' (every variant's when no
        family has a treatment). A control's change is reported but does not decide."""
        treated = tuple(r for r in self.robustness if r.role == "treatment")
        return treated or self.robustness

    @property
    def robust(self) -> bool:
        """Whether the headline of every decisive verdict holds under every condition
        (False while no condition besides the headline was tested)."""
        tested = any(r.rows for r in self.decisive)
        return tested and all(r.robust for r in self.decisive)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The conditions with tests, in table order."""
        return tuple(dict.fromkeys(r.condition for r in self.rows))

    def verdict(self, family: str, variant: str, metric: str) -> Robustness:
        """The verdict of one variant and metric."""
        for r in self.robustness:
            if (r.family, r.variant, r.metric) == (family, variant, metric):
                return r
        raise KeyError(f"no robustness verdict for {family}/{variant} {metric}")

    def summary(self) -> str:
        """One line: robust or fragile, with what fails."""
        if not self.robustness:
            return "No sensitivity conditions could be tested."
        whose = "treatment" if self.decisive[0].role == "treatment" else "variant"
        if not any(r.rows for r in self.decisive):
            return "Robustness unknown: no condition besides the headline could be tested yet."
        if self.robust:
            n = len(self.conditions) - 1
            return (
                f"The finding is robust: the sign and significance of every {whose}'s "
                f"headline {'and '.join(dict.fromkeys(f'Δ{r.metric} ' for r in self.decisive))}"
                f"hold under all {n} other conditions."
            )
        bad = [r.statement() for r in self.decisive if not r.robust]
        return "The finding is fragile: " + " | ".join(bad)

    def records(self) -> list[dict[str, Any]]:
        """The robustness table: one flat record per row."""
        return [r.to_dict() for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (``--format json``)."""
        return {
            "robust": self.robust,
            "summary": self.summary(),
            "alpha": self.alpha,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "n_rerun_boot": self.n_rerun_boot,
            "seed": self.seed,
            "verdicts": [
                {
                    "family": r.family,
                    "variant": r.variant,
                    "role": r.role,
                    "metric": r.metric,
                    "decisive": r in self.decisive,
                    "robust": r.robust,
                    "statement": r.statement(),
                    "factors": {f: r.factor_holds(f) for f in FACTORS},
                    "failures": [x.condition.label for x in r.failures],
                }
                for r in self.robustness
            ],
            "rows": self.records(),
            "skipped": dict(self.skipped),
        }


def _status(headline: ChangeRow, row: ChangeRow) -> Status:
    if headline.significant:
        if row.sign != headline.sign:
            return "flips"
        return "holds" if row.significant else "loses significance"
    return "appears" if row.significant else "holds"


def analyze_sensitivity(
    conditions: Mapping[Condition, Mapping[str, Mapping[str, RunCells]]],
    *,
    labels: Mapping[str, Mapping[str, str]] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_boot: int = DEFAULT_N_BOOT,
    n_rerun_boot: int = DEFAULT_N_RERUN_BOOT,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> SensitivityResult:
    """Test every variant against its base under every condition; judge robustness.

    Args:
        conditions: Condition -> family -> run key -> cells. Keys are roles
            (``base``, ``control``, ``treatment``) or other variant labels; every
            family needs ``base``. Exactly one condition must be the headline.
        labels: Family -> run key -> variant label shown (default: the key).
        alpha: Level of the Holm-adjusted tests.
        confidence: Level of the intervals.
        n_boot, n_rerun_boot: Bootstrap draws (as in the study's significance tests).
        seed: Seed of every condition's bootstrap (the same draws under each).
        metrics: Statistics checked (``S``, ``R``).

    Returns:
        The rows and verdicts; a condition whose runs cannot be tested (say, on
        other items) is listed in ``skipped`` instead.

    Raises:
        ValueError: No headline condition, or the headline cannot be tested.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    heads = [c for c in conditions if c.is_headline]
    if len(heads) != 1:
        raise ValueError(f"exactly one headline condition needed, got {len(heads)}")
    names = labels or {}
    order = {f: i for i, f in enumerate((HEADLINE, *FACTORS))}
    ordered = sorted(conditions, key=lambda c: order.get(c.factor, len(order)))
    rows: list[ChangeRow] = []
    skipped: dict[str, str] = {}
    for cond in ordered:
        families = {f: dict(runs) for f, runs in conditions[cond].items() if len(runs) >= 2}
        try:
            if not families:
                raise ValueError("no family has a base and another variant")
            tests = study_significance(
                families,
                rng=seed,
                base="base",
                control="control",
                treatment="treatment",
                n_boot=n_boot,
                n_rerun_boot=n_rerun_boot,
                confidence=confidence,
                both=False,
            )
        except ValueError as exc:
            if cond.is_headline:
                raise
            skipped[cond.label] = str(exc)
            continue
        for family, fam in tests.families.items():
            for key, contrast in fam.contrasts.items():
                if contrast.kind != "change":
                    continue
                n = min(families[family][key].n_personas, families[family]["base"].n_personas)
                for metric in metrics:
                    t = contrast.test(metric)
                    rows.append(
                        ChangeRow(
                            family=family,
                            variant=names.get(family, {}).get(key, key),
                            role=key if key in ("control", "treatment") else "other",
                            condition=cond,
                            metric=metric,
                            estimate=t.estimate,
                            ci_low=t.ci_low,
                            ci_high=t.ci_high,
                            p_value=t.p_value,
                            p_holm=t.p_holm,
                            significant=t.significant(alpha),
                            n_personas=n,
                        )
                    )
    heads_by_key = {(r.family, r.variant, r.metric): r for r in rows if r.condition.is_headline}
    judged: list[ChangeRow] = []
    for r in rows:
        head = heads_by_key.get((r.family, r.variant, r.metric))
        if r.condition.is_headline or head is None:
            judged.append(r)
            continue
        judged.append(_replace_status(r, _status(head, r)))
    verdicts = [
        Robustness(
            family=h.family,
            variant=h.variant,
            role=h.role,
            metric=h.metric,
            headline=h,
            rows=tuple(
                r
                for r in judged
                if not r.condition.is_headline
                and (r.family, r.variant, r.metric) == (h.family, h.variant, h.metric)
            ),
        )
        for h in heads_by_key.values()
    ]
    return SensitivityResult(
        rows=tuple(judged),
        robustness=tuple(verdicts),
        alpha=float(alpha),
        confidence=float(confidence),
        n_boot=int(n_boot),
        n_rerun_boot=int(n_rerun_boot),
        seed=int(seed),
        skipped=skipped,
    )


def _replace_status(row: ChangeRow, status: Status) -> ChangeRow:
    return replace(row, status=status)


__all__ = [
    "FACTORS",
    "HEADLINE",
    "METRICS",
    "ChangeRow",
    "Condition",
    "Robustness",
    "SensitivityResult",
    "Status",
    "analyze_sensitivity",
]
