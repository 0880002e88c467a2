"""Token prices, token counting and cost of measured usage.

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
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from persona_collapse.core.errors import ConfigError, format_validation_error
from persona_collapse.core.types import Message, Usage
from persona_collapse.core.yamlio import load_yaml_mapping

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
