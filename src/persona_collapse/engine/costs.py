"""The request/token/cost forecast of ``pcollapse run --dry-run``.

Prices and token counting live in :mod:`persona_collapse.core.pricing` (re-exported here).

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

from dataclasses import dataclass
from typing import Any

from persona_collapse.core.config import RunConfig, resolve_personas, resolve_template
from persona_collapse.core.frames import SELF_PERSONA_ID
from persona_collapse.core.instrument import load_instrument
from persona_collapse.core.pricing import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    ModelPrices,
    PriceTable,
    count_message_tokens,
    count_tokens,
    estimate_cost,
    format_usage,
    load_price_table,
)
from persona_collapse.core.prompts import SHORT_MAX_TOKENS, render_prompt
from persona_collapse.core.types import Usage
from persona_collapse.store.sqlite import RunStore

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
