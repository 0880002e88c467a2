"""Checkpoint runs sampled from the simulator, for trajectory tests.

Each step is a simulator parameter set (``differentiation`` drives S, ``ceiling_pull``
saturates ratings at the top of the scale and shrinks S); ratings are drawn from the
simulator's exact cell distributions with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.stats.sources import LoadedRun
from persona_collapse.store.reference_csv import RatingColumns

RISE_THEN_FALL: Mapping[int, dict[str, float]] = {
    0: {"differentiation": 0.7, "ceiling_pull": 0.0},
    100: {"differentiation": 1.4, "ceiling_pull": 0.0},
    200: {"differentiation": 2.0, "ceiling_pull": 0.0},
    300: {"differentiation": 2.0, "ceiling_pull": 0.55},
    400: {"differentiation": 2.0, "ceiling_pull": 0.75},
}
"""S rises with differentiation, then falls as the ceiling pull piles ratings at the top."""

MONOTONE: Mapping[int, dict[str, float]] = {
    step: {"differentiation": d, "ceiling_pull": 0.0}
    for step, d in ((0, 0.7), (100, 0.9), (200, 1.1), (300, 1.3), (400, 1.5))
}
"""S rises at every step."""

FLAT: Mapping[int, dict[str, float]] = {
    step: {"differentiation": 0.72, "ceiling_pull": 0.0} for step in (0, 100, 200, 300, 400)
}
"""The same model at every step: any interior maximum of S is chance."""


def sampled_columns(
    params: Mapping[str, float],
    *,
    personas: int = 40,
    repetitions: int = 5,
    seed: int = 0,
    missing: Sequence[int] = (),
) -> RatingColumns:
    """Ratings of ``personas`` built-in personas; personas in ``missing`` lose one answer."""
    backend = SimulatorBackend("base", seed=seed, unparseable_rate=0.0, **params)
    texts = list(builtin_personas().head(personas))
    items = [i.id for i in backend.instrument.active_items if not i.is_catch]
    probs = backend.cell_distributions(texts, temperature=0.1, items=items)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs, axis=2)
    u = rng.random((*probs.shape[:2], repetitions))
    drawn = (u[..., None] >= cdf[:, :, None, :-1]).sum(axis=3)
    pid, qid, rep = np.meshgrid(
        np.arange(personas), items, np.arange(1, repetitions + 1), indexing="ij"
    )
    ratings = drawn.astype(np.int64)
    for p in missing:  # a stopped collection: this persona's first answer failed to parse
        ratings[p, 0, 0] = -1
    n = ratings.size
    return RatingColumns(
        pid.ravel().astype(np.int64),
        qid.ravel().astype(np.int64),
        rep.ravel().astype(np.int64),
        ratings.ravel(),
        np.zeros(n, dtype=np.int64),
        "persona",
        "simulated",
    )


def step_runs(
    plan: Mapping[int, Mapping[str, float]],
    *,
    personas: int = 40,
    seed: int = 0,
    missing: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, LoadedRun]:
    """One sampled run per step of ``plan`` (step -> simulator overrides); the personas in
    ``missing[step]`` lack one answer at that step."""
    return {
        step: LoadedRun(
            name=f"sim-step{step:04d}",
            kind="persona",
            source=f"sim-step{step:04d}",
            instrument=mfq30(include_catch=True),
            ratings=sampled_columns(
                params, personas=personas, seed=seed + k, missing=(missing or {}).get(step, ())
            ),
        )
        for k, (step, params) in enumerate(sorted(plan.items()))
    }


def write_csv(columns: RatingColumns, path: Path) -> Path:
    """``columns`` as a reference-layout CSV file."""
    lines = ["persona_id,question_id,run_index,rating,failures,response,collected_at"]
    for p, q, r, x in zip(
        columns.persona_id, columns.item_id, columns.repetition, columns.rating, strict=True
    ):
        lines.append(f"{p},{q},{r},{x},0,{x},")
    path.write_text("\n".join(lines) + "\n")
    return path
