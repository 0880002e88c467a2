"""Measure LoRA checkpoints as a trainer saves them (``pcollapse watch``).

:func:`watch_checkpoints` polls a folder for trainer checkpoints (``checkpoint-N/``
holding a saved PEFT adapter) and measures each new one as a persona run of the base
model with that adapter, named ``PREFIX/stepNNNN`` in the run store. Collection goes
through :func:`~persona_collapse.study.runs.execute_run`, so it resumes: watching the
same folder again asks nothing that is stored already, and a checkpoint interrupted
half-way is completed. At most ``max_concurrency`` checkpoints are measured at once.
The runs are ready for ``pcollapse trajectory --step N=STORE:PREFIX/stepNNNN``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
        step: Training step (from the folder name).
        folder: The checkpoint folder.
        name: Run name in the store.
        outcome: What was collected and computed (None when no metrics could be computed).
        problem: Why there are no metrics ("" when there are).
    """

    step: int
    folder: Path
    name: str
    outcome: RunOutcome | None
    problem: str = ""


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
    if not interval >= 0:
        raise ValueError(f"interval must be >= 0 seconds, got {interval}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if max_polls is not None and max_polls < 1:
        raise ValueError(f"max_polls must be >= 1, got {max_polls}")
    if not config.persona_run:
        raise UserError("a checkpoint is measured with a persona run; do not switch it off")
    root = Path(folder)
    seen: set[int] = set()
    measured: list[MeasuredCheckpoint] = []

    def measure(step: int, path: Path) -> MeasuredCheckpoint:
        name = checkpoint_run_name(prefix, step)
        options = {**config.backend_options, adapter_option: str(path)}
        run_config = config.model_copy(update={"name": name, "backend_options": options})
        logger.info("watch: measuring %s (%s)", name, path)
        try:
            outcome = execute_run(run_config, backend_builder=backend_builder, preflight=False)
        except TooFewPersonasError as exc:
            # The answers are stored; only S and R cannot be computed from them yet.
            logger.warning("watch: %s", exc)
            return MeasuredCheckpoint(step, path, name, None, str(exc))
        return MeasuredCheckpoint(step=step, folder=path, name=name, outcome=outcome)

    polls = 0
    with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        while True:
            polls += 1
            new = {s: p for s, p in find_checkpoints(root).items() if s not in seen}
            # Runs of one store are written one at a time by SQLite; measuring several
            # checkpoints at once overlaps their model calls.
            for result in pool.map(lambda item: measure(*item), new.items()):
                seen.add(result.step)
                measured.append(result)
                if on_measured is not None:
                    on_measured(result)
            if max_polls is not None and polls >= max_polls:
                return measured
            sleep(interval)
