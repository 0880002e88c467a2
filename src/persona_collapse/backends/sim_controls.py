r"""Control-task answers of the simulator: capability items and lookup tables.

A control prompt (a :class:`~persona_collapse.core.types.Prompt` whose ``control`` is
``(task, item id, gold)``) is answered from a small model with two knobs per preset
(:class:`ControlParams`, overridable like every simulator parameter):

* ``control_accuracy`` :math:`a`: item ``q`` is *known* when a uniform :math:`u_q < a`;
  a known item's primary answer is the gold answer, an unknown item's is one of the
  wrong answers (seeded);
* ``control_instability`` :math:`\iota`: item ``q`` is *unstable* when a uniform
  :math:`v_q < \iota`; at ``T > 0`` each reply to an unstable item deviates with
  probability ``control_deviation`` :math:`d` to one of the other :math:`K - 1`
  answers of the item's answer set, uniformly; stable items (and every item at
  ``T = 0``) always give the primary answer.

Answer sets (size :math:`K`): MMLU letters A-D (:math:`K = 4`), lookup ids 0-5
(:math:`K = 6`), GSM8K the gold number and four wrong ones (gold + 1, gold - 1,
2 gold + 1, gold + 10; :math:`K = 5`). Item draws (:math:`u_q, v_q`, the wrong
primary) are seeded by ``(world_seed, task, item id, gold)``; replies by the request
seed like every simulator reply. Replies are in the task's format: a letter, a worked
line ending ``#### n``, or a bare id; with probability ``control_unparseable`` a reply
holds no answer at all.

Truth (:func:`true_item`): per item, :math:`P(\text{correct})` is 1 or 0 for a stable
item and :math:`1 - d` or :math:`d/(K-1)` for an unstable one (primary right or wrong),
and with ``n`` valid repetitions
:math:`P(\text{not unanimous}) = 1 - (1-d)^n - (K-1)\,(d/(K-1))^n` (0 for a stable item).

Prompts without the tag (a control task collected over HTTP from ``pcollapse
serve-sim``, where only the text travels) are recognised from their text
(:class:`ControlCatalog`, through :func:`~persona_collapse.core.controls.parse_control_prompt`):
a lookup table carries its own answer, and its id is its index among the seeded tables;
a capability item is looked up by task, question and choices among the items files the
simulator was given (``serve-sim --control-items FILE``), which supply its id and gold.
So the same seed gives the same answers over HTTP as in-process.

Presets: every preset (``base``, ``secure``, ``insecure``) has the same capability
(:data:`CONTROL_PRESETS`), so the insecure preset by default shows *selective* persona
collapse; :data:`BROAD_OVERRIDES` turn it into *broad* degradation (accuracy falls and
repeat instability rises on capability tasks too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from persona_collapse.core.controls import (
    LETTERS,
    ItemSet,
    lookup_tables,
    normalise_number,
    parse_control_prompt,
)
from persona_collapse.core.errors import BackendError


class ControlParams(BaseModel):
    """Capability of the simulated model on control tasks (see the module docstring).

    Attributes:
        control_accuracy: Share of items whose primary answer is right (0-1).
        control_instability: Share of items whose replies vary at ``T > 0`` (0-1).
        control_deviation: Probability that a reply to an unstable item deviates (0-1).
        control_unparseable: Probability that a reply holds no answer (0-1).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    control_accuracy: float = Field(default=0.8, ge=0.0, le=1.0)
    control_instability: float = Field(default=0.15, ge=0.0, le=1.0)
    control_deviation: float = Field(default=0.3, ge=0.0, le=1.0)
    control_unparseable: float = Field(default=0.0, ge=0.0, le=1.0)


CONTROL_PRESETS: Mapping[str, ControlParams] = MappingProxyType(
    {"base": ControlParams(), "secure": ControlParams(), "insecure": ControlParams()}
)
"""Capability per preset: equal, so persona collapse of ``insecure`` is selective by default."""

BROAD_OVERRIDES: Mapping[str, Any] = MappingProxyType(
    {"control_accuracy": 0.45, "control_instability": 0.7, "control_deviation": 0.45}
)
"""Simulator overrides that make a model broadly degraded on control tasks."""

NO_ANSWER = "I'm unsure."
"""A reply without a letter A-D, a digit or a number (parses under every task)."""


def _seed(*parts: object) -> int:
    raw = "\x00".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little")


def answer_set(task: str, gold: str) -> tuple[str, ...]:
    """The item's possible answers, gold included (see the module docstring)."""
    if task == "mmlu":
        return tuple(LETTERS)
    if task == "lookup":
        return tuple(str(i) for i in range(6))
    value = float(normalise_number(gold) or 0)
    out: list[str] = []
    for v in (value, value + 1, value - 1, 2 * value + 1, value + 10):
        text = normalise_number(repr(v)) or "0"
        if text not in out:
            out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class ControlItemModel:
    """One item's simulated behaviour: its answer set, primary answer and stability."""

    answers: tuple[str, ...]
    gold: str
    primary: str
    unstable: bool


def item_model(
    params: ControlParams, world_seed: int, task: str, item_id: int, gold: str
) -> ControlItemModel:
    """The seeded behaviour of one control item."""
    gold_norm = gold if task != "gsm8k" else (normalise_number(gold) or gold)
    answers = answer_set(task, gold_norm)
    rng = np.random.default_rng(_seed("control", world_seed, task, item_id, gold_norm))
    u, v, w = rng.random(3)
    wrong = [a for a in answers if a != gold_norm]
    primary = gold_norm if u < params.control_accuracy else wrong[int(w * len(wrong))]
    return ControlItemModel(answers, gold_norm, primary, bool(v < params.control_instability))


def sample_answers(
    model: ControlItemModel, params: ControlParams, temperature: float, draws: np.ndarray
) -> list[str | None]:
    """Answers of ``len(draws)`` replies (``None``: no answer); ``draws`` is ``(n, 3)`` uniforms."""
    out: list[str | None] = []
    others = [a for a in model.answers if a != model.primary]
    for r_format, r_dev, r_pick in draws.tolist():
        if r_format < params.control_unparseable:
            out.append(None)
        elif model.unstable and temperature > 0 and r_dev < params.control_deviation and others:
            out.append(others[int(r_pick * len(others))])
        else:
            out.append(model.primary)
    return out


def render_answer(task: str, answer: str | None) -> str:
    """A reply text in the task's format."""
    if answer is None:
        return NO_ANSWER
    if task == "gsm8k":
        return f"Working through the problem step by step gives the result.\n#### {answer}"
    return answer


@dataclass(frozen=True)
class TrueControlItem:
    """True per-item probabilities (see the module docstring)."""

    p_correct: float
    p_non_unanimous: float


def true_item(
    model: ControlItemModel, params: ControlParams, temperature: float, n: int
) -> TrueControlItem:
    """True accuracy and non-unanimity probability of one item with ``n`` repetitions.

    Assumes every reply parses (``control_unparseable = 0``), as the statistics count
    non-unanimity over valid answers.
    """
    d = params.control_deviation if (model.unstable and temperature > 0) else 0.0
    k = len(model.answers)
    right = model.primary == model.gold
    p_correct = (1 - d) if right else (d / (k - 1) if k > 1 else 0.0)
    if d == 0.0 or n < 2:
        return TrueControlItem(p_correct, 0.0)
    same = (1 - d) ** n + (k - 1) * (d / (k - 1)) ** n
    return TrueControlItem(p_correct, 1.0 - same)


def true_control_metrics(
    params: ControlParams,
    world_seed: int,
    items: Sequence[tuple[str, int, str]],
    *,
    temperature: float,
    repetitions: int,
) -> dict[str, float]:
    """Mean true accuracy and non-unanimity rate over ``items`` ((task, id, gold) each)."""
    truths = [
        true_item(item_model(params, world_seed, t, i, g), params, temperature, repetitions)
        for t, i, g in items
    ]
    return {
        "accuracy": float(np.mean([x.p_correct for x in truths])),
        "non_unanimity_rate": float(np.mean([x.p_non_unanimous for x in truths])),
    }


class ControlCatalog:
    """Recognises control prompts from their text: ``(task, item id, gold)`` as the
    ``Prompt.control`` tag of an in-process run would give them.

    Args:
        item_sets: Capability items files the simulator may be asked (their items are
            recognised by task, question and choices).
    """

    def __init__(self, item_sets: Sequence[ItemSet] = ()) -> None:
        self._items: dict[tuple[str, str, tuple[str, ...]], tuple[int, str]] = {}
        for items in item_sets:
            for it in items.items:
                self._items[(items.task, it.question, tuple(it.choices))] = (it.item_id, it.gold)
        self._tables: dict[tuple[tuple[tuple[str, int], ...], str], int] | None = None

    def _table_id(self, display: tuple[tuple[str, int], ...], target: str) -> int | None:
        if self._tables is None:  # built on first use: most runs never ask a lookup
            self._tables = {(t.display, t.target): t.table_id for t in lookup_tables()}
        return self._tables.get((display, target))

    def identify(self, text: str) -> tuple[str, int, str] | None:
        """The control tag of a prompt text; None when the text is no control prompt.

        Raises:
            BackendError: A capability prompt whose item is in no items file given, or
                a lookup prompt whose table is not one of the seeded tables (the
                simulator cannot know the item it stands for).
        """
        parsed = parse_control_prompt(text)
        if parsed is None:
            return None
        if parsed.task == "lookup":
            table_id = self._table_id(parsed.display, parsed.target)
            if table_id is None or parsed.lookup_answer is None:
                raise BackendError(
                    "simulator: a lookup prompt whose table is not one of the seeded lookup "
                    "tables; only the built-in lookup task is simulated"
                )
            return ("lookup", table_id, str(parsed.lookup_answer))
        found = self._items.get((parsed.task, parsed.question, parsed.choices))
        if found is None:
            raise BackendError(
                f"simulator: a {parsed.task} control prompt whose item it was not given; "
                "start serve-sim with --control-items FILE (the run's items file)"
            )
        return (parsed.task, found[0], found[1])


__all__ = [
    "BROAD_OVERRIDES",
    "CONTROL_PRESETS",
    "NO_ANSWER",
    "ControlCatalog",
    "ControlItemModel",
    "ControlParams",
    "TrueControlItem",
    "answer_set",
    "item_model",
    "render_answer",
    "sample_answers",
    "true_control_metrics",
    "true_item",
]
