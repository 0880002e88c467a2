"""Scale-usage, ceiling-saturation and parse-failure diagnostics: values and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.report.diagnostics import (
    ceiling_saturation_index,
    parse_failures,
    rating_entropy,
    scale_usage,
    scale_usage_from_distributions,
)

SCALE = (0, 1, 2, 3, 4, 5)


def test_entropy_of_uniform_and_constant() -> None:
    assert rating_entropy([1, 1, 1, 1]) == pytest.approx(2.0)
    assert rating_entropy([0, 7, 0]) == 0.0
    assert rating_entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5)


@pytest.mark.parametrize("bad", [[-1, 2], [0, 0], [math.nan, 1]])
def test_entropy_rejects_bad_input(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="shares"):
        rating_entropy(bad)


def test_scale_usage_counts_floor_ceiling_and_ignores_invalid() -> None:
    ratings = [0, 0, 5, 5, 5, 3, -1, -1]
    usage = scale_usage(ratings, scale=SCALE)
    assert usage.n == 6
    assert usage.floor_share == pytest.approx(2 / 6)
    assert usage.ceiling_share == pytest.approx(3 / 6)
    p = np.array([2, 1, 3]) / 6
    assert usage.entropy_bits == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert usage.max_entropy_bits == pytest.approx(math.log2(6))
    assert sum(usage.shares) == pytest.approx(1.0)


def test_scale_usage_without_valid_ratings_is_nan() -> None:
    usage = scale_usage([-1, -1], scale=SCALE)
    assert usage.n == 0 and math.isnan(usage.floor_share) and math.isnan(usage.entropy_bits)


def test_scale_usage_rejects_bad_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        scale_usage([1], scale=(3, 2, 1))


def test_distribution_usage_is_the_mean_distribution() -> None:
    probs = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 2.0]])
    usage = scale_usage_from_distributions(probs, scale=SCALE)
    assert usage.floor_share == pytest.approx(0.5)
    assert usage.ceiling_share == pytest.approx(0.5)
    assert usage.entropy_bits == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probs"):
        scale_usage_from_distributions(np.ones((2, 5)), scale=SCALE)


def test_ceiling_saturation_index() -> None:
    means = np.array([[4.5, 4.49], [5.0, np.nan]])
    assert ceiling_saturation_index(means, scale_max=5) == pytest.approx(2 / 3)
    assert ceiling_saturation_index(means, scale_max=5, margin=0.01) == pytest.approx(1 / 3)
    assert math.isnan(ceiling_saturation_index([np.nan], scale_max=5))
    with pytest.raises(ValueError, match="margin"):
        ceiling_saturation_index(means, scale_max=5, margin=0)


def test_parse_failures_overall_and_per_persona() -> None:
    pf = parse_failures([0, 0, 0, 0, 3, 3], [1, -1, 2, 2, -1, np.nan])
    assert (pf.answers, pf.failed) == (6, 3)
    assert pf.rate == pytest.approx(0.5)
    assert pf.persona_ids == (0, 3)
    assert pf.persona_rates == pytest.approx((0.25, 1.0))
    with pytest.raises(ValueError, match="equal lengths"):
        parse_failures([0], [1, 2])
    empty = parse_failures([], [])
    assert empty.answers == 0 and math.isnan(empty.rate)
