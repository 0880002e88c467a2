"""inspect_ai tasks: run persona-collapse's protocol inside ``inspect eval``.

With ``pip install 'persona-collapse[inspect]'`` the tasks resolve by name::

    inspect eval persona_collapse/mfq_personas --model anthropic/claude-… -T n_personas=20
    inspect eval persona_collapse/mfq_self --model openai/gpt-4o-mini --epochs 10

One sample per persona-item cell (one per item in self runs), one epoch per
repetition. The :func:`short_answer` solver is the engine's answer protocol: up to
``MAX_SHORT_ATTEMPTS`` one-token requests of the same prompt, then one long request
parsed by the long-form parser; the :func:`rating` scorer records the parsed rating
(``INVALID_RATING`` for a parse failure) with every attempt, so ``inspect view``
shows them and ``pcollapse import LOG.eval`` reads them back into a run store.

This module is a top-level integration: it imports inspect_ai at load time, so
nothing else in the package imports it (the layer contract keeps it on top).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    get_model,
)
from inspect_ai.scorer import Score, Scorer, Target, mean, metric, scorer
from inspect_ai.scorer._metric import Metric, SampleScore
from inspect_ai.solver import Generate, Solver, TaskState, solver

from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument, load_instrument
from persona_collapse.core.personas import get_persona_set
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    MAX_SHORT_ATTEMPTS,
    SHORT_MAX_TOKENS,
    PromptTemplate,
    extract_rating,
    load_template,
    render_prompt,
    template_hash,
)
from persona_collapse.core.types import Prompt
from persona_collapse.store.inspect_log import PROTOCOL, PROTOCOL_VERSION, TASK_NAMES

STORE_KEY = "persona_collapse"
"""Key of the per-sample protocol record in the sample's metadata and store."""


def _messages(prompt: Prompt) -> list[ChatMessage]:
    kinds: dict[str, Any] = {
        "system": ChatMessageSystem,
        "user": ChatMessageUser,
        "assistant": ChatMessageAssistant,
    }
    return [kinds[m.role](content=m.content) for m in prompt.messages]


@solver
def short_answer(
    scale_min: int,
    scale_max: int,
    temperature: float = 0.1,
    max_short_attempts: int = MAX_SHORT_ATTEMPTS,
) -> Solver:
    """The engine's answer protocol for one sample (one slot).

    The same prompt is sent up to ``max_short_attempts`` times with
    ``max_tokens = SHORT_MAX_TOKENS`` until a reply starts with a rating; then once
    with ``LONG_MAX_TOKENS``, parsed in long-form mode. Every attempt is recorded in
    the sample store under :data:`STORE_KEY`.
    """
    scale = (int(scale_min), int(scale_max))

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        model = get_model()
        prompt = list(state.messages)
        attempts: list[dict[str, Any]] = []
        rating: int | None = None
        reply = ""
        plan = [(SHORT_MAX_TOKENS, False)] * max_short_attempts + [(LONG_MAX_TOKENS, True)]
        for number, (max_tokens, long_form) in enumerate(plan, start=1):
            output = await model.generate(
                prompt, config=GenerateConfig(max_tokens=max_tokens, temperature=temperature)
            )
            state.output = output
            reply = output.completion
            rating = extract_rating(reply, scale, long_form=long_form)
            attempts.append(
                {
                    "attempt": number,
                    "max_tokens": max_tokens,
                    "long_form": long_form,
                    "response": reply,
                    "rating": rating,
                }
            )
            if rating is not None:
                break
        state.messages = [*prompt, ChatMessageAssistant(content=reply)]
        record = {
            "rating": INVALID_RATING if rating is None else rating,
            "parsed": rating is not None,
            "failures": len(attempts) - 1 if rating is not None else len(attempts),
            "response": reply,
            "attempts": attempts,
        }
        state.store.set(STORE_KEY, record)
        return state

    return solve


@metric
def parsed_share() -> Metric:
    """Share of samples whose reply gave a rating."""

    def compute(scores: list[SampleScore]) -> float:
        if not scores:
            return 0.0
        meta = [s.score.metadata or {} for s in scores]
        return sum(bool(m.get("parsed")) for m in meta) / len(scores)

    return compute


@scorer(metrics=[mean(), parsed_share()])
def rating() -> Scorer:
    """The parsed rating of the sample (``INVALID_RATING`` when none was parsed)."""

    async def score(state: TaskState, target: Target) -> Score:
        record = state.store.get(STORE_KEY) or {}
        value = int(record.get("rating", INVALID_RATING))
        parsed = bool(record.get("parsed"))
        attempts = record.get("attempts", [])
        return Score(
            value=value,
            answer=str(record.get("response", "")),
            explanation=(
                f"rating {value} after {len(attempts)} attempt(s)"
                if parsed
                else f"parse failure: no rating in {len(attempts)} attempt(s)"
            ),
            metadata={
                "parsed": parsed,
                "failures": int(record.get("failures", 0)),
                "attempts": attempts,
            },
        )

    return score


def _template(path: str | None) -> PromptTemplate:
    return DEFAULT_TEMPLATE if path is None else load_template(Path(path))


def _build(
    kind: str,
    instrument: str,
    personas: str | None,
    n_personas: int | None,
    repetitions: int,
    temperature: float,
    template: str | None,
) -> Task:
    inst: Instrument = load_instrument(instrument)
    tmpl = _template(template)
    texts: list[str] = []
    if kind == "persona":
        texts = list(get_persona_set(personas or "default"))
        if n_personas is not None:
            texts = texts[: int(n_personas)]
    who: list[tuple[int, str | None]] = (
        list(enumerate(texts)) if kind == "persona" else [(SELF_PERSONA_ID, None)]
    )
    samples = []
    for persona_id, text in who:
        for item in inst.active_items:
            prompt = render_prompt(tmpl, inst, item.id, text)
            samples.append(
                Sample(
                    id=f"p{persona_id}-i{item.id}",
                    input=_messages(prompt),
                    metadata={"persona_id": persona_id, "item_id": item.id},
                )
            )
    metadata = {
        "protocol": PROTOCOL,
        "protocol_version": PROTOCOL_VERSION,
        "kind": kind,
        "instrument_name": inst.name,
        "instrument_hash": inst.content_hash,
        "instrument_json": json.dumps(inst.to_dict(), ensure_ascii=False),
        "personas": texts,
        "template_hash": template_hash(tmpl, inst),
        "temperature": float(temperature),
        "repetitions": int(repetitions),
    }
    return Task(
        dataset=MemoryDataset(samples, name=f"{inst.name}-{kind}"),
        solver=short_answer(inst.scale_min, inst.scale_max, temperature),
        scorer=rating(),
        epochs=Epochs(int(repetitions)),
        metadata=metadata,
    )


@task
def mfq_personas(
    instrument: str = "mfq30",
    personas: str = "default",
    n_personas: int | None = None,
    repetitions: int = 10,
    temperature: float = 0.1,
    template: str | None = None,
) -> Task:
    """Persona role-play: every persona answers every item, ``repetitions`` times.

    Args:
        instrument: Built-in instrument name or YAML file.
        personas: Built-in persona set (``default``, ``toxic``) or a persona file.
        n_personas: Use only the first ``n_personas`` personas.
        repetitions: Epochs (repetitions per persona-item cell).
        temperature: Sampling temperature.
        template: Prompt template YAML file (default: the built-in wording).
    """
    return _build("persona", instrument, personas, n_personas, repetitions, temperature, template)


@task
def mfq_self(
    instrument: str = "mfq30",
    repetitions: int = 10,
    temperature: float = 0.1,
    template: str | None = None,
) -> Task:
    """Self run: the model answers every item as itself, ``repetitions`` times."""
    return _build("self", instrument, None, None, repetitions, temperature, template)


__all__ = [
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "STORE_KEY",
    "TASK_NAMES",
    "mfq_personas",
    "mfq_self",
    "rating",
    "short_answer",
]
