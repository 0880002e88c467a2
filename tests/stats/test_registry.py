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
