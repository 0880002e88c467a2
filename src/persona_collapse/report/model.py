"""The results a study report is rendered from (plain frozen data, no I/O).

:func:`persona_collapse.study.analyse_study` fills them from a run store; the
writers in :mod:`~persona_collapse.report.tables`,
:mod:`~persona_collapse.report.figures` and :mod:`~persona_collapse.report.html`
only read them. :func:`family_verdict` is the per-family headline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.core.formatting import fmt_pct, fmt_pm
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
    from persona_collapse.stats.sensitivity import SensitivityResult
    from persona_collapse.stats.trajectory import Trajectory


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
class CellMeans:
    """Mean rating of every persona-item cell of a persona run (for heatmaps and scatters).

    Attributes:
        persona_ids: Row order.
        item_ids: Column order (grouped by foundation, in instrument order).
        foundations: Foundation of each column.
        means: ``means[i][j]``: mean rating of persona ``persona_ids[i]`` on item
            ``item_ids[j]`` (NaN where the cell has no valid rating).
    """

    persona_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    foundations: tuple[str, ...]
    means: tuple[tuple[float, ...], ...]

    def persona_means(self) -> dict[int, float]:
        """Persona id -> mean over its items with a rating."""
        out = {}
        for pid, row in zip(self.persona_ids, self.means, strict=True):
            values = [x for x in row if math.isfinite(x)]
            out[pid] = sum(values) / len(values) if values else math.nan
        return out


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
        cell_means: Mean rating of every persona-item cell of the persona run.
        corrected: The bias-corrected S, sigma_bar and R of the persona run
            (:func:`~persona_collapse.stats.significance.corrected_fields`, per foundation
            under ``corrected_by_foundation``); None when not computed. ``metrics`` keeps
            the paper's estimators; verdicts follow these (:func:`corrected_value`).
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
    cell_means: CellMeans | None = None
    corrected: Mapping[str, Any] | None = None

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
class TrajectoryReport:
    """What the report's trajectory section shows.

    Attributes:
        trajectories: ``family/variant`` -> its trajectory, in study order.
        svg: The figure (R, S, entropy against step) as inline SVG (None: not drawn).
        figure_missing: Why there is no figure (None when there is one).
    """

    trajectories: Mapping[str, Trajectory]
    svg: str | None = None
    figure_missing: str | None = None


@dataclass(frozen=True)
class GeometryReport:
    """What the report's hidden-state geometry section shows.

    Attributes:
        families: Family -> its
            :class:`~persona_collapse.report.geometry.GeometryAnalysis` (typed loosely:
            that module draws figures, which this one must not import).
        svgs: Family -> its figures as inline SVG (title, SVG); empty when not drawn.
        figure_missing: Why there are no figures (None when there are).
        notes: Remarks (variants left out, and why).
    """

    families: Mapping[str, Any]
    svgs: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    figure_missing: str | None = None
    notes: tuple[str, ...] = ()


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
    sensitivity: SensitivityResult | None = None
    """Robustness of the finding across templates, orders, persona samples and
    temperatures (None when the study has no sensitivity suite)."""
    trajectories: TrajectoryReport | None = None
    """Checkpoint trajectories of variants (None when no variant has checkpoints)."""
    geometry: GeometryReport | None = None
    """Hidden-state persona geometry (None when the study ran none)."""

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


CEILING_TOP1_SHARE = 0.70
"""A variant whose most common rating takes at least this share is ceiling-limited."""

CEILING_ENTROPY_BITS = 1.5
"""A variant whose pooled rating entropy is below this (bits) is ceiling-limited."""


@dataclass(frozen=True)
class CeilingLimit:
    """Why a variant's S is ceiling-limited: its ratings crowd onto few values.

    S measures how far personas move a model's answers; when most ratings fall
    on one value there is little room left to move, so S says more about the
    scale's end than about the persona effect.

    Attributes:
        label: The variant.
        top1_share: Share of its ratings on the most common value.
        entropy_bits: Entropy of its pooled rating distribution (bits).
    """

    label: str
    top1_share: float
    entropy_bits: float

    def text(self) -> str:
        """E.g. ``75 % of ratings on one value, rating entropy H = 1.03 bits``."""
        return (
            f"{100 * self.top1_share:.0f} % of ratings on one value, "
            f"rating entropy H = {self.entropy_bits:.2f} bits"
        )


def _estimate_value(v: VariantResult, name: str) -> float:
    found = None if v.metrics is None else v.metrics.estimates.get(name)
    return math.nan if found is None else float(found.value)


def corrected_value(
    v: VariantResult, name: str = "S", scope: str = "overall", key: str = ""
) -> float | None:
    """The variant's bias-corrected ``name`` (``key="_se"``, ``"_ci_low"``, ... for its SE
    and interval) on ``scope`` (``"overall"`` or a foundation); None when not computed."""
    fields = v.corrected
    if fields is not None and scope != "overall":
        fields = fields.get("corrected_by_foundation", {}).get(scope)
    if not fields or f"{name}_corrected{key}" not in fields:
        return None
    return float(fields[f"{name}_corrected{key}"])


def verdict_s(v: VariantResult) -> tuple[float, float] | None:
    """``(S, SE)`` the verdicts use: the bias-corrected S where computed, else the
    paper's; None without metrics."""
    corrected = corrected_value(v, "S")
    if corrected is not None:
        return corrected, corrected_value(v, "S", key="_se") or math.nan
    if v.metrics is None:
        return None
    return v.metrics.S, v.metrics.S_se


def ceiling_limit(v: VariantResult) -> CeilingLimit | None:
    """The variant's :class:`CeilingLimit` when at least :data:`CEILING_TOP1_SHARE` of its
    ratings fall on one value or their entropy is below :data:`CEILING_ENTROPY_BITS`.

    Reads the registered ``top1_share`` and ``entropy_bits`` statistics of the persona
    run, else its scale usage; None when neither is known or the run uses its scale.
    """
    top1 = _estimate_value(v, "top1_share")
    entropy = _estimate_value(v, "entropy_bits")
    usage = v.scale_usage
    if usage is not None:
        if not math.isfinite(top1) and usage.shares:
            top1 = float(max(usage.shares))
        if not math.isfinite(entropy):
            entropy = float(usage.entropy_bits)
    limited = (math.isfinite(top1) and top1 >= CEILING_TOP1_SHARE) or (
        math.isfinite(entropy) and entropy < CEILING_ENTROPY_BITS
    )
    return CeilingLimit(v.label, top1, entropy) if limited else None


@dataclass(frozen=True)
class ChangeTest:
    """A change with its difference test, as shown in a verdict.

    Attributes:
        estimate: The change (relative for log-scale statistics; a fraction).
        ci_low, ci_high: Its 95 % interval (NaN when unknown).
        p_holm: Holm-adjusted p-value (NaN when unknown).
        significant: ``p_holm < alpha``.
        paper_estimate: The change under the paper's estimators when the test is the
            bias-corrected one (NaN otherwise).
        estimator: ``"corrected"`` (the bias-corrected test) or ``"reference"``.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p_holm: float
    significant: bool
    paper_estimate: float = math.nan
    estimator: str = "reference"

    @property
    def corrected(self) -> bool:
        """Whether this is the bias-corrected test (the paper's estimate rides along)."""
        return self.estimator == "corrected"

    @classmethod
    def from_row(cls, row: Mapping[str, Any], alpha: float) -> ChangeTest:
        """From a ``significance.csv`` row: its bias-corrected test where the row has one
        (``estimate_corrected``, ...; the verdicts follow it), else the paper's."""

        def num(key: str) -> float:
            try:
                return float(row.get(key, math.nan))
            except (TypeError, ValueError):
                return math.nan

        if math.isfinite(num("estimate_corrected")):
            p_holm = num("p_holm_corrected")
            return cls(
                num("estimate_corrected"),
                num("ci_low_corrected"),
                num("ci_high_corrected"),
                p_holm,
                p_holm < alpha,
                paper_estimate=num("estimate"),
                estimator="corrected",
            )
        p_holm = num("p_holm")
        return cls(num("estimate"), num("ci_low"), num("ci_high"), p_holm, p_holm < alpha)

    @property
    def ci_covers_zero(self) -> bool:
        """Whether the interval includes 0 (True when it is unknown)."""
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return True
        return self.ci_low <= 0 <= self.ci_high


@dataclass(frozen=True)
class Verdict:
    """The headline of one family, with the tests that back each of its words.

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
        specific_share: Signed share ``excess_R / ΔR_treatment`` of the treatment's ΔR
            that the control does not show (negative: the control moves R more).
        specific_share_ci: Its 95 % interval, from the excess's interval (None untested).
        dS_test, dR_test, control_dR_test, excess_R_test: Difference tests (None: not
            computed).
        base: Base label.
        ceiling: Ceiling-limited variants among the base and the treatment.
        alpha: Level of the tests.
        base_S_paper, treatment_S_paper: The paper's S where ``base_S`` and
            ``treatment_S`` are the bias-corrected ones the band verdict uses (None
            otherwise).
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
    specific_share_ci: tuple[float, float] | None = None
    dS_test: ChangeTest | None = None
    dR_test: ChangeTest | None = None
    control_dR_test: ChangeTest | None = None
    excess_R_test: ChangeTest | None = None
    base: str = "base"
    ceiling: tuple[CeilingLimit, ...] = ()
    alpha: float = 0.05
    base_S_paper: float | None = None
    treatment_S_paper: float | None = None

    @property
    def s_withheld(self) -> bool:
        """Whether the verdict on S is withheld (a ceiling-limited base or treatment)."""
        return bool(self.ceiling)

    @property
    def share_is_none(self) -> bool:
        """Whether "no misalignment-specific part" may be said: the share's interval
        covers 0 (or it is unknown while the share is 0)."""
        if self.specific_share_ci is None:
            return self.specific_share == 0
        low, high = self.specific_share_ci
        return not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high


def _test(
    significance: Sequence[Mapping[str, Any]] | None,
    family: str,
    contrast: str | None,
    metric: str,
    alpha: float,
) -> ChangeTest | None:
    if contrast is None:
        return None
    for row in significance or ():
        if (
            row.get("family") == family
            and row.get("contrast") == contrast
            and row.get("metric") == metric
            and row.get("scope", "overall") == "overall"
        ):
            return ChangeTest.from_row(row, alpha)
    return None


def _share_ci(excess: ChangeTest | None, d_r: float) -> tuple[float, float] | None:
    """Interval of ``excess / ΔR`` from the excess's interval (ΔR taken as given)."""
    if excess is None or not math.isfinite(d_r) or d_r == 0:
        return None
    a, b = excess.ci_low / d_r, excess.ci_high / d_r
    return (min(a, b), max(a, b))


def family_verdict(
    family: FamilyResult,
    band: tuple[float, float],
    *,
    significance: Sequence[Mapping[str, Any]] | None = None,
    alpha: float = 0.05,
) -> Verdict:
    """The headline of a family: band, ΔS, ΔR, the misalignment-specific part of ΔR,
    each with its difference test from ``significance`` (rows of ``significance.csv``),
    and whether S is ceiling-limited."""
    base = family.variants.get(family.base)
    base_m = base.metrics if base is not None else None
    treat = family.variants.get(family.treatment) if family.treatment else None
    treat_m = treat.metrics if treat is not None else None
    # the band verdict follows the bias-corrected S where it was computed
    base_s = None if base is None or base_m is None else verdict_s(base)
    verdict = Verdict(
        family=family.name,
        base_S=None if base_s is None else base_s[0],
        base_S_se=None if base_s is None else base_s[1],
        base_in_band=None if base_s is None else check_band(base_s[0], band).inside,
        treatment=None,
        base=family.base,
        alpha=alpha,
        base_S_paper=None
        if base is None or base_m is None or corrected_value(base) is None
        else base_m.S,
    )
    if treat is None or treat_m is None or family.comparison is None or not family.treatment:
        return verdict
    change = family.comparison.variants.get(family.treatment)
    if change is None:
        return verdict
    treat_s = verdict_s(treat) or (treat_m.S, treat_m.S_se)
    bc = check_band(treat_s[0], band)
    side = "inside" if bc.inside else ("above" if bc.high < bc.value else "below")
    control_dR = excess_R = share = None
    if family.control is not None and family.control in family.comparison.variants:
        control_dR = family.comparison.variants[family.control].overall.R
    excess_test = None
    if family.comparison.excess is not None:
        excess_R = family.comparison.excess.overall.R
        d_r = change.overall.R
        if math.isfinite(excess_R) and math.isfinite(d_r) and d_r != 0:
            share = excess_R / d_r
        excess_test = _test(significance, family.name, "excess", "R", alpha)
    limits = tuple(
        limit
        for limit in (
            None if base is None else ceiling_limit(base),
            ceiling_limit(treat),
        )
        if limit is not None
    )
    return replace(
        verdict,
        treatment=family.treatment,
        treatment_S=treat_s[0],
        treatment_S_se=treat_s[1],
        treatment_S_paper=None if corrected_value(treat) is None else treat_m.S,
        leaves_band=not bc.inside,
        side=side,
        dS=change.overall.S,
        dR=change.overall.R,
        dsigma_bar=change.overall.sigma_bar,
        control=family.control if control_dR is not None else None,
        control_dR=control_dR,
        excess_R=excess_R,
        specific_share=share,
        specific_share_ci=None if share is None else _share_ci(excess_test, change.overall.R),
        dS_test=_test(significance, family.name, family.treatment, "S", alpha),
        dR_test=_test(significance, family.name, family.treatment, "R", alpha),
        control_dR_test=_test(significance, family.name, family.control, "R", alpha),
        excess_R_test=excess_test,
        ceiling=limits,
    )


def study_verdict(results: StudyResults, family: FamilyResult) -> Verdict:
    """:func:`family_verdict` with the study's band, difference tests and level."""
    return family_verdict(
        family, results.band, significance=results.significance, alpha=results.alpha
    )


def _pct(value: float | None) -> str:
    return fmt_pct(value, typographic=True)


def _ci_text(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "95 % CI unknown"
    return f"95 % CI [{_pct(low)}, {_pct(high)}]"


def _tested_text(symbol: str, value: float | None, test: ChangeTest) -> str:
    shown = test.estimate if math.isfinite(test.estimate) else value
    paper = (
        f" bias-corrected (paper's estimate {_pct(test.paper_estimate)})" if test.corrected else ""
    )
    return (
        f"{symbol} {_pct(shown)}{paper}, {_ci_text(test.ci_low, test.ci_high)}, "
        f"Holm-adjusted {format_p(test.p_holm)}"
    )


def _s_text(s: float | None, se: float | None, paper: float | None) -> str:
    """``0.785 ± 0.035`` with ``(bias-corrected; paper's 0.794)`` when ``paper`` is given."""
    text = fmt_pm(s, se)
    return text if paper is None else f"{text} (bias-corrected; paper's {fmt_pm(paper, None)})"


def change_text(name: str, value: float | None, test: ChangeTest | None) -> str:
    """One change in words that never say more than its test: a rise or drop only when
    significant after Holm (``"R drops significantly (ΔR −34.9 %, 95 % CI [...], ...)"``),
    else ``"no significant change in S (ΔS +11.0 %, 95 % CI [...], ...)"``; untested
    changes are given as numbers only."""
    symbol = f"Δ{name}"
    if test is None:
        return f"{symbol} = {_pct(value)} (not tested, so no rise or drop is claimed)"
    if test.significant:
        est = test.estimate if math.isfinite(test.estimate) else (value or 0.0)
        word = "rises" if est > 0 else "drops"
        return f"{name} {word} significantly ({_tested_text(symbol, value, test)})"
    return f"no significant change in {name} ({_tested_text(symbol, value, test)})"


def _band_text(v: Verdict, band: tuple[float, float]) -> str | None:
    """Band wording, only where the base sits inside the band and S is not withheld."""
    low, high = band
    where = f"the frontier S band [{low:g}, {high:g}]"
    base = f"base S = {_s_text(v.base_S, v.base_S_se, v.base_S_paper)}"
    if v.base_S is None:
        return "The base model has no S yet."
    if not v.base_in_band:
        return (
            f"The {base} already lies outside {where}, so the band says nothing about "
            "this family's change."
        )
    if v.treatment_S is None or v.s_withheld:
        return None
    treat = f"S = {_s_text(v.treatment_S, v.treatment_S_se, v.treatment_S_paper)} against {base}"
    if not v.leaves_band:
        return f"The {v.treatment} variant stays inside {where} ({treat})."
    if v.dS_test is not None and v.dS_test.significant:
        return f"The {v.treatment} variant leaves {where} ({v.side} it; {treat})."
    return (
        f"The {v.treatment} variant's S lies {v.side} {where} ({treat}), but its change "
        "is not significant."
    )


def share_text(v: Verdict) -> str:
    """The signed misalignment-specific share of ΔR with its interval; "none" only
    when the interval covers 0."""
    share = v.specific_share
    if share is None:
        return "undefined (ΔR of the treatment is 0 or unknown)"
    if v.specific_share_ci is None:
        return f"{_pct(share)} (not tested)"
    ci = _ci_text(*v.specific_share_ci)
    if v.share_is_none:
        return f"none detectable ({_pct(share)}, {ci})"
    if share < 0:
        return f"{_pct(share)} ({ci}): wrong sign, the control changes R more than the treatment"
    return f"{_pct(share)} ({ci})"


def verdict_text(v: Verdict, band: tuple[float, float]) -> str:
    """The headline of a family as plain text, every claim backed by its test."""
    if v.treatment is None or v.treatment_S is None:
        base = _band_text(v, band) or ""
        return f"{v.family}: no treatment variant with results to compare. {base}".strip()
    parts = [f"{v.family}: {v.treatment} against {v.base}."]
    if v.s_withheld:
        which = "; ".join(f"{c.label}: {c.text()}" for c in v.ceiling)
        parts.append(
            f"S is ceiling-limited ({which}); the verdict on S is withheld (ΔS = {_pct(v.dS)})."
        )
    else:
        s_text = change_text("S", v.dS, v.dS_test)
        parts.append(s_text[0].upper() + s_text[1:] + ".")
    band_text = _band_text(v, band)
    if band_text:
        parts.append(band_text)
    r_text = change_text("R", v.dR, v.dR_test)
    parts.append(r_text[0].upper() + r_text[1:] + ".")
    if v.excess_R is None or v.control is None:
        parts.append("No control variant, so the misalignment-specific part of ΔR is unknown.")
        return " ".join(parts)
    parts.append(f"The {v.control} control: {change_text('R', v.control_dR, v.control_dR_test)}.")
    excess = (
        f"excess ΔR_{v.treatment} − ΔR_{v.control} = {_pct(v.excess_R)}"
        if v.excess_R_test is None
        else _tested_text(f"excess ΔR_{v.treatment} − ΔR_{v.control}", v.excess_R, v.excess_R_test)
    )
    parts.append(f"Misalignment-specific share of ΔR: {share_text(v)} ({excess}).")
    return " ".join(parts)


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
        test = ChangeTest.from_row(row, results.alpha)
        verdict = "significant" if test.significant else "not significant"
        change = _signed_pct(test.estimate)
        if test.corrected:
            change += f" bias-corrected (paper's estimate {_signed_pct(test.paper_estimate)})"
        parts.append(f"{name} {change} ({verdict} after Holm, {format_p(test.p_holm)})")
    if not parts:
        return None
    return f"Difference tests: {treatment} " + "; ".join(parts) + "."


__all__ = [
    "CEILING_ENTROPY_BITS",
    "CEILING_TOP1_SHARE",
    "CeilingLimit",
    "CellMeans",
    "ChangeTest",
    "DataCounts",
    "FamilyResult",
    "GeometryReport",
    "StudyResults",
    "TemperaturePoint",
    "TrajectoryReport",
    "VariantDiagnostics",
    "VariantResult",
    "Verdict",
    "ceiling_limit",
    "change_text",
    "corrected_value",
    "excess_points",
    "family_verdict",
    "format_p",
    "share_text",
    "significance_verdict",
    "study_verdict",
    "verdict_s",
    "verdict_text",
]
