"""Measure LoRA checkpoints as a trainer saves them (``pcollapse watch``).

:func:`watch_checkpoints` polls a folder for trainer checkpoints (``checkpoint-N/``
holding a saved PEFT adapter) and measures each new one as a persona run of the base
model with that adapter, named ``PREFIX/stepNNNN`` in the run store. Collection goes
through :func:`~persona_collapse.study.runs.execute_run`, so it resumes: watching the
same folder again asks nothing that is stored already, and a checkpoint interrupted
half-way is completed. At most ``max_concurrency`` checkpoints are measured at once.
The runs are ready for ``pcollapse trajectory --step N=STORE:PREFIX/stepNNNN``.

:func:`watch_openai_checkpoints` does the same for an OpenAI fine-tuning job: each
poll retrieves the job and lists its checkpoints with the official SDK
(``client.fine_tuning.jobs.checkpoints.list``), and every new checkpoint model
(``fine_tuned_model_checkpoint``, at its ``step_number``) is measured as a model of
the run's backend. Watching stops once the job has finished and every checkpoint
it saved is measured.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from persona_collapse.core.config import RunConfig
from persona_collapse.core.errors import InputFileError, TooFewPersonasError, UserError
from persona_collapse.study.runs import BackendBuilder, RunOutcome, default_backend, execute_run

logger = logging.getLogger(__name__)

CHECKPOINT_FOLDER = re.compile(r"^checkpoint-(\d+)$")
"""Folder names of trainer checkpoints (``checkpoint-200``)."""

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
"""A checkpoint is ready once its adapter weights are written (the config comes first)."""


@dataclass(frozen=True)
class MeasuredCheckpoint:
    """One checkpoint measured by :func:`watch_checkpoints`.

    Attributes:
        step: Training step (from the folder name, or the API's ``step_number``).
        folder: The checkpoint folder (None for an API checkpoint).
        name: Run name in the store.
        outcome: What was collected and computed (None when no metrics could be computed).
        problem: Why there are no metrics ("" when there are).
        model: The checkpoint's model id (API checkpoints; None for folders).
    """

    step: int
    folder: Path | None
    name: str
    outcome: RunOutcome | None
    problem: str = ""
    model: str | None = None


def find_checkpoints(folder: Path) -> dict[int, Path]:
    """Step -> folder of every ready checkpoint under ``folder`` (``checkpoint-N`` with
    adapter weights), also inside a ``checkpoints/`` subfolder (the LoRA trainer's layout).

    Raises:
        InputFileError: ``folder`` is not a folder.
    """
    if not folder.is_dir():
        raise InputFileError(folder, "not a folder of checkpoints")
    found: dict[int, Path] = {}
    for parent in (folder, folder / "checkpoints"):
        if not parent.is_dir():
            continue
        for sub in parent.iterdir():
            match = CHECKPOINT_FOLDER.match(sub.name)
            if match and sub.is_dir() and any((sub / f).is_file() for f in ADAPTER_FILES):
                found[int(match.group(1))] = sub
    return dict(sorted(found.items()))


def checkpoint_run_name(prefix: str, step: int) -> str:
    """Store name of a watched checkpoint's run."""
    return f"{prefix}/step{step:04d}"


def watch_checkpoints(
    folder: str | Path,
    config: RunConfig,
    *,
    prefix: str,
    adapter_option: str = "adapter",
    interval: float = 60.0,
    max_concurrency: int = 1,
    max_polls: int | None = None,
    backend_builder: BackendBuilder = default_backend,
    on_measured: Callable[[MeasuredCheckpoint], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[MeasuredCheckpoint]:
    """Measure every checkpoint in ``folder`` and each new one as it appears.

    Args:
        folder: Where the trainer saves ``checkpoint-N/`` folders.
        config: The run settings (backend, base model, personas, protocol, store); each
            checkpoint is run with ``backend_options[adapter_option]`` set to its folder.
        prefix: Run names are ``PREFIX/stepNNNN``.
        adapter_option: Backend option that takes the adapter folder.
        interval: Seconds between polls.
        max_concurrency: Checkpoints measured at once (each loads its own model).
        max_polls: Stop after this many polls (None: until interrupted).
        backend_builder: Builds the backend (tests inject one).
        on_measured: Called after each checkpoint is measured.
        sleep: Waits between polls (tests replace it).

    Returns:
        The checkpoints measured, in the order they finished.

    Raises:
        ValueError: bad ``interval``, ``max_concurrency`` or ``max_polls``.
        InputFileError: ``folder`` is not a folder.
    """
    _check_watch(config, interval, max_concurrency, max_polls)
    root = Path(folder)

    def measure(step: int, path: Path) -> MeasuredCheckpoint:
        name = checkpoint_run_name(prefix, step)
        options = {**config.backend_options, adapter_option: str(path)}
        run_config = config.model_copy(update={"name": name, "backend_options": options})
        return _measure_checkpoint(run_config, step, name, backend_builder, folder=path)

    return _poll_and_measure(
        lambda: find_checkpoints(root),
        measure,
        finished=lambda: False,
        interval=interval,
        max_concurrency=max_concurrency,
        max_polls=max_polls,
        on_measured=on_measured,
        sleep=sleep,
    )


def _measure_checkpoint(
    run_config: RunConfig,
    step: int,
    name: str,
    backend_builder: BackendBuilder,
    *,
    folder: Path | None = None,
    model: str | None = None,
) -> MeasuredCheckpoint:
    """Collect and compute one checkpoint's run (``folder``: an adapter; ``model``: an API
    checkpoint's model id)."""
    logger.info("watch: measuring %s (%s)", name, folder or model)
    try:
        outcome = execute_run(run_config, backend_builder=backend_builder, preflight=False)
    except TooFewPersonasError as exc:
        # The answers are stored; only S and R cannot be computed from them yet.
        logger.warning("watch: %s", exc)
        return MeasuredCheckpoint(step, folder, name, None, str(exc), model=model)
    return MeasuredCheckpoint(step, folder, name, outcome, model=model)


def _check_watch(
    config: RunConfig, interval: float, max_concurrency: int, max_polls: int | None
) -> None:
    if not interval >= 0:
        raise ValueError(f"interval must be >= 0 seconds, got {interval}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if max_polls is not None and max_polls < 1:
        raise ValueError(f"max_polls must be >= 1, got {max_polls}")
    if not config.persona_run:
        raise UserError("a checkpoint is measured with a persona run; do not switch it off")


_Found = TypeVar("_Found")


def _poll_and_measure(
    find: Callable[[], Mapping[int, _Found]],
    measure: Callable[[int, _Found], MeasuredCheckpoint],
    *,
    finished: Callable[[], bool],
    interval: float,
    max_concurrency: int,
    max_polls: int | None,
    on_measured: Callable[[MeasuredCheckpoint], None] | None,
    sleep: Callable[[float], None],
) -> list[MeasuredCheckpoint]:
    """Poll ``find`` and measure each new step (at most ``max_concurrency`` at once) until
    ``finished()`` after a poll, or ``max_polls`` polls."""
    seen: set[int] = set()
    measured: list[MeasuredCheckpoint] = []
    polls = 0
    with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        while True:
            polls += 1
            new = {s: p for s, p in find().items() if s not in seen}
            # Runs of one store are written one at a time by SQLite; measuring several
            # checkpoints at once overlaps their model calls.
            for result in pool.map(lambda item: measure(*item), new.items()):
                seen.add(result.step)
                measured.append(result)
                if on_measured is not None:
                    on_measured(result)
            if finished() or (max_polls is not None and polls >= max_polls):
                return measured
            sleep(interval)


def watch_openai_checkpoints(
    job_id: str,
    config: RunConfig,
    *,
    prefix: str,
    base_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    interval: float = 60.0,
    max_concurrency: int = 1,
    max_polls: int | None = None,
    backend_builder: BackendBuilder = default_backend,
    on_measured: Callable[[MeasuredCheckpoint], None] | None = None,
    on_status: Callable[[str, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 60.0,
) -> list[MeasuredCheckpoint]:
    """Measure every checkpoint of an OpenAI fine-tuning job, and each new one as it is saved.

    Args:
        job_id: The fine-tuning job (``ftjob-...``).
        config: The run settings (backend, personas, protocol, store); each checkpoint is
            run with ``model`` set to its ``fine_tuned_model_checkpoint``.
        prefix: Run names are ``PREFIX/stepNNNN``.
        base_url: The fine-tuning API (None: OpenAI's).
        api_key_env: NAME of the variable holding the key (None: no key); the key is
            sent only to ``base_url``.
        interval, max_concurrency, max_polls, backend_builder, on_measured, sleep: As
            for :func:`watch_checkpoints`.
        on_status: Called after each poll with the job's status and checkpoint count.
        timeout: Seconds per API request.

    Returns:
        The checkpoints measured, in the order they finished.

    Raises:
        ValueError: bad ``interval``, ``max_concurrency`` or ``max_polls``.
        ConfigError: the key variable is unset, or a bad URL.
        FineTuneAPIError: a request to the fine-tuning API failed (e.g. no such job).
    """
    from persona_collapse.variants.finetune.openai_jobs import TERMINAL_STATUSES, JobCheckpoints

    _check_watch(config, interval, max_concurrency, max_polls)
    api = JobCheckpoints(base_url=base_url, api_key_env=api_key_env, timeout=timeout)
    status = [""]

    def find() -> dict[int, str]:
        status[0], checkpoints = api.poll(job_id)
        if on_status is not None:
            on_status(status[0], len(checkpoints))
        return {c.step: c.model for c in checkpoints}

    def measure(step: int, model: str) -> MeasuredCheckpoint:
        name = checkpoint_run_name(prefix, step)
        run_config = config.model_copy(update={"name": name, "model": model})
        return _measure_checkpoint(run_config, step, name, backend_builder, model=model)

    # The job is retrieved before its checkpoints are listed: once it has finished,
    # that poll's list is complete.
    return _poll_and_measure(
        find,
        measure,
        finished=lambda: status[0] in TERMINAL_STATUSES,
        interval=interval,
        max_concurrency=max_concurrency,
        max_polls=max_polls,
        on_measured=on_measured,
        sleep=sleep,
    )
