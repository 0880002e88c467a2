"""The one CSV writer: every CSV file the package writes goes through :func:`write_csv_atomic`.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return; OWASP "CSV injection") get a leading
``'``, which spreadsheets show as text. Model replies, run, variant and family
names all end up in CSV files, and any of them may come from an untrusted party.

The escape is reversible: a text cell that already starts with ``'`` followed by
one of those characters gets one more ``'``, so :func:`unneutralise_text` gives
back the original value exactly. Numeric columns are never touched, and neither
are text cells that are plain numbers (``-0.5``), which spreadsheets read as
numbers, not formulas.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_collapse.core.files import write_text_atomic

if TYPE_CHECKING:  # pandas is imported where a frame is written, not with this module
    import pandas as pd

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet treat a cell as a formula."""

_QUOTE = "'"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(text: str) -> bool:
    if not text:
        return False
    if text[0] in FORMULA_PREFIXES:
        return _NUMBER.fullmatch(text) is None
    # An already-quoted dangerous value gets one more quote, so the escape reverses exactly.
    return text[0] == _QUOTE and _needs_quote(text.lstrip(_QUOTE))


def neutralise_text(value: str) -> str:
    """``value`` with a leading ``'`` when a spreadsheet would run it as a formula."""
    return _QUOTE + value if _needs_quote(value) else value


def unneutralise_text(value: str) -> str:
    """Undo :func:`neutralise_text` (values it left alone are returned unchanged)."""
    if value.startswith(_QUOTE) and _needs_quote(value[1:]):
        return value[1:]
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells are neutralised; numeric columns stay as they are."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if not _is_text(series):
            continue
        out[column] = series.map(lambda v: neutralise_text(v) if isinstance(v, str) else v)
    out.columns = pd.Index([neutralise_text(c) if isinstance(c, str) else c for c in out.columns])
    return out


def _is_text(series: pd.Series) -> bool:
    import pandas as pd

    dtype = series.dtype
    return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def _has_carriage_return(frame: pd.DataFrame) -> bool:
    return any(
        frame[c].map(lambda v: isinstance(v, str) and "\r" in v).any()
        for c in frame.columns
        if _is_text(frame[c])
    )


def write_csv_atomic(
    frame: pd.DataFrame, path: str | os.PathLike[str], *, raw: bool = False
) -> Path:
    """Write ``frame`` (no index, ``\\n`` line ends) to ``path`` atomically.

    Args:
        frame: What to write.
        path: Destination file; its folder is created if needed.
        raw: Write text cells as they are (no formula neutralisation).

    Raises:
        InputFileError: The destination cannot be written.
    """
    data = frame if raw else neutralise_frame(frame)
    # Python's csv module quotes a field holding "\n" but not a lone "\r", which
    # readers then take as a line end; quote every text cell when one holds "\r".
    quoting: Literal[0, 2] = (
        csv.QUOTE_NONNUMERIC if _has_carriage_return(data) else csv.QUOTE_MINIMAL
    )
    buffer = io.StringIO()
    data.to_csv(buffer, index=False, lineterminator="\n", quoting=quoting)
    return write_text_atomic(path, buffer.getvalue(), newline="")


def records_csv_text(
    records: Sequence[Mapping[str, Any]], *, fieldnames: Sequence[str] | None = None
) -> str:
    """CSV text (header first, ``\n`` line ends) of ``records``, one row each.

    Columns are ``fieldnames`` or else every key in first-seen order; values that are
    dicts or lists are left out. Text cells are neutralised, and quoted when one holds
    ``\r``, as :func:`write_csv_atomic` does for a frame.
    """
    rows = [
        {
            k: neutralise_text(v) if isinstance(v, str) else v
            for k, v in r.items()
            if not isinstance(v, dict | list)
        }
        for r in records
    ]
    names = (
        list(fieldnames)
        if fieldnames is not None
        else list(dict.fromkeys(k for r in rows for k in r))
    )
    quoting: Literal[0, 2] = (
        csv.QUOTE_NONNUMERIC
        if any(isinstance(v, str) and "\r" in v for r in rows for v in r.values())
        else csv.QUOTE_MINIMAL
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n", quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
