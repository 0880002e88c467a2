"""Import inspect_ai eval logs of the persona_collapse tasks into the run store.

``inspect eval persona_collapse/mfq_personas`` (see :mod:`persona_collapse.inspect_tasks`)
writes a log with one sample per persona-item cell and epoch; every sample's score
carries the parsed rating and each attempt of the short-answer protocol. Importing it
stores one run (persona or self) with its personas, instrument, attempts, answers
(``repetition`` = epoch), token usage, model and generation settings, so metrics,
comparisons, studies and reports read it like a collected run.

Refused, with one line naming the log and what was expected: a log of another
format version than :data:`LOG_FORMAT_VERSION`, of another task, or written by
another layout of the tasks' metadata than :data:`PROTOCOL_VERSION`.
inspect_ai is imported only when a log is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_collapse.backends.base import Usage
from persona_collapse.backends.openai_compat import public_url
from persona_collapse.core.errors import InputFileError, MissingDependencyError
from persona_collapse.core.files import file_sha256
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import instrument_from_dict
from persona_collapse.store.sqlite import (
    AcceptedSlot,
    AttemptRecord,
    RunKind,
    RunRecord,
    RunSpec,
    RunStore,
    persona_set_hash,
)

logger = logging.getLogger(__name__)

LOG_FORMAT_VERSION = 2
"""The inspect_ai log format version this importer reads (``EvalLog.version``)."""

PROTOCOL = "persona_collapse"
"""``protocol`` entry of the tasks' metadata."""

PROTOCOL_VERSION = 1
"""Layout version of the tasks' sample and task metadata."""

TASK_NAMES: tuple[str, ...] = ("mfq_personas", "mfq_self")
"""The persona_collapse inspect tasks (registered as ``persona_collapse/<name>``)."""

SCORER = "rating"
"""Name of the tasks' scorer (the sample score holding the rating and attempts)."""

IMPORT_BACKEND = "inspect-log"
"""Backend name recorded for runs imported from inspect logs."""

_EXPECTED_TASKS = " or ".join(f"persona_collapse/{t}" for t in TASK_NAMES)


@dataclass(frozen=True)
class InspectImport:
    """What importing one log stored.

    Attributes:
        run: The run (new, or the one this log was imported as before).
        samples: Samples stored (persona-item-epoch slots).
        skipped: Samples left out (errored or unscored in the log).
        already: Whether the log had been imported before (nothing written).
    """

    run: RunRecord
    samples: int
    skipped: int
    already: bool = False


def split_inspect_logs(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], list[Path]]:
    """Separate inspect logs from the other import paths.

    ``*.eval`` files and explicitly named ``*.json`` files are inspect logs; a folder
    contributes its ``*.eval`` files (recursively, sorted) and stays among the others
    only when it also holds CSV files (or holds no log at all, so the CSV importer
    reports it).

    Returns:
        ``(logs, others)``, each in the given order, logs without duplicates.
    """
    logs: list[Path] = []
    others: list[Path] = []
    seen: set[Path] = set()
    for entry in paths:
        p = Path(entry)
        found: list[Path] = []
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.eval") if f.is_file())
            if not found or any(p.rglob("*.csv")):
                others.append(p)
        elif p.suffix.lower() in (".eval", ".json"):
            found = [p]
        else:
            others.append(p)
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                logs.append(f)
    return logs, others


def raw_format_version(path: Path) -> int | None:
    """The log format version as written in the file (inspect upgrades old logs in
    memory when it reads them, so the file is asked directly); None if unreadable."""
    _inspect_log_module()  # inspect's .eval logs are zstd-compressed: it teaches zipfile that
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                for member in ("header.json", "_journal/start.json"):
                    if member in names:
                        value = json.loads(archive.read(member)).get("version")
                        return int(value) if isinstance(value, int) else None
            return None
        with path.open("rb") as handle:
            data = json.load(handle)
        value = data.get("version") if isinstance(data, dict) else None
        return int(value) if isinstance(value, int) else None
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, NotImplementedError):
        return None


def _inspect_log_module() -> Any:
    try:
        import inspect_ai.log
    except ImportError:
        raise MissingDependencyError("inspect_ai", "inspect") from None
    return inspect_ai.log


def _read_log(path: Path, *, header_only: bool) -> Any:
    read_eval_log = _inspect_log_module().read_eval_log
    try:
        return read_eval_log(str(path), header_only=header_only)
    except Exception as exc:  # inspect raises many kinds for a file that is not a log
        raise InputFileError(
            path, f"not a readable inspect_ai log ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def is_inspect_log(path: str | os.PathLike[str]) -> bool:
    """Whether a file name is that of an inspect log (``.eval``, or ``.json``)."""
    return Path(path).suffix.lower() in (".eval", ".json")


def check_inspect_log(
    path: str | os.PathLike[str],
    *,
    expect_kind: str | None = None,
    expect_instrument_hash: str | None = None,
    expect_personas: Sequence[str] | None = None,
) -> Any:
    """Read a log's header and refuse what this importer cannot read.

    ``expect_*``: what the caller (a study) needs the log to hold: a ``persona`` or
    ``self`` run, of the instrument with this content hash, with these personas.

    Returns:
        The log header (``EvalLog`` without samples).

    Raises:
        InputFileError: Missing file, not a log, another format version, another
            task, or another metadata layout (one line naming the log and the expectation).
    """
    file = Path(path)
    if not file.is_file():
        raise InputFileError(file, "inspect log not found")
    version = raw_format_version(file)
    if version is None:
        raise InputFileError(file, "not an inspect_ai log (no format version found)")
    if version != LOG_FORMAT_VERSION:
        raise InputFileError(
            file,
            f"inspect log format version {version}; expected version {LOG_FORMAT_VERSION} "
            "(re-run the eval with a current inspect_ai, or convert the log with "
            "'inspect log convert')",
        )
    header = _read_log(file, header_only=True)
    task = str(header.eval.task)
    metadata = header.eval.metadata or {}
    if task.split("/")[-1] not in TASK_NAMES or metadata.get("protocol") != PROTOCOL:
        raise InputFileError(file, f"inspect log of task {task!r}; expected {_EXPECTED_TASKS}")
    if metadata.get("protocol_version") != PROTOCOL_VERSION:
        raise InputFileError(
            file,
            f"task metadata layout {metadata.get('protocol_version')!r}; expected "
            f"{PROTOCOL_VERSION} (written by another persona-collapse release)",
        )
    kind = "self" if metadata.get("kind") == "self" else "persona"
    if expect_kind is not None and kind != expect_kind:
        raise InputFileError(file, f"a {kind} run ({task}); expected a {expect_kind} run")
    if expect_instrument_hash is not None and (
        metadata.get("instrument_hash") != expect_instrument_hash
    ):
        raise InputFileError(
            file,
            f"collected with instrument {metadata.get('instrument_name')!r} "
            f"(hash {metadata.get('instrument_hash')}); expected the study's instrument "
            f"(hash {expect_instrument_hash})",
        )
    if expect_personas is not None and list(metadata.get("personas") or []) != list(
        expect_personas
    ):
        raise InputFileError(
            file,
            f"collected with {len(metadata.get('personas') or [])} other personas; expected "
            f"the study's {len(expect_personas)} personas (in the same order)",
        )
    return header


def _int(value: Any, file: Path, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputFileError(file, f"{what}: expected an integer, got {value!r}")
    return value


def _generate_settings(log: Any) -> dict[str, Any]:
    """The eval's generation settings (set fields only; no secrets: no headers, no body)."""
    config = log.eval.model_generate_config.model_dump(exclude_none=True, mode="json")
    for secretive in ("extra_headers", "extra_body"):
        config.pop(secretive, None)
    return dict(config)


def import_inspect_log(
    store: RunStore,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    expect_kind: str | None = None,
    expect_instrument_hash: str | None = None,
    expect_personas: Sequence[str] | None = None,
) -> InspectImport:
    """Import one inspect log of a persona_collapse task as a new run.

    Importing the same file again under the same name is a no-op (the stored run is
    returned, ``already`` set).

    Args:
        store: The run store.
        path: The ``.eval`` (or ``.json``) log.
        name: Run name; default the log file's name without extension.
        expect_kind, expect_instrument_hash, expect_personas: See :func:`check_inspect_log`.

    Raises:
        InputFileError: The log is refused (see :func:`check_inspect_log`) or a sample
            names a persona or item the task did not have.
        UserError: ``name`` is taken by other data.
    """
    file = Path(path)
    check_inspect_log(
        file,
        expect_kind=expect_kind,
        expect_instrument_hash=expect_instrument_hash,
        expect_personas=expect_personas,
    )
    run_name = name or file.stem
    sha = file_sha256(file)
    source = f"imported:{file.resolve()}"
    import_key = hashlib.sha256(f"{source}\0{sha}\0{run_name}".encode()).hexdigest()
    for record in store.list_runs():
        if record.run_key == import_key:
            logger.info("%s: already imported as run %r, skipped", file, record.name)
            return InspectImport(record, 0, 0, already=True)
    log = _read_log(file, header_only=False)
    meta: Mapping[str, Any] = log.eval.metadata or {}
    kind: RunKind = "self" if meta.get("kind") == "self" else "persona"
    try:
        instrument = instrument_from_dict(
            json.loads(str(meta.get("instrument_json"))), source=f"{file} (task metadata)"
        )
    except ValueError as exc:
        raise InputFileError(file, f"task metadata: unreadable instrument ({exc})") from None
    personas = [str(p) for p in meta.get("personas") or []] if kind == "persona" else []
    if kind == "persona" and not personas:
        raise InputFileError(file, "task metadata: a persona run without personas")
    item_ids = {item.id for item in instrument.items}
    epochs = log.eval.config.epochs or meta.get("repetitions") or 1
    attempts: list[AttemptRecord] = []
    accepted: list[AcceptedSlot] = []
    skipped = 0
    max_epoch = 0
    for sample in log.samples or []:
        score = (sample.scores or {}).get(SCORER)
        if sample.error is not None or score is None:
            skipped += 1
            continue
        where = f"sample {sample.id!r}, epoch {sample.epoch}"
        persona_id = _int(sample.metadata.get("persona_id"), file, f"{where}: persona_id")
        item_id = _int(sample.metadata.get("item_id"), file, f"{where}: item_id")
        if item_id not in item_ids:
            raise InputFileError(file, f"{where}: item {item_id} is not in the instrument")
        expected_self = kind == "self"
        if (persona_id == SELF_PERSONA_ID) != expected_self or (
            not expected_self and not 0 <= persona_id < len(personas)
        ):
            raise InputFileError(file, f"{where}: persona id {persona_id} is not in the task")
        repetition = _int(sample.epoch, file, f"{where}: epoch")
        max_epoch = max(max_epoch, repetition)
        details = score.metadata or {}
        when = sample.completed_at or None
        tried = details.get("attempts") or []
        for number, attempt in enumerate(tried, start=1):
            rated = attempt.get("rating")
            attempts.append(
                AttemptRecord(
                    persona_id,
                    item_id,
                    repetition,
                    number - 1,
                    number,
                    None,
                    int(attempt.get("max_tokens") or 0),
                    bool(attempt.get("long_form")),
                    attempt.get("response"),
                    rated if isinstance(rated, int) else None,
                    None if isinstance(rated, int) else "no rating",
                    str(when) if when else None,
                )
            )
        value = score.value
        rating = value if isinstance(value, int) and not isinstance(value, bool) else None
        if rating is None or (rating != INVALID_RATING and rating not in instrument.scale):
            raise InputFileError(file, f"{where}: score {value!r} is not a rating on the scale")
        accepted.append(
            AcceptedSlot(
                persona_id,
                item_id,
                repetition,
                rating,
                int(details.get("failures") or 0),
                score.answer,
                str(when) if when else None,
            )
        )
    if not accepted:
        raise InputFileError(file, "the log holds no scored sample")
    usage = Usage()
    for model_usage in log.stats.model_usage.values():
        usage = usage + Usage(
            prompt_tokens=int(model_usage.input_tokens or 0),
            completion_tokens=int(model_usage.output_tokens or 0),
            cached_tokens=int(model_usage.input_tokens_cache_read or 0),
        )
    settings = {
        "task": str(log.eval.task),
        "model": str(log.eval.model),
        "inspect_ai": str(log.eval.packages.get("inspect_ai", "")),
    }
    metadata = {
        "sha256": sha,
        "rows": len(accepted),
        "inspect": {
            "format_version": LOG_FORMAT_VERSION,
            "eval_id": str(log.eval.eval_id),
            "run_id": str(log.eval.run_id),
            "task": str(log.eval.task),
            "task_args": dict(log.eval.task_args_passed or {}),
            "created": str(log.eval.created),
            "status": str(log.status),
            "model": str(log.eval.model),
            "model_base_url": public_url(log.eval.model_base_url)
            if log.eval.model_base_url
            else None,
            "generate_config": _generate_settings(log),
            "temperature": meta.get("temperature"),
            "epochs": int(epochs),
            "samples": len(accepted),
            "skipped": skipped,
        },
    }
    spec = RunSpec(
        kind=kind,
        model=str(log.eval.model),
        backend=IMPORT_BACKEND,
        backend_settings=settings,
        instrument_name=instrument.name,
        instrument_hash=instrument.content_hash,
        instrument_json=json.dumps(instrument.to_dict(), ensure_ascii=False),
        persona_set_hash=persona_set_hash(personas) if personas else "",
        template_hash=str(meta.get("template_hash") or ""),
        temperature=float(meta.get("temperature") or 0.0),
        mode="sampling",
        n_repetitions=max(int(epochs), max_epoch, 1),
        seed=0,
        name=run_name,
    )
    run = store.add_imported_run(
        spec,
        import_key=import_key,
        source=source,
        metadata=metadata,
        personas=personas,
        attempts=attempts,
        accepted=accepted,
        usage=usage,
        requests=len(attempts),
    )
    if skipped:
        logger.warning("%s: %d sample(s) without a score were left out", file, skipped)
    return InspectImport(run, len(accepted), skipped)


__all__ = [
    "IMPORT_BACKEND",
    "LOG_FORMAT_VERSION",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "SCORER",
    "TASK_NAMES",
    "InspectImport",
    "check_inspect_log",
    "import_inspect_log",
    "is_inspect_log",
    "raw_format_version",
    "split_inspect_logs",
]
