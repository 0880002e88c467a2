"""Options and tables of the difference tests, shared by ``compare`` and the statistics commands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from persona_collapse.cli._app import fmt_pct
from persona_collapse.core.errors import UserError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.stats.significance import Estimator, FamilySignificance, Variance

EstimatorOpt = Annotated[
    str,
    typer.Option(help="'reference' (published estimators) or 'corrected' (bias-corrected)."),
]
VarianceOpt = Annotated[
    str,
    typer.Option(
        help="Bootstrap variance of the tests: 'persona' (paired persona bootstrap), "
        "'reference' (persona + rerun, as the published SEs) or 'rerun' (this persona set only)."
    ),
]


def check_estimator(estimator: str, variance: str) -> tuple[Estimator, Variance]:
    """The estimator and variance names, checked (one-line error when unknown)."""
    from persona_collapse.stats.significance import ESTIMATORS, VARIANCES

    if estimator not in ESTIMATORS:
        raise UserError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if variance not in VARIANCES:
        raise UserError(f"--variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if variance != "persona" and estimator != "reference":
        raise UserError(
            f"--variance {variance} needs --estimator reference (it uses the rerun bootstrap)"
        )
    return cast("Estimator", estimator), cast("Variance", variance)


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _fmt_ci(low: float, high: float, excess: bool) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    if excess:
        return f"[{100 * low:+.1f}, {100 * high:+.1f}] pts"
    return f"[{100 * low:+.1f}, {100 * high:+.1f}] %"


def significance_table(
    tests: FamilySignificance,
    *,
    alpha: float = 0.05,
    scopes: Sequence[str] = ("overall",),  # significance.OVERALL
) -> Table:
    """Difference tests of a family: change or excess, interval, p-values, verdict."""
    from persona_collapse.stats.display import fmt_change, is_difference
    from persona_collapse.stats.display import label as stat_label
    from persona_collapse.stats.significance import EXCESS

    level = round(100 * tests.confidence)
    # Verdicts follow the bias-corrected estimator where it was computed alongside
    # (issue 16); its change is shown next to this estimator's when they differ.
    corrected = tests.corrected if tests.estimator != "corrected" else None
    table = Table(
        title=(
            f"Difference tests ({level} % CI; {tests.variance} bootstrap, "
            f"{'paired' if tests.paired else 'unpaired'}, {tests.estimator} estimator; "
            f"Holm over foundations"
            + ("; verdict: corrected estimator" if corrected is not None else "")
            + ")"
        ),
        title_justify="left",
    )
    columns = ["contrast", "scope", "metric", "change", "CI", "p", "p (Holm)"]
    if corrected is not None:
        columns.append("corrected")
    for col in (*columns, f"α={alpha:g}"):
        table.add_column(col, justify="left" if col in ("contrast", "scope", "metric") else "right")
    for key, contrast in tests.contrasts.items():
        excess = key == EXCESS
        label = (
            f"excess ({contrast.variant} − {contrast.reference})"
            if excess
            else f"{contrast.variant} vs {contrast.reference}"
        )
        for scope in scopes:
            for metric, by_scope in contrast.tests.items():
                if scope not in by_scope:
                    continue
                t = by_scope[scope]

                def shown(value: float, metric: str = metric, excess: bool = excess) -> str:
                    return (
                        fmt_change(metric, value)
                        if is_difference(metric)
                        else f"{100 * value:+.1f} pts"
                        if excess and math.isfinite(value)
                        else fmt_pct(value)
                    )

                verdict = tests.verdict(key, metric, scope)
                extra = []
                if corrected is not None:
                    extra = [shown(verdict.estimate) if verdict is not t else "—"]
                table.add_row(
                    label,
                    scope,
                    stat_label(metric),
                    shown(t.estimate),
                    _fmt_ci(t.ci_low, t.ci_high, excess),
                    _fmt_p(t.p_value),
                    _fmt_p(t.p_holm),
                    *extra,
                    "significant" if verdict.significant(alpha) else "n.s.",
                )
    return table


def _columns(table: Table, left: Sequence[str], right: Sequence[str]) -> None:
    for col in left:
        table.add_column(col)
    for col in right:
        table.add_column(col, justify="right")


# --- audit ----------------------------------------------------------------------------------
