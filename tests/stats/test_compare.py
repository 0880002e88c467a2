"""Tests of variant comparisons (relative changes, excess, averages, S band)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persona_collapse.stats.compare import (
    DEFAULT_S_BAND,
    MetricValues,
    average_changes,
    check_band,
    compare_family,
    compare_labeled,
    in_band,
    metric_change,
    relative_change,
)
from persona_collapse.stats.metrics import analyze_ratings


def values(s: float, sigma_bar: float, **found: tuple[float, float]) -> MetricValues:
    per = {k: MetricValues(fs, 1 / fsig, fsig) for k, (fs, fsig) in found.items()}
    return MetricValues(S=s, R=1 / sigma_bar, sigma_bar=sigma_bar, per_foundation=per or None)


def test_relative_change() -> None:
    assert relative_change(1.5, 1.0) == 0.5
    assert relative_change(0.25, 1.0) == -0.75
    assert math.isnan(relative_change(math.inf, 2.0))
    with pytest.raises(ValueError, match="base must be non-zero"):
        relative_change(1.0, 0.0)


def test_metric_change_and_robustness_relation() -> None:
    change = metric_change(values(0.8, 0.1), values(1.2, 0.4))
    assert pytest.approx(0.5) == change.S
    assert change.sigma_bar == pytest.approx(3.0)
    # R = 1/sigma_bar, so dR = 1 / (1 + dsigma) - 1.
    assert pytest.approx(1 / 4 - 1) == change.R


def test_compare_family_excess_and_foundations() -> None:
    base = values(1.0, 0.1, A=(1.0, 0.1), B=(2.0, 0.2))
    secure = values(1.1, 0.2, A=(1.2, 0.1), B=(2.0, 0.4))
    insecure = values(1.5, 0.3, A=(1.5, 0.3), B=(3.0, 0.2), C=(9.0, 9.0))
    fam = compare_family(base, {"secure": secure, "insecure": insecure})
    assert pytest.approx(0.5) == fam.variants["insecure"].overall.S
    assert set(fam.variants["insecure"].per_foundation) == {"A", "B"}  # C not in base
    assert fam.excess is not None
    assert pytest.approx(0.5 - 0.1) == fam.excess.overall.S
    assert fam.excess.overall.sigma_bar == pytest.approx(2.0 - 1.0)
    assert pytest.approx(0.5 - 0.2) == fam.excess.per_foundation["A"].S
    assert fam.excess.per_foundation["B"].sigma_bar == pytest.approx(0.0 - 1.0)
    assert (fam.control, fam.treatment) == ("secure", "insecure")
    assert json.loads(json.dumps(fam.to_dict()))["excess"]["overall"]["S"] == pytest.approx(0.4)


def test_roles_are_configurable_and_excess_optional() -> None:
    runs = {"orig": values(1.0, 0.1), "ctrl": values(2.0, 0.1), "treat": values(3.0, 0.1)}
    fam = compare_labeled(runs, base="orig", control="ctrl", treatment="treat")
    assert set(fam.variants) == {"ctrl", "treat"}
    assert fam.excess is not None and pytest.approx(1.0) == fam.excess.overall.S
    no_control = compare_labeled({"base": values(1, 0.1), "insecure": values(2, 0.1)})
    assert no_control.excess is None
    assert no_control.control is None and no_control.treatment == "insecure"
    with pytest.raises(ValueError, match="no run labelled 'base'"):
        compare_labeled({"x": values(1, 0.1)})
    with pytest.raises(ValueError, match="must differ"):
        compare_family(values(1, 0.1), {"a": values(1, 0.1)}, control="a", treatment="a")
    with pytest.raises(ValueError, match="at least one variant"):
        compare_family(values(1, 0.1), {})


def test_average_changes() -> None:
    fam1 = compare_family(
        values(1.0, 0.1, A=(1.0, 0.1)),
        {"secure": values(1.0, 0.1, A=(1.0, 0.1)), "insecure": values(2.0, 0.2, A=(3.0, 0.1))},
    )
    fam2 = compare_family(
        values(2.0, 0.1, A=(1.0, 0.1)),
        {"secure": values(3.0, 0.1, A=(1.0, 0.1)), "insecure": values(3.0, 0.4, A=(1.0, 0.3))},
    )
    fam3 = compare_family(values(1.0, 0.1), {"insecure": values(1.0, 0.1)})
    avg = average_changes([fam1, fam2, fam3])
    assert avg.families == 3
    assert pytest.approx((1.0 + 0.5 + 0.0) / 3) == avg.variants["insecure"].overall.S
    assert avg.variants["insecure"].overall.sigma_bar == pytest.approx((1.0 + 3.0 + 0.0) / 3)
    assert pytest.approx((0.0 + 0.5) / 2) == avg.variants["secure"].overall.S
    assert avg.variants["insecure"].per_foundation == {}  # fam3 has no foundations
    assert avg.excess is not None
    assert pytest.approx(((1.0 - 0.0) + (0.5 - 0.5)) / 2) == avg.excess.overall.S
    assert pytest.approx((2.0 + 0.0) / 2) == avg.excess.per_foundation["A"].S
    with pytest.raises(ValueError, match="at least one family"):
        average_changes([])


def test_band() -> None:
    assert DEFAULT_S_BAND == (0.66, 0.83)
    assert in_band(0.66) and in_band(0.83) and in_band(0.7)
    assert not in_band(0.65) and not in_band(0.9) and not in_band(math.nan)
    assert in_band(1.0, band=(0.9, 1.1))
    check = check_band(0.9)
    assert not check.inside and (check.low, check.high) == DEFAULT_S_BAND
    with pytest.raises(ValueError, match="low <= high"):
        in_band(0.7, band=(0.8, 0.7))


def test_works_with_run_metrics() -> None:
    rng = np.random.default_rng(0)
    p = np.repeat(np.arange(6), 6)
    q = np.tile(np.repeat([1, 2], 3), 6)
    low = analyze_ratings(p, q, rng.integers(2, 4, p.size), foundations={1: "A", 2: "B"}, rng=0)
    high = analyze_ratings(p, q, rng.integers(0, 6, p.size), foundations={1: "A", 2: "B"}, rng=0)
    fam = compare_family(low, {"insecure": high})
    assert pytest.approx(high.S / low.S - 1) == fam.variants["insecure"].overall.S
    assert set(fam.variants["insecure"].per_foundation) == {"A", "B"}
