"""Read and write ratings in the reference study's CSV layout.

Two layouts are read, under either column naming:

* persona files: ``persona_id,question_id,run_index,rating,failures,response,collected_at``
* self files: the same without ``persona_id`` (answers given with no persona)

Our own export names (``item_id``, ``repetition``) are accepted in place of
``question_id``, ``run_index``. Every row is kept: several rows per slot
(retries) and ``rating == -1`` (failed parse) are data, not errors; metrics
decide what to do with them.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_collapse.core.errors import InputFileError
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument, mfq30

if TYPE_CHECKING:  # pandas is imported where a frame is built: metrics read without it
    import pandas as pd

logger = logging.getLogger(__name__)

FRAME_COLUMNS: tuple[str, ...] = (
    "persona_id",
    "item_id",
    "repetition",
    "rating",
    "failures",
    "response",
    "collected_at",
)
"""Columns of the frame :func:`read_ratings_csv` returns, in order."""

REFERENCE_COLUMNS: tuple[str, ...] = (
    "persona_id",
    "question_id",
    "run_index",
    "rating",
    "failures",
    "response",
    "collected_at",
)
"""Column names of reference persona files (self files lack ``persona_id``)."""

# Frame column -> accepted file column names (reference name first).
_ALIASES: dict[str, tuple[str, ...]] = {
    "item_id": ("question_id", "item_id"),
    "repetition": ("run_index", "repetition"),
}

_SNIFF_BYTES = 8192


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (start line, fields) of each non-blank CSV record, header included.

    Quoted fields may span lines, so records and lines differ; the csv module's
    ``line_num`` (lines read so far) gives where the next record starts. Blank
    lines are skipped, as pandas does. Read errors end the iteration.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            previous_end = 0
            for record in reader:
                start = previous_end + 1
                previous_end = reader.line_num
                if record:
                    yield start, record
    except (OSError, UnicodeDecodeError, csv.Error):
        return


def _csv_line_of_row(path: Path, row: int) -> int | None:
    """Physical line (1-based) where data row ``row`` (0-based) of a CSV file starts."""
    for index, (start, _) in enumerate(_records(path)):
        if index == row + 1:  # index 0 is the header
            return start
    return None


def _first_bad_field_count(path: Path) -> tuple[int, int, int] | None:
    """First record whose field count differs from the header's: (line, expected, got)."""
    width: int | None = None
    for start, record in _records(path):
        if width is None:
            width = len(record)
        elif len(record) != width:
            return start, width, len(record)
    return None


def _field_count_error(path: Path) -> InputFileError | None:
    bad = _first_bad_field_count(path)
    if bad is None:
        return None
    line, expected, got = bad
    return InputFileError(
        path, f"expected {expected} fields as in the header, found {got}", line=line
    )


_EXPECTED = (
    "expected a ratings CSV file with the header "
    "persona_id,question_id,run_index,rating,failures,response,collected_at"
)

# Leading bytes of file kinds people pass by mistake.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"PK\x03\x04", "a ZIP archive (or an Excel .xlsx workbook)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"PAR1", "a Parquet file"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office document"),
)
_YAML_KEY = re.compile(r"^(---\s*$|%YAML|[A-Za-z_][\w.-]*:(\s|$))")


def _not_csv_problem(path: Path, head: bytes) -> str | None:
    """What is wrong, when the first bytes of ``path`` show it is not a ratings CSV."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"not a CSV text file but {kind} (binary content); {_EXPECTED}"
    if b"\x00" in head:
        return f"not a CSV text file (binary content); {_EXPECTED}"
    text_kind = _text_kind(path, head)
    return None if text_kind is None else f"not a CSV file but {text_kind}; {_EXPECTED}"


def _text_kind(path: Path, head: bytes) -> str | None:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    # Only the first line that is neither blank nor a comment counts: stop there.
    lines = (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    first = next(lines, "").strip()
    if first.startswith(("{", "[")):
        return "a JSON file"
    if "," in first and "rating" in first:
        return None  # a CSV header; the parser judges the rest
    if path.suffix.lower() in (".yaml", ".yml") or _YAML_KEY.match(first):
        return "a YAML file (a study or configuration file?)"
    if path.suffix.lower() in (".json", ".jsonl"):
        return "a JSON file"
    return None


def _check_text_file(path: Path) -> None:
    """Raise for a missing, unreadable, empty or binary file, or one of another format."""
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a directory, expected a CSV file")
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not head.strip():
        raise InputFileError(path, "file is empty, expected a CSV header and data rows")
    problem = _not_csv_problem(path, head)
    if problem is not None:
        raise InputFileError(path, problem, line=1)


def _resolve_columns(path: Path, header: list[str]) -> tuple[str, dict[str, str]]:
    """Map frame columns to file columns; return the kind ("persona"/"self") and the map."""
    present = set(header)
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for frame_col, names in _ALIASES.items():
        found = [n for n in names if n in present]
        if len(found) > 1:
            raise InputFileError(
                path, f"ambiguous columns {' and '.join(found)}: keep only one of them", line=1
            )
        if found:
            mapping[frame_col] = found[0]
        else:
            missing.append(names[0])
    if "rating" in present:
        mapping["rating"] = "rating"
    else:
        missing.append("rating")
    if missing:
        raise InputFileError(
            path,
            f"missing required column(s) {', '.join(missing)}; found columns: "
            f"{', '.join(header) or '(none)'}",
            line=1,
        )
    kind = "persona" if "persona_id" in present else "self"
    if kind == "persona":
        mapping["persona_id"] = "persona_id"
    for optional in ("failures", "response", "collected_at"):
        if optional in present:
            mapping[optional] = optional
    return kind, mapping


def _bad_row_error(path: Path, row: int, column: str, problem: str) -> InputFileError:
    return InputFileError(path, f"column {column}: {problem}", line=_csv_line_of_row(path, row))


def _integer_column(path: Path, raw: pd.Series, column: str) -> np.ndarray:
    """Parse a column as int64; raise naming the line of the first non-integer cell."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = raw.iloc[row]
        empty = value is None or str(value).strip() in ("", "nan")
        if empty:
            # An empty cell is often a short row: say so rather than "empty cell".
            field_error = _field_count_error(path)
            if field_error is not None:
                raise field_error
        shown = "an empty cell" if empty else repr(str(value))
        raise _bad_row_error(path, row, column, f"expected an integer, got {shown}")
    return numbers.astype(np.int64)


def _text_column(raw: pd.Series) -> pd.Series:

    return raw.fillna("").astype(str)


def _read_text_column(raw: pd.Series) -> pd.Series:
    """A text column as read: our own formula neutralisation undone (see ``_csv``)."""

    text = _text_column(raw)
    quoted = text.str.startswith("'")
    if quoted.any():
        text = text.copy()
        from persona_collapse.core.csvio import unneutralise_text

        text[quoted] = text[quoted].map(unneutralise_text)
    return text


def _known_item_ids(instrument: Instrument | None) -> frozenset[int]:
    inst = instrument if instrument is not None else mfq30(include_catch=True)
    return frozenset(item.id for item in inst.items)


@dataclass
class _Parsed:
    """A ratings file parsed into typed columns, before the value checks."""

    kind: str
    mapping: dict[str, str]
    n: int
    ints: dict[str, np.ndarray]  # frame column -> int64 values, file row order
    text: dict[str, pd.Series]  # response, collected_at
    repeated: np.ndarray | None  # rows repeating an earlier row exactly (checked files)


_INT_COLUMNS = ("persona_id", "item_id", "repetition", "rating", "failures")
_TEXT_COLUMNS = ("response", "collected_at")


def _empty_text(n: int) -> pd.Series:
    """A text column of ``n`` empty strings in one byte per row (text not asked for)."""
    import pandas as pd

    return pd.Series(
        pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=pd.Index([""]))
    )


def _shared_slot_rows(ints: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sorted indices of the rows whose slot (persona, item, repetition) has other rows.

    Only such rows can repeat one another exactly, and they are few (retries).
    """
    slot_cols = [ints[c] for c in ("persona_id", "item_id", "repetition") if c in ints]
    n = len(slot_cols[0])
    key = np.zeros(n, dtype=np.int64)
    size = 1  # keys lie in range(size)
    for values in slot_cols:
        low, high = int(values.min()), int(values.max())
        span = high - low + 1
        if size * span >= 2**62:  # cannot pack: every row counts
            return np.arange(n)
        key *= span
        key += values  # in int64: int32 columns must not wrap round
        key -= low
        size *= span
    if size <= 4 * n + 1024:
        # Slot ids are dense (the usual persona x item x repetition grid): a count per
        # key finds the shared ones without sorting, already in row order.
        return np.flatnonzero(np.bincount(key, minlength=size)[key] > 1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    del key
    same = sorted_key[1:] == sorted_key[:-1]
    del sorted_key
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    return np.sort(order[shared])


def _arrow_reader(file: Path, header: list[str], columns: Mapping[str, Any]) -> Any:
    """A pyarrow CSV batch reader of ``columns`` (name -> arrow type) of ``file``."""
    import pyarrow.csv as pacsv

    return pacsv.open_csv(
        file,
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 18),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),  # quoted replies span lines
        convert_options=pacsv.ConvertOptions(
            column_types=dict(columns),
            include_columns=list(columns),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _parse_fast(file: Path, *, text: bool) -> _Parsed | None:
    """Stream a well-formed file with pyarrow, keeping only what the frame needs.

    Returns None for anything unusual (a bad cell, a short row, an odd header...):
    the pandas reader then parses the file and names the line of the problem.
    Without ``text`` only the integer columns are converted, so memory stays near
    their size. Exact duplicates can only be rows of one slot; the text of those
    few rows is read in a second pass.
    """
    import pyarrow as pa

    first = next(_records(file), None)
    if first is None or first[0] != 1:
        return None
    header = [c.strip() for c in first[1]]
    if len(set(header)) != len(header) or any(not c for c in header):
        return None
    kind, mapping = _resolve_columns(file, header)
    int_names = {mapping[c]: c for c in _INT_COLUMNS if c in mapping}
    text_names = [name for name in header if name not in int_names]
    keep_text = {mapping[c]: c for c in _TEXT_COLUMNS if c in mapping} if text else {}
    wanted = {name: pa.int64() for name in int_names} | {name: pa.string() for name in keep_text}
    ints: dict[str, list[np.ndarray]] = {c: [] for c in int_names.values()}
    texts: dict[str, list[Any]] = {c: [] for c in keep_text.values()}
    small = np.iinfo(np.int32)
    try:
        for batch in _arrow_reader(file, header, wanted):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if name in int_names:
                    values = column.to_numpy()
                    if len(values) and (values.min() < small.min or values.max() > small.max):
                        return None
                    # int32 while reading: half the memory until the final columns
                    ints[int_names[name]].append(values.astype(np.int32))
                else:
                    texts[keep_text[name]].append(column)
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError):
        return None
    n = sum(len(v) for v in next(iter(ints.values())))
    if n == 0:
        return None
    # Without text the frame is only for metrics: int32 columns halve its memory.
    dtype = np.int64 if text else np.int32
    out_ints = {}
    for name in list(ints):
        out_ints[name] = np.concatenate(ints.pop(name)).astype(dtype, copy=False)
    out_text = {
        name: _read_text_column(pa.chunked_array(chunks, type=pa.string()).to_pandas())
        for name, chunks in texts.items()
    }
    repeated = None
    if "collected_at" in mapping:
        rows = _shared_slot_rows(out_ints)
        repeated = np.zeros(n, dtype=bool)
        if len(rows):
            found = _repeated_among(file, header, text_names, out_ints, rows)
            if found is None:
                return None
            repeated[rows] = found
    return _Parsed(kind, mapping, n, out_ints, out_text, repeated)


def _repeated_among(
    file: Path,
    header: list[str],
    text_names: list[str],
    ints: Mapping[str, np.ndarray],
    rows: np.ndarray,
) -> np.ndarray | None:
    """For the given rows (sorted), whether each repeats an earlier one of them exactly."""
    import pandas as pd
    import pyarrow as pa

    values: dict[str, list[Any]] = {name: [] for name in text_names}
    offset = 0
    try:
        for batch in _arrow_reader(file, header, dict.fromkeys(text_names, pa.string())):
            lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
            if hi > lo:
                picked = batch.take(pa.array(rows[lo:hi] - offset))
                for name in text_names:
                    values[name].extend(picked.column(name).to_pylist())
            offset += batch.num_rows
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError):
        return None
    table = pd.DataFrame({name: column[rows] for name, column in ints.items()})
    for name in text_names:
        table[f"text:{name}"] = values[name]
    return table.duplicated(keep="first").to_numpy()


def _parse_pandas(file: Path, *, text: bool) -> _Parsed:
    """Parse any file pandas can read; name the file and line of every problem."""
    import pandas as pd

    try:
        raw = pd.read_csv(
            file,
            dtype={"response": str, "collected_at": str},
            keep_default_na=False,
            na_values=[],
            skipinitialspace=False,
            encoding="utf-8-sig",  # tolerate a byte-order mark (spreadsheet exports)
        )
    except UnicodeDecodeError:
        raise InputFileError(file, "not a CSV text file (not valid UTF-8)") from None
    except pd.errors.EmptyDataError:
        raise InputFileError(file, "file is empty, expected a CSV header and data rows") from None
    except pd.errors.ParserError as exc:
        if "EOF inside string" in str(exc):
            starts = [start for start, _ in _records(file)]
            raise InputFileError(
                file,
                "unclosed quote: a quoted field runs to the end of the file",
                line=starts[-1] if starts else None,
            ) from None
        field_error = _field_count_error(file)
        if field_error is not None:
            raise field_error from None
        match = re.search(r"line (\d+)", str(exc))
        line_no = int(match.group(1)) if match else None
        raise InputFileError(file, f"not a valid CSV file ({exc})", line=line_no) from None

    # pandas renames repeated names ("rating.1"); check the header as written.
    first = next(_records(file), None)
    written = [c.strip() for c in first[1]] if first is not None else []
    if len(set(written)) != len(written):
        header = written
    else:
        header = [str(c).strip() for c in raw.columns]
        raw.columns = pd.Index(header)
    if len(set(header)) != len(header):
        dups = sorted({c for c in header if header.count(c) > 1})
        raise InputFileError(file, f"duplicate column(s) {', '.join(dups)}", line=1)
    kind, mapping = _resolve_columns(file, header)
    if raw.empty:
        raise InputFileError(file, "has a header but no data rows", line=2)
    # pandas pads short rows instead of failing; report them like long ones.
    if raw[list(mapping.values())].isna().to_numpy().any():
        field_error = _field_count_error(file)
        if field_error is not None:
            raise field_error

    ints = {
        col: _integer_column(file, raw[mapping[col]], mapping[col])
        for col in _INT_COLUMNS
        if col in mapping
    }
    texts: dict[str, pd.Series] = {
        col: _read_text_column(raw[mapping[col]])
        for col in _TEXT_COLUMNS
        if col in mapping and text
    }
    repeated = raw.duplicated(keep="first").to_numpy() if "collected_at" in mapping else None
    return _Parsed(kind, mapping, len(raw), ints, texts, repeated)


def _checked_ints(
    file: Path, parsed: _Parsed, inst: Instrument, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(persona, item, repetition, rating, failures) of a parsed file, values checked.

    Raises:
        InputFileError: naming the file, line and column of the first bad value.
    """
    kind, mapping, n, ints = parsed.kind, parsed.mapping, parsed.n, parsed.ints
    # Each check first looks at the column's minimum (and maximum): one pass when all is
    # well; the mask that finds the first bad row is only built when something is wrong.
    known_items = _known_item_ids(inst)
    item_col = mapping["item_id"]
    rep_col = mapping["repetition"]
    items = ints["item_id"]
    repetitions = ints["repetition"]
    ratings = ints["rating"]
    if kind == "persona":
        personas = ints["persona_id"]
        if _below(personas, 0):
            negative = personas < 0
            row = int(np.flatnonzero(negative)[0])
            raise _bad_row_error(
                file, row, "persona_id", f"persona ids must be >= 0, got {personas[row]}"
            )
    else:
        personas = np.full(n, SELF_PERSONA_ID, dtype=np.int64)
    failures = ints["failures"] if "failures" in ints else np.zeros(n, dtype=np.int64)

    if not all_in(items, known_items):
        unknown = ~np.isin(items, np.fromiter(known_items, dtype=np.int64))
        row = int(np.flatnonzero(unknown)[0])
        raise _bad_row_error(
            file,
            row,
            item_col,
            f"unknown item id {items[row]} for instrument {inst.name!r} "
            f"(known ids {min(known_items)}-{max(known_items)})",
        )
    out_of_scale = (
        None
        if _on_scale(ratings, lo, hi)
        else ((ratings < lo) | (ratings > hi)) & (ratings != INVALID_RATING)
    )
    if out_of_scale is not None and out_of_scale.any():
        row = int(np.flatnonzero(out_of_scale)[0])
        raise _bad_row_error(
            file,
            row,
            "rating",
            f"rating {ratings[row]} outside the scale {lo}..{hi} "
            f"(use {INVALID_RATING} for a failed parse)",
        )
    if _below(repetitions, 1):
        bad_rep = repetitions < 1
        row = int(np.flatnonzero(bad_rep)[0])
        raise _bad_row_error(
            file, row, rep_col, f"repetition index must be >= 1, got {repetitions[row]}"
        )
    if _below(failures, 0):
        bad_fail = failures < 0
        row = int(np.flatnonzero(bad_fail)[0])
        raise _bad_row_error(file, row, "failures", f"must be >= 0, got {failures[row]}")
    return personas, items, repetitions, ratings, failures


def _below(values: np.ndarray, low: int) -> bool:
    """Whether some value is below ``low``."""
    return bool(len(values)) and int(values.min()) < low


def _on_scale(ratings: np.ndarray, lo: int, hi: int) -> bool:
    """True when min and max show every rating is in ``lo..hi`` or the failed-parse marker.

    False means "look closer": a marker with a gap above it to ``lo`` is not settled here.
    """
    if not len(ratings):
        return True
    low, high = int(ratings.min()), int(ratings.max())
    if high > hi:
        return False
    # Nothing lies between the marker and the scale when the scale starts right above it.
    return low >= lo or (low >= INVALID_RATING and lo <= INVALID_RATING + 1)


def all_in(items: np.ndarray, known: frozenset[int]) -> bool:
    """Whether every value of the integer array ``items`` is in ``known``.

    A presence table over the values' range answers without sorting (``np.isin``
    sorts or builds a table of the ids' range, and always returns a mask).
    """
    if not len(items):
        return True
    low, high = int(items.min()), int(items.max())
    if not known or low < min(known) or high > max(known):
        return False
    table = np.zeros(high - low + 1, dtype=bool)
    table[[k - low for k in known if low <= k <= high]] = True
    return bool(table[items - low].all())


def _warn_repeated(file: Path, repeated: np.ndarray) -> None:
    first = int(np.flatnonzero(repeated)[0])
    logger.warning(
        "%s: ignored %d row(s) that repeat an earlier row exactly (first at line %s); "
        "each answer is counted once",
        file,
        int(repeated.sum()),
        _csv_line_of_row(file, first),
    )


def read_ratings_csv(
    path: str | os.PathLike[str],
    *,
    scale: tuple[int, int] | None = None,
    instrument: Instrument | None = None,
    text: bool = True,
) -> pd.DataFrame:
    """Read a reference (or exported) ratings CSV file into a ratings frame.

    Rows that repeat an earlier row exactly (``collected_at`` included) are
    counted once, with a warning; files without ``collected_at`` are read as
    they are (a retry of a slot cannot be told from a copy there).

    Args:
        path: CSV file, persona or self layout (see the module docstring).
        scale: Inclusive (min, max) of valid ratings; ``-1`` is always allowed as the
            invalid-rating marker. Default: the instrument's scale (MFQ-30: 0..5).
        instrument: Instrument whose item ids are valid. Default: MFQ-30 with the
            catch items (ids 1-32).
        text: Keep ``response`` and ``collected_at``; False leaves them empty (and may
            give int32 integer columns), reading a large file in a fraction of the
            memory: metrics need no text.

    Returns:
        A frame with columns :data:`FRAME_COLUMNS` (int64 ids, repetition, rating and
        failures; str response and collected_at), one row per file row, file order.
        ``persona_id`` is ``SELF_PERSONA_ID`` for self files. ``attrs["kind"]`` is
        ``"persona"`` or ``"self"``; ``attrs["source"]`` the path as a string.

    Raises:
        InputFileError: Missing, empty, binary or malformed file, missing columns,
            non-integer values, ratings outside the scale, unknown item ids or
            negative persona ids; the message names the file and the line.
    """
    import pandas as pd

    file = Path(path)
    _check_text_file(file)
    inst = instrument if instrument is not None else mfq30(include_catch=True)
    lo, hi = scale if scale is not None else (inst.scale_min, inst.scale_max)
    parsed = _parse_fast(file, text=text) or _parse_pandas(file, text=text)
    kind, n = parsed.kind, parsed.n
    personas, items, repetitions, ratings, failures = _checked_ints(file, parsed, inst, lo, hi)
    columns: dict[str, Any] = {
        "persona_id": personas,
        "item_id": items,
        "repetition": repetitions,
        "rating": ratings,
        "failures": failures,
    }
    for name in _TEXT_COLUMNS:
        if name in parsed.text:
            columns[name] = parsed.text[name]
        else:  # a missing optional column reads as empty text, as ever
            columns[name] = "" if text else _empty_text(n)
    repeated = parsed.repeated
    if repeated is not None and repeated.any():
        keep = ~repeated
        columns = {
            k: v
            if isinstance(v, str)
            else (v[keep].reset_index(drop=True) if isinstance(v, pd.Series) else v[keep])
            for k, v in columns.items()
        }
        _warn_repeated(file, repeated)
    frame = pd.DataFrame(columns, columns=list(FRAME_COLUMNS), copy=False)
    frame.attrs["kind"] = kind
    frame.attrs["source"] = str(file)
    logger.debug("read %d %s rows from %s", len(frame), kind, file)
    return frame


# --- numpy-only reading, for metrics ---------------------------------------------------------

_MAX_DIGITS = 9  # int32 range: longer numbers go to the general reader


@dataclass(frozen=True)
class RatingColumns:
    """The integer columns of a ratings file as numpy arrays, without text or pandas.

    What metrics need, read in a fraction of the time and memory of a frame;
    :meth:`to_frame` builds the frame :func:`read_ratings_csv` would return with
    ``text=False``.

    Attributes:
        persona_id, item_id, repetition, rating, failures: One value per kept row,
            file order (rows repeating an earlier row exactly are dropped).
        kind: ``"persona"`` or ``"self"`` (``persona_id`` is ``SELF_PERSONA_ID``).
        source: The path as a string.
    """

    persona_id: np.ndarray
    item_id: np.ndarray
    repetition: np.ndarray
    rating: np.ndarray
    failures: np.ndarray
    kind: str
    source: str

    def __len__(self) -> int:
        return len(self.rating)

    def take(self, keep: np.ndarray) -> RatingColumns:
        """The rows where the boolean mask ``keep`` is true."""
        return RatingColumns(
            self.persona_id[keep],
            self.item_id[keep],
            self.repetition[keep],
            self.rating[keep],
            self.failures[keep],
            self.kind,
            self.source,
        )

    def to_frame(self) -> pd.DataFrame:
        """A ratings frame (columns :data:`FRAME_COLUMNS`, empty text) of these rows."""
        import pandas as pd

        n = len(self)
        frame = pd.DataFrame(
            {
                "persona_id": self.persona_id,
                "item_id": self.item_id,
                "repetition": self.repetition,
                "rating": self.rating,
                "failures": self.failures,
                "response": _empty_text(n),
                "collected_at": _empty_text(n),
            },
            columns=list(FRAME_COLUMNS),
        )
        frame.attrs["kind"] = self.kind
        frame.attrs["source"] = self.source
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RatingColumns:
        """The integer columns of a ratings frame (``failures`` 0 when absent)."""
        n = len(frame)
        failures = (
            frame["failures"].to_numpy() if "failures" in frame else np.zeros(n, dtype=np.int64)
        )
        return cls(
            frame["persona_id"].to_numpy(),
            frame["item_id"].to_numpy(),
            frame["repetition"].to_numpy() if "repetition" in frame else np.ones(n, np.int64),
            frame["rating"].to_numpy(),
            failures,
            _frame_kind(frame),
            str(frame.attrs.get("source", "")),
        )


_COMMA, _NEWLINE, _CARRIAGE, _QUOTE, _MINUS, _ZERO = (ord(c) for c in ',\n\r"-0')
_FEW_QUOTES = 512  # up to this many quotes, quoted spans are blanked out one by one


def _parse_integers(buf: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """Decimal integers of ``lengths[i]`` characters ending before ``ends[i]`` in ``buf``
    (optional leading '-', at most nine digits) as int32; None if any field is not one."""
    if not len(lengths):
        return None
    shortest, width = int(lengths.min()), int(lengths.max())
    if shortest < 1 or width > _MAX_DIGITS + 1:
        return None
    values = np.zeros(0, dtype=np.int32)
    negative: np.ndarray | None = None
    # One character position at a time from the right (fields are short: one or two
    # passes); subtracting '0' from a uint8 wraps every non-digit byte above 9.
    at = ends - 1
    scale = 1
    for k in range(1, width + 1):
        if k > 1:
            at -= 1
        digit = buf[at]
        digit -= np.uint8(_ZERO)
        if k > shortest:
            digit[lengths < k] = 0  # left of the field: a leading zero
        if k > _MAX_DIGITS or int(digit.max()) > 9:
            # A non-digit (or a tenth character): only a '-' opening a field may be one.
            bad = digit > 9 if k <= _MAX_DIGITS else lengths >= k
            sign = bad & (lengths == k) & (buf[at] == _MINUS)
            if k == 1 or not np.array_equal(bad, sign):
                return None
            digit[sign] = 0
            negative = sign if negative is None else negative | sign
        if k == 1:
            values = digit.astype(np.int32)
        else:
            values += digit * np.int32(scale)
        scale *= 10
    if negative is not None:
        np.negative(values, out=values, where=negative)
    return values


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, decoding only its non-ASCII bytes when they are few.

    A multi-byte sequence holds no ASCII byte, so the data is valid exactly when
    every run of non-ASCII bytes is. Those runs, each followed by the ASCII byte
    after it (which ends any sequence the run leaves open), are usually a tiny part
    of a reply file and decode far faster than all of it.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if not len(buf) or int(buf.max()) < 0x80:
        return True
    high = buf >= 0x80
    if int(np.count_nonzero(high)) > len(buf) // 16:  # mostly non-ASCII text
        picked = data
    else:
        at = np.flatnonzero(high)
        after = at[np.append(at[1:] != at[:-1] + 1, True)] + 1  # the byte after each run
        picked = buf[np.sort(np.concatenate((at, after[after < len(buf)])))].tobytes()
    try:
        picked.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _numpy_header(file: Path, data: bytes) -> list[str] | None:
    """The header fields of a file whose bytes (BOM removed) are ``data``; None if odd.

    A first line without quotes or stray carriage returns is split here, which is
    what the csv module makes of it; any other first line goes through the csv module.
    """
    line = data[: data.find(b"\n")]
    if line.endswith(b"\r"):
        line = line[:-1]
    if line and len(line) <= csv.field_size_limit() and not re.search(b'["\r\x00]', line):
        fields = line.decode("utf-8").split(",")
    else:
        first = next(_records(file), None)
        if first is None or first[0] != 1:
            return None
        fields = first[1]
    header = [c.strip() for c in fields]
    if len(set(header)) != len(header) or any(not c for c in header):
        return None
    return header


def _field_ends(data: bytes, buf: np.ndarray, width: int) -> np.ndarray | None:
    """Where each field ends (its unquoted comma or newline), one row of ``width`` per record.

    None unless every record has ``width`` fields, there are at least two records
    (header and data), and every unquoted carriage return ends a line.
    """
    newline = buf == _NEWLINE
    separator = buf == _COMMA
    quotes = np.flatnonzero(buf == _QUOTE) if b'"' in data else None
    if quotes is not None and len(quotes) <= _FEW_QUOTES:
        # A few quoted spans (replies with a comma): blank them out of the masks,
        # cheaper than sifting the bounds afterwards.
        closes = quotes[1::2].tolist() + ([len(buf)] if len(quotes) % 2 else [])
        for start, stop in zip(quotes[0::2].tolist(), closes, strict=True):
            separator[start:stop] = False
            newline[start:stop] = False
    separator |= newline
    bounds = np.flatnonzero(separator)
    del separator
    if quotes is None or len(quotes) <= _FEW_QUOTES:
        n_lines = int(np.count_nonzero(newline))
    else:
        bounds = _unquoted(bounds, quotes)
        n_lines = len(_unquoted(np.flatnonzero(newline), quotes))
    del newline
    if len(bounds) % width or len(bounds) < 2 * width:
        return None
    ends = bounds.reshape(-1, width)
    # Every record ends a line and no field inside one does: as many lines as records,
    # each record's last bound a newline.
    last = ends[:, -1]
    if n_lines != len(ends) or not bool((buf[last] == _NEWLINE).all()):
        return None
    if b"\r" in data and not _carriage_returns_end_lines(buf, last, quotes):
        return None
    return ends


def _unquoted(positions: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """The sorted ``positions`` outside quotes: those with an even number of quotes before them.

    Each pair of quotes opens and closes a quoted span; placing the (fewer) quotes
    among the positions gives the index range of the positions each span holds.
    """
    edges = np.searchsorted(positions, quotes)
    if len(edges) % 2:  # an unclosed quote runs to the end
        edges = np.append(edges, len(positions))
    opens = edges[0::2]
    sizes = edges[1::2] - opens
    quoted = int(sizes.sum())
    if not quoted:
        return positions
    opens, sizes = opens[sizes > 0], sizes[sizes > 0]
    # Indices of every quoted position: each span's range, laid end to end.
    inside = np.arange(quoted) + np.repeat(opens - (np.cumsum(sizes) - sizes), sizes)
    keep = np.ones(len(positions), dtype=bool)
    keep[inside] = False
    return positions[keep]


def _carriage_returns_end_lines(
    buf: np.ndarray, record_ends: np.ndarray, quotes: np.ndarray | None
) -> bool:
    """Whether every unquoted carriage return in ``buf`` comes right before a newline.

    Counting settles the usual CRLF file in one pass (every carriage return right
    before a record's newline); anything else is checked one by one.
    """
    n_carriage = int(np.count_nonzero(buf == _CARRIAGE))
    if n_carriage == int(np.count_nonzero(buf[record_ends - 1] == _CARRIAGE)):
        return True
    carriage = np.flatnonzero(buf == _CARRIAGE)
    if quotes is not None:
        carriage = _unquoted(carriage, quotes)
    return bool((buf[np.minimum(carriage + 1, len(buf) - 1)] == _NEWLINE).all())


def _parse_numpy(file: Path) -> _Parsed | None:
    """Parse a well-formed file's integer columns with numpy alone (no text kept).

    Record and field bounds come from the unquoted commas and newlines (a quote
    toggles the state; a doubled quote toggles it twice). Returns None for
    anything unusual (carriage returns inside a line, blank lines, a short row, a
    bad cell, an odd header...): the general reader then names the line of the
    problem.
    """
    try:
        data = file.read_bytes()
    except OSError:
        return None
    if not _is_utf8(data):
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.endswith(b"\n"):
        data += b"\n"
    header = _numpy_header(file, data)
    if header is None:
        return None
    kind, mapping = _resolve_columns(file, header)
    buf = np.frombuffer(data, dtype=np.uint8)
    width = len(header)
    ends = _field_ends(data, buf, width)
    if ends is None:
        return None
    crlf = b"\r" in data
    # One column per row: each field's bounds are then read in sequence, not one cache
    # line per record (several reads of every column follow).
    by_column = np.ascontiguousarray(ends.T)
    ints: dict[str, np.ndarray] = {}
    for frame_col in _INT_COLUMNS:
        if frame_col not in mapping:
            continue
        j = header.index(mapping[frame_col])
        field_ends = by_column[j, 1:]
        # A field runs from the bound before it (the previous record's newline for the
        # first field) to its own.
        lengths = field_ends - (by_column[j - 1, 1:] if j else by_column[-1, :-1])
        lengths -= 1
        if j == width - 1 and crlf:  # the last field of a CRLF line ends before the CR
            carriage = buf[field_ends - 1] == _CARRIAGE
            field_ends = field_ends - carriage
            lengths -= carriage
        values = _parse_integers(buf, field_ends, lengths)
        if values is None:
            return None
        ints[frame_col] = values
    n = len(ends) - 1
    repeated = None
    if "collected_at" in mapping:
        rows = _shared_slot_rows(ints)
        repeated = np.zeros(n, dtype=bool)
        if len(rows):
            int_positions = {header.index(mapping[c]) for c in ints}
            line_ends = by_column[-1]
            row_ends = line_ends[1:] - (buf[line_ends[1:] - 1] == _CARRIAGE)
            repeated[rows] = _repeated_records(
                data, line_ends[:-1] + 1, row_ends, ints, rows, int_positions
            )
    return _Parsed(kind, mapping, n, ints, {}, repeated)


def _repeated_records(
    data: bytes,
    row_starts: np.ndarray,
    row_ends: np.ndarray,
    ints: Mapping[str, np.ndarray],
    rows: np.ndarray,
    int_positions: set[int],
) -> np.ndarray:
    """For the given rows (sorted), whether each repeats an earlier one of them exactly.

    Rows compare by their parsed values (integers as numbers, text as parsed).
    """
    text = [data[int(row_starts[r]) : int(row_ends[r])].decode("utf-8") for r in rows.tolist()]
    seen: set[tuple[Any, ...]] = set()
    out = np.zeros(len(rows), dtype=bool)
    numbers = list(zip(*(ints[c][rows].tolist() for c in ints), strict=True))
    for k, (fields, values) in enumerate(zip(csv.reader(text), numbers, strict=True)):
        key = (*values, *(f for j, f in enumerate(fields) if j not in int_positions))
        out[k] = key in seen
        seen.add(key)
    return out


def read_rating_columns(
    path: str | os.PathLike[str],
    *,
    scale: tuple[int, int] | None = None,
    instrument: Instrument | None = None,
) -> RatingColumns:
    """The integer columns of a ratings CSV file, read without pandas when it is well formed.

    Same checks, errors and duplicate handling as :func:`read_ratings_csv`; a file
    the numpy reader does not take (quoted numbers, blank lines, a malformed row...)
    goes through :func:`read_ratings_csv`, which names the line of any problem.

    Raises:
        InputFileError: as :func:`read_ratings_csv`.
    """
    file = Path(path)
    _check_text_file(file)
    parsed = _parse_numpy(file)
    if parsed is None:
        frame = read_ratings_csv(file, scale=scale, instrument=instrument, text=False)
        return RatingColumns.from_frame(frame)
    inst = instrument if instrument is not None else mfq30(include_catch=True)
    lo, hi = scale if scale is not None else (inst.scale_min, inst.scale_max)
    personas, items, repetitions, ratings, failures = _checked_ints(file, parsed, inst, lo, hi)
    # int32 halves what a run holds while the others are read (values have <= 9 digits);
    # the parsed columns are int32 already and are kept as they are.
    personas, items, repetitions, ratings, failures = (
        a.astype(np.int32, copy=False) for a in (personas, items, repetitions, ratings, failures)
    )
    columns = RatingColumns(personas, items, repetitions, ratings, failures, parsed.kind, str(file))
    repeated = parsed.repeated
    if repeated is not None and repeated.any():
        columns = columns.take(~repeated)
        _warn_repeated(file, repeated)
    logger.debug("read %d %s rows from %s", len(columns), parsed.kind, file)
    return columns


def _frame_kind(frame: pd.DataFrame) -> str:

    kind = frame.attrs.get("kind")
    if kind in ("persona", "self"):
        return str(kind)
    personas = frame["persona_id"].to_numpy()
    return "self" if len(personas) and bool(np.all(personas == SELF_PERSONA_ID)) else "persona"


def write_ratings_csv(
    frame: pd.DataFrame, path: str | os.PathLike[str], *, raw: bool = False
) -> Path:
    """Write a ratings frame as a reference-compatible CSV file, atomically.

    Persona frames get the columns :data:`REFERENCE_COLUMNS`; self frames
    (``attrs["kind"] == "self"``, or every ``persona_id`` equal to
    ``SELF_PERSONA_ID``) the same without ``persona_id``. Missing optional
    columns are written as ``failures=0`` and empty text. The file is written to a
    temporary file in the target folder and renamed over ``path``.

    Args:
        frame: Ratings frame (at least ``persona_id, item_id, repetition, rating``).
        path: Destination file; its folder must exist.
        raw: Write replies as they are; by default text that a spreadsheet would run
            as a formula gets a leading ``'`` (see :mod:`persona_collapse.core.csvio`).

    Returns:
        The destination path.

    Raises:
        ValueError: ``frame`` lacks a required column.
        InputFileError: The destination cannot be written.
    """
    import pandas as pd

    missing = [c for c in ("persona_id", "item_id", "repetition", "rating") if c not in frame]
    if missing:
        raise ValueError(f"frame: missing required column(s) {', '.join(missing)}")
    dest = Path(path)
    n = len(frame)
    out = pd.DataFrame(
        {
            "persona_id": frame["persona_id"].to_numpy(dtype=np.int64),
            "question_id": frame["item_id"].to_numpy(dtype=np.int64),
            "run_index": frame["repetition"].to_numpy(dtype=np.int64),
            "rating": frame["rating"].to_numpy(dtype=np.int64),
            "failures": (
                frame["failures"].to_numpy(dtype=np.int64)
                if "failures" in frame
                else np.zeros(n, dtype=np.int64)
            ),
            "response": _text_column(frame["response"]) if "response" in frame else "",
            "collected_at": _text_column(frame["collected_at"]) if "collected_at" in frame else "",
        },
        columns=list(REFERENCE_COLUMNS),
    )
    if _frame_kind(frame) == "self":
        out = out.drop(columns="persona_id")
    from persona_collapse.core.csvio import write_csv_atomic

    return write_csv_atomic(out, dest, raw=raw)


def iter_csv_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into CSV files.

    Folders contribute their ``*.csv`` files, recursively, sorted; files are kept
    as given, in order. Duplicates are dropped (first occurrence wins).

    Raises:
        InputFileError: A path does not exist, or a folder holds no CSV file.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.csv") if f.is_file())
            if not found:
                raise InputFileError(p, "folder contains no .csv files")
        elif p.exists():
            found = [p]
        else:
            raise InputFileError(p, "file or folder not found")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out
