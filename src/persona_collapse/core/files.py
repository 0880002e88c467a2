"""Writing files so that a crash or an error never leaves a half-written one behind."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from persona_collapse.core.errors import InputFileError


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; it replaces ``dest`` only if the block succeeds.

    The temporary file is removed on any failure. The rename is atomic on POSIX
    and Windows, so readers see the old file or the new one, never a mix.

    Raises:
        InputFileError: the folder cannot be created or the file cannot be written.
    """
    path = Path(dest)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise InputFileError(path, f"cannot write file ({exc.strerror or exc})") from None
    finally:
        with suppress(OSError):  # the folder itself may be what failed
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, newline: str = "\n") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_file_size(path: str | os.PathLike[str], limit: int, what: str) -> None:
    """Raise before reading a file larger than ``limit`` bytes (a runaway or wrong file).

    A missing file passes: the caller's own reading reports it.

    Raises:
        InputFileError: the file is larger than ``limit``.
    """
    try:
        size = Path(path).stat().st_size
    except OSError:
        return
    if size > limit:
        raise InputFileError(
            path,
            f"{what} is {size / 2**20:.1f} MiB, larger than the {limit / 2**20:g} MiB a "
            f"{what} may have; is this the right file?",
        )


CACHE_ENV = "PCOLLAPSE_CACHE"
"""Environment variable that overrides the cache folder (see :func:`cache_dir`)."""


def cache_dir() -> Path:
    """The cache folder: ``$PCOLLAPSE_CACHE``, else the platform's user cache folder.

    Linux: ``$XDG_CACHE_HOME/persona-collapse`` (default ``~/.cache/persona-collapse``);
    macOS: ``~/Library/Caches/persona-collapse``; Windows:
    ``%LOCALAPPDATA%\\persona-collapse\\Cache``.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "persona-collapse"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "persona-collapse" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(base) / "persona-collapse"
