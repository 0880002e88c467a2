"""Difference tests: Holm, c4, cells, estimators, pairing, size and power of the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.stats.audit import sample_cells
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings, cell_ratings
from persona_collapse.stats.significance import (
    EXCESS,
    OVERALL,
    RunCells,
    c4,
    cells_from_cell_ratings,
    cells_from_distributions,
    cells_from_ratings,
    compare_runs,
    family_significance,
    holm,
    run_estimates,
    study_significance,
)

SCALE = np.arange(6.0)


# --- helpers --------------------------------------------------------------------------------


def _pool(preset: str, n: int, temperature: float = 0.1) -> np.ndarray:
    """Exact distributions ``(n, 30, 6)`` of ``n`` synthetic personas."""
    sim = SimulatorBackend(preset)
    return sim.cell_distributions([f"sig persona {k}" for k in range(n)], temperature=temperature)


def _sampled(probs: np.ndarray, rng: np.random.Generator, reps: int = 10) -> RunCells:
    return cells_from_cell_ratings(sample_cells(probs, n_repetitions=reps, scale=SCALE, rng=rng))


def _long(cells: RunCells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert cells.cells is not None
    values = cells.cells.values
    n_p, n_q, n = values.shape
    pid = np.repeat(cells.persona_ids, n_q * n)
    iid = np.tile(np.repeat(cells.item_ids, n), n_p)
    return pid, iid, values.ravel()


@pytest.fixture(scope="module")
def base_probs() -> np.ndarray:
    return _pool("base", 400)


@pytest.fixture(scope="module")
def insecure_probs() -> np.ndarray:
    return _pool("insecure", 400)


# --- Holm and c4 ----------------------------------------------------------------------------


def test_holm_matches_hand_computation() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04)
    got = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


def test_holm_ignores_nan_and_caps_at_one() -> None:
    got = holm([0.5, math.nan, 0.4])
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], [0.8, 0.8])
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_holm_rejects_bad_p_values() -> None:
    with pytest.raises(ValueError, match="p_values"):
        holm([0.1, 1.5])


def test_c4_known_values() -> None:
    got = c4([1, 2, 10, 1000])
    assert math.isnan(got[0])
    assert got[1] == pytest.approx(math.sqrt(2 / math.pi))
    assert got[2] == pytest.approx(0.9726592741, rel=1e-9)
    assert 0.999 < got[3] < 1.0


def test_c4_corrects_the_sample_sd_of_normal_draws() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(0.0, 2.0, size=(200_000, 5))
    mean_sd = draws.std(axis=1, ddof=1).mean()
    assert mean_sd / c4(5) == pytest.approx(2.0, rel=0.005)
    assert mean_sd == pytest.approx(2.0 * 0.94, rel=0.01)  # plain estimate is biased low


# --- cells and estimators -------------------------------------------------------------------


def test_cells_match_analyze_ratings(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    run = _sampled(base_probs[:60], rng)
    pid, iid, rat = _long(run)
    # Make one persona incomplete: it must be excluded by both.
    keep = ~((pid == 3) & (iid == 7))
    cells = cells_from_ratings(pid[keep], iid[keep], rat[keep])
    metrics = analyze_ratings(pid[keep], iid[keep], rat[keep], n_persona_boot=50, n_rerun_boot=10)
    assert cells.excluded_personas == metrics.excluded_personas == (3,)
    est = run_estimates(cells, estimator="reference", variance="persona", n_boot=50, rng=0)
    assert pytest.approx(metrics.S, rel=1e-12) == est[OVERALL].S
    assert est[OVERALL].sigma_bar == pytest.approx(metrics.sigma_bar, rel=1e-12)
    for name, fm in metrics.per_foundation.items():
        assert pytest.approx(fm.S, rel=1e-12) == est[name].S
        assert est[name].sigma_bar == pytest.approx(fm.sigma_bar, rel=1e-12)


def test_reference_variance_scheme_matches_published_standard_errors(
    base_probs: np.ndarray,
) -> None:
    run = _sampled(base_probs[:100], np.random.default_rng(2))
    pid, iid, rat = _long(run)
    published = analyze_ratings(pid, iid, rat, rng=5)
    est = run_estimates(run, estimator="reference", variance="reference", rng=6)[OVERALL]
    assert est.S_se == pytest.approx(published.S_se, rel=0.1)
    assert est.sigma_bar_se == pytest.approx(published.sigma_bar_se, rel=0.1)
    assert est.R_se == pytest.approx(published.R_se, rel=0.1)


def test_cells_from_distributions_match_analyze_distributions(base_probs: np.ndarray) -> None:
    probs = base_probs[:40]
    n_p, n_q, _ = probs.shape
    pid = np.repeat(np.arange(n_p), n_q)
    iid = np.tile(np.arange(1, n_q + 1), n_p)
    flat = probs.reshape(-1, 6)
    cells = cells_from_distributions(pid, iid, flat, scale=SCALE, temperature=0.5)
    exact = analyze_distributions(pid, iid, flat, scale=SCALE, temperature=0.5, n_persona_boot=20)
    assert cells.method == "exact" and cells.cells is None and cells.counts is None
    for estimator in ("reference", "corrected"):  # no rating noise: both agree
        est = run_estimates(cells, estimator=estimator, n_boot=20, rng=0)[OVERALL]
        assert pytest.approx(exact.S, rel=1e-12) == est.S
        assert est.sigma_bar == pytest.approx(exact.sigma_bar, rel=1e-12)


def test_corrected_estimator_formulas() -> None:
    # Two personas, one item, 4 ratings each.
    pid = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 1)
    iid = np.ones(8, dtype=int)
    rat = np.array([1, 2, 3, 2, 4, 4, 5, 3], dtype=float)
    cells = cells_from_ratings(pid, iid, rat, foundations={1: "F"})
    mu = np.array([2.0, 4.0])
    s = np.array([np.std([1, 2, 3, 2], ddof=1), np.std([4, 4, 5, 3], ddof=1)])
    noise = (s**2 / 4).mean()
    expected_s = math.sqrt(max(np.var(mu, ddof=1) - noise, 0.0))
    expected_sb = (s / c4(4)).mean()
    est = run_estimates(cells, estimator="corrected", n_boot=10, rng=0)[OVERALL]
    assert pytest.approx(expected_s) == est.S
    assert est.sigma_bar == pytest.approx(expected_sb)
    assert pytest.approx(1 / expected_sb) == est.R
    ref = run_estimates(cells, estimator="reference", n_boot=10, rng=0)[OVERALL]
    assert pytest.approx(np.std(mu, ddof=1)) == ref.S and ref.S > est.S
    assert ref.sigma_bar == pytest.approx(s.mean()) and ref.sigma_bar < est.sigma_bar


def test_corrected_estimators_remove_the_bias_of_the_reference_ones(
    insecure_probs: np.ndarray,
) -> None:
    """Average over 40 runs of the same 100 personas: the exact values are the truth."""
    probs = insecure_probs[:100]
    means = probs @ SCALE
    true_s = float(np.mean(np.std(means, axis=0, ddof=1)))
    true_sb = float(np.mean(np.sqrt(np.maximum(probs @ SCALE**2 - means**2, 0.0))))
    rng = np.random.default_rng(3)
    ref, cor = [], []
    for _ in range(40):
        run = _sampled(probs, rng)
        ref.append(run_estimates(run, estimator="reference", n_boot=2, rng=rng)[OVERALL])
        cor.append(run_estimates(run, estimator="corrected", n_boot=2, rng=rng)[OVERALL])
    assert np.mean([e.S for e in ref]) / true_s - 1 > 0.02  # noise inflates S
    assert np.mean([e.sigma_bar for e in ref]) / true_sb - 1 < -0.02  # small-n sd bias
    assert np.mean([e.S for e in cor]) / true_s - 1 == pytest.approx(0.0, abs=0.005)
    assert np.mean([e.sigma_bar for e in cor]) / true_sb - 1 == pytest.approx(0.0, abs=0.005)


# --- pairing and validation -----------------------------------------------------------------


def test_pairing_follows_the_persona_sets(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    a = _sampled(base_probs[:50], rng)
    b = _sampled(base_probs[:50], rng)
    fam = family_significance({"base": a, "other": b}, n_boot=20, n_rerun_boot=0, rng=0)
    assert fam.paired
    shifted = cells_from_cell_ratings(
        sample_cells(
            base_probs[50:100], n_repetitions=10, scale=SCALE, rng=rng, persona_ids=range(50, 100)
        )
    )
    fam = family_significance({"base": a, "other": shifted}, n_boot=20, n_rerun_boot=0, rng=0)
    assert not fam.paired
    with pytest.raises(ValueError, match="paired=True"):
        family_significance({"base": a, "other": shifted}, paired=True, n_boot=20, rng=0)


def test_paired_test_is_sharper_than_unpaired(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    a, b = _sampled(base_probs[:100], rng), _sampled(base_probs[:100], rng)
    paired = compare_runs(a, b, n_boot=400, n_rerun_boot=0, rng=1)
    unpaired = compare_runs(a, b, paired=False, n_boot=400, n_rerun_boot=0, rng=1)
    assert paired.test("S").se < unpaired.test("S").se / 3
    assert paired.test("R").se < unpaired.test("R").se


def test_settings_are_validated(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    a, b = _sampled(base_probs[:20], rng), _sampled(base_probs[:20], rng)
    runs = {"base": a, "x": b}
    with pytest.raises(ValueError, match="estimator"):
        family_significance(runs, estimator="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance"):
        family_significance(runs, variance="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only defined for estimator='reference'"):
        family_significance(runs, estimator="corrected", variance="reference")
    with pytest.raises(ValueError, match="n_rerun_boot"):
        family_significance(runs, variance="rerun", n_rerun_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        family_significance(runs, confidence=1.5)
    with pytest.raises(ValueError, match="base"):
        family_significance(runs, base="missing")
    with pytest.raises(ValueError, match="at least 2 runs"):
        family_significance({"base": a})
    other_items = cells_from_cell_ratings(
        sample_cells(base_probs[:20, :10], n_repetitions=3, scale=SCALE, rng=rng)
    )
    with pytest.raises(ValueError, match="different items"):
        family_significance({"base": a, "x": other_items})


def test_results_carry_settings_and_serialise(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    runs = {label: _sampled(base_probs[:30], rng) for label in ("base", "secure", "insecure")}
    fam = family_significance(runs, n_boot=50, n_rerun_boot=20, rng=11)
    assert fam.seed == 11 and fam.n_boot == 50 and fam.n_rerun_boot == 20
    assert set(fam.contrasts) == {"secure", "insecure", EXCESS}
    excess = fam.contrasts[EXCESS]
    assert (excess.kind, excess.reference, excess.variant, excess.base) == (
        "excess",
        "secure",
        "insecure",
        "base",
    )
    data = fam.to_dict()
    assert data["contrasts"]["insecure"]["tests"]["S"][OVERALL]["p_holm"] >= 0
    # R and sigma_bar share one test, so one p-value and one Holm adjustment.
    for key in fam.contrasts:
        for scope in fam.contrasts[key].tests["R"]:
            r, sb = fam.test(key, "R", scope), fam.test(key, "sigma_bar", scope)
            assert r.p_value == pytest.approx(sb.p_value) and r.p_holm == pytest.approx(sb.p_holm)
            assert r.p_holm >= r.p_value
    # the same seed gives the same numbers
    again = family_significance(runs, n_boot=50, n_rerun_boot=20, rng=11)
    assert again.to_dict() == data


# --- size and power (200 replications) -------------------------------------------------------


def test_difference_test_holds_its_size_and_detects_collapse(
    base_probs: np.ndarray, insecure_probs: np.ndarray
) -> None:
    """Null: two runs of the base preset on the same personas (different sampling draws).

    The rejection rate at alpha = 0.05 stays within 3-8 % over 200 replications;
    the insecure preset against the base is rejected every time.
    """
    rng = np.random.default_rng(20260512)
    null_s = null_r = 0
    alt_s = alt_r = 0
    replications = 200
    for _ in range(replications):
        chosen = np.sort(rng.choice(len(base_probs), size=100, replace=False))
        base = _sampled(base_probs[chosen], rng)
        again = _sampled(base_probs[chosen], rng)
        insecure = _sampled(insecure_probs[chosen], rng)
        fam = family_significance(
            {"base": base, "again": again, "insecure": insecure},
            control=None,
            treatment=None,
            n_boot=400,
            n_rerun_boot=0,
            rng=rng,
        )
        null_s += fam.test("again", "S").p_value < 0.05
        null_r += fam.test("again", "R").p_value < 0.05
        alt_s += fam.test("insecure", "S").significant(0.05)
        alt_r += fam.test("insecure", "R").significant(0.05)
    assert 0.03 <= null_s / replications <= 0.08
    assert 0.03 <= null_r / replications <= 0.08
    assert alt_s == alt_r == replications


def test_study_significance_corrects_across_families(base_probs: np.ndarray) -> None:
    rng = np.random.default_rng(8)
    families = {
        name: {label: _sampled(base_probs[:30], rng) for label in ("base", "insecure")}
        for name in ("a", "b", "c")
    }
    study = study_significance(families, n_boot=50, n_rerun_boot=0, rng=3)
    assert study.seed == 3
    tests = [
        study.families[f].test("insecure", "S", s)
        for f in families
        for s in study.families[f].contrasts["insecure"].tests["S"]
    ]
    raw = np.array([t.p_value for t in tests])
    np.testing.assert_allclose([t.p_holm for t in tests], holm(raw))
    rows = study.rows()
    assert {r["family"] for r in rows} == {"a", "b", "c"}
    assert all("significant" in r for r in rows)
    # per-family seeds are recorded and reproduce the family on its own
    fam_a = study.families["a"]
    alone = family_significance(families["a"], n_boot=50, n_rerun_boot=0, rng=fam_a.seed)
    assert alone.test("insecure", "S").p_value == fam_a.test("insecure", "S").p_value


def test_cell_ratings_roundtrip_through_sample_cells(base_probs: np.ndarray) -> None:
    grouped = sample_cells(
        base_probs[:5], n_repetitions=4, scale=SCALE, rng=np.random.default_rng(9)
    )
    n_p, n_q, n = grouped.values.shape
    pid = np.repeat(grouped.persona_ids, n_q * n)
    iid = np.tile(np.repeat(grouped.item_ids, n), n_p)
    again = cell_ratings(pid, iid, grouped.values.ravel())
    np.testing.assert_array_equal(again.values, grouped.values)
    np.testing.assert_array_equal(again.counts, grouped.counts)
