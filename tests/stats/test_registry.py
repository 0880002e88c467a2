"""The statistic registry: declared once, picked up by metrics, comparisons and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persona_collapse.core.errors import UnknownNameError
from persona_collapse.stats import registry
from persona_collapse.stats.compare import compare_labeled
from persona_collapse.stats.metrics import analyze_ratings
from persona_collapse.stats.registry import (
    Estimate,
    Statistic,
    estimate_statistics,
    get_statistic,
    register_statistic,
    statistic_names,
)


def _ratings(seed: int, personas: int = 12, reps: int = 5) -> dict[str, np.ndarray]:
    """Ratings of ``personas`` x 30 items x ``reps``: a persona centre plus noise of ±1."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(np.arange(personas), np.arange(1, 31), np.arange(1, reps + 1), indexing="ij")
    centre = rng.integers(1, 5, size=(personas, 30))[..., None]
    rating = np.clip(centre + rng.integers(-1, 2, size=grid[0].shape), 0, 5)
    names = ("persona_id", "item_id", "repetition")
    return {**{n: g.ravel() for n, g in zip(names, grid, strict=True)}, "rating": rating.ravel()}


def _metrics(seed: int) -> object:
    data = _ratings(seed)
    return analyze_ratings(
        data["persona_id"],
        data["item_id"],
        data["rating"],
        n_persona_boot=50,
        n_rerun_boot=20,
        rng=seed,
    )


def test_built_in_statistics_in_output_order() -> None:
    assert statistic_names()[:3] == ("S", "R", "sigma_bar")
    assert get_statistic("R").inverse_of == "sigma_bar"
    with pytest.raises(UnknownNameError, match="did you mean"):
        get_statistic("sigma_barr")


def test_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="point and draws"):
        Statistic("x", "x", "d", "u", point=lambda mu, sigma: 0.0)
    with pytest.raises(ValueError, match="not both"):
        Statistic("x", "x", "d", "u", inverse_of="S", point=lambda mu, sigma: 0.0)
    with pytest.raises(ValueError, match="already registered"):
        register_statistic(get_statistic("S"))


def test_estimates_match_the_formulas() -> None:
    rng = np.random.default_rng(3)
    mu = rng.uniform(0, 5, size=(8, 6))
    sigma = rng.uniform(0.2, 1.0, size=(8, 6))
    spread = rng.uniform(0.5, 1.0, size=(40, 6))
    noise = rng.uniform(0.2, 0.8, size=(40, 6))
    got = estimate_statistics(mu, sigma, [(spread, noise)])
    assert got["S"].value == pytest.approx(np.std(mu, axis=0, ddof=1).mean())
    assert got["S"].se == pytest.approx(np.std(spread.mean(axis=1), ddof=1))
    assert got["sigma_bar"].value == pytest.approx(sigma.mean())
    assert got["R"].value == pytest.approx(1 / sigma.mean())
    assert got["R"].se == pytest.approx(got["sigma_bar"].se / sigma.mean() ** 2)
    assert list(got) == list(statistic_names())


def test_a_new_statistic_is_one_declaration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Registering a statistic is all it takes for metrics, JSON, comparisons and the CLI."""
    spread_to_noise = Statistic(
        name="spread_to_noise",
        label="S/σ̄",
        description="test-only: susceptibility in units of the rating noise",
        unit="ratio",
        point=lambda mu, sigma: float(np.mean(np.std(mu, axis=0, ddof=1)) / np.mean(sigma)),
        draws=lambda spread, noise: spread.mean(axis=1) / noise.mean(axis=1),
    )
    monkeypatch.setitem(registry._REGISTRY, spread_to_noise.name, spread_to_noise)

    base, variant = _metrics(1), _metrics(2)
    est = base.estimate("spread_to_noise")  # type: ignore[attr-defined]
    assert isinstance(est, Estimate)
    assert est.value == pytest.approx(base.S / base.sigma_bar)  # type: ignore[attr-defined]
    assert est.se > 0
    assert "spread_to_noise_se" in base.to_dict()  # type: ignore[attr-defined]
    for found in base.per_foundation.values():  # type: ignore[attr-defined]
        assert "spread_to_noise" in found.to_dict()

    change = compare_labeled({"base": base, "v": variant}, control=None, treatment=None)  # type: ignore[dict-item]
    ratio = variant.estimate("spread_to_noise").value  # type: ignore[attr-defined]
    assert change.variants["v"].overall["spread_to_noise"] == pytest.approx(ratio / est.value - 1)

    from _cli import run_cli
    from persona_collapse.store.reference_csv import write_ratings_csv

    csv = tmp_path / "run.csv"
    data = _ratings(4)
    import pandas as pd

    write_ratings_csv(pd.DataFrame(data), csv)
    code, out, err = run_cli(
        capsys, "metrics", csv, "--format", "json", "--persona-boot", "20", "--rerun-boot", "5"
    )
    assert code == 0, err
    assert "spread_to_noise" in json.loads(out)[0]
    code, out, err = run_cli(capsys, "metrics", csv, "--persona-boot", "20", "--rerun-boot", "5")
    assert code == 0 and "S/σ̄" in out


def _gini(counts: np.ndarray) -> np.ndarray:
    n = counts.sum(axis=1)
    return 1.0 - (counts * counts).sum(axis=1) / (n * n)


def _count_statistics() -> list[Statistic]:
    """Test-only count statistics: a per-cell mean and a pooled-distribution share."""
    return [
        Statistic(
            name="test_gini",
            label="G",
            description="test-only: mean Gini impurity of cells with >= 2 answers",
            unit="probability",
            features=registry.cell_mean_features(
                "test_gini", _gini, lambda probs, reps: 1.0 - (probs * probs).sum(axis=1)
            ),
            combine=registry.mean_over_cells,
            test_scale="difference",
            group="instability",
        ),
        Statistic(
            name="test_top_share",
            label="top",
            description="test-only: pooled share of the scale's highest value",
            unit="share",
            features=registry.SCALE_COUNTS,
            combine=lambda sums, scale: registry.pooled_shares(sums)[:, -1],
            test_scale="difference",
            group="distribution",
        ),
    ]


def _naive_count_replicates(
    cells: list[list[np.ndarray]], draws: int, seed: int, mode: str, cols: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Replicates of the two test statistics over items ``cols``, computed plainly."""
    rng = np.random.default_rng(seed)
    gini, top = [], []
    for _ in range(draws):
        if mode == "identity":
            chosen = cells
        elif mode == "persona":
            chosen = [cells[i] for i in rng.integers(0, len(cells), len(cells))]
        else:
            chosen = [[rng.choice(c, size=len(c)) for c in row] for row in cells]
        picked = [row[q] for row in chosen for q in cols]
        counts = np.array([np.bincount(c.astype(int), minlength=6) for c in picked], float)
        used = counts.sum(axis=1) >= 2
        gini.append(_gini(counts[used]).mean())
        top.append(counts[:, 5].sum() / counts.sum())
    return np.array(gini), np.array(top)


def test_count_statistics_values_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A count statistic gets its value, per-foundation values and both bootstrap SEs
    from the engine; they agree with a plain computation and a naive bootstrap."""
    for stat in _count_statistics():
        monkeypatch.setitem(registry._REGISTRY, stat.name, stat)
    rng = np.random.default_rng(5)
    rows = []
    for p in range(10):
        for q in (1, 2, 3):
            top = (6, 2, 4)[q - 1]
            n = 1 if (p, q) == (0, 3) else (5 if p % 2 else 6)  # one single-answer cell
            rows += [(p, q, int(v) + (6 - top)) for v in rng.integers(0, top, n)]
    pid, iid, rat = (np.array(col) for col in zip(*rows, strict=True))
    fmap = {1: "A", 2: "A", 3: "B"}
    nested = [[rat[(pid == p) & (iid == q)].astype(float) for q in (1, 2, 3)] for p in range(10)]
    persona = analyze_ratings(pid, iid, rat, foundations=fmap, n_persona_boot=3000,
                              n_rerun_boot=0, rng=1)  # fmt: skip
    rerun = analyze_ratings(pid, iid, rat, foundations=fmap, n_persona_boot=1,
                            n_rerun_boot=3000, rng=2)  # fmt: skip
    for scope, cols in ((None, [0, 1, 2]), ("A", [0, 1]), ("B", [2])):
        g_point, t_point = _naive_count_replicates(nested, 1, 0, "identity", cols)
        g_persona, t_persona = _naive_count_replicates(nested, 2000, 3, "persona", cols)
        g_rerun, t_rerun = _naive_count_replicates(nested, 2000, 4, "rerun", cols)
        for result, g_rep, t_rep in ((persona, g_persona, t_persona), (rerun, g_rerun, t_rerun)):
            found = result if scope is None else result.per_foundation[scope]
            gini, top = found.estimate("test_gini"), found.estimate("test_top_share")
            assert gini.value == pytest.approx(g_point[0], rel=1e-12)
            assert top.value == pytest.approx(t_point[0], rel=1e-12)
            assert gini.se == pytest.approx(np.std(g_rep, ddof=1), rel=0.12), scope
            assert top.se == pytest.approx(np.std(t_rep, ddof=1), rel=0.12), scope
    # Listed by group, registration order within a group.
    groups = [registry.get_statistic(name).group for name in persona.estimates]
    assert groups == sorted(groups, key=registry.GROUPS.index)
    assert list(persona.estimates)[groups.index("distribution") - 1] == "test_gini"
    assert list(persona.estimates)[-1] == "test_top_share"
    assert "test_gini_se" in persona.to_dict()


def test_count_statistics_in_exact_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_collapse.stats.metrics import analyze_distributions

    for stat in _count_statistics():
        monkeypatch.setitem(registry._REGISTRY, stat.name, stat)
    probs = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0.25, 0.75]] * 2)
    m = analyze_distributions(
        [0, 0, 1, 1], [1, 2, 1, 2], probs, scale=range(6), foundations=TWO_ITEMS, rng=0
    )
    assert m.estimate("test_gini").value == pytest.approx((0.5 + 1 - 0.25**2 - 0.75**2) / 2)
    assert m.estimate("test_top_share").value == pytest.approx(0.75 / 2)
    assert m.per_foundation["A"].estimate("test_top_share").value == 0.0


def test_count_statistics_are_nan_off_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    for stat in _count_statistics():
        monkeypatch.setitem(registry._REGISTRY, stat.name, stat)
    data = _ratings(1)
    m = analyze_ratings(
        data["persona_id"], data["item_id"], data["rating"] + 0.5, n_persona_boot=5, rng=0
    )
    assert np.isnan(m.estimate("test_gini").value) and np.isnan(m.estimate("test_gini").se)
    assert np.isfinite(m.S)


TWO_ITEMS = {1: "A", 2: "B"}


def test_pooled_shares_are_computed_once_per_estimate() -> None:
    """Statistics sharing the scale counts share one normalisation (issue 11.8), and no
    memo outlives the estimate: shares asked for afterwards are fresh and writable."""
    sums = np.array([[1.0, 3.0, 0.0, 0.0, 0.0, 4.0], [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]])
    seen: list[np.ndarray] = []  # kept alive, so that distinct arrays have distinct ids
    original = registry.pooled_shares

    def counting(arr: np.ndarray) -> np.ndarray:
        out = original(arr)
        seen.append(out)
        return out

    draws = np.stack([sums, sums[::-1]])  # (B=2, S=2, F=6)
    features = {"scale_counts": registry.FeatureSums(sums, [draws])}
    with pytest.MonkeyPatch.context() as mp:
        for module in ("endpoint_mass", "entropy_bits", "top1_share"):
            mp.setattr(f"persona_collapse.stats.measures.{module}.pooled_shares", counting)
        estimates = registry.estimate_count_statistics(features, range(6))
    assert len(seen) == 6 and len({id(a) for a in seen}) == 2  # (point, draws) x 3 statistics
    assert estimates[0]["top1_share"].value == 0.5
    after = registry.pooled_shares(sums)
    after[0, 0] = 0.0  # writable: not the memo's read-only copy
    assert registry.pooled_shares(sums)[0, 0] == 0.125


def _one_statistic_at_a_time(
    features: dict[str, registry.FeatureSums], scale: np.ndarray
) -> list[dict[str, Estimate]]:
    """The plain definition: each statistic's combine per kind, the sd of each scope's
    replicates (registry._column_sd), the kinds' variances added."""
    n_scopes = len(next(iter(features.values())).point)
    out: list[dict[str, Estimate]] = [{} for _ in range(n_scopes)]
    for stat in registry.statistics():
        if stat.features is None or stat.combine is None or stat.features.name not in features:
            continue
        sums = features[stat.features.name]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = stat.combine(sums.point, scale)
            variance = np.zeros(n_scopes)
            for d in sums.draws:
                flat = np.ascontiguousarray(d).reshape(-1, d.shape[2])
                replicates = stat.combine(flat, scale).reshape(-1, n_scopes)
                variance += registry._column_sd(replicates) ** 2
        for s in range(n_scopes):
            se = float(np.sqrt(variance[s])) if np.isfinite(values[s]) else np.nan
            out[s][stat.name] = Estimate(float(values[s]), se)
    return out


@pytest.mark.parametrize("n_scopes", [1, 3])
def test_count_estimates_equal_one_statistic_at_a_time(n_scopes: int) -> None:
    """All statistics' replicates are summarised at once (one sd over every column) and
    read through memoised per-draw quantities, with the same floats as one statistic
    at a time, also for one scope (numpy sums a single column pairwise) and for a
    statistic with NaN replicates (an empty scope in some draws)."""
    rng = np.random.default_rng(n_scopes)
    counts = rng.integers(0, 40, size=(300, n_scopes, 6)).astype(np.float64)
    counts[:7, 0] = 0.0  # scope 0 empty in 7 persona draws: NaN shares there
    rerun = rng.integers(0, 40, size=(40, n_scopes, 6)).astype(np.float64)
    cell = rng.random((300, n_scopes, 2)) * 50
    features = {
        "scale_counts": registry.FeatureSums(counts[0], [counts, rerun]),
        "mean_gini": registry.FeatureSums(cell[0], [cell, cell[:40] * 0.5]),
        "non_unanimity_rate": registry.FeatureSums(cell[1], [cell[::-1]]),
    }
    scale = np.arange(6.0)
    got = registry.estimate_count_statistics(features, scale)
    missing = registry.Estimate(np.nan, np.nan)
    for want, have in zip(_one_statistic_at_a_time(features, scale), got, strict=True):
        for name, est in want.items():
            assert repr(have[name]) == repr(est), name
        assert repr(have["mean_distinct_answers"]) == repr(missing)  # its features missing


@pytest.mark.parametrize("n", [2, 3, 8, 9, 400, 2001])
def test_bootstrap_sd_is_numpys(n: int) -> None:
    """The replicates' sd is np.std(ddof=1) bit for bit (also on a strided view); NaN
    and infinite replicates are left out, NaN when fewer than two remain."""
    rng = np.random.default_rng(n)
    for scale in (1e-6, 1.0, 1e6):
        values = rng.random(n) * scale
        assert registry._bootstrap_sd(values) == float(np.std(values, ddof=1))
        if n >= 4:
            view = values[::2]
            assert registry._bootstrap_sd(view) == float(np.std(view, ddof=1))
    values = rng.random(n)
    values[0], values[-1] = np.nan, np.inf
    finite = values[1:-1]
    want = float(np.std(finite, ddof=1)) if len(finite) >= 2 else np.nan
    assert repr(registry._bootstrap_sd(values)) == repr(want)
    assert registry._bootstrap_sd(values[:1]) == 0.0
