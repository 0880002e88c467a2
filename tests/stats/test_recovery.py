"""End to end on the simulator: the estimators recover its true S and R within two SEs."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import RunConfig
from persona_collapse.core.instrument import Instrument
from persona_collapse.core.personas import builtin_personas
from persona_collapse.study import execute_run


@pytest.mark.parametrize("preset", ["base", "secure", "insecure"])
def test_estimates_recover_true_values(tmp_path: Path, preset: str) -> None:
    """Sampled through the whole pipeline (prompts, engine, store, metrics)."""
    config = RunConfig(
        model=preset,
        backend_options={"preset": preset, "seed": 11},
        store=tmp_path / "runs.db",
        seed=3,
        self_run=False,
        progress=False,
    )
    backends: list[SimulatorBackend] = []

    def build(cfg: RunConfig, instrument: Instrument) -> SimulatorBackend:
        backend = SimulatorBackend(preset, seed=11, instrument=instrument)
        backends.append(backend)
        return backend

    outcome = execute_run(config, backend_builder=build)
    m = outcome.metrics
    assert m is not None
    assert m.personas == 100 and m.questions == 30
    truth = backends[0].true_metrics(list(builtin_personas()), temperature=0.1)
    assert abs(m.S - truth.S) < 2 * m.S_se, (m.S, truth.S, m.S_se)
    assert abs(m.R - truth.R) < 2 * m.R_se, (m.R, truth.R, m.R_se)
    assert abs(m.sigma_bar - truth.sigma_bar) < 2 * m.sigma_bar_se
    # the SEs are informative, not inflated to make the test pass
    assert m.S_se < 0.05 * m.S
    assert m.R_se < 0.08 * m.R


def test_presets_show_the_collapse_pattern(tmp_path: Path) -> None:
    """Insecure: S up by about half, sigma-bar up several-fold; secure barely moves S."""
    results = {}
    for preset in ("base", "secure", "insecure"):
        cfg = RunConfig(
            model=preset,
            backend_options={"preset": preset},
            store=tmp_path / "runs.db",
            max_personas=60,
            repetitions=5,
            progress=False,
        )
        results[preset] = execute_run(cfg)
    base, secure, insecure = (results[k].metrics for k in ("base", "secure", "insecure"))
    assert base is not None and secure is not None and insecure is not None
    assert 1.3 < insecure.S / base.S < 1.8
    assert insecure.sigma_bar / base.sigma_bar > 2.5
    assert abs(secure.S / base.S - 1) < 0.1
    profile = results["insecure"].self_profile
    assert profile is not None and min(profile.mean.values()) > 4.3
    base_profile = results["base"].self_profile
    assert base_profile is not None and min(base_profile.mean.values()) < 4.0


def test_exact_mode_equals_the_true_values(tmp_path: Path) -> None:
    """In exact mode the stored distributions give the simulator's true S and R."""
    config = RunConfig(
        model="secure",
        mode="exact",
        max_personas=25,
        store=tmp_path / "exact.db",
        progress=False,
    )
    built: list[SimulatorBackend] = []

    def build(cfg: RunConfig, instrument: Instrument) -> SimulatorBackend:
        built.append(SimulatorBackend("secure", instrument=instrument))
        return built[-1]

    outcome = execute_run(config, backend_builder=build)
    m = outcome.metrics
    assert m is not None and m.method == "exact"
    truth = built[0].true_metrics(list(builtin_personas().head(25)), temperature=0.1)
    assert pytest.approx(truth.S, rel=1e-9) == m.S
    assert m.sigma_bar == pytest.approx(truth.sigma_bar, rel=1e-9)
    for foundation, fm in m.per_foundation.items():
        assert pytest.approx(truth.per_foundation[foundation].S, rel=1e-9) == fm.S
    profile = outcome.self_profile
    assert profile is not None
    true_profile = built[0].true_self_profile(0.1)
    for foundation, value in true_profile.items():
        assert profile.mean[foundation] == pytest.approx(value, rel=1e-9)
