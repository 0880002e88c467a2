"""Reading a reference-layout folder: families, variants, self files, temperatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_collapse.core.errors import InputFileError
from persona_collapse.study.reproduce import (
    parse_temperature,
    reference_study_data,
    scan_reference_folder,
)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("persona_id,question_id,run_index,rating\n")


@pytest.mark.parametrize(("digits", "value"), [("01", 0.1), ("10", 1.0), ("005", 0.05), ("1", 1.0)])
def test_parse_temperature(digits: str, value: float) -> None:
    assert parse_temperature(digits) == pytest.approx(value)


def test_files_are_matched_to_the_longest_family_name(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "base/m_temp01.csv", "base/m_self.csv",
        "base/m-pro_temp01.csv", "base/m-pro_temp01_self.csv",
        "secure-code/m-secure_temp01.csv", "secure-code/m-secure_temp01_self.csv",
        "insecure-code/m-pro-misaligned_temp01.csv", "insecure-code/m-pro-misaligned_self.csv",
        "insecure-code/other-insecure_temp01.csv",
    )  # fmt: skip
    files, notes = scan_reference_folder(tmp_path)
    got = {(f.family, f.label, f.kind): f.path.name for f in files}
    assert got == {
        ("m", "base", "persona"): "m_temp01.csv",
        ("m", "base", "self"): "m_self.csv",
        ("m-pro", "base", "persona"): "m-pro_temp01.csv",
        ("m-pro", "base", "self"): "m-pro_temp01_self.csv",
        ("m", "secure", "persona"): "m-secure_temp01.csv",
        ("m", "secure", "self"): "m-secure_temp01_self.csv",
        ("m-pro", "insecure", "persona"): "m-pro-misaligned_temp01.csv",
        ("m-pro", "insecure", "self"): "m-pro-misaligned_self.csv",
    }
    assert any("other-insecure_temp01.csv" in n for n in notes)
    data, _ = reference_study_data(tmp_path, output_dir=tmp_path / "out")
    assert data["protocol"]["temperature"] == pytest.approx(0.1)
    roles = {f: {k: v["role"] for k, v in fam.items()} for f, fam in data["families"].items()}
    assert roles == {
        "m": {"base": "base", "secure": "control"},
        "m-pro": {"base": "base", "insecure": "treatment"},
    }


def test_two_files_for_one_slot_are_an_error(tmp_path: Path) -> None:
    doubled = ("insecure-code/m-a_temp01.csv", "insecure-code/m-b_temp01.csv")
    _touch(tmp_path, "base/m_temp01.csv", *doubled)
    with pytest.raises(InputFileError, match="second persona file for m/insecure"):
        scan_reference_folder(tmp_path)
