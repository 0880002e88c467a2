"""Tests of the reference-CSV reader and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persona_collapse.core.errors import InputFileError
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import instrument_from_dict
from persona_collapse.store.reference_csv import (
    FRAME_COLUMNS,
    iter_csv_files,
    read_ratings_csv,
    write_ratings_csv,
)

HEADER = "persona_id,question_id,run_index,rating,failures,response,collected_at\n"
SELF_HEADER = "question_id,run_index,rating,failures,response,collected_at\n"

# Record 1 spans lines 2-5 (quoted commas and line breaks, a blank line inside).
MULTILINE = (
    HEADER
    + '0,1,1,4,0,"4\n\nWell, it depends,\nsaid the persona.",2025-11-04T17:58:19\n'
    + "0,1,1,3,1,3,2025-11-04T17:58:20\n"  # same slot again (a retry)
    + "0,1,2,-1,2,no idea,2025-11-04T17:58:21\n"  # failed parse
    + "1,2,1,5,0,5,2025-11-04T17:58:22\n"
)


def write(tmp_path: Path, text: str | bytes, name: str = "run.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- parsing ------------------------------------------------------------------------------


def test_reads_quoted_multiline_responses_and_keeps_every_row(tmp_path: Path) -> None:
    frame = read_ratings_csv(write(tmp_path, MULTILINE))
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame.attrs["kind"] == "persona"
    assert len(frame) == 4  # duplicates and -1 rows are kept
    assert frame["response"].iloc[0] == "4\n\nWell, it depends,\nsaid the persona."
    assert frame["rating"].tolist() == [4, 3, INVALID_RATING, 5]
    assert frame["repetition"].tolist() == [1, 1, 2, 1]
    assert frame["failures"].tolist() == [0, 1, 2, 0]
    assert frame["response"].iloc[1] == "3"  # numeric-looking text stays text
    for col in ("persona_id", "item_id", "repetition", "rating", "failures"):
        assert frame[col].dtype == np.int64


def test_self_file_gets_self_persona_id(tmp_path: Path) -> None:
    path = write(tmp_path, SELF_HEADER + "1,1,5,0,5,t1\n1,2,4,0,4,t2\n2,1,-1,3,??,t3\n")
    frame = read_ratings_csv(path)
    assert frame.attrs["kind"] == "self"
    assert (frame["persona_id"] == SELF_PERSONA_ID).all()
    assert frame["item_id"].tolist() == [1, 1, 2]


def test_accepts_export_column_names_and_missing_optional_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "persona_id,item_id,repetition,rating\n3,7,1,2\n3,7,2,2\n")
    frame = read_ratings_csv(path)
    assert frame["item_id"].tolist() == [7, 7]
    assert frame["failures"].tolist() == [0, 0]
    assert frame["response"].tolist() == ["", ""]


def test_literal_na_text_is_not_turned_into_missing(tmp_path: Path) -> None:
    frame = read_ratings_csv(write(tmp_path, HEADER + "0,1,1,-1,0,NA,\n"))
    assert frame["response"].iloc[0] == "NA"
    assert frame["collected_at"].iloc[0] == ""


def test_scale_and_instrument_keywords(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "0,1,1,7,0,7,t\n")
    assert read_ratings_csv(path, scale=(0, 9))["rating"].tolist() == [7]
    tiny = instrument_from_dict(
        {
            "name": "tiny",
            "scale": {"min": 1, "max": 3},
            "blocks": {"agreement": {"instruction": "Rate.", "anchors": {1: "a", 2: "b", 3: "c"}}},
            "items": [{"id": 1, "text": "x", "foundation": "F", "kind": "agreement"}],
        }
    )
    ok = write(tmp_path, HEADER + "0,1,1,3,0,3,t\n", "ok.csv")
    assert read_ratings_csv(ok, instrument=tiny)["rating"].tolist() == [3]
    with pytest.raises(InputFileError, match=r"outside the scale 1\.\.3"):
        read_ratings_csv(write(tmp_path, HEADER + "0,1,1,0,0,0,t\n", "low.csv"), instrument=tiny)
    with pytest.raises(InputFileError, match="unknown item id 2"):
        read_ratings_csv(write(tmp_path, HEADER + "0,2,1,3,0,3,t\n", "it.csv"), instrument=tiny)


def test_catch_items_are_known_by_default(tmp_path: Path) -> None:
    frame = read_ratings_csv(write(tmp_path, HEADER + "0,31,1,0,0,0,t\n0,32,1,5,0,5,t\n"))
    assert frame["item_id"].tolist() == [31, 32]


# --- bad input ----------------------------------------------------------------------------

BAD_ROW_AFTER_MULTILINE = HEADER + '0,1,1,4,0,"a,\nb\n\nc",t\n0,1,2,x,0,r,t\n'

# (name, content, expected line or None, message fragment)
BAD_INPUTS: list[tuple[str, str | bytes, int | None, str]] = [
    ("empty", "", None, "empty"),
    ("blank", "\n \n", None, "empty"),
    ("header only", HEADER, 2, "no data rows"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01", 1, "binary"),
    ("latin-1", HEADER.encode() + "0,1,1,3,0,d\xe9j\xe0,t\n".encode("latin-1"), None, "UTF-8"),
    ("missing column", "persona_id,question_id,rating\n0,1,3\n", 1, "run_index"),
    ("missing columns", "persona_id,foo\n0,1\n", 1, "question_id, run_index, rating"),
    ("not a csv", "hello world\nthis is prose\n", 1, "missing required column"),
    ("non-numeric rating", HEADER + "0,1,1,3,0,r,t\n0,1,2,three,0,r,t\n", 3, "'three'"),
    ("fractional rating", HEADER + "0,1,1,2.5,0,r,t\n", 2, "'2.5'"),
    ("rating 7", HEADER + "0,1,1,3,0,r,t\n0,1,2,3,0,r,t\n0,1,3,7,0,r,t\n", 4, "rating 7 outside"),
    ("rating -2", HEADER + "0,1,1,-2,0,r,t\n", 2, "rating -2 outside"),
    ("unknown item 99", HEADER + "0,1,1,3,0,r,t\n0,99,1,3,0,r,t\n", 3, "unknown item id 99"),
    ("negative persona", HEADER + "0,1,1,3,0,r,t\n-4,1,1,3,0,r,t\n", 3, "persona ids must be >= 0"),
    ("non-integer persona", HEADER + "p0,1,1,3,0,r,t\n", 2, "column persona_id"),
    ("empty rating cell", HEADER + "0,1,1,,0,r,t\n", 2, "empty cell"),
    ("repetition 0", HEADER + "0,1,0,3,0,r,t\n", 2, "repetition index must be >= 1"),
    ("negative failures", HEADER + "0,1,1,3,-1,r,t\n", 2, "failures"),
    ("too many fields", HEADER + "0,1,1,3,0,r,t\n0,1,2,3,0,r,t,extra\n", 3, "found 8"),
    ("too few fields", HEADER + "0,1,1,3,0,r,t\n0,1,2\n", 3, "found 3"),
    ("unclosed quote", HEADER + '0,1,1,3,0,r,t\n0,1,2,3,0,"oops,t\n0,1,3,3,0,r,t\n', 3, "quote"),
    ("ambiguous", "persona_id,question_id,item_id,run_index,rating\n0,1,1,1,3\n", 1, "ambiguous"),
    ("duplicate column", "persona_id,question_id,run_index,rating,rating\n0,1,1,3,3\n", 1, "dup"),
    ("line after multiline", BAD_ROW_AFTER_MULTILINE, 6, "'x'"),
]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [pytest.param(c, ln, f, id=name) for name, c, ln, f in BAD_INPUTS],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, content: str | bytes, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputFileError) as info:
        read_ratings_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    assert info.value.line == line
    if line is not None:
        assert f"line {line}" in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found") as info:
        read_ratings_csv(tmp_path / "nope.csv")
    assert "nope.csv" in str(info.value)
    with pytest.raises(InputFileError, match="is a directory"):
        read_ratings_csv(tmp_path)


def test_line_number_counts_physical_lines_not_rows(tmp_path: Path) -> None:
    # Five multi-line records (3 lines each) then a bad one: row 5, line 2 + 5*3 = 17.
    good = '0,1,{i},3,0,"line one\nline, two\nline three",t\n'
    text = HEADER + "".join(good.format(i=i) for i in range(1, 6)) + "0,1,6,9,0,r,t\n"
    with pytest.raises(InputFileError) as info:
        read_ratings_csv(write(tmp_path, text))
    assert info.value.line == 17
    # Blank lines between records are skipped by the reader and still counted.
    text = HEADER + "0,1,1,3,0,r,t\n\n\n0,1,2,9,0,r,t\n"
    with pytest.raises(InputFileError) as info:
        read_ratings_csv(write(tmp_path, text, "blank.csv"))
    assert info.value.line == 5


# --- writing ------------------------------------------------------------------------------


def test_round_trip_persona_file(tmp_path: Path) -> None:
    original = read_ratings_csv(write(tmp_path, MULTILINE))
    out = write_ratings_csv(original, tmp_path / "out.csv")
    assert out.read_text(encoding="utf-8").splitlines()[0] == HEADER.strip()
    again = read_ratings_csv(out)
    pd.testing.assert_frame_equal(original, again)
    assert again.attrs["kind"] == "persona"


def test_round_trip_self_file_drops_persona_column(tmp_path: Path) -> None:
    original = read_ratings_csv(write(tmp_path, SELF_HEADER + '1,1,5,0,"a,\nb",t\n'))
    out = write_ratings_csv(original, tmp_path / "self.csv")
    assert out.read_text(encoding="utf-8").startswith(SELF_HEADER)
    again = read_ratings_csv(out)
    assert again.attrs["kind"] == "self"
    pd.testing.assert_frame_equal(original, again)


def test_write_minimal_frame_and_overwrite_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "min.csv"
    dest.write_text("old content")
    frame = pd.DataFrame(
        {"persona_id": [0, 1], "item_id": [1, 2], "repetition": [1, 1], "rating": [3, -1]}
    )
    write_ratings_csv(frame, dest)
    assert read_ratings_csv(dest)["rating"].tolist() == [3, -1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["min.csv"]  # no temp file left


def test_write_rejects_frame_without_required_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rating"):
        write_ratings_csv(pd.DataFrame({"persona_id": [0]}), tmp_path / "x.csv")


def test_write_creates_missing_folders(tmp_path: Path) -> None:
    frame = pd.DataFrame({"persona_id": [0], "item_id": [1], "repetition": [1], "rating": [3]})
    dest = write_ratings_csv(frame, tmp_path / "missing" / "x.csv")
    assert read_ratings_csv(dest)["rating"].tolist() == [3]


def test_unwritable_destination_raises_input_file_error(tmp_path: Path) -> None:
    frame = pd.DataFrame({"persona_id": [0], "item_id": [1], "repetition": [1], "rating": [3]})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputFileError, match="cannot write"):
        write_ratings_csv(frame, blocker / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing half-written


# --- file expansion -----------------------------------------------------------------------


def test_iter_csv_files_expands_folders_recursively_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("b/2.csv", "a/deep/1.csv", "a/0.csv", "a/notes.txt"):
        (tmp_path / rel).write_text(HEADER)
    single = tmp_path / "single.csv"
    single.write_text(HEADER)
    found = iter_csv_files([single, tmp_path / "a", tmp_path / "b", tmp_path / "a" / "0.csv"])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["single.csv", "a/0.csv", "a/deep/1.csv", "b/2.csv"]


def test_iter_csv_files_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        iter_csv_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"no \.csv files"):
        iter_csv_files([tmp_path / "empty"])


# --- reference data -------------------------------------------------------------------------


def test_reads_reference_files(reference_dir: Path) -> None:
    # This file has long quoted multi-line responses: more lines than rows.
    path = reference_dir / "base" / "deepseek-v3.1_temp01.csv"
    frame = read_ratings_csv(path)
    lines = path.read_text(encoding="utf-8").count("\n")
    assert len(frame) == 30000 < lines - 1
    assert frame["persona_id"].nunique() == 100
    assert frame["item_id"].nunique() == 30
    self_frame = read_ratings_csv(reference_dir / "base" / "qwen3-235b_self.csv")
    assert self_frame.attrs["kind"] == "self"
    assert len(self_frame) == 300


def test_windows_line_endings_and_byte_order_mark(tmp_path: Path) -> None:
    text = "\ufeff" + MULTILINE.replace("\n", "\r\n")
    frame = read_ratings_csv(write(tmp_path, text))
    assert frame["rating"].tolist() == [4, 3, INVALID_RATING, 5]
    bad = "\ufeff" + (HEADER + '0,1,1,4,0,"a\nb",t\n0,1,1,8,0,r,t\n').replace("\n", "\r\n")
    with pytest.raises(InputFileError) as info:
        read_ratings_csv(write(tmp_path, bad, "bad.csv"))
    assert info.value.line == 4
