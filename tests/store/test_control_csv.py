"""Reading capability and lookup CSVs in the follow-up studies' layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persona_collapse.core.errors import InputFileError
from persona_collapse.store.control_csv import (
    detect_control_kind,
    read_capability_csv,
    read_lookup_csv,
    run_label,
)

FOLLOWUPS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-followups"
HEADER = "item_id,run_index,answer,gold,correct,format_valid,failures,response,collected_at"


def _write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_a_small_capability_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "m_temp01_gsm8k.csv",
        HEADER,
        '0,1,12,12,1,1,0,"long\nreply #### 12",t',
        "0,2,,12,0,0,0,no idea,t",
        "1,1,,5,0,,1,,t",
    )
    assert detect_control_kind(path) == "capability"
    run = read_capability_csv(path)
    assert run.task == "gsm8k" and run.name == "m_temp01_gsm8k"
    assert run.item_id.tolist() == [0, 0, 1]
    assert run.answer.tolist() == ["12", "", ""]
    assert run.valid.tolist() == [True, False, False]
    assert run.replied.tolist() == [True, True, False]
    assert run.correct.tolist() == [1.0, 0.0, 0.0]
    assert run_label(run.name) == ("m", 0.1)


def test_bad_cells_name_file_and_line(tmp_path: Path) -> None:
    # The multi-line reply on line 2-3 pushes the bad row to line 4.
    path = _write(
        tmp_path, "x_mmlu.csv", HEADER, '0,1,A,A,1,1,0,"two\nlines",t', "zero,2,A,A,1,1,0,A,t"
    )
    with pytest.raises(InputFileError, match=r"x_mmlu.csv, line 4: column 'item_id'"):
        read_capability_csv(path)
    path = _write(tmp_path, "y_mmlu.csv", HEADER, "0,1,A,A,maybe,1,0,A,t")
    with pytest.raises(InputFileError, match=r"line 2: column 'correct': expected 0 or 1"):
        read_capability_csv(path)
    path = _write(tmp_path, "z_mmlu.csv", "item_id,answer", "0,A")
    with pytest.raises(InputFileError, match="missing column"):
        read_capability_csv(path)
    path = _write(tmp_path, "untitled.csv", HEADER, "0,1,A,A,1,1,0,A,t")
    with pytest.raises(InputFileError, match="--task"):
        read_capability_csv(path)
    assert read_capability_csv(path, task="mmlu").task == "mmlu"
    with pytest.raises(InputFileError, match="no data rows"):
        read_capability_csv(_write(tmp_path, "e_mmlu.csv", HEADER))


def test_lookup_files_and_their_errors(tmp_path: Path) -> None:
    header = "table_id,run_index,target_persona,correct_id,rating,correct,failures,response"
    path = _write(tmp_path, "m_lookup.csv", header, "0,1,B,0,0,1,0,0", "0,2,B,0,-1,0,0,?")
    assert detect_control_kind(path) == "lookup"
    run = read_lookup_csv(path)
    assert run.rating.tolist() == [0, -1] and run.valid.tolist() == [True, False]
    bad = _write(tmp_path, "b_lookup.csv", header, "0,1,B,0,9,1,0,9")
    with pytest.raises(InputFileError, match=r"line 2: column 'rating': expected -1"):
        read_lookup_csv(bad)
    assert detect_control_kind(_write(tmp_path, "mfq.csv", "persona_id,question_id")) is None


def test_reads_the_reference_files() -> None:
    files = sorted((FOLLOWUPS / "capability").glob("*/*_*.csv"))
    files = [f for f in files if f.parent.name in ("mmlu", "gsm8k")]
    if not files:
        pytest.skip(f"follow-up reference data not found at {FOLLOWUPS} (../shared is absent)")
    for path in files:
        run = read_capability_csv(path)
        assert len(run.item_id) == {"mmlu": 2280, "gsm8k": 1000}[run.task]
        assert (run.subject != "").all() == (run.task == "mmlu")
        assert np.isin(run.correct, [0.0, 1.0]).all()
    for path in sorted((FOLLOWUPS / "lookup").glob("*_lookup.csv")):
        assert len(read_lookup_csv(path).rating) == 300


def test_unreadable_files_are_not_control_files(tmp_path: Path) -> None:
    noise = tmp_path / "noise.csv"
    noise.write_bytes(bytes(range(256)) * 4)
    assert detect_control_kind(noise) is None
    assert detect_control_kind(tmp_path / "missing.csv") is None
