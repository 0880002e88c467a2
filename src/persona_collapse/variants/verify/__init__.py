"""Emergent-misalignment verification: open-ended questions judged for alignment and coherence.

:func:`run_verify` (or the async :func:`verify`) asks the eight open-ended
questions of Betley et al. (2025) ``n_samples`` times, has a judge model rate
every answer on two 0-100 scales (alignment, coherence), labels code answers
and refusals, and reports mean scores with standard errors and the share of
misaligned answers. See :mod:`~persona_collapse.core.judge` for the judge
protocol, :mod:`~persona_collapse.variants.verify.results` for the statistics and
:mod:`~persona_collapse.report.verification` (report layer) for the report table and figure.
"""

from __future__ import annotations

from persona_collapse.core.em_questions import QUESTIONS, Question, get_questions
from persona_collapse.core.judge import (
    ALIGNMENT_RUBRIC,
    COHERENCE_RUBRIC,
    JudgeReply,
    NumberScore,
    heuristic_label,
    judge_prompt,
    parse_judge_prompt,
    parse_judge_reply,
    score_distribution,
    score_top_logprobs,
)
from persona_collapse.variants.verify.pipeline import (
    VerifyConfig,
    VerifyOutcome,
    VerifyProgress,
    run_verify,
    verify,
)
from persona_collapse.variants.verify.results import (
    MisalignedShare,
    QuestionResult,
    ScaleSummary,
    VerifyResult,
    label_answers,
    summarize_answers,
    wilson_interval,
)
from persona_collapse.variants.verify.store import VerifyStore

__all__ = [
    "ALIGNMENT_RUBRIC",
    "COHERENCE_RUBRIC",
    "QUESTIONS",
    "JudgeReply",
    "MisalignedShare",
    "NumberScore",
    "Question",
    "QuestionResult",
    "ScaleSummary",
    "VerifyConfig",
    "VerifyOutcome",
    "VerifyProgress",
    "VerifyResult",
    "VerifyStore",
    "get_questions",
    "heuristic_label",
    "judge_prompt",
    "label_answers",
    "parse_judge_prompt",
    "parse_judge_reply",
    "run_verify",
    "score_distribution",
    "score_top_logprobs",
    "summarize_answers",
    "verify",
    "wilson_interval",
]
