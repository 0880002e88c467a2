"""Running one model from a :class:`~persona_collapse.core.config.RunConfig`.

:func:`execute_run` collects a model's persona and self runs into a run store
(resuming whatever is already there) and computes their metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from persona_collapse.backends import ModelBackendSpec, build_backend
from persona_collapse.backends.base import Backend, ProbeMode
from persona_collapse.core.config import RunConfig, resolve_personas, resolve_template
from persona_collapse.core.instrument import Instrument, load_instrument
from persona_collapse.engine.collect import CollectionSummary, collect, make_run_spec
from persona_collapse.engine.preflight import discard_if_empty, make_check, run_preflight
from persona_collapse.stats.metrics import RunMetrics, SelfProfile
from persona_collapse.stats.sources import loaded_run, run_metrics, run_self_profile
from persona_collapse.store.sqlite import RunRecord, RunSpec, RunStore

logger = logging.getLogger(__name__)

BackendBuilder = Callable[[RunConfig, Instrument], Backend]


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`execute_run` collected and computed.

    Attributes:
        config: The configuration that was run.
        persona_run, self_run: Stored runs (None when switched off).
        collection: Summaries of this session's collection, by run kind.
        metrics: S, R and sigma_bar of the persona run (None when switched off).
        self_profile: Self-profile of the self run (None when switched off).
    """

    config: RunConfig
    persona_run: RunRecord | None
    self_run: RunRecord | None
    collection: dict[str, CollectionSummary] = field(default_factory=dict)
    metrics: RunMetrics | None = None
    self_profile: SelfProfile | None = None


def default_backend(config: RunConfig, instrument: Instrument) -> Backend:
    """Build the backend a config names, offering it the run's instrument.

    ``config.model`` is the backend's model option (the simulator's preset).
    """
    spec = ModelBackendSpec(
        config.backend,
        config.model,
        options=config.backend_options,
        context={"instrument": instrument},
    )
    return build_backend(spec)


def _close(backend: Backend) -> None:
    """Close a backend outside any event loop."""
    asyncio.run(backend.aclose())


def execute_run(
    config: RunConfig,
    *,
    backend_builder: BackendBuilder = default_backend,
    preflight: bool = True,
) -> RunOutcome:
    """Collect a config's persona and self runs into its store, then analyse them.

    Resumes: slots already in the store are not asked again.

    Args:
        config: What to run.
        backend_builder: Builds the backend (override to inject one in tests).
        preflight: Check the endpoint and model first (:mod:`persona_collapse.engine.preflight`).

    Raises:
        PreflightError: The endpoint cannot serve the run (nothing was written).
        BackendError: The backend failed during collection; a store this call
            created is removed again if nothing was stored in it.
    """
    instrument = load_instrument(config.instrument, include_catch=config.include_catch)
    template = resolve_template(config)
    personas = resolve_personas(config) if config.persona_run else None
    label = config.model_label
    collected: dict[str, CollectionSummary] = {}
    records: dict[str, RunRecord] = {}
    jobs: list[tuple[str, Sequence[str] | None, RunSpec]] = []
    runs: list[tuple[str, Sequence[str] | None, str]] = []
    if personas is not None:
        runs.append(("persona", list(personas), config.name or label))
    if config.self_run:
        runs.append(("self", None, f"{config.name or label}/self"))
    # Everything that can fail on bad input is resolved before the store is touched,
    # so a mistake never leaves a half-written store behind. One backend serves every
    # run of the config: a local model is loaded once.
    backend = backend_builder(config, instrument)
    for kind, texts, name in runs:
        spec = make_run_spec(
            backend=backend,
            instrument=instrument,
            personas=texts,
            template=template,
            name=name,
            model=label,
            protocol=config,
        )
        jobs.append((kind, texts, spec))
    if preflight and jobs:
        mode: ProbeMode = "exact" if config.mode == "exact" else "sampling"
        checks = [make_check(n, backend, instrument, template, t, mode) for _, t, n in runs]
        try:
            run_preflight(checks)
        except BaseException:
            _close(backend)
            raise
    new_store = not config.store.exists()
    config.store.parent.mkdir(parents=True, exist_ok=True)
    with discard_if_empty(config.store, new=new_store), RunStore.open(config.store) as store:

        async def main() -> None:
            # One event loop for every run, so the backend's connection pools stay
            # valid between runs; the backend is closed once, at the end.
            try:
                for kind, texts, spec in jobs:
                    summary = await collect(
                        store,
                        spec,
                        backend,
                        texts,
                        instrument,
                        template,
                        pacing=config.pacing,
                        progress=config.progress,
                        prices=config.prices,
                    )
                    collected[kind] = summary
                    records[kind] = summary.run
            finally:
                await backend.aclose()

        asyncio.run(main())
        metrics = self_prof = None
        if "persona" in records:
            metrics = run_metrics(loaded_run(store, records["persona"]), config.analysis)
        if "self" in records:
            self_prof = run_self_profile(loaded_run(store, records["self"]))
    return RunOutcome(
        config=config,
        persona_run=records.get("persona"),
        self_run=records.get("self"),
        collection=collected,
        metrics=metrics,
        self_profile=self_prof,
    )
