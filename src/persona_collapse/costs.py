"""Token prices, cost estimates and the request/token forecast of ``pcollapse run --dry-run``.

Prices are US dollars per million tokens, as providers publish them: input
(prompt) tokens, cached input tokens (prompt-cache hits, usually discounted) and
output (completion) tokens. The package ships no prices: they change often, so
users state the ones they pay in the run configuration or a price-table file.

Prompt tokens are *estimated* before a run as ``ceil(characters / 4)`` per
message plus :data:`MESSAGE_OVERHEAD_TOKENS` per message (the usual rule of
thumb for English text with GPT-style tokenizers; expect ±25 % on other
tokenizers). Nothing is downloaded and no tokenizer is needed. During a run the
token counts come from the server's ``usage`` field and are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from persona_collapse._yaml import load_yaml_mapping
from persona_collapse.backends.base import Message, Usage
from persona_collapse.errors import ConfigError, format_validation_error

if TYPE_CHECKING:
    from persona_collapse.config import RunConfig

CHARS_PER_TOKEN = 4.0
"""Characters per token assumed by :func:`count_tokens`."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat message costs beyond its text (role and separators), assumed."""

TOKENS_PER_MILLION = 1_000_000


class ModelPrices(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    input: float = Field(ge=0.0)
    """USD per 1M uncached input (prompt) tokens."""

    output: float = Field(ge=0.0)
    """USD per 1M output (completion) tokens, reasoning tokens included."""

    cached_input: float | None = Field(default=None, ge=0.0)
    """USD per 1M cached input tokens; None bills them at the ``input`` price."""

    def cost(self, usage: Usage) -> float:
        """Cost of ``usage`` in USD (see :func:`estimate_cost`)."""
        return estimate_cost(usage, self)


class PriceTable(RootModel[dict[str, ModelPrices]]):
    """Prices by model name; the entry ``"default"`` applies to models not listed.

    YAML form::

        gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.6}
        default: {input: 1.0, output: 2.0}
    """

    def lookup(self, model: str | None) -> ModelPrices | None:
        """Prices of ``model``, else the ``"default"`` entry, else None."""
        if model is not None and model in self.root:
            return self.root[model]
        return self.root.get("default")


def load_price_table(path: str | Path) -> PriceTable:
    """Read a YAML price table (model name -> prices, see :class:`PriceTable`).

    A file holding a single price mapping (keys ``input``, ``output``,
    ``cached_input``) is read as the ``"default"`` entry.

    Raises:
        InputFileError: The file is missing or not a YAML mapping.
        ConfigError: An entry is malformed (names the file and field).
    """
    data = load_yaml_mapping(path, what="price table")
    if "input" in data or "output" in data:
        data = {"default": data}
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None


def estimate_cost(usage: Usage, prices: ModelPrices) -> float:
    """Cost of ``usage`` in USD.

    ``cost = (uncached * input + cached * cached_input + completion * output) / 1e6``,
    where ``cached = min(cached_tokens, prompt_tokens)`` and
    ``uncached = prompt_tokens - cached``.
    """
    cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
    uncached = max(usage.prompt_tokens, 0) - cached
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    total = (
        uncached * prices.input
        + cached * cached_price
        + max(usage.completion_tokens, 0) * prices.output
    )
    return total / TOKENS_PER_MILLION


def count_tokens(text: str) -> int:
    """Approximate token count of ``text``: ``ceil(len(text) / CHARS_PER_TOKEN)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def count_message_tokens(messages: Sequence[Message] | Sequence[Mapping[str, Any]]) -> int:
    """Approximate prompt tokens of chat ``messages`` (text plus a per-message overhead)."""
    total = 0
    for message in messages:
        content = message.content if isinstance(message, Message) else message.get("content")
        total += MESSAGE_OVERHEAD_TOKENS + count_tokens(content if isinstance(content, str) else "")
    return total


def format_usage(usage: Usage, cost_usd: float | None = None) -> str:
    """Short text of token totals and cost, e.g. ``"1.2M in (300k cached) · 30k out · $0.41"``."""
    parts = [f"{_si(usage.prompt_tokens)} in"]
    if usage.cached_tokens:
        parts[0] += f" ({_si(usage.cached_tokens)} cached)"
    parts.append(f"{_si(usage.completion_tokens)} out")
    if cost_usd is not None:
        parts.append(f"${cost_usd:,.2f}" if cost_usd >= 0.01 or cost_usd == 0 else "<$0.01")
    return " · ".join(parts)


def _si(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(count)


# --- dry-run forecast ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEstimate:
    """Forecast of collecting one run (what is still missing of it).

    Attributes:
        name: Run name in the store.
        kind: ``"persona"`` or ``"self"``.
        mode: ``"sampling"`` or ``"exact"``.
        cells: Persona-item cells of the run.
        units: Slots (sampling) or cells (exact) of the run.
        missing: Units not yet stored (all of them for a new run).
        requests: Requests needed when the server honours ``n`` (one per cell
            with missing answers; exact mode: one per missing cell), before
            re-asks of unparseable replies and retries.
        requests_without_n: Requests needed when the server ignores ``n``.
        prompt_tokens: Estimated prompt tokens of ``requests``.
        completion_tokens: Completion tokens of ``requests`` (one per answer).
        cost_usd: Estimated cost, None without prices.
    """

    name: str
    kind: str
    mode: str
    cells: int
    units: int
    missing: int
    requests: int
    requests_without_n: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON output)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class CollectionEstimate:
    """Forecast of a whole ``pcollapse run``: one :class:`RunEstimate` per run kind."""

    runs: tuple[RunEstimate, ...]
    prices: ModelPrices | None

    @property
    def requests(self) -> int:
        """Requests of all runs."""
        return sum(r.requests for r in self.runs)

    @property
    def prompt_tokens(self) -> int:
        """Estimated prompt tokens of all runs."""
        return sum(r.prompt_tokens for r in self.runs)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of all runs."""
        return sum(r.completion_tokens for r in self.runs)

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost of all runs; None without prices."""
        costs = [r.cost_usd for r in self.runs]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON output)."""
        return {
            "runs": [r.to_dict() for r in self.runs],
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "prices": None if self.prices is None else self.prices.model_dump(),
        }


def estimate_collection(config: RunConfig) -> CollectionEstimate:
    """Forecast requests, tokens and cost of ``execute_run(config)``; sends nothing.

    Slots already in ``config.store`` (matched by run name) are left out, so the
    forecast of an interrupted run is what resuming it will cost. The store is
    only read, and only if it exists; the backend is not built (no API key needed).

    Raises:
        UserError: The config names unknown personas, instrument or template files.
    """
    # Imported here: study imports config, which imports this module.
    from persona_collapse.frames import SELF_PERSONA_ID
    from persona_collapse.instrument import load_instrument
    from persona_collapse.prompts import SHORT_MAX_TOKENS, render_prompt
    from persona_collapse.store.sqlite import RunStore
    from persona_collapse.study.runs import resolve_personas, resolve_template

    instrument = load_instrument(config.instrument, include_catch=config.include_catch)
    template = resolve_template(config)
    label = config.name or config.model_label
    plans: list[tuple[str, str, list[str] | None]] = []
    if config.persona_run:
        plans.append((label, "persona", list(resolve_personas(config))))
    if config.self_run:
        plans.append((f"{label}/self", "self", None))
    exact = config.mode == "exact"
    reps = 1 if exact else config.repetitions
    item_ids = [item.id for item in instrument.active_items]
    estimates: list[RunEstimate] = []
    for name, kind, personas in plans:
        done: set[tuple[int, int, int]] = set()
        if config.store.is_file():
            with RunStore.open(config.store, create=False) as store:
                record = next((r for r in store.list_runs() if r.name == name), None)
                if record is not None:
                    if exact:
                        done = {(p, i, 1) for p, i in store.completed_cells(record.run_id)}
                    else:
                        done = store.completed_slots(record.run_id)
        persona_ids = [SELF_PERSONA_ID] if personas is None else list(range(len(personas)))
        cells = requests = without_n = prompt_tokens = completion_tokens = missing = 0
        for pid in persona_ids:
            persona = None if personas is None else personas[pid]
            for iid in item_ids:
                cells += 1
                left = sum((pid, iid, r) not in done for r in range(1, reps + 1))
                if not left:
                    continue
                missing += left
                tokens = count_message_tokens(
                    render_prompt(template, instrument, iid, persona).messages
                )
                requests += 1
                without_n += left
                prompt_tokens += tokens
                completion_tokens += left * SHORT_MAX_TOKENS
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        estimates.append(
            RunEstimate(
                name=name,
                kind=kind,
                mode=config.mode,
                cells=cells,
                units=cells * reps,
                missing=missing,
                requests=requests,
                requests_without_n=without_n,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=None if config.prices is None else estimate_cost(usage, config.prices),
            )
        )
    return CollectionEstimate(runs=tuple(estimates), prices=config.prices)


__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "CollectionEstimate",
    "ModelPrices",
    "PriceTable",
    "RunEstimate",
    "count_message_tokens",
    "count_tokens",
    "estimate_collection",
    "estimate_cost",
    "format_usage",
    "load_price_table",
]
