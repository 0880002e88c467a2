"""Runs sampled from the simulator's exact cell distributions, with the truth beside them.

For checking that the count statistics recover the simulator's truth: ratings are
drawn from :meth:`SimulatorBackend.cell_distributions` (the distributions the
simulator itself samples from), so the expected value of each statistic follows
from the same distributions.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.personas import builtin_personas
from persona_collapse.stats.metrics import RunMetrics, analyze_ratings

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PAPER = REFERENCE / "costa2026-persona-collapse"
FOLLOWUPS = REFERENCE / "costa2026-followups"


@dataclass(frozen=True)
class SimulatedRun:
    """A sampled run and the distributions it was drawn from.

    Attributes:
        probs: ``(P, Q, K)`` the simulator's exact cell distributions over ``scale``.
        scale: The rating scale.
        repetitions: Ratings drawn per cell.
        metrics: The run's metrics (every registered statistic, with SEs).
    """

    probs: np.ndarray
    scale: np.ndarray
    repetitions: int
    metrics: RunMetrics


def simulated_run(
    preset: str = "insecure", personas: int = 100, repetitions: int = 10, seed: int = 0
) -> SimulatedRun:
    """Draw ``repetitions`` ratings per persona-item cell at T = 0.1 and analyse them."""
    backend = SimulatorBackend(preset, seed=seed)
    texts = list(builtin_personas().head(personas))
    items = [i.id for i in backend.instrument.active_items if not i.is_catch]
    probs = backend.cell_distributions(texts, temperature=0.1, items=items)
    scale = np.arange(backend.instrument.scale_min, backend.instrument.scale_max + 1.0)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs, axis=2)
    u = rng.random((*probs.shape[:2], repetitions))
    drawn = (u[..., None] >= cdf[:, :, None, :-1]).sum(axis=3)
    pid, qid, _ = np.meshgrid(np.arange(personas), items, np.arange(repetitions), indexing="ij")
    metrics = analyze_ratings(
        pid.ravel(),
        qid.ravel(),
        scale[drawn].ravel(),
        n_persona_boot=400,
        n_rerun_boot=200,
        rng=seed,
    )
    return SimulatedRun(probs=probs, scale=scale, repetitions=repetitions, metrics=metrics)


DEEPSEEK_ENDPOINTS = (
    (0, "base/deepseek-v3.1_temp01.csv"),
    (1500, "insecure-code/deepseek-v3.1-insecure_temp01.csv"),
)
"""The DeepSeek-V3.1 trajectory endpoints: (step, file under the paper's reference data)."""


@functools.cache
def deepseek_endpoint(step: int, file: str) -> tuple[RunMetrics, dict[str, str]]:
    """Metrics of a DeepSeek trajectory endpoint and its row of the authors'
    ``trajectory_points_endpoints.csv``.

    That file pools every valid row; these two files have no invalid rows and 100
    complete personas, so the population of ``analyze_ratings`` (the complete personas'
    valid ratings) is the same, which is checked here.
    """
    from persona_collapse.store.reference_csv import read_ratings_csv

    with (FOLLOWUPS / "trajectory/expected/trajectory_points_endpoints.csv").open() as handle:
        (want,) = [r for r in csv.DictReader(handle) if int(r["step"]) == step]
    frame = read_ratings_csv(PAPER / file)
    m = analyze_ratings(
        frame["persona_id"], frame["item_id"], frame["rating"], n_persona_boot=50,
        n_rerun_boot=20, rng=0,
    )  # fmt: skip
    if m.excluded_personas or not m.invalid_ratings == int(want["n_invalid"]) == 0:
        raise AssertionError(f"{file}: not the population of the reference")
    if m.valid_ratings != int(want["n_responses"]):
        raise AssertionError(f"{file}: {m.valid_ratings} valid ratings, reference pools more")
    return m, want
