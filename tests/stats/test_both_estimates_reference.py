"""The paper's and the bias-corrected estimates side by side on the reference data.

For each of the 12 runs (4 families x base, secure, insecure) the significance results
carry both estimates of S, sigma_bar and R; the paper's still match ``expected.json``
(to 1e-9, as in test_reference_reproduction) and the verdicts follow the corrected
ones. Few bootstrap draws: only the point values are checked against the paper.
Skips when ../shared is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_collapse.stats.significance import (
    ESTIMATES_EXPLANATION,
    INTERVAL_JACKKNIFE_T,
    OVERALL,
    StudySignificance,
    cells_from_ratings,
    study_significance,
)
from persona_collapse.store.reference_csv import read_ratings_csv

POINT_RTOL = 1e-9


@pytest.fixture(scope="module")
def study(reference_dir: Path, reference_expected: dict[str, Any]) -> StudySignificance:
    families = {}
    for family, variants in reference_expected["families"].items():
        families[family] = {
            variant: cells_from_ratings(frame["persona_id"], frame["item_id"], frame["rating"])
            for variant, entry in variants.items()
            for frame in [read_ratings_csv(reference_dir / entry["persona_file"])]
        }
    return study_significance(families, rng=7, n_boot=40, n_rerun_boot=10)


def test_both_estimates_for_all_12_runs(
    study: StudySignificance, reference_expected: dict[str, Any]
) -> None:
    runs = 0
    for family, variants in reference_expected["families"].items():
        fam = study.families[family]
        assert fam.estimator == "reference" and fam.verdict_estimator == "corrected"
        both = fam.both_estimates()
        for variant, expected in variants.items():
            row = both[variant][OVERALL]
            for name in ("S", "sigma_bar", "R"):
                assert row[name] == pytest.approx(expected[name], rel=POINT_RTOL), (variant, name)
                # the same number the reference estimator reports on its own
                assert row[name] == fam.estimates[variant][OVERALL][name].value
                for key in ("", "_se", "_ci_low", "_ci_high"):
                    assert f"{name}_corrected{key}" in row
            # rating noise inflates the paper's S and R; the corrected ones are smaller
            assert row["S_corrected"] < row["S"]
            assert row["R_corrected"] < row["R"]
            assert row["sigma_bar_corrected"] > row["sigma_bar"]
            assert row["S_corrected_interval"] == INTERVAL_JACKKNIFE_T
            assert row["S_corrected_ci_low"] < row["S_corrected"] < row["S_corrected_ci_high"]
            runs += 1
    assert runs == 12


def test_verdicts_follow_the_corrected_estimates(study: StudySignificance) -> None:
    fam = study.families["gpt-4o"]
    corrected = fam.corrected
    assert corrected is not None and corrected.estimator == "corrected"
    verdict = fam.verdict("insecure", "S")
    assert verdict is corrected.test("insecure", "S")
    assert verdict.estimate != fam.test("insecure", "S").estimate
    rows = study.rows()
    assert all(r["verdict_estimator"] == "corrected" for r in rows if r["metric"] == "S")
    data = fam.to_dict()
    assert data["verdict_estimator"] == "corrected"
    assert data["estimates_explanation"] == ESTIMATES_EXPLANATION
    assert data["other"]["estimator"] == "corrected"
    assert "S_corrected" in data["estimates_both"]["insecure"][OVERALL]
    # Holm of the corrected tests runs across the families too
    assert corrected.holm.startswith("across families")
