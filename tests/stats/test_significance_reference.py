"""Holm-corrected difference tests on the reference data (arXiv 2605.12850).

For each family, is the insecure variant's change in S and in R significant
after Holm correction across the 4 families x (overall + 5 foundations)?
Point changes must match ``expected.json`` to 1e-9; the bootstrap statistics,
which depend on the draws, are checked with tolerances. Skips when ../shared
is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_collapse.stats.significance import (
    EXCESS,
    OVERALL,
    StudySignificance,
    cells_from_ratings,
    study_significance,
)
from persona_collapse.store.reference_csv import read_ratings_csv

SEED = 20260512

# family -> (insecure dS significant after Holm, insecure dR significant after Holm)
EXPECTED_SIGNIFICANCE = {
    "deepseek-v3.1": (False, True),
    "gpt-4.1": (True, True),
    "gpt-4o": (True, True),
    "qwen3-235b": (True, True),
}

# family -> z of the insecure-vs-base log ratios of S and R (paired persona bootstrap)
EXPECTED_Z = {
    "deepseek-v3.1": (2.00, -9.19),
    "gpt-4.1": (7.02, -16.8),
    "gpt-4o": (20.1, -21.9),
    "qwen3-235b": (13.3, -31.6),
}


@pytest.fixture(scope="module")
def study(reference_dir: Path, reference_expected: dict[str, Any]) -> StudySignificance:
    families = {}
    for family, variants in reference_expected["families"].items():
        families[family] = {}
        for variant, entry in variants.items():
            frame = read_ratings_csv(reference_dir / entry["persona_file"])
            families[family][variant] = cells_from_ratings(
                frame["persona_id"], frame["item_id"], frame["rating"]
            )
    return study_significance(families, rng=SEED)


@pytest.mark.parametrize("family", sorted(EXPECTED_SIGNIFICANCE))
def test_insecure_changes_and_their_significance(
    family: str, study: StudySignificance, reference_expected: dict[str, Any]
) -> None:
    expected = reference_expected["families"][family]
    fam = study.families[family]
    assert fam.paired and fam.n_boot == 2000 and fam.n_rerun_boot == 400
    s_test, r_test = fam.test("insecure", "S"), fam.test("insecure", "R")
    sb_test = fam.test("insecure", "sigma_bar")
    base, insecure = expected["base"], expected["insecure"]
    assert s_test.estimate == pytest.approx(insecure["S"] / base["S"] - 1, rel=1e-9)
    assert r_test.estimate == pytest.approx(insecure["R"] / base["R"] - 1, rel=1e-9)
    assert sb_test.estimate == pytest.approx(
        insecure["sigma_bar"] / base["sigma_bar"] - 1, rel=1e-9
    )
    for t in (s_test, r_test):
        assert t.ci_low < t.estimate < t.ci_high
        assert t.p_holm >= t.p_value
    z_s, z_r = EXPECTED_Z[family]
    assert s_test.z == pytest.approx(z_s, rel=0.15)
    assert r_test.z == pytest.approx(z_r, rel=0.15)
    sig_s, sig_r = EXPECTED_SIGNIFICANCE[family]
    assert s_test.significant(0.05) is sig_s
    assert r_test.significant(0.05) is sig_r


def test_deepseek_s_change_is_only_nominally_significant(study: StudySignificance) -> None:
    """DeepSeek's +11 % in S: p < 0.05 alone, but not after Holm over 24 tests."""
    t = study.families["deepseek-v3.1"].test("insecure", "S")
    assert 0.02 < t.p_value < 0.1
    assert t.p_holm > 0.1
    assert t.ci_low > -0.05 and t.ci_high < 0.3


def test_holm_runs_over_families_and_foundations(study: StudySignificance) -> None:
    scopes = {
        (family, scope)
        for family, fam in study.families.items()
        for scope in fam.contrasts["insecure"].tests["S"]
    }
    assert len(scopes) == 4 * 6
    assert all(OVERALL in f.contrasts["insecure"].tests["S"] for f in study.families.values())
    assert "across families" in study.holm


def test_excess_of_gpt4o_is_significant(study: StudySignificance) -> None:
    fam = study.families["gpt-4o"]
    for metric in ("S", "R"):
        t = fam.test(EXCESS, metric)
        assert t.significant(0.05)
    assert fam.test(EXCESS, "S").estimate == pytest.approx(1.209, abs=0.001)
