"""Tests of the numpy-only reader used by metrics (``read_rating_columns``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reference_csv import BAD_INPUTS, HEADER, MULTILINE, SELF_HEADER, write

from persona_collapse.core.errors import InputFileError
from persona_collapse.core.frames import SELF_PERSONA_ID
from persona_collapse.store.reference_csv import (
    FRAME_COLUMNS,
    RatingColumns,
    _is_utf8,
    read_rating_columns,
    read_ratings_csv,
)

INT_COLUMNS = ("persona_id", "item_id", "repetition", "rating", "failures")

GOOD_INPUTS: dict[str, str | bytes] = {
    "multiline": MULTILINE,
    "crlf and bom": "\ufeff" + MULTILINE.replace("\n", "\r\n"),
    "crlf inside quotes": HEADER + '0,1,1,4,0,"a\r\nb",t\r\n0,1,2,3,0,"x"",y",t\r\n',
    "no final newline": HEADER + "0,1,1,4,0,r,t\n1,2,3,5,0,r,t",
    "self": SELF_HEADER + "1,1,5,0,5,t1\n1,2,4,0,4,t2\n2,1,-1,3,??,t3\n",
    "export names": "persona_id,item_id,repetition,rating\n3,7,1,2\n3,7,2,2\n",
    # An integer in the last column of a CRLF line ends before the carriage return.
    "export names crlf": "persona_id,item_id,repetition,rating\r\n3,7,1,2\r\n3,7,2,-1\r\n",
    "columns reordered": "rating,run_index,question_id,persona_id,collected_at\n4,1,2,10,t\n",
    "exact repeats": HEADER
    + "0,1,1,4,0,four,t1\n0,1,1,4,0,four,t1\n0,1,1,4,0,four,t2\n"
    + '0,1,1,4,0,"four",t1\n0,2,1,3,0,r,t\n',
    "carriage return inside quotes": HEADER + '0,1,1,4,0,"a\rb",t\n0,1,2,3,0,"c\r",t\n',
    "non-ascii replies": HEADER + '0,1,1,4,0,"é, ü — 中\n",t\n0,1,2,3,0,ß,t\n',
    "signs and leading zeros": HEADER + "007,01,1,-1,0,r,t\n0,1,2,-0,00,r,t\n",
    # Over 512 quotes: the quoted bounds are sifted out rather than blanked span by span.
    "many quoted replies": HEADER
    + "".join(f'{p},{q},1,{q % 6},0,"{q}, ""{p}""\n,",t\n' for p in range(9) for q in range(1, 31)),
    "quoted number": HEADER + '0,1,1,"4",0,r,t\n',  # left to the general reader
    "ten-digit id": HEADER + "4000000000,1,1,3,0,r,t\n0,1,1,4,0,r,t\n",  # likewise (int32)
    "blank line": HEADER + "0,1,1,4,0,r,t\n\n0,1,2,3,0,r,t\n",  # likewise
}


@pytest.mark.parametrize("content", list(GOOD_INPUTS.values()), ids=list(GOOD_INPUTS))
def test_same_rows_as_the_frame_reader(
    tmp_path: Path, content: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, content)
    with caplog.at_level(logging.WARNING):
        frame = read_ratings_csv(path, text=False)
    frame_warnings = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        columns = read_rating_columns(path)
    assert [r.getMessage() for r in caplog.records] == frame_warnings
    assert columns.kind == frame.attrs["kind"]
    assert columns.source == str(path)
    assert len(columns) == len(frame)
    for name in INT_COLUMNS:
        assert getattr(columns, name).tolist() == frame[name].tolist(), name


def test_exact_repeats_are_dropped_once_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        columns = read_rating_columns(write(tmp_path, GOOD_INPUTS["exact repeats"]))
    # Row 2 repeats row 1; row 4 differs only in quoting, so it repeats row 1 as well.
    assert columns.repetition.tolist() == [1, 1, 1]
    assert "ignored 2 row(s) that repeat an earlier row exactly (first at line 3)" in caplog.text


def test_self_files_and_frames(tmp_path: Path) -> None:
    columns = read_rating_columns(write(tmp_path, GOOD_INPUTS["self"]))
    assert columns.kind == "self"
    assert (columns.persona_id == SELF_PERSONA_ID).all()
    frame = columns.to_frame()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame.attrs == {"kind": "self", "source": columns.source}
    assert frame["response"].tolist() == ["", "", ""]
    again = RatingColumns.from_frame(frame)
    assert again.kind == "self"
    assert np.array_equal(again.rating, columns.rating)
    kept = columns.take(columns.rating > 0)
    assert kept.repetition.tolist() == [1, 2]


def test_large_and_negative_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "123456789,1,1,-1,0,r,t\n0,1,1,3,0,r,t\n")
    columns = read_rating_columns(path)
    assert columns.persona_id.tolist() == [123456789, 0]
    assert columns.rating.tolist() == [-1, 3]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [pytest.param(c, ln, f, id=name) for name, c, ln, f in BAD_INPUTS],
)
def test_bad_input_gives_the_frame_readers_error(
    tmp_path: Path, content: str | bytes, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputFileError) as info:
        read_rating_columns(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert info.value.line == line


def _read_in_a_fresh_process(paths: list[Path], value: str) -> tuple[list[Any], bool, bool]:
    """``value`` (an expression of ``columns``) for each file read by read_rating_columns in
    a new interpreter, and whether pandas and pyarrow were loaded there."""
    code = (
        "import json, sys\n"
        "from persona_collapse.store.reference_csv import read_rating_columns\n"
        f"rows = [{value} for columns in map(read_rating_columns, sys.argv[1:])]\n"
        "print(json.dumps([rows, 'pandas' in sys.modules, 'pyarrow' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], check=True, capture_output=True, text=True
    )
    rows, pandas_loaded, pyarrow_loaded = json.loads(out.stdout)
    return rows, pandas_loaded, pyarrow_loaded


def test_well_formed_files_are_read_without_pandas(tmp_path: Path) -> None:
    paths = [
        write(tmp_path, GOOD_INPUTS[name], f"{i}.csv")
        for i, name in enumerate(("multiline", "crlf and bom", "self", "exact repeats"))
    ]
    rows, pandas_loaded, pyarrow_loaded = _read_in_a_fresh_process(paths, "len(columns)")
    assert rows == [4, 4, 3, 3]
    assert not pandas_loaded
    assert not pyarrow_loaded


def test_replies_with_odd_characters_are_read_without_pandas(tmp_path: Path) -> None:
    names = (
        "carriage return inside quotes",
        "non-ascii replies",
        "signs and leading zeros",
        "many quoted replies",
        "export names crlf",
    )
    paths = [write(tmp_path, GOOD_INPUTS[name], f"{i}.csv") for i, name in enumerate(names)]
    rows, pandas_loaded, _ = _read_in_a_fresh_process(paths, "columns.rating.tolist()")
    many = [q % 6 for _ in range(9) for q in range(1, 31)]
    assert rows == [[4, 3], [4, 3], [-1, 0], many, [2, -1]]
    assert not pandas_loaded


@pytest.mark.parametrize(
    "content",
    [
        HEADER.encode() + b"0,1,1,3,0,\xc3\xa9\xe9,t\n",  # a stray byte after a valid one
        HEADER.encode() + b"0,1,1,3,0,\xed\xa0\x80,t\n",  # an encoded surrogate
    ],
    ids=["stray byte", "surrogate"],
)
def test_invalid_utf8_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(InputFileError, match="not valid UTF-8"):
        read_rating_columns(write(tmp_path, content))


def test_utf8_check_of_the_non_ascii_bytes_agrees_with_decoding() -> None:
    samples = [b"", b"plain", "é, ü — 中 🙂".encode()]
    samples += [b"a\xe2\x82", b"\xe2\x82", b"a\xe2\x82b\xac", b"\xc3\xa9\xe9", b"\x80abc"]
    samples += [b"\xed\xa0\x80", b"\xc0\xaf", b"x\xf4\x90\x80\x80", "中文".encode() * 50]
    samples += [("中文" * 50).encode()[:-1], b"abc" * 40 + "é".encode() + b"\xff"]
    for data in samples:
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert _is_utf8(data) == valid, data


def test_failed_parse_marker_below_a_scale_with_a_gap(tmp_path: Path) -> None:
    # On a 2..4 scale, -1 is still the failed-parse marker; 0 and 1 are out of scale.
    good = write(tmp_path, HEADER + "0,1,1,-1,0,r,t\n0,1,2,3,0,r,t\n", "good.csv")
    assert read_rating_columns(good, scale=(2, 4)).rating.tolist() == [-1, 3]
    bad = write(tmp_path, HEADER + "0,1,1,-1,0,r,t\n0,1,2,3,0,r,t\n0,1,3,1,0,r,t\n", "bad.csv")
    with pytest.raises(InputFileError, match=r"rating 1 outside the scale 2\.\.4") as info:
        read_rating_columns(bad, scale=(2, 4))
    assert info.value.line == 4
