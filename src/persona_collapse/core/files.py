"""Writing files so that a crash or an error never leaves a half-written one behind."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from persona_collapse.core.errors import InputFileError


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; it replaces ``dest`` only if the block succeeds.

    The temporary file is removed on any failure. The rename is atomic on POSIX
    and Windows, so readers see the old file or the new one, never a mix. When the
    new bytes equal the file's, the file is left as it is (replacing a file costs
    a flush to disk on common file systems, and re-rendered reports mostly repeat).

    Raises:
        InputFileError: the folder cannot be created or the file cannot be written.
    """
    path = Path(dest)
    _refuse_foreign(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not (path.is_file() and filecmp.cmp(tmp, path, shallow=False)):
            os.replace(tmp, path)
        record_written(path)
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


# --- paths named in files, and the folders this tool writes --------------------------------

MANIFEST_NAME = ".pcollapse-manifest.json"
"""File in an output folder listing the entries pcollapse wrote there."""


def resolve_inside(
    value: str | os.PathLike[str],
    *,
    root: Path,
    source: str,
    key: str,
    allow_outside: bool = False,
) -> Path:
    """A path named in a config or study file, made absolute from the file's folder.

    Every path a file names goes through here, so a file cannot make the tool read
    or write outside its own folder (``/etc/...``, ``../..``, a symlink leading out)
    unless the user allows it on the command line.

    Args:
        value: The path as written.
        root: The file's folder (absolute).
        source: The file, for error messages.
        key: The dotted key holding the path, for error messages.
        allow_outside: Accept paths outside ``root`` (``--allow-outside``).

    Raises:
        ConfigError: The path leaves ``root`` and ``allow_outside`` is false.
    """
    from persona_collapse.core.errors import ConfigError

    p = Path(value).expanduser()
    full = (p if p.is_absolute() else root / p).resolve()
    if not allow_outside and not full.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{source}: field {key!r}: {os.fspath(value)!r} leads outside the file's folder "
            f"{root}; move it inside, or pass --allow-outside if you trust this file"
        )
    return full


@dataclass(frozen=True)
class FilePaths:
    """Resolves the paths one config or study file names, all through
    :func:`resolve_inside` (relative to ``root``, refused outside it)."""

    root: Path
    source: str
    allow_outside: bool

    def path(self, value: str | Path, key: str) -> Path:
        """A path (see :func:`resolve_inside`)."""
        return resolve_inside(
            value, root=self.root, source=self.source, key=key, allow_outside=self.allow_outside
        )

    def optional(self, value: Path | None, key: str) -> Path | None:
        """A path, or None."""
        return None if value is None else self.path(value, key)

    def name_or_path(self, value: str, key: str, builtins: tuple[str, ...]) -> str:
        """Built-in names stay; paths are resolved (relative ones from the study folder).

        A bare word that is neither a built-in nor an existing file stays as it is, so
        that resolving it later reports an unknown name (with suggestions), not a
        missing file.
        """
        if value in builtins:
            return value
        p = Path(value).expanduser()
        looks_like_path = p.is_absolute() or bool(p.suffix) or "/" in value or "\\" in value
        if looks_like_path or (self.root / p).exists():
            return str(self.path(value, key))
        return value

    def existing(self, value: str, key: str) -> str:
        """``value`` resolved when it names an existing file or folder (a local model);
        else unchanged (a Hub id such as ``org/model``)."""
        p = Path(value).expanduser()
        # '..' never starts a Hub id: such a value is a path, checked even if missing.
        if p.is_absolute() or ".." in p.parts or (self.root / p).exists():
            return str(self.path(value, key))
        return value


def _manifest_entries(folder: Path) -> set[str] | None:
    """Names the manifest of ``folder`` lists (None: no manifest, or an unreadable one)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {str(name) for name in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(folder: Path, entries: set[str]) -> None:
    text = json.dumps({"written_by": "pcollapse", "entries": sorted(entries)}, indent=2) + "\n"
    tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / MANIFEST_NAME)
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def claim_output_dir(
    folder: str | os.PathLike[str], *, force: bool = False, keep: Iterable[str] = ()
) -> Path:
    """Make ``folder`` an output folder of this tool, refusing one that holds other files.

    A new or empty folder gets a manifest (:data:`MANIFEST_NAME`); every file the
    atomic writers put under it is recorded there, so a rerun finds only its own
    entries and replaces them. Entries the manifest does not list (and that are
    not in ``keep``: the study file, the run store) belong to someone else.

    Args:
        folder: The output folder.
        force: Write into a folder holding other files anyway; they are never
            replaced (writing a file of the same name is an error).
        keep: Names of entries of ``folder`` that are the tool's without being
            listed (databases, the study file itself).

    Raises:
        InputFileError: ``folder`` is a file, or holds entries this tool did not
            write and ``force`` is false.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file; the output needs a folder (give another path)")
    owned = (_manifest_entries(out) if out.is_dir() else None) or set()
    known = owned | set(keep) | {MANIFEST_NAME}
    try:
        present = sorted(e.name for e in out.iterdir()) if out.is_dir() else []
    except OSError as exc:
        raise InputFileError(out, f"cannot read the folder ({exc.strerror or exc})") from None
    foreign = [name for name in present if name not in known and not _is_temporary(name)]
    if foreign and not force:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise InputFileError(
            out,
            f"the folder holds files pcollapse did not write ({shown}); choose a new or "
            "empty folder, or pass --force to write there anyway",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MANIFEST_NAME).is_file():
            _write_manifest(out, set())
    except OSError as exc:
        raise InputFileError(out, f"cannot write the folder ({exc.strerror or exc})") from None
    return out


def _is_temporary(name: str) -> bool:
    """A temporary file of the atomic writers (left by a killed process)."""
    return name.startswith(".") and name.endswith(".tmp")


def _output_folder_of(dest: Path) -> tuple[Path, set[str], str] | None:
    """(output folder, its manifest's entries, ``dest``'s top-level name there) of the
    nearest output folder above ``dest``; None outside any."""
    for folder in dest.parents:
        entries = _manifest_entries(folder) if (folder / MANIFEST_NAME).is_file() else None
        if entries is not None:
            return folder, entries, dest.relative_to(folder).parts[0]
    return None


def _refuse_foreign(path: Path) -> None:
    """Refuse to replace a file in an output folder that this tool did not write there
    (``--force`` lets the tool write beside other files, never over them)."""
    if not path.exists():
        return
    found = _output_folder_of(path.absolute())
    if found is not None and found[2] not in found[1]:
        raise InputFileError(
            path, "exists and was not written by pcollapse; not replacing it (move it away)"
        )


def record_written(path: str | os.PathLike[str]) -> None:
    """Record ``path`` in the manifest of the nearest output folder above it, if any.

    The manifest lists the top-level entry (``figures`` for ``figures/a.png``).
    Outside an output folder (an export the user named) nothing is recorded.
    """
    found = _output_folder_of(Path(path).absolute())
    if found is None:
        return
    folder, entries, name = found
    if name not in entries:
        with suppress(OSError):  # the file is written; a stale manifest only costs --force
            _write_manifest(folder, entries | {name})


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks.

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
