"""Persona sets: the built-in personas and loaders for user persona files.

A persona is a one-sentence, third-person description that the model is asked
to role-play. A :class:`PersonaSet` is an immutable sequence of such sentences;
a persona's id is its 0-based position in the set (the reference study's
convention), so the order of a file matters and is part of its content hash.

Supported files (UTF-8, surrounding whitespace of each persona stripped):

- ``.json``: a list of strings, or of objects with a ``"persona"`` key;
- ``.jsonl``: one JSON string or ``{"persona": ...}`` object per line;
- ``.csv``: a ``persona`` column (other columns are ignored);
- ``.txt``: one persona per line.

Blank lines are skipped in ``.jsonl`` and ``.txt`` files; a blank persona
entry in ``.json`` or ``.csv`` is an error, and so is a file without personas.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

from persona_collapse.core.errors import InputFileError, UnknownNameError
from persona_collapse.core.files import check_file_size

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".csv", ".json", ".jsonl", ".txt")
"""File extensions :func:`load_personas` understands (case-insensitive)."""

PERSONA_KEY = "persona"
"""Key (JSON objects) or column name (CSV) that holds the persona text."""

MAX_PERSONA_FILE_BYTES = 16 << 20
"""Largest persona file :func:`load_personas` reads (16 MiB: some 50 000 personas)."""

_PREVIEW_CHARS = 60


@dataclass(frozen=True, repr=False)
class PersonaSet(Sequence[str]):
    """An immutable, ordered set of distinct persona descriptions.

    Attributes:
        name: Short label (built-in name, or the file's stem).
        source: Built-in name or the path the set was loaded from.
        texts: The personas; ``texts[i]`` is persona id ``i``.
    """

    name: str
    source: str
    texts: tuple[str, ...]

    def __post_init__(self) -> None:
        texts = tuple(self.texts)
        if not texts:
            raise ValueError("texts: a persona set needs at least one persona")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"texts[{i}]: expected a non-blank string, got {text!r}")
        if len(set(texts)) != len(texts):
            raise ValueError("texts: personas must be distinct")
        # Accept any sequence but store a tuple so the set stays immutable.
        object.__setattr__(self, "texts", texts)

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self.texts[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __repr__(self) -> str:
        return (
            f"PersonaSet(name={self.name!r}, source={self.source!r}, "
            f"n={len(self.texts)}, content_hash={self.content_hash!r})"
        )

    def to_json(self, *, indent: int | None = None) -> str:
        """The personas as a JSON list of strings (the ``.json`` file format).

        Args:
            indent: Passed to :func:`json.dumps`; None gives the canonical one-line form.
        """
        return json.dumps(list(self.texts), ensure_ascii=False, indent=indent)

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex, first 16 chars) of :meth:`to_json` (canonical form, UTF-8).

        Depends on the texts and their order only, not on ``name`` or ``source``.
        """
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]

    def head(self, n: int) -> PersonaSet:
        """The first ``n`` personas (ids keep their meaning: 0..n-1).

        Raises:
            ValueError: ``n`` is not between 1 and ``len(self)``.
        """
        if not 1 <= n <= len(self.texts):
            raise ValueError(f"n: expected 1..{len(self.texts)}, got {n}")
        if n == len(self.texts):
            return self
        return PersonaSet(f"{self.name}[:{n}]", self.source, self.texts[:n])


# --- built-in sets ---------------------------------------------------------------------------


def _load_builtin(name: str) -> PersonaSet:
    filename = f"personas_{name}.json"
    resource = resources.files("persona_collapse").joinpath("data").joinpath(filename)
    raw = resource.read_bytes()
    # Parsed with the same checks as user files, so a damaged install fails clearly.
    texts = _parse(raw, f"persona_collapse/data/{filename}", ".json")
    return PersonaSet(name, name, texts)


def builtin_personas() -> PersonaSet:
    """The 100 built-in personas (name ``"default"``), diverse in age, region, faith, politics."""
    return _load_builtin("default")


def toxic_personas() -> PersonaSet:
    """Eight deliberately malevolent personas (name ``"toxic"``) for control experiments."""
    return _load_builtin("toxic")


BUILTIN_PERSONA_SETS: Mapping[str, Callable[[], PersonaSet]] = MappingProxyType(
    {"default": builtin_personas, "toxic": toxic_personas}
)
"""Built-in persona set name -> loader."""


def get_persona_set(name_or_path: str | Path) -> PersonaSet:
    """Resolve a built-in persona set name (``"default"``, ``"toxic"``) or a file path.

    Raises:
        UnknownNameError: Not a built-in name, not an existing file and not path-like.
        InputFileError: A path-like argument that does not exist, or a malformed file.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in BUILTIN_PERSONA_SETS:
        return BUILTIN_PERSONA_SETS[text]()
    path = Path(name_or_path)
    if path.exists():
        return load_personas(path)
    looks_like_path = (
        isinstance(name_or_path, Path)
        or path.suffix.lower() in SUPPORTED_EXTENSIONS
        or "/" in text
        or "\\" in text
    )
    if looks_like_path:
        raise InputFileError(path, "persona file not found")
    raise UnknownNameError("persona set", text, BUILTIN_PERSONA_SETS)


# --- file loading ----------------------------------------------------------------------------


def load_personas(path: str | Path, *, name: str | None = None) -> PersonaSet:
    """Load a persona file (``.json``, ``.jsonl``, ``.csv`` or ``.txt``, UTF-8).

    Args:
        path: The file; its extension selects the format.
        name: Label of the set (default: the file name without extension).

    Returns:
        The personas in file order (persona id = 0-based position).

    Raises:
        InputFileError: Missing, unreadable, empty or malformed file, naming the line, or
            one larger than :data:`MAX_PERSONA_FILE_BYTES`.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = repr(p.suffix) if p.suffix else "(none)"
        raise InputFileError(
            p,
            f"unsupported persona file extension {shown}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    if not p.exists():
        raise InputFileError(p, "persona file not found")
    if p.is_dir():
        raise InputFileError(p, "is a directory, expected a persona file")
    check_file_size(p, MAX_PERSONA_FILE_BYTES, "persona file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputFileError(p, f"cannot read persona file ({exc.strerror or exc})") from None
    texts = _parse(raw, str(p), ext)
    logger.debug("loaded %d personas from %s", len(texts), p)
    return PersonaSet(name if name is not None else p.stem, str(path), texts)


def _parse(raw: bytes, source: str, ext: str) -> tuple[str, ...]:
    """Decode and parse file bytes into validated persona texts."""
    text = _decode(raw, source)
    if not text.strip():
        raise InputFileError(source, f"file is empty; expected personas in {ext} format")
    parsers: dict[str, Callable[[str, str], list[_Entry]]] = {
        ".json": _parse_json,
        ".jsonl": _parse_jsonl,
        ".csv": _parse_csv,
        ".txt": _parse_txt,
    }
    entries = parsers[ext](text, source)
    if not entries:
        raise InputFileError(source, "contains no personas")
    return _validate(entries, source)


@dataclass(frozen=True)
class _Entry:
    """One raw persona entry with where it came from (1-based physical line)."""

    value: Any
    line: int
    label: str | None = None  # e.g. "entry 4" for JSON lists; None for line-based formats


def _decode(raw: bytes, source: str) -> str:
    try:
        # utf-8-sig drops a byte-order mark, which spreadsheet programs like to add.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise InputFileError(
            source,
            f"not valid UTF-8 (byte 0x{byte} at offset {exc.start}); save the file as UTF-8",
            line=line,
        ) from None


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _describe(value: Any) -> str:
    """Name a JSON value's type the way a user would (not Python's)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _json_error(exc: json.JSONDecodeError, source: str) -> InputFileError:
    return InputFileError(source, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno)


def _parse_json(text: str, source: str) -> list[_Entry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, source) from None
    if not isinstance(data, list):
        raise InputFileError(
            source,
            f"expected a JSON list of persona strings, got {_describe(data)}",
            line=_line_of(text, len(text) - len(text.lstrip())),
        )
    # Walk the (already valid) array once more with raw_decode to learn where each
    # element starts, so that errors can name a physical line.
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    pos = text.index("[") + 1
    entries: list[_Entry] = []
    for number in range(1, len(data) + 1):
        while text[pos] in ws:
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        entries.append(_Entry(value, _line_of(text, pos), f"entry {number}"))
        pos = end
        while text[pos] in ws:
            pos += 1
        pos += 1  # the ',' or the closing ']'
    return entries


def _parse_jsonl(text: str, source: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(
                source, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number
            ) from None
        entries.append(_Entry(value, number))
    return entries


def _parse_csv(text: str, source: str) -> list[_Entry]:
    # strict: an unbalanced quote is an error instead of silently swallowing lines.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise InputFileError(source, f"malformed CSV header ({exc})", line=1) from None
    names = [h.strip() for h in header]
    matches = [i for i, h in enumerate(names) if h.lower() == PERSONA_KEY]
    if not matches:
        found = ", ".join(repr(h) for h in names) or "(none)"
        raise InputFileError(
            source, f"no {PERSONA_KEY!r} column in the CSV header; columns found: {found}", line=1
        )
    if len(matches) > 1:
        raise InputFileError(source, f"the {PERSONA_KEY!r} column appears twice", line=1)
    col = matches[0]
    entries: list[_Entry] = []
    # reader.line_num counts physical lines consumed, so a record starts one line
    # after the previous record ended (quoted fields may span several lines).
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputFileError(source, f"malformed CSV ({exc})", line=start) from None
        if row:  # csv yields [] for a completely empty line
            if col >= len(row):
                raise InputFileError(
                    source,
                    f"row has {len(row)} field(s), no value in the {PERSONA_KEY!r} column",
                    line=start,
                )
            entries.append(_Entry(row[col], start))
        start = reader.line_num + 1
    return entries


def _parse_txt(text: str, source: str) -> list[_Entry]:
    # split("\n") rather than splitlines(): the latter also breaks on characters
    # such as U+2028 that editors do not show as line breaks.
    return [
        _Entry(line, number)
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]


def _preview(text: str) -> str:
    short = text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."
    return repr(short)


def _validate(entries: list[_Entry], source: str) -> tuple[str, ...]:
    """Check each entry is a non-blank, unique persona; strip whitespace."""
    texts: list[str] = []
    first_seen: dict[str, _Entry] = {}
    for entry in entries:
        prefix = f"{entry.label}: " if entry.label else ""
        value = entry.value
        if isinstance(value, dict):
            if PERSONA_KEY not in value:
                keys = ", ".join(repr(k) for k in value) or "none"
                raise InputFileError(
                    source,
                    f"{prefix}object has no {PERSONA_KEY!r} key (keys: {keys})",
                    line=entry.line,
                )
            value = value[PERSONA_KEY]
        if not isinstance(value, str):
            raise InputFileError(
                source,
                f"{prefix}expected a persona string, got {_describe(value)}",
                line=entry.line,
            )
        persona = value.strip()
        if not persona:
            raise InputFileError(source, f"{prefix}empty persona", line=entry.line)
        if persona in first_seen:
            first = first_seen[persona]
            first_where = f"line {first.line}" + (f" ({first.label})" if first.label else "")
            raise InputFileError(
                source,
                f"{prefix}duplicate persona {_preview(persona)}, duplicate of {first_where}",
                line=entry.line,
            )
        first_seen[persona] = entry
        texts.append(persona)
    return tuple(texts)
