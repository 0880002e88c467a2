"""A cache of a study's analysis, so a report with nothing new to analyse is quick.

:func:`cached_results` keeps the :class:`~persona_collapse.report.model.StudyResults`
of the last analysis in ``<output>/.analysis-cache.pkl``, under a key made of
everything the analysis reads:

* the bytes of the study's stores (run store, verification store, controls store,
  with their ``-wal`` journals), the verification index and the fine-tuning
  records (``produced.json``);
* the study's settings (every key of the study file, after loading) and the bytes
  of every file they name (persona sets, instruments, templates, imported runs);
* the installed package (version, and the size and modification time of its files,
  so an edited analysis never reuses old results).

Any difference is a miss: the analysis runs again and replaces the entry. The
file is written atomically and signed with a key kept in the user's cache folder
(:func:`~persona_collapse.core.files.cache_dir`), so a cache file that is
unreadable, truncated, from another machine or tampered with is ignored (the
analysis runs again), and is never unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from persona_collapse.core.errors import UserError
from persona_collapse.core.files import cache_dir, file_sha256, write_bytes_atomic
from persona_collapse.core.version import __version__
from persona_collapse.report.model import StudyResults
from persona_collapse.study.loading import LoadedStudy
from persona_collapse.study.verification import VERIFY_INDEX

logger = logging.getLogger(__name__)

ANALYSIS_CACHE = ".analysis-cache.pkl"
"""File in the output folder holding the last analysis (see :func:`cached_results`)."""

CACHE_FORMAT = 1
"""Bumped when the cache file's layout changes (older files are then ignored)."""

_MAGIC = b"pcollapse-analysis-cache\n"
_KEY_FILE = "analysis-cache.key"
_STORE_SUFFIXES = (".db", ".db-wal", ".db-journal")


def _file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes; None when it is not a readable regular file."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def _code_state() -> list[tuple[str, int, int]]:
    """Size and modification time of every file of the installed package."""
    root = Path(__file__).resolve().parents[1]
    state = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:
                continue
            state.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return state


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-ready value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _named_files(settings: Any, root: Path) -> dict[str, str | None]:
    """Digest of every existing file a setting names (absolute, or relative to ``root``)."""
    out: dict[str, str | None] = {}
    for text in _strings(settings):
        if not text or len(text) > 4096 or "\n" in text or "\0" in text:
            continue
        path = Path(text) if Path(text).is_absolute() else root / text
        try:
            if not path.is_file():
                continue
        except OSError:
            continue
        out[str(path)] = _file_digest(path)
    return out


def _output_files(study: LoadedStudy) -> dict[str, str | None]:
    """Digest of the stores, indexes and fine-tuning records the analysis reads."""
    cfg = study.config
    out_dir = cfg.output_dir
    paths = {cfg.store_path, cfg.store_path.with_name(cfg.store_path.name + "-wal")}
    try:
        paths.update(p for p in out_dir.iterdir() if p.name.endswith(_STORE_SUFFIXES))
        paths.add(out_dir / VERIFY_INDEX)
        paths.update((out_dir / "finetune").glob("**/*.json"))
    except OSError:
        pass
    return {str(p): _file_digest(p) for p in sorted(paths) if p.is_file()}


def analysis_key(study: LoadedStudy) -> str:
    """SHA-256 (hex) of everything a study's analysis reads (see the module docstring)."""
    settings = study.config.model_dump(mode="json")
    data = {
        "format": CACHE_FORMAT,
        "version": __version__,
        "code": _code_state(),
        # Not the study file's path as typed (``results.source``): it is set on reuse.
        "root": str(study.root),
        "settings": settings,
        "named_files": _named_files(settings, study.root),
        "output_files": _output_files(study),
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _signing_key() -> bytes | None:
    """This user's key signing cache files (created on first use); None when unavailable."""
    path = cache_dir() / _KEY_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    except FileExistsError:
        pass  # another process made it first: read theirs
    except OSError as exc:
        logger.debug("analysis cache off: cannot create %s (%s)", path, exc)
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) >= 32 else None


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest().encode("ascii")


def read_cached(path: Path, key: str, secret: bytes) -> StudyResults | None:
    """The results stored at ``path`` under ``key``; None when absent, stale or not valid."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 64 + 1
    if not blob.startswith(_MAGIC) or len(blob) <= head:
        return None
    signature, payload = blob[len(_MAGIC) : head - 1], blob[head:]
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        logger.info("ignoring %s: not signed by this user's key", path)
        return None
    try:
        entry = pickle.loads(payload)  # signed by us: written by this tool
    except Exception as exc:  # an old layout can fail in many ways
        logger.info("ignoring unreadable %s (%s)", path, exc)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    results = entry.get("results")
    return results if isinstance(results, StudyResults) else None


def write_cached(path: Path, key: str, secret: bytes, results: StudyResults) -> None:
    """Store ``results`` under ``key`` at ``path`` (atomically); failures only cost speed."""
    try:
        payload = pickle.dumps({"key": key, "results": results}, protocol=5)
    except Exception as exc:  # an unpicklable result: just no cache
        logger.info("analysis not cached (%s)", exc)
        return
    try:
        write_bytes_atomic(path, _MAGIC + _sign(secret, payload) + b"\n" + payload)
    except (OSError, UserError) as exc:
        logger.info("analysis not cached (%s)", exc)


def cached_results(
    study: LoadedStudy, out_dir: Path, compute: Callable[[], StudyResults]
) -> StudyResults:
    """The study's results from ``out_dir``'s cache when its inputs did not change,
    else ``compute()`` (then cached)."""
    secret = _signing_key()
    if secret is None:
        return compute()
    path = out_dir / ANALYSIS_CACHE
    key = analysis_key(study)
    found = read_cached(path, key, secret)
    if found is not None:
        logger.info("study %s: inputs unchanged, analysis reused from %s", study.config.name, path)
        # The same study named another way (relative or absolute path) is a hit too.
        return dataclasses.replace(found, source=study.source)
    results = compute()
    # The inputs may have changed while the analysis read them (a collection running
    # beside it): cache only results whose inputs are known.
    if analysis_key(study) == key:
        write_cached(path, key, secret, results)
    return results


__all__ = ["ANALYSIS_CACHE", "analysis_key", "cached_results", "read_cached", "write_cached"]
