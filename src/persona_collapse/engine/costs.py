"""The request/token/cost forecast of ``pcollapse run --dry-run`` and ``study run --dry-run``.

Prices, token counting and their conventions live in
:mod:`persona_collapse.core.pricing` (re-exported here). A forecast counts what is
still missing of a run, the prompt tokens estimated from the rendered prompts; with a
preflight it also counts what the endpoint really does (one request per repetition
where ``n`` is ignored, expected re-asks of unparseable replies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_collapse.core.config import RunConfig, resolve_personas, resolve_template
from persona_collapse.core.frames import SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument, load_instrument
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
from persona_collapse.core.prompts import SHORT_MAX_TOKENS, PromptTemplate, render_prompt
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
        reasks: Expected re-asks of unparseable replies, included in ``requests``
            (0 unless a preflight measured the share of such replies).
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
    reasks: int = 0

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


@dataclass(frozen=True)
class EndpointSupport:
    """What an endpoint really does, as a preflight found (defaults: everything).

    Attributes:
        honours_n: One request returns all ``n`` repetitions of a cell; if not, each
            repetition is a request of its own (and re-sends the prompt).
        unparseable_share: Share of first replies that carry no rating and are asked
            again (0-1).
    """

    honours_n: bool = True
    unparseable_share: float = 0.0


def expected_reasks(share: float, left: int, *, honours_n: bool) -> float:
    """Expected extra requests of one cell with ``left`` missing repetitions when each
    reply fails to parse with probability ``share``.

    A slot is asked again after each failed reply, up to ``MAX_SHORT_ATTEMPTS`` short
    requests and then one long one. When ``n`` is honoured, one request per round
    serves every slot still failing, so the cell costs a round whenever any slot
    needs it; otherwise every failing slot costs its own request.
    """
    from persona_collapse.core.prompts import MAX_SHORT_ATTEMPTS

    p = min(max(float(share), 0.0), 1.0)
    # Re-ask k follows k failed replies: k = 1..9 are short re-asks, k = 10 the long one.
    rounds = range(1, MAX_SHORT_ATTEMPTS + 1)
    if honours_n:
        return sum(1.0 - (1.0 - p**k) ** left for k in rounds)
    return left * sum(p**k for k in rounds)


def estimate_run(
    name: str,
    kind: str,
    *,
    instrument: Instrument,
    template: PromptTemplate,
    personas: Sequence[str] | None,
    mode: str,
    repetitions: int,
    store: Path | None,
    prices: ModelPrices | None,
    support: EndpointSupport | None = None,
) -> RunEstimate:
    """Forecast one run: what is still missing of it (slots stored under ``name`` in
    ``store``, if it exists, are left out); sends nothing."""

    support = support or EndpointSupport()
    exact = mode == "exact"
    reps = 1 if exact else repetitions
    done: set[tuple[int, int, int]] = set()
    if store is not None and store.is_file():
        with RunStore.open(store, create=False) as opened:
            record = next((r for r in opened.list_runs() if r.name == name), None)
            if record is not None:
                if exact:
                    done = {(p, i, 1) for p, i in opened.completed_cells(record.run_id)}
                else:
                    done = opened.completed_slots(record.run_id)
    item_ids = [item.id for item in instrument.active_items]
    persona_ids = [SELF_PERSONA_ID] if personas is None else list(range(len(personas)))
    cells = requests = without_n = prompt_tokens = completion_tokens = missing = 0
    reasks = 0.0
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
            asks = 1 if exact or support.honours_n else left
            requests += asks
            without_n += left
            prompt_tokens += asks * tokens
            completion_tokens += left * SHORT_MAX_TOKENS
            if not exact and support.unparseable_share > 0:
                reasks += expected_reasks(
                    support.unparseable_share, left, honours_n=support.honours_n
                )
    extra = round(reasks)
    requests += extra
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return RunEstimate(
        name=name,
        kind=kind,
        mode=mode,
        cells=cells,
        units=cells * reps,
        missing=missing,
        requests=requests,
        requests_without_n=without_n,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=None if prices is None else estimate_cost(usage, prices),
        reasks=extra,
    )


def estimate_collection(
    config: RunConfig, *, support: EndpointSupport | None = None
) -> CollectionEstimate:
    """Forecast requests, tokens and cost of ``execute_run(config)``; sends nothing.

    Slots already in ``config.store`` (matched by run name) are left out, so the
    forecast of an interrupted run is what resuming it will cost. The store is
    only read, and only if it exists; the backend is not built (no API key needed).
    ``support`` is what a preflight found the endpoint really does (default: it
    honours ``n`` and every reply parses).

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
    estimates = [
        estimate_run(
            name,
            kind,
            instrument=instrument,
            template=template,
            personas=personas,
            mode=config.mode,
            repetitions=config.repetitions,
            store=config.store,
            prices=config.prices,
            support=support,
        )
        for name, kind, personas in plans
    ]
    return CollectionEstimate(runs=tuple(estimates), prices=config.prices)


__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "CollectionEstimate",
    "EndpointSupport",
    "ModelPrices",
    "PriceTable",
    "RunEstimate",
    "count_message_tokens",
    "count_tokens",
    "estimate_collection",
    "estimate_cost",
    "estimate_run",
    "expected_reasks",
    "format_usage",
    "load_price_table",
]
