"""The collection engine: asks a backend for every missing answer of a run and stores it.

Sessions, concurrency, retries and attempt bookkeeping live here, once, for
every backend. The unit of work is a *cell* (persona, item): all its missing
repetitions are asked for in one request (``n`` = number missing). Each reply
fills one slot (reply ``k`` belongs to the ``k``-th missing repetition):

1. short requests (``max_tokens = SHORT_MAX_TOKENS``, :func:`extract_rating`
   short mode); a slot whose reply has no rating is asked again, until it has
   used ``MAX_SHORT_ATTEMPTS`` short attempts;
2. then one long-form request (``LONG_MAX_TOKENS``, long-form parser);
3. a slot whose long-form reply also fails is stored as ``INVALID_RATING``.

Every attempt is recorded, and each request's outcome is written in one store
transaction as soon as it arrives, so a killed run loses at most the requests in
flight. Request seeds derive from (run seed, persona, item, request round) and
the round and per-slot attempt counts are restored from the store on resume, so
a resumed run stores exactly the answers an uninterrupted run would have stored
(for backends that honour seeds).

Pacing. Every request attempt (retries included) takes a slot of an adaptive
concurrency limit (AIMD, per request): it starts at ``max_concurrency``, halves
for every rate-limited request (a :class:`TransientBackendError` with
``retry_after`` set or a true ``rate_limited`` attribute) and grows by one for
every successful request made while at least half the limit was in use, up to
``max_concurrency``. Against a server that refuses requests beyond a capacity
``C`` it settles where ``L (L - C) = 2 C``, just above ``C``; occasional random
refusals (a 10 % rate) barely move it. Optional
requests-per-minute and tokens-per-minute caps are token buckets holding one
second's worth; the token cost of a request is estimated before it is sent
(prompt estimate + ``n * max_tokens``) and corrected by its reported usage.

Accounting. Token usage is stored per run; with prices, the live progress bar
shows the estimated cost and the run's metadata records it (``cost``), with the
request protocols used (``protocols``) and, for backends that have a
``run_metadata()`` method, what they report (``backend``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from persona_collapse.backends.base import (
    MIN_SCALE_MASS,
    SCALE_MASS_TEMPERATURE,
    Backend,
    Generation,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.core.config import PacingSettings, SamplingSettings
from persona_collapse.core.errors import BackendError, ConfigError, TransientBackendError
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    MAX_SHORT_ATTEMPTS,
    SHORT_MAX_TOKENS,
    PromptTemplate,
    extract_rating,
    render_prompt,
    template_hash,
)
from persona_collapse.engine.costs import (
    ModelPrices,
    count_message_tokens,
    estimate_cost,
)
from persona_collapse.engine.pacing import (
    MAX_REQUEST_TOKENS,
    Pacer,
    RetryPolicy,
    is_rate_limited,
    log_retry,
)
from persona_collapse.engine.progress import Progress, ProgressCallback, ProgressUpdate
from persona_collapse.engine.protocol import (
    MAX_LOW_MASS_WARNINGS,
    ProtocolCheck,
    check_stored_run,
    scale_mass_summary,
)
from persona_collapse.store.sqlite import (
    AcceptedSlot,
    AttemptRecord,
    CellProgress,
    DistributionRecord,
    RunRecord,
    RunSpec,
    RunStore,
    persona_set_hash,
    utc_now,
)

logger = logging.getLogger(__name__)

PROTOCOL_SHORT_DEFAULT = "short-1-token"
"""Protocol recorded for sampling runs of backends that do not report their own."""

SEED_MODULUS = 2**31 - 1
"""Request seeds lie in ``[0, SEED_MODULUS)``, which every known API accepts."""


class Slot(NamedTuple):
    """One answer to collect: persona (``SELF_PERSONA_ID`` in self runs), item, repetition."""

    persona_id: int
    item_id: int
    repetition: int


@dataclass(frozen=True)
class CollectionSummary:
    """Outcome of one :func:`collect` session.

    Attributes:
        run: The run (status as at the end of the session).
        total: Units of the run: slots, or cells in exact mode.
        done_before: Units already stored when the session started.
        collected: Units stored in this session.
        failed: Slots stored as ``INVALID_RATING`` in this session.
        attempts: Attempts recorded in this session.
        requests: Backend requests that returned in this session.
        usage: Token usage of this session.
        elapsed_s: Wall time of the session, seconds.
        cost_usd: Estimated cost of this session's usage (None without prices).
        rate_limited: Requests of this session refused for rate limiting.
    """

    run: RunRecord
    total: int
    done_before: int
    collected: int
    failed: int
    attempts: int
    requests: int
    usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0
    cost_usd: float | None = None
    rate_limited: int = 0

    @property
    def complete(self) -> bool:
        """Whether every unit of the run is stored."""
        return self.done_before + self.collected >= self.total


def derive_seed(run_seed: int, persona_id: int, item_id: int, round_index: int) -> int:
    """Request seed of round ``round_index`` of cell (``persona_id``, ``item_id``).

    A hash (BLAKE2b) of the four integers, reduced to ``[0, SEED_MODULUS)``;
    independent of scheduling, so resumed and parallel runs use the same seeds.
    """
    raw = f"{int(run_seed)}:{int(persona_id)}:{int(item_id)}:{int(round_index)}".encode()
    digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def plan_slots(
    instrument: Instrument,
    *,
    n_personas: int | None,
    n_repetitions: int,
    done: set[tuple[int, int, int]] | frozenset[tuple[int, int, int]] = frozenset(),
) -> list[Slot]:
    """Every slot of a run over the instrument's active items, minus those in ``done``.

    Args:
        instrument: The questionnaire; its active items are asked.
        n_personas: Number of personas (ids ``0..n-1``); None for a self run
            (persona id ``SELF_PERSONA_ID``).
        n_repetitions: Repetitions per cell (repetitions are 1-based).
        done: Accepted slots ``(persona_id, item_id, repetition)`` to leave out.

    Returns:
        Slots ordered by persona, item, repetition.

    Raises:
        ValueError: ``n_personas`` or ``n_repetitions`` is not positive.
    """
    if n_personas is not None and n_personas < 1:
        raise ValueError(f"n_personas must be >= 1 (or None for a self run), got {n_personas}")
    if n_repetitions < 1:
        raise ValueError(f"n_repetitions must be >= 1, got {n_repetitions}")
    persona_ids = [SELF_PERSONA_ID] if n_personas is None else list(range(n_personas))
    item_ids = [item.id for item in instrument.active_items]
    return [
        Slot(p, i, r)
        for p in persona_ids
        for i in item_ids
        for r in range(1, n_repetitions + 1)
        if (p, i, r) not in done
    ]


def _group_cells(slots: Sequence[Slot]) -> list[tuple[int, int, list[int]]]:
    """Group slots into cells: ``(persona_id, item_id, sorted repetitions)``, in slot order."""
    cells: dict[tuple[int, int], list[int]] = {}
    for s in slots:
        cells.setdefault((s.persona_id, s.item_id), []).append(s.repetition)
    return [(p, i, sorted(reps)) for (p, i), reps in cells.items()]


def _model_label(backend: Backend) -> str:
    info = backend.describe()
    for key in ("model", "preset"):
        value = info.get(key)
        if value:
            return str(value)
    return backend.name


def make_run_spec(
    *,
    backend: Backend,
    instrument: Instrument,
    personas: Sequence[str] | None,
    template: PromptTemplate | None = None,
    name: str | None = None,
    model: str | None = None,
    protocol: SamplingSettings | None = None,
) -> RunSpec:
    """Build the :class:`RunSpec` of collecting ``personas`` (None: self run) with ``backend``.

    Args:
        backend: The backend; its ``describe()`` settings become part of the run key.
        instrument: The questionnaire.
        personas: Persona texts; None for a self run.
        template: Prompt wording; default :data:`DEFAULT_TEMPLATE`.
        name: Run label; None derives one (see :attr:`RunSpec.default_name`).
        model: Model label; default the backend's ``model`` or ``preset`` setting, else its name.
        protocol: Repetitions, temperature, seed and mode
            (:class:`~persona_collapse.core.config.SamplingSettings` or a config composing
            it); None: the documented defaults.

    Raises:
        ConfigError: Empty ``personas`` or an invalid setting.
    """
    if personas is not None and len(personas) == 0:
        raise ConfigError("no personas given (pass None for a self run)")
    tmpl = template if template is not None else DEFAULT_TEMPLATE
    settings = protocol if protocol is not None else SamplingSettings()
    return RunSpec(
        kind="self" if personas is None else "persona",
        model=model if model is not None else _model_label(backend),
        backend=backend.name,
        backend_settings=backend.describe(),
        instrument_name=instrument.name,
        instrument_hash=instrument.content_hash,
        instrument_json=json.dumps(instrument.to_dict(), ensure_ascii=False),
        persona_set_hash="" if personas is None else persona_set_hash(list(personas)),
        template_hash=template_hash(tmpl, instrument),
        temperature=float(settings.temperature),
        mode=settings.mode,
        n_repetitions=int(settings.repetitions),
        seed=int(settings.seed),
        name=name,
    )


def _check_matches(
    run: RunRecord,
    backend: Backend,
    personas: Sequence[str] | None,
    instrument: Instrument,
    template: PromptTemplate,
) -> None:
    """Refuse to add answers to ``run`` from other inputs than it was started with."""
    where = f"run {run.name!r}"
    if run.is_imported:
        raise ConfigError(f"{where} was imported from a file and cannot be collected into")
    if run.instrument_hash != instrument.content_hash:
        raise ConfigError(f"{where} was collected with another instrument ({run.instrument_name})")
    if run.kind == "persona":
        if not personas:
            raise ConfigError(f"{where} is a persona run but no personas were given")
        if persona_set_hash(list(personas)) != run.persona_set_hash:
            raise ConfigError(f"{where} was collected with another persona set")
    elif personas is not None:
        raise ConfigError(f"{where} is a self run; pass personas=None")
    if template_hash(template, instrument) != run.template_hash:
        raise ConfigError(f"{where} was collected with another prompt template")
    settings = make_run_spec(
        backend=backend, instrument=instrument, personas=personas, template=template
    ).backend_settings
    if run.backend != backend.name or dict(settings) != dict(run.backend_settings):
        raise ConfigError(
            f"{where} was collected with backend {run.backend} {dict(run.backend_settings)}, "
            f"not {backend.name} {dict(settings)}"
        )


# --- progress display ----------------------------------------------------------------------


# --- the engine ----------------------------------------------------------------------------


class _CellFailure(Exception):
    """A backend error while collecting one cell (wraps the backend's exception)."""

    def __init__(self, persona_id: int, item_id: int, error: BackendError) -> None:
        who = "self" if persona_id == SELF_PERSONA_ID else f"persona {persona_id}"
        super().__init__(f"{who}, item {item_id}: {error}")
        self.error = error


@dataclass
class _Session:
    """State shared by the workers of one collection session."""

    store: RunStore
    run: RunRecord
    backend: Backend
    instrument: Instrument
    template: PromptTemplate
    personas: Sequence[str] | None
    progress: Progress
    pacer: Pacer
    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    usage_clamped: bool = False
    low_mass_cells: int = 0

    @property
    def rate_limited(self) -> int:
        return self.pacer.rate_limited

    @property
    def scale_bounds(self) -> tuple[int, int]:
        return (self.instrument.scale_min, self.instrument.scale_max)

    def prompt(self, persona_id: int, item_id: int) -> Prompt:
        persona = None
        if persona_id != SELF_PERSONA_ID and self.personas is not None:
            persona = self.personas[persona_id]
        return render_prompt(self.template, self.instrument, item_id, persona)

    async def call(
        self,
        fn: Callable[[], Any],
        on_retry: Callable[[BaseException, float], None],
        *,
        tokens: int = 0,
    ) -> Any:
        """Await ``fn()`` through the session's :class:`~persona_collapse.engine.pacing.Pacer`."""
        return await self.pacer.call(fn, on_retry=on_retry, tokens=tokens)

    def reported_usage(self, usage: Usage) -> Usage:
        """A request's usage as stored: each count clamped to ``MAX_REQUEST_TOKENS``.

        A server reporting absurd numbers (10^30 tokens) would otherwise overflow the
        store's integers and lose the answers of the request; warned about once.
        """
        clamped = usage.clamped(MAX_REQUEST_TOKENS)
        if clamped != usage and not self.usage_clamped:
            self.usage_clamped = True
            logger.warning(
                "backend %r reported impossible token usage %s; counts are clamped to "
                "0-%d per request, so the run's token totals and cost are unreliable",
                self.backend.name,
                usage.counts,
                MAX_REQUEST_TOKENS,
            )
        return clamped

    def note_request(self, usage: Usage) -> None:
        self.requests += 1
        self.usage = self.usage + usage


async def _ask(
    session: _Session,
    prompt: Prompt,
    persona_id: int,
    item_id: int,
    *,
    n: int,
    max_tokens: int,
    long_form: bool,
    seed: int,
    round_index: int,
) -> Generation:
    """One generate request for a cell, with retries; failures are recorded as cell attempts."""
    run = session.run

    def error_attempt(message: str) -> AttemptRecord:
        return AttemptRecord(
            persona_id,
            item_id,
            None,
            round_index,
            0,
            seed,
            max_tokens,
            long_form,
            None,
            None,
            message,
        )

    def on_retry(exc: BaseException, wait: float) -> None:
        log_retry(exc, wait)
        session.store.record(run.run_id, attempts=[error_attempt(f"transient: {exc}")])

    async def request() -> list[Generation]:
        return await session.backend.generate(
            [prompt], n=n, temperature=run.temperature, max_tokens=max_tokens, seed=seed
        )

    tokens = count_message_tokens(prompt.messages) + n * max_tokens
    try:
        generations: list[Generation] = await session.call(request, on_retry, tokens=tokens)
        if len(generations) != 1:
            raise BackendError(
                f"backend {session.backend.name!r} returned {len(generations)} "
                "generations for 1 prompt"
            )
    except BackendError as exc:
        session.store.record(run.run_id, attempts=[error_attempt(f"{type(exc).__name__}: {exc}")])
        raise _CellFailure(persona_id, item_id, exc) from exc
    return generations[0]


async def _collect_cell(
    session: _Session,
    persona_id: int,
    item_id: int,
    repetitions: list[int],
    history: CellProgress | None,
) -> None:
    """Fill the missing ``repetitions`` of one cell (see the module docstring)."""
    run = session.run
    prompt = session.prompt(persona_id, item_id)
    shorts = {r: (history.short_attempts.get(r, 0) if history else 0) for r in repetitions}
    longs = {r: (history.long_attempts.get(r, 0) if history else 0) for r in repetitions}
    round_index = history.next_round if history else 0
    pending = list(repetitions)
    while pending:
        short_slots = [r for r in pending if shorts[r] < MAX_SHORT_ATTEMPTS]
        long_form = not short_slots
        asked = short_slots if short_slots else pending
        max_tokens = LONG_MAX_TOKENS if long_form else SHORT_MAX_TOKENS
        seed = derive_seed(run.seed, persona_id, item_id, round_index)
        this_round = round_index
        generation = await _ask(
            session,
            prompt,
            persona_id,
            item_id,
            n=len(asked),
            max_tokens=max_tokens,
            long_form=long_form,
            seed=seed,
            round_index=this_round,
        )
        texts = list(generation.texts[: len(asked)])
        now = utc_now()
        attempts: list[AttemptRecord] = []
        accepted: list[AcceptedSlot] = []
        failed = 0
        # An empty reply counts as a failed attempt of every slot asked for, so a
        # backend that keeps returning nothing cannot loop forever.
        replies: list[tuple[int, str | None]] = (
            list(zip(asked, texts, strict=False)) if texts else [(r, None) for r in asked]
        )
        for rep, text in replies:
            rating = (
                None
                if text is None
                else extract_rating(text, session.scale_bounds, long_form=long_form)
            )
            used = shorts[rep] + longs[rep]
            error = None if rating is not None else ("empty reply" if text is None else "no rating")
            attempts.append(
                AttemptRecord(
                    persona_id,
                    item_id,
                    rep,
                    this_round,
                    used + 1,
                    seed,
                    max_tokens,
                    long_form,
                    text,
                    rating,
                    error,
                    now,
                )
            )
            if rating is not None:
                accepted.append(AcceptedSlot(persona_id, item_id, rep, rating, used, text, now))
                continue
            if long_form:
                longs[rep] += 1
                accepted.append(
                    AcceptedSlot(persona_id, item_id, rep, INVALID_RATING, used + 1, text, now)
                )
                failed += 1
            else:
                shorts[rep] += 1
        usage = session.reported_usage(generation.usage)
        session.store.record(
            run.run_id, attempts=attempts, accepted=accepted, usage=usage, requests=1
        )
        session.note_request(usage)
        session.progress.advance(
            done=len(accepted), failed=failed, attempts=len(attempts), usage=usage
        )
        round_index += 1
        filled = {a.repetition for a in accepted}
        pending = [r for r in pending if r not in filled]


async def _distribution_cells(session: _Session, cells: Sequence[tuple[int, int]]) -> None:
    """Store the exact rating distributions of a batch of cells (one backend call).

    Batches hold at most ``backend.max_batch_size`` cells: a local model scores them
    in one padded forward pass, which is where exact mode gets its speed.
    """
    run = session.run
    prompts = [session.prompt(persona_id, item_id) for persona_id, item_id in cells]
    scale = session.instrument.scale

    def on_retry(exc: BaseException, wait: float) -> None:
        log_retry(exc, wait)

    async def request() -> Any:
        return await session.backend.distributions(
            prompts, scale=scale, temperature=run.temperature
        )

    tokens = sum(count_message_tokens(p.messages) + 1 for p in prompts)
    try:
        dists: list[ScaleDistribution] = await session.call(request, on_retry, tokens=tokens)
        if len(dists) != len(prompts):
            raise BackendError(
                f"backend {session.backend.name!r} returned {len(dists)} distributions "
                f"for {len(prompts)} prompts"
            )
        for dist in dists:
            if tuple(dist.scale) != tuple(scale) or len(dist.probs) != len(scale):
                raise BackendError(
                    f"backend {session.backend.name!r} returned a distribution over "
                    f"{dist.scale}, expected {scale}"
                )
    except BackendError as exc:
        raise _CellFailure(cells[0][0], cells[0][1], exc) from exc
    usage = Usage()
    for dist in dists:
        usage = usage + dist.usage
    usage = session.reported_usage(usage)
    session.store.record(
        run.run_id,
        distributions=[
            DistributionRecord(
                persona_id, item_id, tuple(dist.scale), tuple(dist.probs), dist.mass, dist.raw
            )
            for (persona_id, item_id), dist in zip(cells, dists, strict=True)
        ],
        usage=usage,
        requests=1,
    )
    session.note_request(usage)
    for (persona_id, item_id), dist in zip(cells, dists, strict=True):
        _check_scale_mass(session, persona_id, item_id, dist)
    session.progress.advance(done=len(cells), failed=0, attempts=0, usage=usage)


def _check_scale_mass(session: _Session, persona_id: int, item_id: int, dist: Any) -> None:
    """Count and warn about a cell whose on-scale mass is below the backend's threshold.

    Done here, for instrument cells only, so judge calls never trip it (issue 9.20).
    """
    threshold = float(getattr(session.backend, "min_scale_mass", MIN_SCALE_MASS))
    if dist.mass >= threshold:
        return
    session.low_mass_cells += 1
    if session.low_mass_cells <= MAX_LOW_MASS_WARNINGS:
        logger.warning(
            "item %s, persona %s: only %.1f %% of the first-token probability (T = %g) is on "
            "scale values; the exact distribution of this cell is not what the model answers%s",
            item_id,
            persona_id,
            100 * dist.mass,
            SCALE_MASS_TEMPERATURE,
            "; further such cells are counted in the run metadata (scale_mass)"
            if session.low_mass_cells == MAX_LOW_MASS_WARNINGS
            else "",
        )


_Unit = TypeVar("_Unit")


async def _run_workers(
    units: Iterator[_Unit],
    worker_count: int,
    handle: Callable[[_Unit], Awaitable[None]],
) -> None:
    """Process ``units`` with ``worker_count`` workers; the first failure cancels the rest."""

    async def worker() -> None:
        # next() never awaits, so workers cannot take the same unit.
        for unit in units:
            await handle(unit)

    tasks = [asyncio.create_task(worker()) for _ in range(worker_count)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise exc


_RUN_FIELDS = {"repetitions": "n_repetitions"}
"""Protocol fields stored in a run under another name."""


def _resolve_run(
    store: RunStore,
    run: RunSpec | RunRecord | None,
    backend: Backend,
    personas: Sequence[str] | None,
    instrument: Instrument,
    template: PromptTemplate,
    protocol: SamplingSettings,
) -> RunRecord:
    if run is None:
        run = make_run_spec(
            backend=backend,
            instrument=instrument,
            personas=personas,
            template=template,
            protocol=protocol,
        )
    for name in sorted(set(SamplingSettings.model_fields) & protocol.model_fields_set):
        key = _RUN_FIELDS.get(name, name)
        value = getattr(protocol, name)
        if getattr(run, key) != value:
            raise ConfigError(
                f"{key}={value!r} conflicts with the run's {key}={getattr(run, key)!r}"
            )
    # A stored record is also a RunSpec (it composes the settings): test it first.
    if isinstance(run, RunRecord):
        record = store.get_run(run.run_id)
    else:
        record = store.get_or_create_run(run, personas=None if personas is None else list(personas))
    _check_matches(record, backend, personas, instrument, template)
    return record


def _record_metadata(
    store: RunStore,
    record: RunRecord,
    backend: Backend,
    prices: ModelPrices | None,
    *,
    sent: bool,
) -> None:
    """Store the run's protocols, backend report and cost (over all its sessions).

    ``sent``: whether this session sent requests; if not, the backend has nothing to
    report about this run, and what earlier sessions recorded is kept.
    """
    stored = store.get_run(record.run_id).metadata
    report: dict[str, Any] = dict(backend.run_metadata()) if sent else {}
    protocols = set(stored.get("protocols", ()))
    reported = report.pop("protocols", None)
    if reported:
        protocols.update(str(p) for p in reported)
    elif sent:
        protocols.add("exact-distribution" if record.mode == "exact" else PROTOCOL_SHORT_DEFAULT)
    requests, usage = store.usage(record.run_id)
    cost: dict[str, Any] = {
        "requests": requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
    }
    if prices is not None:
        cost["usd"] = estimate_cost(usage, prices)
        cost["prices"] = prices.model_dump()
    elif isinstance(stored.get("cost"), dict) and "prices" in stored["cost"]:
        old = ModelPrices.model_validate(stored["cost"]["prices"])
        cost["usd"] = estimate_cost(usage, old)
        cost["prices"] = old.model_dump()
    values: dict[str, Any] = {"protocols": sorted(protocols), "cost": cost}
    checks = ("protocol_check", "scale_mass") if record.mode == "exact" else ("protocol_check",)
    if not sent and record.status == "complete" and all(k in stored for k in checks):
        # Complete before this session, which sent nothing: the answers are those
        # checked when it completed (checking them again reads the whole run).
        values.update({k: stored[k] for k in checks})
    else:
        values.update(_answer_checks(store, record, backend))
    if report:
        values["backend"] = report
    store.update_metadata(record.run_id, values)


def _answer_checks(store: RunStore, record: RunRecord, backend: Backend) -> dict[str, Any]:
    """Run metadata: the on-scale mass summary (exact runs) and the protocol verdict."""
    out: dict[str, Any] = {}
    if record.mode == "exact":
        masses = store.distributions_frame(record.run_id)["mass"].to_numpy()
        threshold = float(getattr(backend, "min_scale_mass", MIN_SCALE_MASS))
        out["scale_mass"] = scale_mass_summary(masses, threshold)
    check = check_stored_run(store, record.run_id, record.mode)
    if check is not None:
        out["protocol_check"] = check.to_dict()
    return out


def _warn_protocol(store: RunStore, record: RunRecord) -> None:
    """Say at the end of a run when the model does not follow the answer protocol."""
    check = ProtocolCheck.from_dict(store.get_run(record.run_id).metadata.get("protocol_check"))
    if check is not None and not check.follows:
        logger.warning("%s", check.message(record.name))


async def collect(
    store: RunStore,
    run: RunSpec | RunRecord | None,
    backend: Backend,
    personas: Sequence[str] | None,
    instrument: Instrument,
    template: PromptTemplate | None = None,
    *,
    protocol: SamplingSettings | None = None,
    pacing: PacingSettings | Pacer | None = None,
    progress: bool | ProgressCallback = True,
    prices: ModelPrices | None = None,
) -> CollectionSummary:
    """Collect every missing answer of a run into ``store`` (resumes where it stopped).

    Args:
        store: The run store answers are written to.
        run: The run: a spec (created if new), a stored record, or None to build the
            spec from the other arguments (see :func:`make_run_spec`).
        backend: The model. Not closed here.
        personas: Persona texts (ids are positions); None for a self run.
        instrument: The questionnaire; its active items are asked.
        template: Prompt wording; default :data:`DEFAULT_TEMPLATE`.
        protocol: Repetitions, temperature, seed and mode
            (:class:`~persona_collapse.core.config.SamplingSettings`, or any config
            composing it: :class:`~persona_collapse.core.config.RunConfig`, a study's
            protocol). With ``run`` None they define the run (None: the documented
            defaults); otherwise the run's own apply, and a field set explicitly in
            ``protocol`` that contradicts ``run`` is an error.
        pacing: Concurrency, retries and rate caps: settings (default
            :class:`~persona_collapse.core.config.PacingSettings`), or a ready
            :class:`~persona_collapse.engine.pacing.Pacer` (e.g. with custom backoff).
        progress: True shows a rich progress bar on stderr, False nothing; a callable
            receives a :class:`ProgressUpdate` after every request.
        prices: Token prices; the progress bar and the run metadata then show the cost.

    Returns:
        What this session did.

    Raises:
        ConfigError: Settings or inputs that contradict the run, or ``mode="exact"``
            with a backend without distributions.
        BackendError: The backend failed (after retries, for transient errors); all
            answers received before are stored and a rerun resumes.
        asyncio.CancelledError: The session was cancelled (Ctrl-C); stored answers stay.
    """
    pacer = pacing if isinstance(pacing, Pacer) else Pacer.from_settings(pacing)
    tmpl = template if template is not None else DEFAULT_TEMPLATE
    record = _resolve_run(
        store, run, backend, personas, instrument, tmpl, protocol or SamplingSettings()
    )
    n_personas = None if record.kind == "self" else len(personas or ())
    exact = record.mode == "exact"
    if exact and not backend.supports_distributions:
        raise ConfigError(
            f"backend {backend.name!r} cannot return rating distributions; use mode 'sampling'"
        )

    started = time.perf_counter()
    all_cells = _group_cells(
        plan_slots(
            instrument, n_personas=n_personas, n_repetitions=1 if exact else record.n_repetitions
        )
    )
    if exact:
        stored_cells = store.completed_cells(record.run_id)
        total = len(all_cells)
        todo = [c for c in all_cells if (c[0], c[1]) not in stored_cells]
        done_before = total - len(todo)
        history: dict[tuple[int, int], CellProgress] = {}
    else:
        done_slots = store.completed_slots(record.run_id)
        slots = plan_slots(
            instrument,
            n_personas=n_personas,
            n_repetitions=record.n_repetitions,
            done=done_slots,
        )
        total = len(all_cells) * record.n_repetitions
        todo = _group_cells(slots)
        done_before = total - len(slots)
        history = store.cell_progress(record.run_id) if todo else {}

    unit = "cells" if exact else "slots"
    logger.info(
        "run %r: %d of %d %s stored, %d to collect",
        record.name,
        done_before,
        total,
        unit,
        total - done_before,
    )
    tracker = Progress(
        total=total, done=done_before, unit=unit, target=progress, label=record.name, prices=prices
    )
    session = _Session(
        store,
        record,
        backend,
        instrument,
        tmpl,
        personas,
        tracker,
        pacer,
    )

    async def collect_one(cell: tuple[int, int, list[int]]) -> None:
        persona_id, item_id, reps = cell
        await _collect_cell(session, persona_id, item_id, reps, history.get((persona_id, item_id)))

    async def score_batch(batch: list[tuple[int, int]]) -> None:
        await _distribution_cells(session, batch)

    def summary() -> CollectionSummary:
        return CollectionSummary(
            run=store.get_run(record.run_id),
            total=total,
            done_before=done_before,
            collected=tracker.done - done_before,
            failed=tracker.failed,
            attempts=tracker.attempts,
            requests=session.requests,
            usage=session.usage,
            elapsed_s=time.perf_counter() - started,
            cost_usd=None if prices is None else estimate_cost(session.usage, prices),
            rate_limited=session.rate_limited,
        )

    if todo:
        store.set_status(record.run_id, "running")
    try:
        with tracker:
            if exact:
                batch_size = max(1, int(backend.max_batch_size))
                batches = [
                    [(p, q) for p, q, _ in todo[i : i + batch_size]]
                    for i in range(0, len(todo), batch_size)
                ]
                workers = min(pacer.limit.maximum, max(len(batches), 1))
                await _run_workers(iter(batches), workers, score_batch)
            else:
                workers = min(pacer.limit.maximum, max(len(todo), 1))
                await _run_workers(iter(todo), workers, collect_one)
    except _CellFailure as exc:
        _record_metadata(store, record, backend, prices, sent=session.requests > 0)
        store.set_status(record.run_id, "failed")
        stored = tracker.done
        # Only a transient failure (retries ran out) may go away by itself: only then
        # is running the command again the advice.
        resumable = isinstance(exc.error, TransientBackendError)
        advice = ", rerun to resume" if resumable else "; fix the cause above first"
        raise BackendError(
            f"run {record.name!r} stopped: backend {backend.name!r} failed ({exc}); "
            f"{stored} of {total} {unit} are stored{advice}",
            resumable=resumable,
        ) from exc.error
    except (asyncio.CancelledError, KeyboardInterrupt):
        _record_metadata(store, record, backend, prices, sent=session.requests > 0)
        store.set_status(record.run_id, "interrupted")
        # The command line says once how to resume; the log only counts.
        logger.warning(
            "run %r interrupted: %d of %d %s stored",
            record.name,
            tracker.done,
            total,
            unit,
        )
        raise
    except BaseException:
        store.set_status(record.run_id, "failed")
        raise
    _record_metadata(store, record, backend, prices, sent=session.requests > 0)
    store.set_status(record.run_id, "complete")
    _warn_protocol(store, record)
    result = summary()
    logger.info(
        "run %r complete: %d %s collected (%d failed) in %.1f s, %d requests",
        record.name,
        result.collected,
        unit,
        result.failed,
        result.elapsed_s,
        result.requests,
    )
    return result


def run_collection(
    store: RunStore,
    run: RunSpec | RunRecord | None,
    backend: Backend,
    personas: Sequence[str] | None,
    instrument: Instrument,
    template: PromptTemplate | None = None,
    *,
    close_backend: bool = True,
    **options: Any,
) -> CollectionSummary:
    """Synchronous :func:`collect` (runs its own event loop with :func:`asyncio.run`).

    ``options`` are :func:`collect`'s keyword options. With ``close_backend`` the
    backend's ``aclose()`` runs inside the same event loop at the end, since
    connection pools cannot be closed once their loop is gone.
    """

    async def main() -> CollectionSummary:
        try:
            return await collect(store, run, backend, personas, instrument, template, **options)
        finally:
            if close_backend:
                await backend.aclose()

    return asyncio.run(main())


__all__ = [
    "PROTOCOL_SHORT_DEFAULT",
    "SEED_MODULUS",
    "CollectionSummary",
    "ProgressCallback",
    "ProgressUpdate",
    "RetryPolicy",
    "Slot",
    "collect",
    "derive_seed",
    "is_rate_limited",
    "make_run_spec",
    "plan_slots",
    "run_collection",
]
