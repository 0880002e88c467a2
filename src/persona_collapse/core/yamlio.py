"""Reading the YAML files users write (configs, instruments, templates), with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from persona_collapse.core.errors import InputFileError


def load_yaml_file(path: str | Path, *, what: str = "YAML") -> Any:
    """Parse a YAML file; ``what`` names the file's role in error messages.

    Raises:
        InputFileError: missing, unreadable, not UTF-8, not YAML (with the line) or empty.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, f"{what} file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"cannot read {what} file ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputFileError(
            p, "not valid YAML", line=None if mark is None else mark.line + 1
        ) from None
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
