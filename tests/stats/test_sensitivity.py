"""The robustness verdicts of the sensitivity suite on synthetic runs with known effects."""

from __future__ import annotations

import numpy as np
import pytest

from persona_collapse.core.instrument import mfq30
from persona_collapse.stats.sensitivity import (
    HEADLINE,
    Condition,
    SensitivityResult,
    analyze_sensitivity,
)
from persona_collapse.stats.significance import RunCells, cells_from_ratings, study_significance

HEAD = Condition(HEADLINE, "protocol")
ITEMS = np.array([i.id for i in mfq30().active_items])
N_BOOT = 200


def _cells(spread: float, noise: float, *, seed: int, personas: int = 30) -> RunCells:
    """A run whose personas differ by ``spread`` rating points per SD (drives S) and whose
    repeated ratings scatter by ``noise`` (drives sigma-bar): 3 ratings per cell."""
    rng = np.random.default_rng(seed)
    z = np.random.default_rng(99).standard_normal(personas)  # the same personas in every run
    base = np.random.default_rng(7).uniform(1.5, 3.5, len(ITEMS))
    p, q, _ = np.meshgrid(np.arange(personas), np.arange(len(ITEMS)), np.arange(3), indexing="ij")
    mean = base[q] + spread * z[p]
    ratings = np.clip(np.rint(mean + noise * rng.standard_normal(mean.shape)), 0, 5)
    return cells_from_ratings(p.ravel(), ITEMS[q.ravel()], ratings.ravel())


def _family(treatment_spread: float, *, seed: int, noise: float = 0.9) -> dict[str, RunCells]:
    """Base (spread 1, noise 0.3) and a treatment: noisier (lower R), ``treatment_spread``."""
    return {
        "base": _cells(1.0, 0.3, seed=seed),
        "treatment": _cells(treatment_spread, noise, seed=seed + 1),
    }


def _analyze(conditions: dict[Condition, dict[str, dict[str, RunCells]]]) -> SensitivityResult:
    return analyze_sensitivity(conditions, n_boot=N_BOOT, n_rerun_boot=20, seed=4)


def test_a_robust_effect_holds_under_every_condition() -> None:
    conditions = {
        HEAD: {"fam": _family(2.0, seed=1)},
        Condition("template", "plain"): {"fam": _family(1.9, seed=11)},
        Condition("order", "shuffle 1"): {"fam": _family(2.1, seed=21)},
    }
    result = _analyze(conditions)
    assert result.robust
    s = result.verdict("fam", "treatment", "S")
    assert s.headline.significant and s.headline.estimate > 0.5
    assert [r.status for r in s.rows] == ["holds", "holds"]
    assert s.factor_holds("template") is True and s.factor_holds("temperature") is None
    assert result.verdict("fam", "treatment", "R").robust
    assert "robust" in result.summary()


def test_an_effect_that_flips_under_one_template_is_fragile() -> None:
    conditions = {
        HEAD: {"fam": _family(2.0, seed=1)},
        Condition("template", "plain"): {"fam": _family(0.0, seed=11)},  # S falls below base
        Condition("order", "shuffle 1"): {"fam": _family(2.1, seed=21)},
    }
    result = _analyze(conditions)
    assert not result.robust
    s = result.verdict("fam", "treatment", "S")
    (failure,) = s.failures
    assert failure.condition == Condition("template", "plain")
    assert failure.status == "flips" and failure.estimate < 0
    assert s.factor_holds("template") is False and s.factor_holds("order") is True
    assert result.verdict("fam", "treatment", "R").robust  # the noise effect survives
    assert "fragile" in result.summary() and "template=plain" in result.summary()
    record = result.to_dict()
    assert record["robust"] is False
    assert {v["metric"]: v["failures"] for v in record["verdicts"]} == {
        "S": ["template=plain"],
        "R": [],
    }


def test_losing_significance_and_appearing_are_failures() -> None:
    # Treatment S about the base's under the template: the effect vanishes.
    lost = _analyze(
        {
            HEAD: {"fam": _family(2.0, seed=1)},
            Condition("template", "plain"): {"fam": _family(0.85, seed=31)},
        }
    )
    (failure,) = lost.verdict("fam", "treatment", "S").failures
    assert failure.status in ("loses significance", "flips")
    assert not failure.significant or failure.estimate < 0
    # No headline effect on S, but one appears under a condition.
    appears = _analyze(
        {
            HEAD: {"fam": _family(1.0, seed=1, noise=0.3)},
            Condition("temperature", "1"): {"fam": _family(2.0, seed=41, noise=0.3)},
        }
    )
    s = appears.verdict("fam", "treatment", "S")
    assert not s.headline.significant
    assert [r.status for r in s.rows] == ["appears"]


def test_rows_are_the_difference_tests_of_the_study() -> None:
    family = _family(2.0, seed=1)
    result = _analyze({HEAD: {"fam": family}})
    tests = study_significance(
        {"fam": family},
        rng=4,
        base="base",
        control="control",
        treatment="treatment",
        n_boot=N_BOOT,
        n_rerun_boot=20,
        both=False,
    )
    for metric in ("S", "R"):
        want = tests.families["fam"].test("treatment", metric)
        row = result.verdict("fam", "treatment", metric).headline
        assert row.estimate == want.estimate
        assert (row.ci_low, row.ci_high, row.p_holm) == (want.ci_low, want.ci_high, want.p_holm)
        assert row.n_personas == 30


def test_the_control_is_reported_but_does_not_decide() -> None:
    def family(seed: int, control_spread: float) -> dict[str, RunCells]:
        control = _cells(control_spread, 0.3, seed=seed + 5)
        return {**_family(2.0, seed=seed), "control": control}

    result = _analyze(
        {
            HEAD: {"fam": family(1, 1.0)},
            Condition("template", "plain"): {"fam": family(11, 0.3)},  # the control's S falls
        }
    )
    assert not result.verdict("fam", "control", "S").robust
    assert [v.role for v in result.decisive] == ["treatment", "treatment"]
    assert result.robust


def test_exactly_one_headline_is_needed() -> None:
    with pytest.raises(ValueError, match="headline"):
        analyze_sensitivity({Condition("template", "plain"): {"fam": _family(2.0, seed=1)}})


def test_only_a_headline_is_not_robust_yet() -> None:
    result = _analyze({HEAD: {"fam": _family(2.0, seed=1)}})
    assert not result.robust
    assert result.summary().startswith("Robustness unknown")
