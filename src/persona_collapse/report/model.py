"""The results a study report is rendered from (plain frozen data, no I/O).

:func:`persona_collapse.study.analyse_study` fills them from a run store; the
writers in :mod:`~persona_collapse.report.tables`,
:mod:`~persona_collapse.report.figures` and :mod:`~persona_collapse.report.html`
only read them. :func:`family_verdict` is the per-family headline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.engine.protocol import ProtocolCheck
from persona_collapse.report.diagnostics import ParseFailures, ScaleUsage
from persona_collapse.report.verification import ExcessPoint, excess_point
from persona_collapse.stats.compare import AverageChange, FamilyComparison, check_band
from persona_collapse.stats.display import HEADLINE, label
from persona_collapse.stats.metrics import RunMetrics, SelfProfile
from persona_collapse.stats.registry import Estimate, estimates_to_dict
from persona_collapse.variants.verify.results import VerifyResult

if TYPE_CHECKING:
    from persona_collapse.report.controls import ControlsReport


@dataclass(frozen=True)
class DataCounts:
    """What was collected (or imported) for one variant, all its runs together.

    Attributes:
        personas_total: Personas of the persona run (0 when unknown).
        personas_kept: Personas analysed (complete on every item).
        slots: Answer slots stored (cells in ``logprobs`` mode).
        planned: Slots the protocol asks for; None for imported data.
        failed: Stored slots without a valid rating.
        requests: Backend requests made.
        prompt_tokens, completion_tokens, cached_tokens: Token usage.
        cost_usd: Estimated cost, US dollars; None without prices.
    """

    personas_total: int = 0
    personas_kept: int = 0
    slots: int = 0
    planned: int | None = None
    failed: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None

    @property
    def complete(self) -> bool:
        """Whether every planned slot is stored (always True for imported data)."""
        return self.planned is None or self.slots >= self.planned


@dataclass(frozen=True)
class TemperaturePoint:
    """Every registered statistic of stored distributions re-tempered to ``temperature``.

    ``point.S`` / ``point.S_se`` read one statistic's value and SE (as ``estimates["S"]``).
    """

    temperature: float
    estimates: Mapping[str, Estimate]

    def __getattr__(self, name: str) -> float:
        # Only reached for names that are not attributes: statistics and their SEs.
        estimates = self.__dict__.get("estimates", {})
        if name in estimates:
            return float(estimates[name].value)
        if name.endswith("_se") and name[:-3] in estimates:
            return float(estimates[name[:-3]].se)
        raise AttributeError(f"{type(self).__name__!r} has no statistic {name!r}")

    def to_dict(self) -> dict[str, float]:
        """Plain-data form: ``{"temperature": t, name: value, name_se: se, ...}``."""
        return {"temperature": self.temperature, **estimates_to_dict(self.estimates)}


@dataclass(frozen=True)
class VariantDiagnostics:
    """How well a variant's runs measure anything (scale use, saturation, parse failures).

    Attributes:
        scale_usage: Floor/ceiling shares and entropy of the persona run.
        ceiling_persona: Ceiling-saturation index of the persona cells.
        ceiling_self: Ceiling-saturation index of the self run's items.
        parse: Parse failures of the persona run.
        self_parse_rate: Parse-failure rate of the self run.
    """

    scale_usage: ScaleUsage | None = None
    ceiling_persona: float = math.nan
    ceiling_self: float = math.nan
    parse: ParseFailures | None = None
    self_parse_rate: float = math.nan


@dataclass(frozen=True)
class VariantResult:
    """Everything measured for one variant of a family.

    Per-statistic results are held by statistic name: ``metrics.estimates`` (every
    registered statistic, overall and per foundation) and each temperature point's
    ``estimates``. The diagnostics are grouped in :class:`VariantDiagnostics` (read
    through ``v.scale_usage``, ``v.parse``, ... as before).

    Attributes:
        family, label: Family name and variant label.
        role: ``base``, ``control``, ``treatment`` or None.
        model, backend: Model identifier and backend name (``import`` for files).
        description: Free text from the study file.
        persona_run, self_run, toxic_run: Run names in the store (None if absent).
        metrics: Every registered statistic of the persona run (None if missing/too small).
        self_profile: Per-foundation self-profile (None without a self run).
        toxic_profile: Per-foundation profile of the toxic-persona control.
        diagnostics: Scale usage, ceiling saturation, parse failures.
        counts: Collected data, requests, tokens, cost.
        temperature_curve: Statistics against temperature (logprobs runs only).
        notes: Problems worth showing (incomplete runs, metrics not computable).
        verification: Emergent-misalignment verification (None: not verified).
        protocol: Whether the persona run's model follows the answer protocol (None: unknown).
        low_mass_share: Exact runs: share of cells whose on-scale mass (T = 1) is below
            the threshold (NaN otherwise); evidence of the protocol verdict.
    """

    family: str
    label: str
    role: str | None
    model: str
    backend: str
    description: str | None = None
    persona_run: str | None = None
    self_run: str | None = None
    toxic_run: str | None = None
    metrics: RunMetrics | None = None
    self_profile: SelfProfile | None = None
    toxic_profile: SelfProfile | None = None
    diagnostics: VariantDiagnostics = field(default_factory=VariantDiagnostics)
    counts: DataCounts = field(default_factory=DataCounts)
    temperature_curve: tuple[TemperaturePoint, ...] = ()
    notes: tuple[str, ...] = ()
    verification: VerifyResult | None = None
    protocol: ProtocolCheck | None = None
    low_mass_share: float = math.nan

    @property
    def scale_usage(self) -> ScaleUsage | None:
        """Floor/ceiling shares and entropy of the persona run."""
        return self.diagnostics.scale_usage

    @property
    def ceiling_persona(self) -> float:
        """Ceiling-saturation index of the persona cells."""
        return self.diagnostics.ceiling_persona

    @property
    def ceiling_self(self) -> float:
        """Ceiling-saturation index of the self run's items."""
        return self.diagnostics.ceiling_self

    @property
    def parse(self) -> ParseFailures | None:
        """Parse failures of the persona run."""
        return self.diagnostics.parse

    @property
    def self_parse_rate(self) -> float:
        """Parse-failure rate of the self run."""
        return self.diagnostics.self_parse_rate

    @property
    def interpretable(self) -> bool:
        """False when the model does not follow the answer protocol (S and R mean nothing)."""
        return self.protocol is None or self.protocol.follows


@dataclass(frozen=True)
class FamilyResult:
    """One family: its variants and their comparison with the base.

    Attributes:
        name: Family name.
        base, control, treatment: Variant labels of the roles (None where absent).
        variants: Label -> result, in study-file order.
        comparison: Changes against the base (None when the base or every other
            variant lacks metrics).
    """

    name: str
    base: str
    control: str | None
    treatment: str | None
    variants: Mapping[str, VariantResult]
    comparison: FamilyComparison | None = None


@dataclass(frozen=True)
class StudyResults:
    """A whole study's results, ready to render.

    Attributes:
        name, description: From the study file.
        source: The study file (or the folder a reproduction came from).
        protocol: Protocol settings for display (key -> value).
        band: Frontier band of S.
        analysis: Bootstrap settings used.
        families: Name -> family, in study-file order.
        average: Mean changes over families, keyed by role (``control``,
            ``treatment``); None with no comparable family.
        foundations: Foundation names in instrument order.
        scale: Rating scale values.
        persona_texts: Persona id -> text of the persona set (for per-persona tables).
        seeds: What every random draw was seeded with (label -> seed).
        significance: Rows of difference tests to show (None: not computed).
        notes: Study-level remarks.
        alpha: Level of the difference tests (a Holm-adjusted p-value below it is
            significant).
    """

    name: str
    description: str | None
    source: str
    protocol: Mapping[str, Any]
    band: tuple[float, float]
    analysis: AnalysisConfig
    families: Mapping[str, FamilyResult]
    average: AverageChange | None
    foundations: tuple[str, ...]
    scale: tuple[int, ...]
    persona_texts: Mapping[int, str] = field(default_factory=dict)
    seeds: Mapping[str, Any] = field(default_factory=dict)
    significance: tuple[Mapping[str, Any], ...] | None = None
    notes: tuple[str, ...] = ()
    alpha: float = 0.05
    controls: ControlsReport | None = None
    """Persona-specificity controls (None when the study has none)."""

    def variants(self) -> list[VariantResult]:
        """Every variant of every family, in order."""
        return [v for fam in self.families.values() for v in fam.variants.values()]

    @property
    def has_temperature_curves(self) -> bool:
        """Whether any variant has S(T), R(T) points."""
        return any(v.temperature_curve for v in self.variants())

    @property
    def has_verification(self) -> bool:
        """Whether any variant has verification results."""
        return any(v.verification is not None for v in self.variants())

    def test_row(
        self, family: str, contrast: str, metric: str, scope: str = "overall"
    ) -> Mapping[str, Any] | None:
        """The difference-test row of a family's contrast, metric and scope, if computed."""
        for row in self.significance or ():
            if (
                row.get("family") == family
                and row.get("contrast") == contrast
                and row.get("metric") == metric
                and row.get("scope") == scope
            ):
                return row
        return None


@dataclass(frozen=True)
class Verdict:
    """The headline of one family.

    Attributes:
        family: Family name.
        base_S, base_S_se: Base susceptibility.
        base_in_band: Whether the base lies in the band.
        treatment: Treatment label (None when the family has none or it lacks metrics).
        treatment_S, treatment_S_se: Treatment susceptibility.
        leaves_band: Whether the treatment's S is outside the band.
        side: ``"above"``, ``"below"`` or ``"inside"``.
        dS, dR, dsigma_bar: Treatment changes against the base (fractions).
        control: Control label (None when absent).
        control_dR: Control's ΔR (fraction), if any.
        excess_R: ``ΔR_treatment − ΔR_control`` (fraction), if any.
        specific_share: ``excess_R / ΔR_treatment`` when both have the same sign,
            0 when they differ (the control moves R as much or more), else None.
    """

    family: str
    base_S: float | None
    base_S_se: float | None
    base_in_band: bool | None
    treatment: str | None
    treatment_S: float | None = None
    treatment_S_se: float | None = None
    leaves_band: bool | None = None
    side: str | None = None
    dS: float | None = None
    dR: float | None = None
    dsigma_bar: float | None = None
    control: str | None = None
    control_dR: float | None = None
    excess_R: float | None = None
    specific_share: float | None = None


def family_verdict(family: FamilyResult, band: tuple[float, float]) -> Verdict:
    """The headline of a family: band, ΔS, ΔR and the misalignment-specific part of ΔR."""
    base = family.variants.get(family.base)
    base_m = base.metrics if base is not None else None
    treat = family.variants.get(family.treatment) if family.treatment else None
    treat_m = treat.metrics if treat is not None else None
    verdict = Verdict(
        family=family.name,
        base_S=None if base_m is None else base_m.S,
        base_S_se=None if base_m is None else base_m.S_se,
        base_in_band=None if base_m is None else check_band(base_m.S, band).inside,
        treatment=None,
    )
    if treat_m is None or family.comparison is None or family.treatment is None:
        return verdict
    change = family.comparison.variants.get(family.treatment)
    if change is None:
        return verdict
    bc = check_band(treat_m.S, band)
    side = "inside" if bc.inside else ("above" if bc.high < treat_m.S else "below")
    control_dR = excess_R = share = None
    if family.control is not None and family.control in family.comparison.variants:
        control_dR = family.comparison.variants[family.control].overall.R
    if family.comparison.excess is not None:
        excess_R = family.comparison.excess.overall.R
        d_r = change.overall.R
        if math.isfinite(excess_R) and math.isfinite(d_r) and d_r != 0:
            share = excess_R / d_r if (excess_R > 0) == (d_r > 0) else 0.0
    return Verdict(
        family=family.name,
        base_S=verdict.base_S,
        base_S_se=verdict.base_S_se,
        base_in_band=verdict.base_in_band,
        treatment=family.treatment,
        treatment_S=treat_m.S,
        treatment_S_se=treat_m.S_se,
        leaves_band=not bc.inside,
        side=side,
        dS=change.overall.S,
        dR=change.overall.R,
        dsigma_bar=change.overall.sigma_bar,
        control=family.control if control_dR is not None else None,
        control_dR=control_dR,
        excess_R=excess_R,
        specific_share=share,
    )


def excess_points(results: StudyResults) -> list[ExcessPoint]:
    """Per family with a verified base, control and treatment and a ΔR excess: the
    excess in R against the excess in mean coherence (the paper's comparison).

    The SE of the R excess comes from its difference test's interval, when computed.
    """
    points = []
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None or cmp.excess is None or fam.control is None or fam.treatment is None:
            continue
        verified = [
            fam.variants[label].verification if label in fam.variants else None
            for label in (fam.base, fam.control, fam.treatment)
        ]
        base, control, treatment = verified
        if base is None or control is None or treatment is None:
            continue
        se_r = math.nan
        row = results.test_row(fam.name, "excess", "R")
        if row is not None:
            width = float(row.get("ci_high", math.nan)) - float(row.get("ci_low", math.nan))
            se_r = width / (2 * NormalDist().inv_cdf(0.975))
        try:
            points.append(
                excess_point(
                    fam.name,
                    excess_R=cmp.excess.overall.R,
                    base=base,
                    control=control,
                    treatment=treatment,
                    excess_R_se=se_r,
                )
            )
        except ValueError:
            continue  # the base's mean coherence is 0 or undefined: no relative change
    return points


def format_p(p: float) -> str:
    """A p-value for text: ``p < 0.001`` or two significant digits (``p = 0.021``)."""
    if not math.isfinite(p):
        return "p undefined"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}"


def _signed_pct(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{100 * value:+.1f} %".replace("-", "−")


def significance_verdict(results: StudyResults, family: FamilyResult) -> str | None:
    """Whether the treatment's ΔS and ΔR are significant after Holm, as one sentence.

    E.g. ``"Difference tests: insecure ΔS +11.3 % (not significant after Holm,
    p = 0.21); ΔR −39.0 % (significant after Holm, p < 0.001)."``; None when the
    family has no treatment or no tests were computed.
    """
    treatment = family.treatment
    if treatment is None:
        return None
    parts = []
    for metric in HEADLINE:
        name = f"Δ{label(metric)}"
        row = results.test_row(family.name, treatment, metric)
        if row is None:
            continue
        p_holm = float(row.get("p_holm", math.nan))
        verdict = "significant" if p_holm < results.alpha else "not significant"
        change = _signed_pct(float(row["estimate"]))
        parts.append(f"{name} {change} ({verdict} after Holm, {format_p(p_holm)})")
    if not parts:
        return None
    return f"Difference tests: {treatment} " + "; ".join(parts) + "."


__all__ = [
    "DataCounts",
    "FamilyResult",
    "StudyResults",
    "TemperaturePoint",
    "VariantDiagnostics",
    "VariantResult",
    "Verdict",
    "excess_points",
    "family_verdict",
    "format_p",
    "significance_verdict",
]
