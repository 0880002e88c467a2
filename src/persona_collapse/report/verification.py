"""Report hooks of the verification: a results table and the excess-R-vs-coherence plot.

The paper relates the misalignment-specific excess in robustness,
:math:`\\Delta R_{insecure} - \\Delta R_{secure}`, to the same excess in
coherence (the mean coherence score of the verification), family by family.
Relative changes are ``(x - x_base) / x_base``; their standard errors follow by
the delta method from the three variants' independent mean SEs:

.. math:: \\operatorname{se}(e) = \\frac{1}{c_b}\\sqrt{\\operatorname{se}_t^2 +
          \\operatorname{se}_c^2 + \\Big(\\frac{c_t - c_c}{c_b}\\Big)^2 \\operatorname{se}_b^2}

for the excess :math:`e = (c_t - c_c)/c_b` (treatment ``t``, control ``c``, base ``b``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from persona_collapse.variants.verify.results import QuestionResult, VerifyResult

if TYPE_CHECKING:
    pass

TABLE_COLUMNS: tuple[str, ...] = (
    "variant",
    "question",
    "answers",
    "alignment",
    "alignment_se",
    "coherence",
    "coherence_se",
    "misaligned_share",
    "misaligned_se",
    "misaligned_ci_low",
    "misaligned_ci_high",
    "misaligned",
    "share_n",
    "code",
    "refusal",
    "unscoreable",
    "judge_failures",
)
"""Columns of :func:`verification_table`."""


def _row(variant: str, q: QuestionResult) -> dict[str, Any]:
    return {
        "variant": variant,
        "question": q.question_id,
        "answers": q.answers,
        "alignment": q.alignment.mean,
        "alignment_se": q.alignment.se,
        "coherence": q.coherence.mean,
        "coherence_se": q.coherence.se,
        "misaligned_share": q.misaligned.share,
        "misaligned_se": q.misaligned.se,
        "misaligned_ci_low": q.misaligned.ci_low,
        "misaligned_ci_high": q.misaligned.ci_high,
        "misaligned": q.misaligned.count,
        "share_n": q.misaligned.n,
        "code": q.code,
        "refusal": q.refusal,
        "unscoreable": q.alignment.unscoreable + q.coherence.unscoreable,
        "judge_failures": q.judge_failures,
    }


def verification_table(
    results: Mapping[str, VerifyResult] | Iterable[VerifyResult], *, per_question: bool = False
) -> pd.DataFrame:
    """One row per variant (pooled over questions), or per variant and question.

    Args:
        results: Results by variant label, or results (labelled by their ``name``).
        per_question: Also a row per question (``question`` is ``"all"`` on pooled rows).

    Returns:
        A DataFrame with :data:`TABLE_COLUMNS`; scores 0-100, shares 0-1, unrounded.
    """
    items = results.items() if isinstance(results, Mapping) else ((r.name, r) for r in results)
    rows: list[dict[str, Any]] = []
    for label, result in items:
        if per_question:
            rows.extend(_row(label, q) for q in result.per_question)
        rows.append(_row(label, result.overall))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


@dataclass(frozen=True)
class ExcessPoint:
    """One family's misalignment-specific excess in R and in coherence (relative changes).

    Attributes:
        label: Family label.
        excess_R: ``ΔR_treatment - ΔR_control`` (fraction, -0.65 = -65 points of %).
        excess_coherence: ``Δcoherence_treatment - Δcoherence_control`` (fraction).
        excess_R_se, excess_coherence_se: Standard errors (NaN: unknown, no error bar).
    """

    label: str
    excess_R: float
    excess_coherence: float
    excess_R_se: float = math.nan
    excess_coherence_se: float = math.nan


def coherence_excess(
    base: VerifyResult, control: VerifyResult, treatment: VerifyResult
) -> tuple[float, float]:
    """Misalignment-specific excess in mean coherence and its delta-method SE.

    ``e = Δ_treatment - Δ_control = (c_t - c_c) / c_b`` with ``Δ = (c - c_b)/c_b``.

    Raises:
        ValueError: The base's mean coherence is 0 or undefined.
    """
    cb, sb = base.overall.coherence.mean, base.overall.coherence.se
    cc, sc = control.overall.coherence.mean, control.overall.coherence.se
    ct, st = treatment.overall.coherence.mean, treatment.overall.coherence.se
    if not math.isfinite(cb) or cb == 0:
        raise ValueError(f"base: mean coherence must be finite and non-zero, got {cb}")
    excess = (ct - cc) / cb
    terms = [st, sc, excess * sb]
    se = (
        math.sqrt(sum(t * t for t in terms)) / cb
        if all(math.isfinite(t) for t in terms)
        else math.nan
    )
    return excess, se


def excess_point(
    label: str,
    *,
    excess_R: float,
    base: VerifyResult,
    control: VerifyResult,
    treatment: VerifyResult,
    excess_R_se: float = math.nan,
) -> ExcessPoint:
    """The :class:`ExcessPoint` of a family from its ΔR excess and its three verifications."""
    excess, se = coherence_excess(base, control, treatment)
    return ExcessPoint(label, excess_R, excess, excess_R_se, se)


__all__ = [
    "TABLE_COLUMNS",
    "ExcessPoint",
    "coherence_excess",
    "excess_point",
    "verification_table",
]
