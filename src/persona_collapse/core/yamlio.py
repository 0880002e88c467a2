"""Reading the YAML files users write (configs, instruments, templates), with clear errors.

Every YAML file goes through :func:`load_yaml_file`, which also guards against
hostile documents: a file over :data:`MAX_YAML_BYTES`, aliases that expand to
more than :data:`MAX_YAML_NODES` values ("billion laughs"), and a key written
twice in one mapping (YAML keeps the last silently) are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_collapse.core.errors import InputFileError

MAX_YAML_BYTES = 16 * 1024 * 1024
"""Largest YAML file read (bytes); configs, instruments and templates are far smaller."""

MAX_YAML_NODES = 1_000_000
"""Most values a document may hold once its aliases are expanded."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one mapping."""

    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"key {key!r} is written twice (first on line {first})")
        self.key = key
        self.line = line
        self.first = first


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (merge keys ``<<`` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable key: the base constructor reports it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKeyError(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(data: Any, limit: int) -> int:
    """Values in ``data`` counted as if every alias were copied out; stops past ``limit``.

    Shared objects (aliases) are counted once per use but visited once, so a
    billion-laughs document is measured in time proportional to its text.
    """
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        key = id(value)
        if key in sizes:
            return sizes[key]
        if isinstance(value, dict):
            total = 1 + sum(size(k) + size(v) for k, v in value.items())
        elif isinstance(value, list):
            total = 1 + sum(size(v) for v in value)
        else:
            return 1
        total = min(total, limit + 1)  # keep the numbers small
        sizes[key] = total
        return total

    return size(data)


def load_yaml_text(text: str, *, source: str | Path, what: str = "YAML") -> Any:
    """Parse YAML text (from ``source``, named in errors) with the limits of this module.

    Raises:
        InputFileError: not YAML (with the line), a duplicate key, too many aliased values.
    """
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise InputFileError(source, str(exc), line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputFileError(
            source, "not valid YAML", line=None if mark is None else mark.line + 1
        ) from None
    except RecursionError:
        raise InputFileError(source, f"{what} file is nested too deeply") from None
    try:
        expanded = _expanded_size(data, MAX_YAML_NODES)
    except RecursionError:  # a recursive alias (&a [*a]) or absurd nesting
        raise InputFileError(source, f"{what} file is nested too deeply") from None
    if expanded > MAX_YAML_NODES:
        raise InputFileError(
            source,
            f"{what} file expands to more than {MAX_YAML_NODES:,} values through aliases "
            "(&anchor / *alias); write the values out or use fewer aliases",
        )
    return data


def load_yaml_file(path: str | Path, *, what: str = "YAML") -> Any:
    """Parse a YAML file; ``what`` names the file's role in error messages.

    Raises:
        InputFileError: missing, unreadable, too large, not UTF-8, not YAML (with the
            line), a key written twice, aliases expanding too far, or empty.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, f"{what} file not found")
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise InputFileError(
                p, f"{what} file is {size:,} bytes; the limit is {MAX_YAML_BYTES:,}"
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"cannot read {what} file ({exc})") from None
    data = load_yaml_text(text, source=p, what=what)
    if data is None:
        raise InputFileError(p, f"{what} file is empty")
    return data


def load_yaml_mapping(path: str | Path, *, what: str = "YAML") -> dict[str, Any]:
    """:func:`load_yaml_file` for files whose top level must be a mapping of keys."""
    data = load_yaml_file(path, what=what)
    if not isinstance(data, dict):
        raise InputFileError(
            path, f"expected a mapping of keys at the top level, got {type(data).__name__}"
        )
    return data
