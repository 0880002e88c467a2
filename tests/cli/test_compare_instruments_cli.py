"""``pcollapse compare-instruments``: the reference comparison, output formats, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from tests._cli import assert_user_error, run_cli

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference"
FOLLOWUPS = SHARED / "costa2026-followups"
PAPER = SHARED / "costa2026-persona-collapse"
VARIANTS = {"base": ("base", "", ""), "secure": ("secure-code", "-secure", "-secure")}
VARIANTS["insecure"] = ("insecure-code", "-misaligned", "-insecure")
POINT_COLUMNS = ("accuracy", "R", "non_unanimity_rate", "mean_gini", "mean_gini_norm")


def _reference_manifest(tmp_path: Path) -> Path:
    """Manifest of the shared GPT-4o and GPT-4.1 files (absolute paths)."""
    if not (FOLLOWUPS / "capability" / "expected" / "instrument_comparison_long.csv").is_file():
        pytest.skip(f"follow-up reference data not found at {FOLLOWUPS} (../shared is absent)")
    lines = []
    for family in ("gpt-4o", "gpt-4.1"):
        lines.append(f"{family}:")
        for variant, (folder, mfq, ctl) in VARIANTS.items():
            mfq_dir = PAPER / folder
            self_file = mfq_dir / f"{family}{mfq}_temp01_self.csv"
            if not self_file.is_file():
                self_file = mfq_dir / f"{family}{mfq}_self.csv"
            cap = FOLLOWUPS / "capability"
            files = {
                "MMLU": cap / "mmlu" / f"{family}{ctl}_temp01_mmlu.csv",
                "GSM8K": cap / "gsm8k" / f"{family}{ctl}_temp01_gsm8k.csv",
                "MFQ": mfq_dir / f"{family}{mfq}_temp01.csv",
                "MFQ-self": self_file,
                "BFI-44": FOLLOWUPS / "bfi44" / f"{family}{ctl}_temp01.csv",
            }
            lines.append(f"  {variant}:")
            lines += [f"    {k}: {v}" for k, v in files.items() if v.is_file()]
    path = tmp_path / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reproduces_the_reference_instrument_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _reference_manifest(tmp_path)
    code, out, err = run_cli(
        capsys, "compare-instruments", manifest, "--format", "csv", "--boot", 50
    )
    assert code == 0, err
    got = {
        (r["family"], r["variant"], r["instrument"], r["conditioning"]): r
        for r in csv.DictReader(io.StringIO(out))
    }
    path = FOLLOWUPS / "capability" / "expected" / "instrument_comparison_long.csv"
    with path.open(newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert len(expected) == 27
    assert set(got) == {
        (r["family"], r["variant"], r["instrument"], r["conditioning"]) for r in expected
    }
    for want in expected:
        row = got[(want["family"], want["variant"], want["instrument"], want["conditioning"])]
        for col in POINT_COLUMNS:
            if want[col] == "":
                assert row[col] == "", (want, col)
            else:
                assert float(row[col]) == pytest.approx(float(want[col]), rel=1e-9, abs=1e-12), (
                    want,
                    col,
                )
        assert int(row["n_cells"]) == int(want["n_cells"])
        assert float(row["mean_reps"]) == pytest.approx(float(want["mean_reps"]), rel=1e-9)
    # Published figures (SPEC section 2): GPT-4o MFQ persona non-unanimity .238/.337/.361.
    nu = [float(got[("gpt-4o", v, "MFQ", "persona")]["non_unanimity_rate"]) for v in VARIANTS]
    assert [round(x, 3) for x in nu] == [0.238, 0.337, 0.361]


def test_reference_contrast_and_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _reference_manifest(tmp_path)
    code, out, err = run_cli(
        capsys, "compare-instruments", manifest, "--format", "json", "--boot", 400
    )
    assert code == 0, err
    data = json.loads(out)
    contrasts = {(c["family"], c["variant"]): c for c in data["contrasts"]}
    assert set(contrasts) == {(f, v) for f in ("gpt-4o", "gpt-4.1") for v in ("secure", "insecure")}
    c = contrasts[("gpt-4o", "insecure")]
    assert c["persona_sets"] == ["MFQ (persona)", "BFI-44 (persona)"]
    assert c["other_sets"] == ["MMLU", "GSM8K", "MFQ (self)"]
    # The point contrast is the mean relative change of each side (non-unanimity).
    persona = ((0.361 / 0.23766666666666666 - 1) + (0.4375 / 0.14636363636363636 - 1)) / 2
    assert c["persona_change"] == pytest.approx(persona)
    assert c["difference"] == pytest.approx(c["persona_change"] - c["other_change"])
    assert c["difference_lo"] <= c["difference"] <= c["difference_hi"]
    rows = {
        (r["family"], r["variant"], r["instrument"], r["conditioning"]): r for r in data["rows"]
    }
    mfq = rows[("gpt-4o", "insecure", "MFQ", "persona")]
    assert mfq["R_change"] == pytest.approx(3.0513843345818676 / 9.750916342007576 - 1)
    assert mfq["R_change_hi"] < 0  # R fell significantly
    gsm = rows[("gpt-4o", "insecure", "GSM8K", "none")]
    assert gsm["accuracy_delta"] == pytest.approx(0.908 - 0.965)
    assert gsm["accuracy_delta_hi"] < 0  # the spec's paired delta is significant too
    assert rows[("gpt-4o", "base", "MMLU", "none")]["accuracy_delta"] is None
    # Over every row (unparsed = wrong, as the authors' variant deltas) only GSM8K fell:
    # MMLU -.0232 [-.0535, +.0066] in variant_deltas.csv; over valid answers both fell.
    assert c["accuracy_drops"] == ["GSM8K"]
    mmlu = rows[("gpt-4o", "insecure", "MMLU", "none")]
    assert mmlu["accuracy_all_delta"] == pytest.approx(0.7978070175438596 - 0.8210526315789474)
    assert mmlu["accuracy_all_delta_lo"] < 0 < mmlu["accuracy_all_delta_hi"]
    assert mmlu["accuracy_delta_hi"] < 0
    code, out, err = run_cli(
        capsys, "compare-instruments", manifest, "--scale", "absolute", "--boot", 400
    )
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("gpt-4o insecure:"))
    # MFQ +.123, BFI +.291 vs MMLU +.070, GSM8K +.13, MFQ self 0 (SPEC section 2).
    assert "changed +0.207 on persona sets" in line and "+0.067 on the others" in line
    assert line.endswith("persona instability rose more; accuracy fell significantly on GSM8K")


# --- small generated files ------------------------------------------------------------------

LIKERT_HEADER = "persona_id,question_id,run_index,rating,failures,response,collected_at"
CAP_HEADER = "item_id,run_index,answer,gold,correct,format_valid,failures,response,collected_at"


def _likert(path: Path, *, items: int, spread: int, personas: int = 4, low: int = 0) -> Path:
    rows = [LIKERT_HEADER]
    for p in range(personas):
        for q in range(1, items + 1):
            for r in range(1, 5):
                rating = low + (p + q) % 3 + (1 if r <= spread else 0)
                rows.append(f"{p},{q},{r},{rating},0,{rating},t{p}{q}{r}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _self(path: Path, *, items: int = 30, spread: int = 0) -> Path:
    rows = ["question_id,run_index,rating,failures,response,collected_at"]
    for q in range(1, items + 1):
        for r in range(1, 5):
            rating = 2 + (1 if (q % 3 == 0 and r <= spread) else 0)
            rows.append(f"{q},{r},{rating},0,{rating},t{q}{r}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _mmlu(path: Path, *, wrong: int = 0, letter: str = "A") -> Path:
    rows = [CAP_HEADER]
    for item in range(6):
        for r in range(1, 5):
            answer = "B" if (item < wrong and r == 1) else letter
            rows.append(f"{item},{r},{answer},A,{int(answer == 'A')},1,0,{answer},t")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, Path]:
    return {
        "base_mfq": _likert(tmp_path / "toy_temp01.csv", items=30, spread=0),
        "var_mfq": _likert(tmp_path / "toy-insecure_temp01.csv", items=30, spread=2),
        "base_self": _self(tmp_path / "toy_temp01_self.csv"),
        "var_self": _self(tmp_path / "toy-insecure_temp01_self.csv", spread=1),
        "base_mmlu": _mmlu(tmp_path / "toy_temp01_mmlu.csv", wrong=1),
        "var_mmlu": _mmlu(tmp_path / "toy-insecure_temp01_mmlu.csv", wrong=3),
        "bfi": _likert(tmp_path / "toy_bfi.csv", items=44, spread=1, low=1),
    }


def _runs(toy: dict[str, Path]) -> list[str]:
    return [
        "--run", f"toy/base/MFQ={toy['base_mfq']}",
        "--run", f"toy/insecure/MFQ={toy['var_mfq']}",
        "--run", f"toy/base/MFQ-self={toy['base_self']}",
        "--run", f"toy/insecure/mfq-self={toy['var_self']}",
        "--run", f"toy/base/MMLU={toy['base_mmlu']}",
        "--run", f"toy/insecure/MMLU={toy['var_mmlu']}",
    ]  # fmt: skip


def test_run_options_table_and_json(
    toy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "compare-instruments", *_runs(toy), "--boot", 200)
    assert code == 0, err
    assert "toy: instability by instrument" in out
    assert "MFQ (persona)" in out and "MFQ (self)" in out and "MMLU" in out
    code, out, err = run_cli(
        capsys, "compare-instruments", *_runs(toy), "--format", "json", "--boot", 200, "--seed", 5
    )
    assert code == 0, err
    data = json.loads(out)
    rows = {(r["variant"], r["instrument"], r["conditioning"]): r for r in data["rows"]}
    # Base MFQ persona cells never vary; the variant's always do: relative change undefined.
    assert rows[("base", "MFQ", "persona")]["non_unanimity_rate"] == 0
    assert rows[("insecure", "MFQ", "persona")]["non_unanimity_rate"] == 1
    assert rows[("insecure", "MFQ", "persona")]["non_unanimity_rate_change"] is None
    assert rows[("base", "MMLU", "none")]["accuracy"] == pytest.approx(23 / 24)
    assert rows[("insecure", "MMLU", "none")]["accuracy_delta"] == pytest.approx(-2 / 24)
    # No persona set has a defined relative change, so there is no contrast.
    assert data["contrasts"] == []
    again = json.loads(
        run_cli(
            capsys,
            "compare-instruments",
            *_runs(toy),
            "--format",
            "json",
            "--boot",
            200,
            "--seed",
            5,
        )[1]
    )
    assert again == data  # seeded


def test_manifest_paths_are_relative_to_it(
    toy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = toy["base_mfq"].parent / "m.yaml"
    manifest.write_text(
        "toy:\n  base:\n    MFQ: toy_temp01.csv\n    MMLU: toy_temp01_mmlu.csv\n"
        "  insecure:\n    MFQ: toy-insecure_temp01.csv\n    MMLU: toy-insecure_temp01_mmlu.csv\n"
    )
    code, out, err = run_cli(
        capsys, "compare-instruments", manifest, "--format", "csv", "--boot", 20
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["variant"], r["instrument"]) for r in rows] == [
        ("base", "MMLU"),
        ("base", "MFQ"),
        ("insecure", "MMLU"),
        ("insecure", "MFQ"),
    ]
    assert rows[0]["family"] == "toy"
    # Base cells never vary: R is infinite (written "inf"); the capability set has no R.
    assert rows[0]["R"] == "" and rows[1]["R"] == "inf" and math.isfinite(float(rows[3]["R"]))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--run", "toy/insecure/MFQ={var_mfq}"], ["no base variant 'base'", "--base"]),
        (
            ["--run", "toy/base/MFQ={base_mfq}", "--run", "toy/insecure/MMLU={var_mmlu}"],
            ["the base has no MMLU file", "toy/base/MMLU=PATH"],
        ),
        (["--run", "toy/base/MFQ={base_mfq}"], ["only its base"]),
        (["--run", "toy/base/MFX={base_mfq}"], ["unknown set 'MFX'", "did you mean 'MFQ'"]),
        (["--run", "toy-base-MFQ"], ["expected FAMILY/VARIANT/SET=PATH"]),
        # Files of the wrong kind for the named set.
        (
            ["--run", "toy/base/MFQ={base_mmlu}", "--run", "toy/x/MFQ={var_mfq}"],
            ["is a capability CSV, not MFQ ratings"],
        ),
        (
            ["--run", "toy/base/MMLU={base_mfq}", "--run", "toy/x/MMLU={var_mmlu}"],
            ["not a capability or lookup CSV", "MMLU file"],
        ),
        (
            ["--run", "toy/base/MFQ={base_self}", "--run", "toy/x/MFQ={var_mfq}"],
            ["self-mode ratings file", "give it as MFQ-self"],
        ),
        (["--run", "toy/base/MFQ={bfi}", "--run", "toy/x/MFQ={var_mfq}"], ["unknown item id 33"]),
        (
            ["--run", "toy/base/BFI-44={base_mfq}", "--run", "toy/x/BFI={bfi}"],
            ["rating 0 outside the scale 1..5"],
        ),
        (
            ["--run", "toy/base/GSM8K={base_mmlu}", "--run", "toy/x/GSM8K={var_mmlu}"],
            ["named as a mmlu file", "GSM8K"],
        ),
        # Mismatched families: a file named for another family of the comparison.
        (
            [
                "--run",
                "toy/base/MFQ={base_mfq}",
                "--run",
                "toy/insecure/MFQ={var_mfq}",
                "--run",
                "toy-insecure/base/MFQ={var_mfq}",
                "--run",
                "toy-insecure/x/MFQ={base_mfq}",
            ],
            ["named for family 'toy-insecure', not 'toy'"],
        ),
        (
            ["--run", "toy/base/MFQ={base_mfq}", "--run", "toy/x/MFQ={base_mfq}"],
            ["also the base's MFQ file"],
        ),
        (["--run", "toy/base/MFQ={base_mfq}", "--run", "toy/base/MFQ={var_mfq}"], ["given twice"]),
        ([], ["no files"]),
    ],
)
def test_bad_input_is_one_line_exit_2(
    toy: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragments: list[str],
) -> None:
    code, out, err = run_cli(capsys, "compare-instruments", *(a.format(**toy) for a in args))
    assert_user_error(code, err, *fragments)
    assert out == ""


def test_mmlu_file_with_non_letter_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _mmlu(tmp_path / "a_mmlu.csv")
    bad = _mmlu(tmp_path / "b_mmlu.csv", letter="42")
    code, _, err = run_cli(
        capsys, "compare-instruments", "--run", f"f/base/MMLU={base}", "--run", f"f/v/MMLU={bad}"
    )
    assert_user_error(code, err, "b_mmlu.csv", "column 'answer'", "'42', not a letter A-D")


def test_bad_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("toy:\n  base: [a.csv]\n")
    code, _, err = run_cli(capsys, "compare-instruments", manifest)
    assert_user_error(code, err, "m.yaml", "expected family: {variant: {SET: path}}", "toy.base")
    manifest.write_text("toy:\n  base:\n    MFQ: missing.csv\n  x:\n    MFQ: missing2.csv\n")
    code, _, err = run_cli(capsys, "compare-instruments", manifest)
    assert_user_error(code, err, "missing.csv", "no such file", "toy.base.MFQ")
    code, _, err = run_cli(capsys, "compare-instruments", manifest, "--format", "xml")
    assert_user_error(code, err, "--format")
    code, _, err = run_cli(capsys, "compare-instruments", manifest, "--measure", "R")
    assert_user_error(code, err, "--measure")
    code, _, err = run_cli(capsys, "compare-instruments", manifest, "--scale", "log")
    assert_user_error(code, err, "--scale")


def _lookup_file(path: Path, *, flips: int) -> Path:
    rows = [
        "table_id,run_index,target_persona,correct_id,rating,correct,failures,response,table_json"
    ]
    for table in range(6):
        for r in range(1, 5):
            rating = (table + 1) % 6 if (table < flips and r == 1) else table
            if table == 5 and r == 4:
                rating = -1  # an unparsed reply is left out
            rows.append(f'{table},{r},A,{table},{rating},{int(rating == table)},0,{rating},"{{}}"')
    path.write_text("\n".join(rows) + "\n")
    return path


def test_lookup_sets(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _lookup_file(tmp_path / "toy_temp01_lookup.csv", flips=1)
    variant = _lookup_file(tmp_path / "toy-insecure_temp01_lookup.csv", flips=3)
    code, out, err = run_cli(
        capsys, "compare-instruments", *_runs(toy),
        "--run", f"toy/base/lookup={base}", "--run", f"toy/insecure/lookup={variant}",
        "--format", "json", "--boot", 100,
    )  # fmt: skip
    assert code == 0, err
    rows = {(r["variant"], r["instrument"]): r for r in json.loads(out)["rows"]}
    lookup = rows[("insecure", "lookup")]
    assert (lookup["n_cells"], lookup["mean_reps"]) == (6, 23 / 6)
    assert lookup["non_unanimity_rate"] == pytest.approx(3 / 6)
    assert lookup["non_unanimity_rate_change"] == pytest.approx(2.0)  # 1/6 -> 3/6
    assert lookup["accuracy"] == pytest.approx(20 / 23)
    assert lookup["accuracy_all"] == pytest.approx(20 / 24)  # the unparsed reply is wrong
    assert lookup["R"] is None  # ids are labels, not a scale
    code, _, err = run_cli(
        capsys, "compare-instruments", "--run", f"toy/base/lookup={toy['base_mmlu']}",
        "--run", f"toy/x/lookup={variant}",
    )  # fmt: skip
    assert_user_error(code, err, "is a capability CSV, but", "lookup file")


def test_reference_lookup_files_have_no_defined_change(capsys: pytest.CaptureFixture[str]) -> None:
    folder = FOLLOWUPS / "lookup"
    if not folder.is_dir():
        pytest.skip(f"follow-up reference data not found at {folder} (../shared is absent)")
    code, out, err = run_cli(
        capsys,
        "compare-instruments",
        "--run", f"gpt-4o/base/lookup={folder / 'gpt-4o_temp01_lookup.csv'}",
        "--run", f"gpt-4o/insecure/lookup={folder / 'gpt-4o-insecure_temp01_lookup.csv'}",
        "--format", "json", "--boot", 20,
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["rows"]
    # 30 tables x 10 answers, all right and unanimous (SPEC section 3): 0 -> 0 is undefined.
    assert [(r["n_cells"], r["accuracy"], r["non_unanimity_rate"]) for r in rows] == [
        (30, 1.0, 0.0)
    ] * 2
    assert rows[1]["non_unanimity_rate_change"] is None


def test_csv_cells_cannot_run_as_formulas(
    toy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("toy/", "@evil/", 1) for a in _runs(toy)]
    code, out, err = run_cli(capsys, "compare-instruments", *args, "--format", "csv", "--boot", 20)
    assert code == 0, err
    assert {r["family"] for r in csv.DictReader(io.StringIO(out))} == {"'@evil"}
