"""Tests of the susceptibility / robustness metrics and their bootstrap errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persona_collapse.core.instrument import FOUNDATIONS
from persona_collapse.stats.metrics import (
    RunMetrics,
    _persona_weights,
    _resample_sums,
    _resample_two_valued,
    _two_valued_draws,
    analyze_distributions,
    analyze_ratings,
    cell_moments,
    cell_ratings,
    mean_sigma,
    resolve_rng,
    robustness,
    self_profile,
    susceptibility,
    tempered,
)

TWO = {1: "A", 2: "B"}

# Hand-computed example. Cells (persona, item): valid ratings
#   p0: i1 [2, 4] (mu 3, sd sqrt2)   i2 [1]       (mu 1, sd 0)
#   p1: i1 [3, 3] (mu 3, sd 0)       i2 [3, 5]    (mu 4, sd sqrt2)
#   p2: i1 [0]    (mu 0, sd 0)       i2 [2, 2, 2] (mu 2, sd 0)
# item 1 means 3, 3, 0 -> sd sqrt(3); item 2 means 1, 4, 2 -> sd sqrt(7/3).
ROWS = [
    (0, 1, 2), (0, 1, -1), (0, 1, 4), (0, 2, 1),
    (1, 1, 3), (1, 1, 3), (1, 2, 3), (1, 2, -1), (1, 2, 5),
    (2, 1, 0), (2, 2, 2), (2, 2, 2), (2, 2, 2),
]  # fmt: skip
S_EXPECTED = (math.sqrt(3) + math.sqrt(7 / 3)) / 2
SIGMA_BAR_EXPECTED = 2 * math.sqrt(2) / 6


def columns(rows: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, 0].astype(int), arr[:, 1].astype(int), arr[:, 2]


def simulated(
    n_personas: int, n_items: int, n_reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long arrays of integer ratings 0..5 around a persona-item preference."""
    rng = np.random.default_rng(seed)
    pref = rng.uniform(0, 5, size=(n_personas, n_items))
    noise = rng.normal(0, 0.7, size=(n_personas, n_items, n_reps))
    ratings = np.clip(np.rint(pref[..., None] + noise), 0, 5)
    p, q, _ = np.meshgrid(
        np.arange(n_personas), np.arange(1, n_items + 1), np.arange(n_reps), indexing="ij"
    )
    return p.ravel(), q.ravel(), ratings.ravel()


# --- cells and point estimates ----------------------------------------------------------------


def test_cell_ratings_groups_valid_ratings_in_input_order() -> None:
    cells = cell_ratings(*columns(ROWS))
    assert cells.persona_ids.tolist() == [0, 1, 2]
    assert cells.item_ids.tolist() == [1, 2]
    assert cells.counts.tolist() == [[2, 1], [2, 2], [1, 3]]
    assert cells.values.shape == (3, 2, 3)
    assert cells.values[0, 0, :2].tolist() == [2.0, 4.0]
    assert np.isnan(cells.values[0, 0, 2])
    assert cells.values[2, 1].tolist() == [2.0, 2.0, 2.0]


def test_cell_moments_single_rating_has_zero_sd_and_empty_cell_nan() -> None:
    rows = [*ROWS, (3, 1, -1), (3, 2, 4)]  # persona 3: item 1 only invalid
    mu, sigma = cell_moments(cell_ratings(*columns(rows)))
    assert mu[0].tolist() == [3.0, 1.0]
    assert sigma[0, 0] == pytest.approx(math.sqrt(2), rel=1e-15)
    assert sigma[0, 1] == 0.0  # one rating
    assert sigma[2, 1] == 0.0  # three equal ratings
    assert np.isnan(mu[3, 0]) and np.isnan(sigma[3, 0])
    assert sigma[3, 1] == 0.0


def test_point_estimates_match_hand_computation() -> None:
    m = analyze_ratings(*columns(ROWS), foundations=TWO, rng=0)
    assert pytest.approx(S_EXPECTED, rel=1e-12) == m.S
    assert m.sigma_bar == pytest.approx(SIGMA_BAR_EXPECTED, rel=1e-12)
    assert pytest.approx(1 / SIGMA_BAR_EXPECTED, rel=1e-12) == m.R
    assert (m.personas, m.questions) == (3, 2)
    assert m.excluded_personas == ()
    assert (m.valid_ratings, m.invalid_ratings) == (11, 2)
    assert m.method == "sampling"
    assert pytest.approx(math.sqrt(3), rel=1e-12) == m.per_foundation["A"].S
    assert pytest.approx(math.sqrt(7 / 3), rel=1e-12) == m.per_foundation["B"].S
    assert m.per_foundation["A"].sigma_bar == pytest.approx(math.sqrt(2) / 3, rel=1e-12)
    assert m.per_foundation["A"].items == (1,)
    assert m.R_se == pytest.approx(m.sigma_bar_se / m.sigma_bar**2, rel=1e-12)


def test_simple_functions_on_matrices() -> None:
    mu = np.array([[3.0, 1.0], [3.0, 4.0], [0.0, 2.0]])
    sigma = np.array([[math.sqrt(2), 0.0], [0.0, math.sqrt(2)], [0.0, 0.0]])
    assert susceptibility(mu) == pytest.approx(S_EXPECTED, rel=1e-12)
    assert mean_sigma(sigma) == pytest.approx(SIGMA_BAR_EXPECTED, rel=1e-12)
    assert robustness(sigma) == pytest.approx(1 / SIGMA_BAR_EXPECTED, rel=1e-12)
    assert robustness(np.zeros((2, 2))) == math.inf


def test_persona_missing_an_item_is_excluded() -> None:
    rows = [*ROWS, (7, 1, 4), (7, 1, 5), (7, 2, -1), (7, 2, -1)]
    m = analyze_ratings(*columns(rows), foundations=TWO, rng=0)
    assert m.excluded_personas == (7,)
    assert m.personas == 3
    assert pytest.approx(S_EXPECTED, rel=1e-12) == m.S
    assert m.invalid_ratings == 4


def test_all_constant_cells_give_infinite_robustness() -> None:
    rows = [(p, q, float(p + q)) for p in range(4) for q in (1, 2) for _ in range(3)]
    m = analyze_ratings(*columns(rows), foundations=TWO, n_persona_boot=50, rng=1)
    assert m.sigma_bar == 0.0
    assert math.inf == m.R
    assert math.isnan(m.R_se)
    assert m.sigma_bar_se == 0.0


def test_default_foundations_are_mfq30() -> None:
    m = analyze_ratings(*simulated(8, 30, 3, seed=2), n_persona_boot=20, n_rerun_boot=5, rng=0)
    assert tuple(m.per_foundation) == FOUNDATIONS
    assert m.per_foundation["Harm/Care"].items == (1, 6, 11, 16, 21, 26)
    # Per-foundation values average to the overall ones (6 items each).
    mean_s = np.mean([f.S for f in m.per_foundation.values()])
    assert mean_s == pytest.approx(m.S, rel=1e-12)


def test_non_integer_ratings_are_supported() -> None:
    rows = [(p, q, 0.5 * ((p * 3 + q + r) % 4)) for p in range(5) for q in (1, 2) for r in range(4)]
    m = analyze_ratings(*columns(rows), foundations=TWO, n_persona_boot=100, rng=0)
    assert math.isfinite(m.S_se) and m.S_se > 0


# --- randomness -------------------------------------------------------------------------------


def test_same_seed_same_result_and_seed_recorded() -> None:
    data = simulated(12, 4, 5, seed=3)
    fmap = {1: "A", 2: "A", 3: "B", 4: "B"}
    a = analyze_ratings(*data, foundations=fmap, n_persona_boot=200, n_rerun_boot=50, rng=42)
    b = analyze_ratings(*data, foundations=fmap, n_persona_boot=200, n_rerun_boot=50, rng=42)
    c = analyze_ratings(*data, foundations=fmap, n_persona_boot=200, n_rerun_boot=50, rng=43)
    assert a == b
    assert a.seed == 42
    assert a.S_se != c.S_se
    fresh = analyze_ratings(*data, foundations=fmap, n_persona_boot=200, n_rerun_boot=50)
    assert isinstance(fresh.seed, int)
    again = analyze_ratings(
        *data, foundations=fmap, n_persona_boot=200, n_rerun_boot=50, rng=fresh.seed
    )
    assert again == fresh
    gen = analyze_ratings(
        *data,
        foundations=fmap,
        n_persona_boot=200,
        n_rerun_boot=50,
        rng=np.random.default_rng(5),
    )
    assert gen.seed is None


def test_resolve_rng() -> None:
    gen, seed = resolve_rng(7)
    assert seed == 7 and gen.random() == np.random.default_rng(7).random()
    _, drawn = resolve_rng(None)
    assert isinstance(drawn, int) and 0 <= drawn < 2**63


@pytest.mark.parametrize("table", [[[0.0, 5, 3, 3], [1, 1, 2, 4]], [[0.5, 1.25, 3, 3]]])
def test_resample_sums_equal_a_direct_resampling(table: list[list[float]]) -> None:
    values = np.asarray(table, dtype=np.float64)
    n = values.shape[1]
    s1, s2 = _resample_sums(values, n, 30, np.random.default_rng(9))
    # Same stream, direct computation: draws laid out (n, B, C), index floor(u * n').
    u = np.random.default_rng(9).random((n, 30, len(values)), dtype=np.float32)
    idx = (u * np.nextafter(np.float32(n), np.float32(0))).astype(int)
    x = values[np.arange(len(values))[None, None, :], idx]
    np.testing.assert_allclose(s1, x.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s2, (x * x).sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937])
def test_persona_weights_are_the_draws_and_leave_the_generator_as_drawing_does(
    bit_generator: type[np.random.BitGenerator],
) -> None:
    """Stored weights come back for a state met before; the stream goes on unchanged."""

    def drawn(rng: np.random.Generator, n_boot: int, n_p: int) -> np.ndarray:
        picks = rng.integers(0, n_p, size=(n_boot, n_p))
        return np.stack([np.bincount(row, minlength=n_p) for row in picks]).astype(float)

    for n_boot, n_p in [(300, 7), (5, 40), (300, 7)]:
        plain = np.random.Generator(bit_generator(11))
        expected, after_plain = drawn(plain, n_boot, n_p), plain.random(3)
        for _ in range(2):  # the second time comes from the store
            rng = np.random.Generator(bit_generator(11))
            weights = _persona_weights(rng, n_boot, n_p)
            np.testing.assert_array_equal(weights, expected)
            np.testing.assert_array_equal(rng.random(3), after_plain)
            assert not weights.flags.writeable
    other = np.random.Generator(np.random.PCG64(12))
    assert not np.array_equal(_persona_weights(other, 300, 7), expected)


def test_two_valued_cells_resample_as_binomial_counts() -> None:
    # Cells {2 x 1, 8 x 4} and {9 x 0, 1 x 3}: K ~ Binomial(10, 0.8) and (10, 0.1).
    low, high = np.array([1.0, 0.0]), np.array([4.0, 3.0])
    n_high, n = np.array([8, 1]), 10
    mean, sd = _resample_two_valued(low, high, n_high, n, 20000, np.random.default_rng(4))
    k = np.rint((mean - low) * n / (high - low)).astype(int)
    np.testing.assert_allclose(mean, low + k * (high - low) / n, rtol=1e-12)
    for c in range(2):
        draws = [high[c]] * k[0, c] + [low[c]] * (n - k[0, c])
        assert sd[0, c] == pytest.approx(np.std(draws, ddof=1), rel=1e-12, abs=1e-15)
        q = n_high[c] / n
        pmf = np.array([math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(n + 1)])
        freq = np.bincount(k[:, c], minlength=n + 1) / len(k)
        # Binomial standard error of each frequency, 5 sigma plus a floor.
        assert np.all(np.abs(freq - pmf) <= 5 * np.sqrt(pmf * (1 - pmf) / len(k)) + 1e-4)


@pytest.mark.parametrize("n", [10, 70])
def test_two_valued_draws_invert_the_binomial_cdf(n: int) -> None:
    # K = number of CDF values <= u, whichever way it is counted (comparisons for
    # small n, a sorted search for large n), from one uniform per cell and draw.
    n_high = np.array([1, n // 2, n - 1, n // 2])
    k = _two_valued_draws(n_high, n, 50, np.random.default_rng(8))
    u = np.random.default_rng(8).random((50, len(n_high)))
    for c, j in enumerate(n_high):
        q = j / n
        pmf = [math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(n)]
        expected = np.searchsorted(np.cumsum(pmf), u[:, c], side="right")
        assert np.array_equal(k[:, c], expected), c


def _naive_replicates(
    cells: list[list[np.ndarray]], draws: int, seed: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-item replicates (draws, Q) of sd_p(mu) and mean_p(sigma), computed plainly."""
    rng = np.random.default_rng(seed)
    s_rep, sig_rep = [], []
    for _ in range(draws):
        if mode == "persona":
            pick = rng.integers(0, len(cells), len(cells))
            chosen = [cells[i] for i in pick]
        else:
            chosen = [[rng.choice(c, size=len(c)) for c in row] for row in cells]
        m = np.array([[c.mean() for c in row] for row in chosen])
        s = np.array([[c.std(ddof=1) if len(c) > 1 else 0.0 for c in row] for row in chosen])
        s_rep.append(np.std(m, axis=0, ddof=1))
        sig_rep.append(s.mean(axis=0))
    return np.array(s_rep), np.array(sig_rep)


def test_bootstrap_errors_agree_with_a_naive_bootstrap() -> None:
    rng = np.random.default_rng(11)
    rows = []
    for p in range(8):
        for q, top in ((1, 6), (2, 2), (3, 3)):  # spread differs by item; 2: two-valued
            n = 4 if p % 3 else 3  # cells of all items share sizes: groups mix items
            rows += [(p, q, float(v)) for v in rng.integers(0, top, n)]
    data = columns(rows)
    cells = cell_ratings(*data)
    nested = [[cells.values[p, q, : cells.counts[p, q]] for q in range(3)] for p in range(8)]
    fmap = {1: "A", 2: "B", 3: "C"}

    def check(result: RunMetrics, s_rep: np.ndarray, sig_rep: np.ndarray) -> None:
        assert result.S_se == pytest.approx(np.std(s_rep.mean(axis=1), ddof=1), rel=0.1)
        assert result.sigma_bar_se == pytest.approx(np.std(sig_rep.mean(axis=1), ddof=1), rel=0.1)
        for col, name in enumerate("ABC"):
            found = result.per_foundation[name]
            assert found.S_se == pytest.approx(np.std(s_rep[:, col], ddof=1), rel=0.1), name
            assert found.sigma_bar_se == pytest.approx(np.std(sig_rep[:, col], ddof=1), rel=0.1), (
                name
            )

    # Rerun part alone: one persona draw has sd 0 by definition.
    rerun = analyze_ratings(*data, foundations=fmap, n_persona_boot=1, n_rerun_boot=4000, rng=1)
    check(rerun, *_naive_replicates(nested, 2000, 2, "rerun"))
    persona = analyze_ratings(*data, foundations=fmap, n_persona_boot=4000, n_rerun_boot=0, rng=1)
    check(persona, *_naive_replicates(nested, 3000, 3, "persona"))
    both = analyze_ratings(*data, foundations=fmap, n_persona_boot=4000, n_rerun_boot=4000, rng=1)
    assert both.S_se == pytest.approx(math.hypot(rerun.S_se, persona.S_se), rel=0.1)


def test_standard_error_shrinks_with_more_personas() -> None:
    fmap = {q: "A" for q in range(1, 6)}
    small = analyze_ratings(*simulated(20, 5, 5, seed=4), foundations=fmap, rng=0)
    large = analyze_ratings(*simulated(320, 5, 5, seed=4), foundations=fmap, rng=0)
    # sqrt(320 / 20) = 4: allow for sampling noise.
    assert 2.5 < small.S_se / large.S_se < 6.0
    assert 2.5 < small.sigma_bar_se / large.sigma_bar_se < 6.0


def test_to_dict_is_json_serialisable() -> None:
    m = analyze_ratings(*columns(ROWS), foundations=TWO, n_persona_boot=10, rng=3)
    data = json.loads(json.dumps(m.to_dict()))
    assert data["S"] == m.S
    assert data["per_foundation"]["A"]["items"] == [1]
    assert data["seed"] == 3


# --- validation -------------------------------------------------------------------------------

P, Q, R = columns(ROWS)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"persona_ids": P[:-1]}, "equal lengths"),
        ({"persona_ids": P.reshape(-1, 1)}, "persona_ids must be 1-D"),
        ({"item_ids": Q + 0.5}, "item_ids must hold integers"),
        ({"persona_ids": np.array(["a"] * len(P))}, "persona_ids must hold integers"),
        ({"n_persona_boot": 0}, "n_persona_boot must be >= 1"),
        ({"n_persona_boot": 2.5}, "n_persona_boot must be an integer"),
        ({"n_rerun_boot": -1}, "n_rerun_boot must be >= 0"),
        ({"rng": "seed"}, "rng must be"),
        ({"rng": -3}, "rng seed must be >= 0"),
        ({"foundations": {1: "A"}}, "foundations has no entry for item id(s) [2]"),
        ({"persona_ids": np.zeros(len(P), dtype=int)}, "at least 2 personas"),
        (
            {"persona_ids": np.array([], int), "item_ids": np.array([], int), "ratings": []},
            "empty",
        ),
    ],
)
def test_analyze_ratings_validation(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"persona_ids": P, "item_ids": Q, "ratings": R, "foundations": TWO}
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        analyze_ratings(**args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_matrix_function_validation() -> None:
    with pytest.raises(ValueError, match="mu needs at least 2"):
        susceptibility(np.ones((1, 3)))
    with pytest.raises(ValueError, match="mu must be 2-D"):
        susceptibility(np.ones(3))
    with pytest.raises(ValueError, match="sigma contains NaN"):
        mean_sigma(np.array([[np.nan, 1.0]]))


# --- exact distributions ----------------------------------------------------------------------


def test_exact_moments_of_known_distributions() -> None:
    scale = [0, 1, 2]
    # persona 0: item 1 uniform on {0, 2} (mu 1, sd 1); item 2 point mass at 2.
    # persona 1: item 1 point mass at 0; item 2 uniform on {0, 1, 2} (mu 1, sd sqrt(2/3)).
    probs = [[0.5, 0, 0.5], [0, 0, 1], [1, 0, 0], [1, 1, 1]]  # last row unnormalised
    m = analyze_distributions(
        [0, 0, 1, 1], [1, 2, 1, 2], probs, scale=scale, foundations=TWO, n_persona_boot=50, rng=0
    )
    # item 1 means 1, 0 -> sd sqrt(1/2); item 2 means 2, 1 -> sd sqrt(1/2).
    assert pytest.approx(math.sqrt(0.5), rel=1e-12) == m.S
    assert m.sigma_bar == pytest.approx((1 + 0 + 0 + math.sqrt(2 / 3)) / 4, rel=1e-12)
    assert m.method == "exact"
    assert m.n_rerun_boot == 0
    assert m.temperature_ratio is None


def test_tempering_sharpens_and_flattens() -> None:
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(tempered(p, 1.0), p, rtol=1e-15)
    np.testing.assert_allclose(tempered(p, 0.5)[0], [0.04 / 0.68, 0.64 / 0.68], rtol=1e-12)
    np.testing.assert_allclose(tempered(p, 1e-3)[0], [0.0, 1.0], atol=1e-12)  # no underflow
    np.testing.assert_allclose(tempered(p, 1e6)[0], [0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(tempered(p, 0.5)[1], [0.5, 0.5])
    base = analyze_distributions(
        [0, 1], [1, 1], [[0.2, 0.8], [0.7, 0.3]], scale=[0, 1], foundations={1: "A"}, rng=0
    )
    sharp = analyze_distributions(
        [0, 1],
        [1, 1],
        [[0.2, 0.8], [0.7, 0.3]],
        scale=[0, 1],
        foundations={1: "A"},
        rng=0,
        temperature=0.5,
    )
    assert sharp.sigma_bar < base.sigma_bar
    assert sharp.temperature_ratio == 0.5
    p0 = 0.64 / 0.68
    assert sharp.per_foundation["A"].sigma_bar == pytest.approx(
        (math.sqrt(p0 * (1 - p0)) + math.sqrt(0.49 / 0.58 * 0.09 / 0.58)) / 2, rel=1e-12
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"probs": [[0.5, 0.5, 0.0]] * 4}, "probs has 3 columns but scale has 2"),
        ({"probs": [0.5, 0.5, 0.5, 0.5]}, "probs must be 2-D"),
        ({"probs": [[1.5, -0.5]] * 4}, "non-negative"),
        ({"probs": [[0.0, 0.0]] * 4}, "sums to 0"),
        ({"item_ids": [1, 1, 1, 2]}, "appears more than once"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"n_persona_boot": 0}, "n_persona_boot"),
    ],
)
def test_analyze_distributions_validation(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {
        "persona_ids": [0, 0, 1, 1],
        "item_ids": [1, 2, 1, 2],
        "probs": [[0.5, 0.5]] * 4,
        "scale": [0, 1],
        "foundations": TWO,
    }
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        analyze_distributions(**args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --- self profile -----------------------------------------------------------------------------


def test_self_profile() -> None:
    items = [1, 1, 1, 2, 2, 3, 3, 3, 4]
    ratings = [5, 5, 4, 2, -1, 0, 2, 4, -1]
    prof = self_profile(items, ratings, foundations={1: "A", 2: "A", 3: "B", 4: "B"})
    assert prof.mean["A"] == pytest.approx((14 / 3 + 2) / 2, rel=1e-12)
    assert prof.sd["A"] == pytest.approx((np.std([5, 5, 4], ddof=1) + 0.0) / 2, rel=1e-12)
    assert prof.mean["B"] == pytest.approx(2.0)
    assert prof.sd["B"] == pytest.approx(2.0)
    assert prof.items == {"A": (1, 2), "B": (3,)}
    assert prof.missing_items == (4,)
    assert json.loads(json.dumps(prof.to_dict()))["mean"]["B"] == 2.0


def test_self_profile_from_distributions_matches_hand_values() -> None:
    from persona_collapse.stats.metrics import self_profile_from_distributions

    scale = [0, 1, 2, 3, 4, 5]
    # items 1 and 6 are Harm/Care; item 2 Fairness/Reciprocity
    probs = np.array(
        [
            [0, 0, 0, 0, 0.5, 0.5],  # mean 4.5, sd 0.5
            [0, 0, 0, 0, 0, 1.0],  # mean 5, sd 0
            [0, 0, 1.0, 0, 0, 0],  # mean 2, sd 0
        ]
    )
    prof = self_profile_from_distributions([1, 2, 6], probs, scale=scale)
    assert prof.mean["Harm/Care"] == pytest.approx((4.5 + 2.0) / 2)
    assert prof.sd["Harm/Care"] == pytest.approx(0.25)
    assert prof.mean["Fairness/Reciprocity"] == pytest.approx(5.0)
    # sharpening to a tenth of the temperature pushes item 1 nowhere (tie) but keeps sums
    sharp = self_profile_from_distributions([1, 2, 6], probs, scale=scale, temperature=0.1)
    assert sharp.mean["Harm/Care"] == pytest.approx(prof.mean["Harm/Care"])
    with pytest.raises(ValueError, match="probs"):
        self_profile_from_distributions([1, 2], probs, scale=scale)
    with pytest.raises(ValueError, match="distinct"):
        self_profile_from_distributions([1, 1, 6], probs, scale=scale)


@pytest.mark.parametrize("scale", [None, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]])
def test_rerun_draws_with_count_features_equal_the_plain_rerun_bootstrap(
    scale: list[float] | None,
) -> None:
    # With count features, resampled cells of three or more values are summed as scale
    # counts (one gather per drawn rating); without, as packed ratings. Same uniforms,
    # exact integer sums: the replicates must be bit-identical. On a half-step scale the
    # steps are not integral: the ratings are then resampled as before, counts beside.
    from persona_collapse.stats.metrics import (
        complete_cells,
        foundation_columns,
        rerun_bootstrap_replicates,
        rerun_bootstrap_sums,
        sampled_count_features,
    )

    persona_ids, item_ids, ratings = simulated(40, 6, 10, seed=3)
    if scale is not None:
        ratings = ratings / 2
    cells, _ = complete_cells(cell_ratings(persona_ids, item_ids, ratings))
    groups = foundation_columns(cells.item_ids, {i: "AB"[i % 2] for i in range(1, 7)})
    feats = sampled_count_features(cells, groups, scale)
    assert feats is not None
    plain = rerun_bootstrap_replicates(cells, n_boot=37, rng=np.random.default_rng(5))
    counted = rerun_bootstrap_sums(cells, feats, n_boot=37, rng=np.random.default_rng(5))
    assert counted[2] is not None
    np.testing.assert_array_equal(counted[0], plain[0])
    np.testing.assert_array_equal(counted[1], plain[1])


def test_segment_sums_equal_a_reduceat_per_column() -> None:
    # Columns of non-negative integers are summed packed as digits (several per float64,
    # several words when their bounds do not fit one); the rest one by one. Every column
    # must hold exactly the floats of a reduceat of its own gathered draws.
    from persona_collapse.stats.metrics import _segment_sums

    rng = np.random.default_rng(11)
    n_rows = 50
    columns = [
        rng.integers(0, 11, n_rows).astype(np.float64),  # answer counts
        rng.integers(0, 2, n_rows).astype(np.float64),  # a flag
        rng.random(n_rows) * 3,  # not integral: summed alone
        rng.integers(0, 11, n_rows) * 1e12,  # large integers: a second word
        rng.integers(-5, 5, n_rows).astype(np.float64),  # negative: summed alone
        rng.integers(0, 11, n_rows) * 2.0**50,  # sums may round: summed alone
        rng.integers(0, 7, n_rows).astype(np.float64),
    ]
    values = np.stack(columns, axis=1)
    values[3, 2] = np.nan
    which = rng.integers(0, n_rows, (23, 40)).astype(np.intp)
    starts = np.array([0, 3, 4, 21], dtype=np.intp)
    sizes = np.diff(np.r_[starts, which.shape[1]])
    sums = _segment_sums(values, which, starts, sizes)
    for col in range(values.shape[1]):
        expected = np.add.reduceat(values[:, col].take(which), starts, axis=1)
        np.testing.assert_array_equal(sums[:, :, col], expected)


@pytest.mark.parametrize(
    "grid", [[0.0, 1, 2, 3, 4, 5], [-2.5, -1.5, -0.5, 0.5], [0.0, 0.5, 1.0, 2.0]]
)
def test_scale_positions_find_each_value_or_report_off_scale(grid: list[float]) -> None:
    # Unit-step scales take a rounded offset instead of a search: same indices, and a
    # value between or beyond the points (or a near miss) still makes the run off-scale.
    from persona_collapse.stats.metrics import _scale_positions

    points = np.asarray(grid)
    rng = np.random.default_rng(2)
    index = rng.integers(0, len(points), (4, 3, 5))
    values = points[index]
    values[0, 0, 3:] = np.nan
    found = _scale_positions(values, points)
    assert found is not None
    expected = np.where(np.isnan(values), -1, index)
    np.testing.assert_array_equal(found, expected)
    for off in (points[0] - 1, points[-1] + 1, points[1] + 0.25, np.nextafter(points[1], 9)):
        bad = values.copy()
        bad[1, 2, 0] = off
        assert _scale_positions(bad, points) is None


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.uint64, np.float64])
def test_cell_ratings_same_cells_for_any_integer_id_type(dtype: type) -> None:
    # Small non-negative ids are indexed by a presence count (uint64 by a scatter, which
    # bincount does not take); every id type must give the same cells.
    persona_ids, item_ids, ratings = columns(ROWS)
    expected = cell_ratings(persona_ids, item_ids, ratings)
    got = cell_ratings(persona_ids.astype(dtype), item_ids.astype(dtype), ratings)
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.counts, expected.counts)
    np.testing.assert_array_equal(got.persona_ids, expected.persona_ids)
    np.testing.assert_array_equal(got.item_ids, expected.item_ids)
