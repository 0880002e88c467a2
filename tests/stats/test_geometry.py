"""Persona-cloud geometry: checked against direct numpy formulas, invariances, a known collapse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.stats import geometry as g


def _random(n: int = 40, d: int = 12, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Anisotropic, so the PR is far from both 1 and d.
    return rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d)


def _direct_distances(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))


def _direct_pr(x: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    return float(lam.sum() ** 2 / (lam**2).sum())


def test_participation_ratio_matches_covariance_eigenvalues() -> None:
    x = _random()
    assert g.participation_ratio(x) == pytest.approx(_direct_pr(x), rel=1e-10)
    assert g.gram_participation_ratio(x) == pytest.approx(_direct_pr(x), rel=1e-10)
    wide = _random(n=10, d=30)  # N < d: the Gram branch
    assert g.gram_participation_ratio(wide) == pytest.approx(_direct_pr(wide), rel=1e-10)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert g.participation_ratio(x, unit_norm=True) == pytest.approx(_direct_pr(unit), rel=1e-10)
    assert 1.0 < g.participation_ratio(x) < x.shape[1]


def test_distance_measures_match_direct_formulas() -> None:
    x = _random(n=30)
    d = _direct_distances(x)
    iu = np.triu_indices(len(x), 1)
    pairs = d[iu]
    np.testing.assert_allclose(g.pairwise_distances(x), pairs, rtol=1e-9)
    assert g.mean_pairwise_distance(x) == pytest.approx(pairs.mean(), rel=1e-10)
    nn = np.where(np.eye(len(x), dtype=bool), np.inf, d).min(axis=1)
    assert g.clumpiness(x) == pytest.approx(nn.mean() / pairs.mean(), rel=1e-9)
    dev = pairs - pairs.mean()
    skew = np.mean(dev**3) / np.mean(dev**2) ** 1.5
    kurt = np.mean(dev**4) / np.mean(dev**2) ** 2
    assert g.distance_bimodality(x) == pytest.approx((skew**2 + 1) / kurt, rel=1e-9)
    radius = np.sqrt(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1)))
    assert g.rms_radius(x) == pytest.approx(radius, rel=1e-12)
    cg = g.cloud_geometry(x)
    assert cg.clumpiness == pytest.approx(g.clumpiness(x))
    assert cg.rms_radius == pytest.approx(radius)


def test_sarle_coefficient_separates_one_and_two_modes() -> None:
    rng = np.random.default_rng(0)
    one = rng.normal(size=2000)
    two = np.concatenate([rng.normal(-5, 1, 1000), rng.normal(5, 1, 1000)])
    assert g.sarle_bimodality(one) < 5 / 9 < g.sarle_bimodality(two)


def test_spearman_matches_pearson_of_ranks_with_ties() -> None:
    a = np.array([1.0, 2.0, 2.0, 5.0, 3.0, 3.0, 3.0])
    b = np.array([2.0, 1.0, 4.0, 6.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(g.average_ranks(a), [1, 2.5, 2.5, 7, 5, 5, 5])
    ra, rb = g.average_ranks(a), g.average_ranks(b)
    assert g.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1], rel=1e-12)
    assert g.spearman(a, a**3) == pytest.approx(1.0)


def test_invariant_under_rotation_and_translation() -> None:
    x = _random()
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(x.shape[1], x.shape[1])))
    moved = x @ q + 7.5
    a, b = g.cloud_geometry(x), g.cloud_geometry(moved)
    for field in ("participation_ratio", "clumpiness", "distance_bimodality", "rms_radius"):
        assert getattr(b, field) == pytest.approx(getattr(a, field), rel=1e-8), field
    assert b.mean_pairwise_distance == pytest.approx(a.mean_pairwise_distance, rel=1e-8)
    # Rotation alone (no translation) keeps the directions' geometry too.
    assert g.participation_ratio(x @ q, unit_norm=True) == pytest.approx(
        g.participation_ratio(x, unit_norm=True), rel=1e-8
    )
    cmp = g.compare_to_base(x @ q, x @ q)
    assert cmp.rdm_spearman_vs_base == pytest.approx(1.0)
    assert cmp.offset_over_base_radius == pytest.approx(0.0, abs=1e-12)
    assert cmp.gain_over_base == pytest.approx(1.0)


def test_compare_to_base_offset_gain_and_rdm() -> None:
    base = _random()
    shifted = 2.0 * base + np.r_[3.0, np.zeros(base.shape[1] - 1)]
    cmp = g.compare_to_base(shifted, base)
    radius = g.rms_radius(base)
    offset = np.linalg.norm(shifted.mean(0) - base.mean(0))
    assert cmp.offset_over_base_radius == pytest.approx(offset / radius)
    assert cmp.gain_over_base == pytest.approx(2.0)
    assert cmp.rdm_spearman_vs_base == pytest.approx(1.0)  # scaling keeps every rank
    shuffled = base[np.random.default_rng(0).permutation(len(base))]
    assert g.compare_to_base(shuffled, base).rdm_spearman_vs_base < 0.5


def test_three_pole_collapse_gives_pr_two() -> None:
    rng = np.random.default_rng(0)
    n, d = 150, 64
    spread = rng.normal(size=(n, d))  # before: a round cloud, PR near d
    poles = rng.normal(size=(3, d)) * 10
    collapsed = poles[np.arange(n) % 3] + 1e-3 * rng.normal(size=(n, d))
    before, after = g.participation_ratio(spread), g.participation_ratio(collapsed)
    assert before > 30
    assert after == pytest.approx(2.0, abs=0.35)
    # An equilateral collapse with equal weights is exactly 2.
    tri = np.array([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
    exact = np.hstack([tri[np.arange(n) % 3], np.zeros((n, d - 2))])
    assert g.participation_ratio(exact) == pytest.approx(2.0, rel=1e-9)
    assert g.clumpiness(collapsed) < 0.01
    assert g.distance_bimodality(collapsed) > 5 / 9


def test_layer_summary_per_layer_and_rows() -> None:
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(20, 3, 8))
    base = stack + 0.01 * rng.normal(size=stack.shape)
    summary = g.layer_summary(stack, base=base, layers=[0, 1, 2])
    for k in range(3):
        assert summary.participation_ratio[k] == pytest.approx(_direct_pr(stack[:, k]))
    assert np.all(summary.rdm_spearman_vs_base > 0.95)
    rows = summary.rows()
    assert [r["layer"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) >= {"clumpiness", "gain_over_base", "rdm_spearman_vs_base"}
    alone = g.layer_summary(stack)
    assert np.all(np.isnan(alone.gain_over_base))
    # float16 stacks (as stored) are converted layer by layer: the same numbers.
    half = stack.astype(np.float16)
    np.testing.assert_array_equal(
        g.layer_summary(half).clumpiness, g.layer_summary(half.astype(np.float64)).clumpiness
    )


def test_pr_saturation_is_seeded_and_grows_with_count() -> None:
    x = np.random.default_rng(4).normal(size=(120, 200))
    sat = g.pr_saturation(x, sizes=(10, 50, 100), draws=4, rng=7)
    assert list(sat.sizes) == [10, 50, 100, 120]
    assert [len(v) for v in sat.values] == [4, 4, 4, 1]
    assert np.all(np.diff(sat.mean) > 0)
    assert sat.values[-1][0] == pytest.approx(_direct_pr(x))
    again = g.pr_saturation(x, sizes=(10, 50, 100), draws=4, rng=7)
    np.testing.assert_array_equal(sat.mean, again.mean)
    assert not sat.near_rank_limit
    # Isotropic with d >> N: the PR is bounded by the persona count.
    wide = np.random.default_rng(5).normal(size=(40, 2000))
    assert g.pr_saturation(wide, sizes=(), draws=2).near_rank_limit
    assert not g.pr_saturation(_random(n=200, d=5), draws=2).near_rank_limit


def test_resolution_floor_matches_definitions() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(15, 6)) * 4
    x = centres[:, None, :] + 0.5 * rng.normal(size=(15, 4, 6))
    rf = g.resolution_floor(x)
    c = x.mean(axis=1)
    within = np.mean([np.mean(np.sum((x[p] - c[p]) ** 2, axis=1)) for p in range(15)])
    between = np.mean(np.sum((c - c.mean(0)) ** 2, axis=1))
    assert rf.within == pytest.approx(within)
    assert rf.between == pytest.approx(between)
    assert rf.fisher == pytest.approx(between / within)
    assert rf.eta_squared == pytest.approx(between / (between + within))
    d = _direct_distances(c) + np.diag(np.full(15, np.inf))
    assert rf.nn_centroid_over_within_sd == pytest.approx(d.min(1).mean() / np.sqrt(within))
    assert rf.fisher > 10


def _collapsing_stack(n: int, n_slots: int, strength: float, seed: int) -> np.ndarray:
    """Base-like states pulled towards 3 poles by ``strength`` from slot 1 on."""
    rng = np.random.default_rng(seed)
    base_rng = np.random.default_rng(100)
    base = base_rng.normal(size=(n, n_slots, 16))
    poles = base_rng.normal(size=(3, 16)) * 2
    out = base + 0.02 * rng.normal(size=base.shape)
    for k in range(1, n_slots):
        out[:, k] = (1 - strength) * out[:, k] + strength * poles[np.arange(n) % 3]
    return out


def test_excess_detects_a_collapse_and_its_bands() -> None:
    base = _collapsing_stack(60, 5, 0.0, seed=1)
    control = _collapsing_stack(60, 5, 0.0, seed=2)
    treatment = _collapsing_stack(60, 5, 0.6, seed=3)
    res = g.excess_pr(treatment, control, base, draws=30, rng=0)
    pr0 = [_direct_pr(base[:, k]) for k in range(5)]
    np.testing.assert_allclose(res.pr_base, pr0, rtol=1e-9)
    expected = (
        100 * (res.pr_treatment - res.pr_base) / res.pr_base
        - 100 * (res.pr_control - res.pr_base) / res.pr_base
    )
    np.testing.assert_allclose(res.excess_pp, expected)
    assert res.subsample == 48
    assert np.all(res.excess_pp[1:] < -10)
    assert list(res.significant[1:]) == [True] * 4
    assert not res.significant[0]  # slot 0 is untouched: noise only
    assert np.all(res.ci_lo <= res.ci_hi)
    assert [(b.name, b.lo, b.hi) for b in res.bands] == [
        ("all", 1, 5),
        ("early", 1, 3),
        ("late", 3, 5),
    ]
    assert all(b.significant and b.excess_pp < 0 for b in res.bands)
    assert res.bands[0].excess_pp == pytest.approx(res.excess_pp[1:].mean())
    assert np.all(res.displacement_treatment_pct[1:] > res.displacement_control_pct[1:])
    rows = res.rows()
    assert rows[2]["excess_ci_lo"] == res.ci_lo[2] and rows[2]["significant"] is True
    again = g.excess_pr(treatment, control, base, draws=30, rng=0)
    np.testing.assert_array_equal(res.ci_lo, again.ci_lo)


def test_excess_of_identical_variants_is_zero() -> None:
    base = _collapsing_stack(30, 3, 0.0, seed=1)
    other = _collapsing_stack(30, 3, 0.3, seed=2)
    res = g.excess_pr(other, other.copy(), base, draws=10, rng=1)
    np.testing.assert_allclose(res.excess_pp, 0.0, atol=1e-9)
    np.testing.assert_allclose(res.ci_lo, 0.0, atol=1e-9)
    assert not any(res.significant)


def test_displacement_relative_to_inter_persona_distance() -> None:
    base = _random(n=20)
    moved = base + np.r_[1.0, np.zeros(base.shape[1] - 1)]
    expected = 100 * 1.0 / g.mean_pairwise_distance(base)
    assert g.displacement_pct(moved, base) == pytest.approx(expected)


def test_default_bands() -> None:
    assert g.default_bands(41) == (("all", 1, 41), ("early", 1, 21), ("late", 21, 41))
    assert g.default_bands(2) == (("all", 1, 2), ("early", 1, 2))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: g.participation_ratio(np.zeros(5)), "states"),
        (lambda: g.participation_ratio(np.full((3, 2), np.nan)), "states"),
        (lambda: g.unit_rows(np.zeros((3, 2))), "states"),
        (lambda: g.compare_to_base(np.ones((4, 2)), np.ones((5, 2))), "base"),
        (lambda: g.pr_saturation(_random(), draws=0), "draws"),
        (lambda: g.resolution_floor(np.ones((3, 1, 2))), "states"),
        (lambda: g.spearman([1, 2], [1, 2, 3]), "b"),
        (
            lambda: g.excess_pr(
                np.ones((4, 2, 3)), np.ones((4, 2, 3)), np.ones((4, 2, 3)), draws=1
            ),
            "draws",
        ),
        (
            lambda: g.excess_pr(
                np.ones((4, 2, 3)), np.ones((4, 2, 3)), np.ones((4, 2, 3)), fraction=0.0
            ),
            "fraction",
        ),
        (
            lambda: g.excess_pr(
                np.ones((4, 2, 3)), np.ones((4, 2, 3)), np.ones((4, 2, 3)), bands=[("x", 1, 9)]
            ),
            "bands",
        ),
        (lambda: g.layer_summary(np.ones((4, 2, 3)), layers=[0]), "layers"),
    ],
)
def test_bad_input_names_the_parameter(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        call()  # type: ignore[operator]
