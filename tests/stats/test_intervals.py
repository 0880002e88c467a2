"""The corrected S interval: Student-t quantiles, the delete-one jackknife SE and the
kurtosis-adjusted degrees of freedom."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.stats.significance import (
    INTERVAL_JACKKNIFE_T,
    INTERVAL_WALD,
    OVERALL,
    RunCells,
    c4,
    family_significance,
    jackknife_df,
    jackknife_se,
    jackknife_se_corrected_s,
    run_estimates,
    t_quantile,
)


@pytest.mark.parametrize(
    ("confidence", "df", "expected"),
    [
        (0.95, 1, 12.706205),
        (0.95, 2, 4.302653),
        (0.95, 9, 2.262157),
        (0.95, 49, 2.009575),
        (0.95, 99, 1.984217),
        (0.95, 199, 1.971957),
        (0.99, 10, 3.169273),
        (0.90, 30, 1.697261),
    ],
)
def test_t_quantile_matches_tables(confidence: float, df: int, expected: float) -> None:
    assert t_quantile(confidence, df) == pytest.approx(expected, abs=2e-6)


def test_t_quantile_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(1.0, 10)


def _brute_force_leave_one_out(mu: np.ndarray, noise: np.ndarray) -> np.ndarray:
    n_p = mu.shape[0]
    values = []
    for p in range(n_p):
        keep = np.arange(n_p) != p
        spread = mu[keep].var(axis=0, ddof=1) - noise[keep].mean(axis=0)
        values.append(np.sqrt(np.maximum(spread, 0.0)).mean())
    return np.array(values)


def _brute_force_jackknife(mu: np.ndarray, noise: np.ndarray) -> float:
    arr = _brute_force_leave_one_out(mu, noise)
    n_p = len(arr)
    return math.sqrt((n_p - 1) / n_p * float(((arr - arr.mean()) ** 2).sum()))


def test_jackknife_closed_form_matches_refitting() -> None:
    rng = np.random.default_rng(3)
    mu = rng.normal(2.5, 0.8, size=(40, 6))
    noise = rng.uniform(0.0, 0.05, size=(40, 6))
    averaged = np.concatenate([np.ones_like(mu), noise], axis=1)
    cols = np.array([1, 3, 4], dtype=np.intp)
    got = jackknife_se_corrected_s(mu, averaged, cols)
    assert got == pytest.approx(_brute_force_jackknife(mu[:, cols], noise[:, cols]), rel=1e-10)
    assert math.isnan(jackknife_se_corrected_s(mu[:2], averaged[:2], cols))


def test_jackknife_df_follows_the_kurtosis_of_the_pseudo_values() -> None:
    # constant or light-tailed (uniform: excess kurtosis -1.2) values keep P - 1
    assert jackknife_df(np.full(50, 0.3)) == 49
    assert jackknife_df(np.linspace(0.0, 1.0, 50)) == 49
    # one outlier among 50: excess kurtosis (1 - 6pq) / (pq) = 45.02 with p = 1/50, so
    # nu = 2 / (2/49 + 45.02/50) = 2.1
    assert jackknife_df(np.r_[np.zeros(49), 1.0]) == 2
    # heavy tails (chi-square with 1 df: excess kurtosis 12) lower nu well below P - 1
    draws = np.random.default_rng(4).chisquare(1, size=(200, 100))
    assert 10 <= float(np.median([jackknife_df(row) for row in draws])) <= 45
    # normal values: nu close to P - 1 (the sample kurtosis scatters around 0)
    normal = np.random.default_rng(5).normal(size=(200, 100))
    assert float(np.median([jackknife_df(row) for row in normal])) >= 60
    # the SE of a mean's leave-one-out values is sd / sqrt(P)
    x = np.random.default_rng(6).normal(size=30)
    loo = (x.sum() - x) / 29
    assert jackknife_se(loo) == pytest.approx(x.std(ddof=1) / math.sqrt(30), rel=1e-12)
    with pytest.raises(ValueError, match="at least 3"):
        jackknife_df(np.zeros(2))


def test_jackknife_se_of_a_normal_sd_matches_its_sampling_distribution() -> None:
    # Without rating noise S is the sample sd of normal draws, whose SE is about
    # sigma / sqrt(2 (P - 1)).
    rng = np.random.default_rng(11)
    sigma, n_p = 2.0, 400
    ses = []
    for _ in range(20):
        mu = rng.normal(0.0, sigma, size=(n_p, 1))
        averaged = np.zeros((n_p, 2))
        ses.append(jackknife_se_corrected_s(mu, averaged, np.array([0], dtype=np.intp)))
    assert float(np.mean(ses)) == pytest.approx(sigma / math.sqrt(2 * (n_p - 1)), rel=0.08)


def test_jackknife_t_interval_covers_a_normal_sd() -> None:
    # Known sampling distribution: the sd of 50 normal draws. 400 seeded replications,
    # Monte Carlo SE about 1.1 pp, so the bounds below are about 4 MC SEs wide.
    rng = np.random.default_rng(5)
    sigma, n_p, reps = 1.5, 50, 400
    q = t_quantile(0.95, n_p - 1)
    hits = 0
    for _ in range(reps):
        mu = rng.normal(0.0, sigma, size=(n_p, 1))
        est = float(mu[:, 0].std(ddof=1))
        se = jackknife_se_corrected_s(mu, np.zeros((n_p, 2)), np.array([0], dtype=np.intp))
        hits += abs(est - sigma) <= q * se
    assert 0.905 <= hits / reps <= 0.99


def _run(n_p: int, rng: np.random.Generator) -> RunCells:
    n_q, n = 6, 10
    profile = rng.normal(2.5, 0.7, size=(n_p, n_q, 1))
    ratings = np.clip(np.rint(profile + rng.normal(0.0, 0.6, size=(n_p, n_q, n))), 0, 5)
    mu = ratings.mean(axis=2)
    sigma = ratings.std(axis=2, ddof=1)
    return RunCells(
        persona_ids=np.arange(n_p, dtype=np.int64),
        item_ids=np.arange(1, n_q + 1, dtype=np.int64),
        mu=mu,
        sigma=sigma,
        counts=np.full((n_p, n_q), n, dtype=np.int64),
        cells=None,
        method="sampling",
        excluded_personas=(),
        foundations=dict.fromkeys(range(1, n_q + 1), "care"),
    )


def test_corrected_estimates_carry_jackknife_t_intervals() -> None:
    run = _run(60, np.random.default_rng(2))
    corrected = run_estimates(run, n_boot=200, rng=0)[OVERALL]
    s_low, s_high = corrected.interval("S")
    noise = run.sigma**2 / 10
    df = jackknife_df(_brute_force_leave_one_out(run.mu, noise))
    assert 1 <= df <= 59
    q = t_quantile(0.95, df)
    assert corrected.interval_methods["S"] == INTERVAL_JACKKNIFE_T
    assert s_low == pytest.approx(corrected.S - q * corrected.S_se)
    assert s_high == pytest.approx(corrected.S + q * corrected.S_se)
    averaged = np.concatenate([run.sigma, noise], axis=1)
    assert corrected.S_se == pytest.approx(
        jackknife_se_corrected_s(run.mu, averaged, np.arange(6, dtype=np.intp))
    )
    # sigma_bar: a mean's jackknife SE (sd / sqrt(P)); R follows by the delta method
    per_persona = (run.sigma / c4(10)).mean(axis=1)
    assert corrected.sigma_bar_se == pytest.approx(per_persona.std(ddof=1) / math.sqrt(60))
    assert corrected.R_se == pytest.approx(corrected.sigma_bar_se / corrected.sigma_bar**2)
    assert corrected.interval_methods["R"] == INTERVAL_JACKKNIFE_T
    r_low, r_high = corrected.interval("R")
    q_r = t_quantile(0.95, jackknife_df(per_persona))  # kurtosis of the pseudo-values
    assert r_high - r_low == pytest.approx(2 * q_r * corrected.R_se)
    data = corrected.to_dict()
    assert data["S_interval"] == INTERVAL_JACKKNIFE_T
    assert data["S_ci_low"] == s_low and data["R_ci_high"] > data["R"]
    # the reference estimator keeps its bootstrap SE and a normal interval
    reference = run_estimates(run, estimator="reference", n_boot=200, rng=0)[OVERALL]
    assert reference.interval_methods["S"] == INTERVAL_WALD
    low, high = reference.interval("S")
    assert high - low == pytest.approx(2 * 1.959964 * reference.S_se, rel=1e-6)


def _flat(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}/{key}"))
        return out
    return {prefix: data}


def test_the_other_estimator_leaves_the_chosen_one_unchanged() -> None:
    rng = np.random.default_rng(8)
    runs = {"base": _run(30, rng), "insecure": _run(30, rng)}
    alone = family_significance(runs, control=None, treatment=None, n_boot=60, rng=4, both=False)
    both = family_significance(runs, control=None, treatment=None, n_boot=60, rng=4)
    assert alone.other is None and alone.verdict_estimator == "reference"
    # Same draws; the wider weight-matrix product may only move the last bits.
    for key in ("contrasts", "estimates"):
        got, want = _flat(both.to_dict()[key]), _flat(alone.to_dict()[key])
        assert got.keys() == want.keys()
        for name, value in want.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name
            else:
                assert got[name] == value, name
    assert both.corrected is both.other and both.reference is both
    # the same family with the corrected estimator first: its numbers are the other's
    flipped = family_significance(
        runs, control=None, treatment=None, estimator="corrected", n_boot=60, rng=4
    )
    assert flipped.other is not None and flipped.other.estimator == "reference"
    assert flipped.test("insecure", "S").estimate == both.verdict("insecure", "S").estimate


def _foundation_run(n_p: int, rng: np.random.Generator) -> RunCells:
    """A run of 9 items in three foundations, one of a single item, uneven cell sizes."""
    n_q = 9
    counts = rng.integers(1, 12, size=(n_p, n_q))
    mu = rng.normal(2.5, 0.8, size=(n_p, n_q)) * 10.0 ** rng.integers(-3, 3, size=(n_p, n_q))
    sigma = np.where(counts >= 2, rng.gamma(2.0, 0.3, size=(n_p, n_q)), 0.0)
    names = ["care"] * 5 + ["fairness"] * 3 + ["loyalty"]
    return RunCells(
        persona_ids=np.arange(n_p, dtype=np.int64),
        item_ids=np.array([4, 1, 9, 2, 7, 3, 8, 5, 6], dtype=np.int64),
        mu=mu,
        sigma=sigma,
        counts=counts.astype(np.int64),
        cells=None,
        method="sampling",
        excluded_personas=(),
        foundations={i: names[k] for k, i in enumerate([4, 1, 9, 2, 7, 3, 8, 5, 6])},
    )


def test_jackknife_of_all_scopes_equals_scope_by_scope() -> None:
    """The scope-vectorised leave-one-out values and jackknife SE / df are the per-scope
    functions' floats exactly (also for a one-item scope)."""
    from persona_collapse.stats import significance as sig

    run = _foundation_run(40, np.random.default_rng(5))
    averaged = sig._averaged(run, "corrected")
    scopes = list(sig._scopes({"run": run}).values())
    assert min(len(cols) for cols in scopes) == 1
    for hook, name in ((sig._leave_one_out_corrected_s, "S"),):
        want = np.stack([hook(run.mu, averaged, cols) for cols in scopes])
        got = sig._leave_one_out_scopes(name, run.mu, averaged, scopes)
        np.testing.assert_array_equal(got, want, strict=True)
        wide = [cols for cols in scopes if len(cols) >= 2]
        np.testing.assert_array_equal(
            sig._leave_one_out_corrected_s_scopes(run.mu, averaged, wide),
            np.stack([hook(run.mu, averaged, cols) for cols in wide]),
            strict=True,
        )
    loo = np.stack([sig._leave_one_out_corrected_s(run.mu, averaged, c) for c in scopes])
    ses, dfs = sig._jackknife_rows(loo)
    for row, se, df in zip(loo, ses, dfs, strict=True):
        spread = row - row.mean()
        assert se == float(math.sqrt((len(row) - 1) / len(row) * float(spread @ spread)))
        assert df == jackknife_df(row) and se == jackknife_se(row)


def test_corrected_estimates_without_draws_equal_those_with_draws() -> None:
    """With a seed no bootstrap draw is made (every corrected SE is a jackknife one);
    the estimates equal those of the drawing path, which a Generator still takes (and
    advances, as before)."""
    run = _foundation_run(30, np.random.default_rng(6))
    seeded = run_estimates(run, n_boot=500, rng=3)
    generator = np.random.default_rng(3)
    drawn = run_estimates(run, n_boot=500, rng=generator)
    assert generator.bit_generator.state != np.random.default_rng(3).bit_generator.state
    assert list(seeded) == list(drawn) == [OVERALL, "care", "fairness", "loyalty"]
    for scope, est in seeded.items():
        assert repr(est.to_dict()) == repr(drawn[scope].to_dict()), scope


def test_c4_of_whole_cell_sizes_equals_the_float_path() -> None:
    sizes = np.random.default_rng(1).integers(0, 300, size=(50, 30))
    np.testing.assert_array_equal(c4(sizes), c4(sizes.astype(np.float64)), strict=True)
    small = c4(np.array([0, 1, 2]))
    assert np.isnan(small[:2]).all() and small[2] == pytest.approx(math.sqrt(2 / math.pi))
