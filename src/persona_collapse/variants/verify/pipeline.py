"""The verification pipeline: ask the open-ended questions, judge every answer, aggregate.

For each question and sample ``k < n_samples`` the answering backend is asked
once (``n = 1``, request seed derived from (seed, question, k), so sample ``k``
is the same answer whatever ``n_samples`` is). Each answer is then judged on
the alignment scale and, unless the judge labels it ``CODE`` / ``REFUSAL``, on
the coherence scale (see :mod:`persona_collapse.core.judge` for the two
methods). Everything is written to a :class:`~persona_collapse.variants.verify.store.VerifyStore`
as it arrives; a rerun asks only what is missing.

Requests are paced by the engine's :class:`~persona_collapse.engine.pacing.Pacer`,
as in collection: at most ``max_concurrency`` in flight (lowered while rate limited),
optional requests/tokens-per-minute caps, and a
:class:`~persona_collapse.core.errors.TransientBackendError` retried with exponential
backoff (honouring ``retry_after``). A judge reply without a usable number (sampling method) is
recorded and asked again, up to ``judge_retries`` times, the retries at
temperature ``max(judge_temperature, 1)`` with new seeds (a deterministic judge
would repeat itself at 0); after the last one the judgment is stored as failed
and counted, never scored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pandas as pd
from pydantic import ConfigDict, Field

from persona_collapse.backends import ModelBackendSpec, build_backend, create_model_backend
from persona_collapse.backends.base import Backend, Message, Prompt, Usage
from persona_collapse.core.config import (
    FileConfig,
    JudgeMode,
    PacingSettings,
    VerifySettings,
)
from persona_collapse.core.em_questions import Question, get_questions
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
)
from persona_collapse.core.files import FilePaths
from persona_collapse.core.judge import (
    JUDGE_SCALE,
    RUBRICS,
    VERDICTS,
    ScaleName,
    judge_prompt,
    parse_judge_reply,
    score_distribution,
)
from persona_collapse.engine.collect import SEED_MODULUS
from persona_collapse.engine.pacing import Pacer
from persona_collapse.variants.verify.results import (
    ANSWER_COLUMNS,
    Method,
    VerifyResult,
    label_answers,
    summarize_answers,
)
from persona_collapse.variants.verify.store import (
    AnswerSpec,
    FailedReply,
    JudgeSpec,
    Judgment,
    StoredRun,
    VerifyStore,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_JUDGE_BACKEND = "openai"
"""Backend of the reference judge (user-facing default)."""

DEFAULT_JUDGE_MODEL = "gpt-4o-2024-08-06"
"""Judge model of the ``openai`` judge backend when none is named (the reference's judge)."""

RETRY_TEMPERATURE = 1.0
"""Least temperature of a judge retry after a reply without a number."""


class VerifyConfig(VerifySettings, PacingSettings, FileConfig):
    """One emergent-misalignment verification: which model answers, which judge scores.

    The check's settings come from :class:`~persona_collapse.core.config.VerifySettings`
    (also a study's ``verify`` section), the pacing from
    :class:`~persona_collapse.core.config.PacingSettings`.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )
    yaml_what: ClassVar[str] = "verification configuration"

    @classmethod
    def _resolve_file_paths(cls, data: dict[str, Any], paths: FilePaths) -> dict[str, Any]:
        if not isinstance(data.get("store"), str):
            return data
        return {**data, "store": paths.path(data["store"], "store")}

    name: str | None = None
    """Run label in the store; default the model label."""

    backend: str = "simulator"
    """Backend answering the questions (see ``pcollapse backends``)."""

    model: str | None = None
    """Model answering (simulator: the preset name)."""

    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword options of the answering backend (never secrets)."""

    judge_backend: str = DEFAULT_JUDGE_BACKEND
    """Backend of the judge; the reference judge is GPT-4o through the OpenAI API."""

    judge_model: str | None = None
    """Judge model; default :data:`DEFAULT_JUDGE_MODEL` on the ``openai`` backend (the
    reference's judge). Simulator: any preset (the simulated judge is the same)."""

    judge_options: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword options of the judge backend (e.g. ``base_url``, ``api_key_env``)."""

    store: Path = Field(default=Path("pcollapse-verify.db"), strict=False)
    """SQLite verification store."""

    @property
    def model_label(self) -> str:
        """The answering model's label: ``model``, else the backend name."""
        return self.model or str(self.backend_options.get("preset") or self.backend)

    @property
    def resolved_judge_model(self) -> str | None:
        """``judge_model``, or :data:`DEFAULT_JUDGE_MODEL` for the default judge backend."""
        if self.judge_model:
            return self.judge_model
        return DEFAULT_JUDGE_MODEL if self.judge_backend == DEFAULT_JUDGE_BACKEND else None

    @property
    def judge_label(self) -> str:
        """The judge's label: its model, else the judge backend name."""
        return self.resolved_judge_model or self.judge_backend


def build_judge(config: VerifyConfig) -> Backend:
    """The judge backend of ``config``.

    A judge that warns about low-mass cells warns at ``min_number_mass``, the mass
    below which this pipeline calls an answer unscoreable.
    """
    spec = ModelBackendSpec(
        config.judge_backend,
        config.resolved_judge_model,
        options=config.judge_options,
        context={"min_scale_mass": config.min_number_mass},
    )
    return build_backend(spec)


def request_seed(seed: int, *parts: object) -> int:
    """A request seed in ``[0, SEED_MODULUS)`` from the run seed and the slot (BLAKE2b)."""
    raw = ":".join([str(int(seed)), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % SEED_MODULUS


def resolve_method(mode: JudgeMode, judge: Backend) -> Method:
    """The judging method: ``auto`` picks logprobs when the judge offers distributions.

    Raises:
        ConfigError: ``logprobs`` asked of a backend without distributions.
    """
    if mode == "sampling":
        return "sampling"
    if mode == "logprobs":
        if not judge.supports_distributions:
            raise ConfigError(
                f"judge backend {judge.name!r} cannot return logprobs; use judge_mode 'sampling'"
            )
        return "logprobs"
    return "logprobs" if judge.supports_distributions else "sampling"


@dataclass(frozen=True)
class VerifyProgress:
    """Progress of a verification, passed to a callback after each answer is fully judged.

    Attributes:
        done: Answers fully judged (earlier sessions included).
        total: Answers in the run.
        judge_failures: Judgments stored as failed in this session.
    """

    done: int
    total: int
    judge_failures: int


@dataclass
class _Session:
    config: VerifyConfig
    store: VerifyStore
    run: StoredRun
    judge_id: int
    backend: Backend
    judge: Backend
    method: Method
    pacer: Pacer
    answers: dict[tuple[str, int], str]
    judgments: dict[tuple[str, int, str], Judgment]
    progress: Callable[[VerifyProgress], None] | None
    total: int
    done: int = 0
    failures: int = 0

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` through the session's pacer (slots, rate caps, retries)."""
        return await self.pacer.call(fn)


def _question_prompt(question: Question, system_prompt: str | None) -> Prompt:
    user = Message("user", question.text)
    if system_prompt is None:
        return Prompt((user,))
    return Prompt((Message("system", system_prompt), user))


async def _answer(session: _Session, question: Question, sample: int) -> str:
    key = (question.id, sample)
    if key in session.answers:
        return session.answers[key]
    cfg = session.config
    seed = request_seed(cfg.seed, "answer", question.id, sample)
    prompt = _question_prompt(question, cfg.system_prompt)

    async def ask() -> Any:
        return await session.backend.generate(
            [prompt], n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=seed
        )

    generations = await session.call(ask)
    if len(generations) != 1 or not generations[0].texts:
        raise BackendError(
            f"backend {session.backend.name!r} returned no answer to question {question.id!r}"
        )
    text = generations[0].texts[0]
    session.store.add_answer(
        session.run.run_id, question.id, sample, text, seed=seed, usage=generations[0].usage
    )
    session.answers[key] = text
    return text


async def _judge_logprobs(
    session: _Session, question: Question, sample: int, scale: ScaleName, answer: str
) -> Judgment:
    prompt = judge_prompt(scale, question.text, answer)

    async def ask() -> Any:
        return await session.judge.distributions([prompt], scale=JUDGE_SCALE, temperature=1.0)

    dists = await session.call(ask)
    if len(dists) != 1:
        raise BackendError(f"judge backend {session.judge.name!r} returned {len(dists)} results")
    scored = score_distribution(dists[0])
    raw = dict(dists[0].raw or {})
    pairs = raw.get("top_logprobs")
    return Judgment(
        question.id,
        sample,
        scale,
        scored.score,
        scored.mass,
        scored.verdict if scale == "alignment" else None,
        False,
        1,
        None,
        {"top_logprobs": pairs} if pairs is not None else None,
        dists[0].usage,
    )


async def _judge_sampling(
    session: _Session, question: Question, sample: int, scale: ScaleName, answer: str
) -> tuple[Judgment, list[FailedReply]]:
    cfg = session.config
    prompt = judge_prompt(scale, question.text, answer)
    allowed = VERDICTS if scale == "alignment" else ()
    failures: list[FailedReply] = []
    usage = Usage()
    reply = ""
    for attempt in range(cfg.judge_retries + 1):
        temperature = (
            cfg.judge_temperature if attempt == 0 else max(cfg.judge_temperature, RETRY_TEMPERATURE)
        )
        seed = request_seed(cfg.seed, "judge", scale, question.id, sample, attempt)

        async def ask(temperature: float = temperature, seed: int = seed) -> Any:
            return await session.judge.generate(
                [prompt], n=1, temperature=temperature, max_tokens=cfg.judge_max_tokens, seed=seed
            )

        generations = await session.call(ask)
        usage = usage + (generations[0].usage if generations else Usage())
        reply = generations[0].texts[0] if generations and generations[0].texts else ""
        parsed = parse_judge_reply(reply, verdicts=allowed)
        if parsed.kind == "score":
            return Judgment(
                question.id,
                sample,
                scale,
                parsed.score,
                None,
                None,
                False,
                attempt + 1,
                reply,
                None,
                usage,
            ), failures
        if parsed.kind == "verdict":
            return Judgment(
                question.id,
                sample,
                scale,
                None,
                None,
                parsed.verdict,
                False,
                attempt + 1,
                reply,
                None,
                usage,
            ), failures
        failures.append(
            FailedReply(
                question.id, sample, scale, attempt, seed, reply, parsed.problem or "invalid"
            )
        )
    logger.info(
        "judge gave no usable %s score for %s #%d after %d tries (last reply %r)",
        scale,
        question.id,
        sample,
        len(failures),
        reply[:80],
    )
    return Judgment(
        question.id, sample, scale, None, None, None, True, len(failures), reply, None, usage
    ), failures


async def _judgment(
    session: _Session, question: Question, sample: int, scale: ScaleName, answer: str
) -> Judgment:
    key = (question.id, sample, scale)
    if key in session.judgments:
        return session.judgments[key]
    failures: list[FailedReply] = []
    if session.method == "logprobs":
        judgment = await _judge_logprobs(session, question, sample, scale, answer)
    else:
        judgment, failures = await _judge_sampling(session, question, sample, scale, answer)
    session.store.add_judgment(session.run.run_id, session.judge_id, judgment, failures=failures)
    session.judgments[key] = judgment
    session.failures += int(judgment.failed)
    return judgment


def _labelled_by_judge(judgment: Judgment, method: Method, min_mass: float) -> bool:
    """Whether the alignment judge's verdict excludes the answer (no coherence needed)."""
    if judgment.verdict is None:
        return False
    if method == "sampling":
        return True
    return judgment.score is None or (judgment.mass or 0.0) < min_mass


async def _verify_one(session: _Session, question: Question, sample: int) -> None:
    answer = await _answer(session, question, sample)
    alignment = await _judgment(session, question, sample, "alignment", answer)
    if not _labelled_by_judge(alignment, session.method, session.config.min_number_mass):
        await _judgment(session, question, sample, "coherence", answer)
    session.done += 1
    if session.progress is not None:
        session.progress(VerifyProgress(session.done, session.total, session.failures))


def judge_spec(config: VerifyConfig, judge: Backend, method: Method) -> JudgeSpec:
    """The :class:`JudgeSpec` of ``judge`` used as ``config`` says."""
    rubric_hash = hashlib.sha256("\x00".join(RUBRICS.values()).encode()).hexdigest()
    settings: dict[str, Any] = {"describe": judge.describe(), "rubrics": rubric_hash}
    if method == "sampling":
        settings.update(
            max_tokens=config.judge_max_tokens,
            temperature=config.judge_temperature,
            retries=config.judge_retries,
        )
    return JudgeSpec(config.judge_label, judge.name, settings, method)


def answer_spec(
    config: VerifyConfig, backend: Backend, questions: tuple[Question, ...]
) -> AnswerSpec:
    """The :class:`AnswerSpec` of asking ``questions`` of ``backend`` as ``config`` says."""
    return AnswerSpec(
        model=config.model_label,
        backend=backend.name,
        backend_settings=backend.describe(),
        questions=tuple((q.id, q.text) for q in questions),
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        system_prompt=config.system_prompt,
        seed=config.seed,
        name=config.name,
    )


def answers_frame(
    store: VerifyStore,
    run: StoredRun,
    judge_id: int,
    questions: tuple[Question, ...],
    n_samples: int,
) -> pd.DataFrame:
    """One row per answer slot (first ``n_samples`` of each question) with its judgments.

    Columns: :data:`~persona_collapse.variants.verify.results.ANSWER_COLUMNS`, plus the
    judges' last replies (``alignment_reply``, ``coherence_reply``).
    """
    answers = store.answers(run.run_id)
    judgments = store.judgments(run.run_id, judge_id)
    rows: list[dict[str, Any]] = []
    for q in questions:
        for k in range(n_samples):
            if (q.id, k) not in answers:
                continue
            row: dict[str, Any] = {"question_id": q.id, "sample": k, "answer": answers[(q.id, k)]}
            for scale in ("alignment", "coherence"):
                j = judgments.get((q.id, k, scale))
                row[scale] = float("nan") if j is None or j.score is None else float(j.score)
                row[f"{scale}_mass"] = (
                    float("nan") if j is None or j.mass is None else float(j.mass)
                )
                row[f"{scale}_verdict"] = None if j is None else j.verdict
                row[f"{scale}_failed"] = False if j is None else j.failed
                row[f"{scale}_reply"] = None if j is None else j.reply
            rows.append(row)
    columns = [*ANSWER_COLUMNS, "alignment_reply", "coherence_reply"]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class VerifyOutcome:
    """Result of :func:`verify`: the aggregates and the labelled answers.

    Attributes:
        result: Aggregated results.
        answers: One row per answer (see :func:`answers_frame` and
            :func:`~persona_collapse.variants.verify.results.label_answers`).
        store: Path of the verification store.
        asked: Answers judged in this session (0 when everything was stored).
        usage: Token usage of the stored answers and judgments.
    """

    result: VerifyResult
    answers: pd.DataFrame
    store: Path
    asked: int
    usage: Mapping[str, Usage]


def summarize(
    config: VerifyConfig,
    frame: pd.DataFrame,
    *,
    name: str,
    method: Method,
    questions: tuple[Question, ...],
) -> tuple[VerifyResult, pd.DataFrame]:
    """Label the answers of ``frame`` and aggregate them with ``config``'s thresholds."""
    labelled = label_answers(
        frame,
        method=method,
        min_number_mass=config.min_number_mass,
        alignment_threshold=config.alignment_threshold,
        coherence_threshold=config.coherence_threshold,
    )
    per_question, overall = summarize_answers(
        labelled, {q.id: q.text for q in questions}, share_of=config.share_of
    )
    result = VerifyResult(
        name=name,
        model=config.model_label,
        judge_model=config.judge_label,
        method=method,
        n_samples=config.n_samples,
        temperature=config.temperature,
        alignment_threshold=config.alignment_threshold,
        coherence_threshold=config.coherence_threshold,
        min_number_mass=config.min_number_mass,
        share_of=config.share_of,
        seed=config.seed,
        per_question=per_question,
        overall=overall,
    )
    return result, labelled


async def verify(
    config: VerifyConfig,
    *,
    backend: Backend | None = None,
    judge: Backend | None = None,
    progress: Callable[[VerifyProgress], None] | None = None,
) -> VerifyOutcome:
    """Ask, judge and aggregate (resuming whatever ``config.store`` already holds).

    Args:
        config: The verification settings.
        backend: Answering backend (default: built from ``config``).
        judge: Judge backend (default: built from ``config``).
        progress: Called after each answer is fully judged.

    Returns:
        The :class:`VerifyOutcome`.

    Raises:
        BackendError: A backend failed beyond its retries (what was stored stays
            stored: rerun to resume).
        ConfigError: Invalid settings.
    """
    questions = get_questions(config.questions)
    built: list[Backend] = []
    try:
        if backend is None:
            backend = create_model_backend(config.backend, config.model, config.backend_options)
            built.append(backend)
        if judge is None:
            judge = build_judge(config)
            built.append(judge)
        return await _verify(config, questions, backend, judge, progress)
    finally:
        for owned in built:
            await owned.aclose()


async def _verify(
    config: VerifyConfig,
    questions: tuple[Question, ...],
    backend: Backend,
    judge: Backend,
    progress: Callable[[VerifyProgress], None] | None,
) -> VerifyOutcome:
    method = resolve_method(config.judge_mode, judge)
    with VerifyStore.open(config.store) as store:
        run = store.get_or_create_run(answer_spec(config, backend, questions))
        judge_id = store.get_or_create_judge(judge_spec(config, judge, method))
        session = _Session(
            config=config,
            store=store,
            run=run,
            judge_id=judge_id,
            backend=backend,
            judge=judge,
            method=method,
            pacer=Pacer.from_settings(config.pacing),
            answers=store.answers(run.run_id),
            judgments=store.judgments(run.run_id, judge_id),
            progress=progress,
            total=len(questions) * config.n_samples,
        )
        slots = [(q, k) for q in questions for k in range(config.n_samples)]
        todo = [(q, k) for q, k in slots if not _complete(session, q, k)]
        session.done = len(slots) - len(todo)
        tasks = [asyncio.ensure_future(_verify_one(session, q, k)) for q, k in todo]
        try:
            await asyncio.gather(*tasks)
        except BackendError as exc:
            raise BackendError(
                f"verification of {run.name!r} stopped: {exc} (everything answered so far "
                "is stored; rerun to resume)"
            ) from None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        frame = answers_frame(store, run, judge_id, questions, config.n_samples)
        usage = store.usage(run.run_id, judge_id)
    result, labelled = summarize(config, frame, name=run.name, method=method, questions=questions)
    return VerifyOutcome(result, labelled, Path(config.store), len(todo), usage)


def _complete(session: _Session, question: Question, sample: int) -> bool:
    """Whether an answer slot is answered and judged on every scale it needs."""
    if (question.id, sample) not in session.answers:
        return False
    alignment = session.judgments.get((question.id, sample, "alignment"))
    if alignment is None:
        return False
    if _labelled_by_judge(alignment, session.method, session.config.min_number_mass):
        return True
    return (question.id, sample, "coherence") in session.judgments


def run_verify(
    config: VerifyConfig,
    *,
    backend: Backend | None = None,
    judge: Backend | None = None,
    progress: Callable[[VerifyProgress], None] | None = None,
) -> VerifyOutcome:
    """Synchronous :func:`verify` (runs its own event loop)."""
    return asyncio.run(verify(config, backend=backend, judge=judge, progress=progress))


__all__ = [
    "DEFAULT_JUDGE_MODEL",
    "RETRY_TEMPERATURE",
    "JudgeMode",
    "VerifyConfig",
    "VerifyOutcome",
    "VerifyProgress",
    "answer_spec",
    "answers_frame",
    "build_judge",
    "judge_spec",
    "request_seed",
    "resolve_method",
    "run_verify",
    "summarize",
    "verify",
]
