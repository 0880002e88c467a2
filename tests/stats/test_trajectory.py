"""Checkpoint trajectories: common persona set, per-step metrics, endpoints, non-monotone S."""

from __future__ import annotations

import numpy as np
import pytest

from _trajectory_runs import FLAT, MONOTONE, RISE_THEN_FALL, step_runs
from persona_collapse.core.errors import UserError
from persona_collapse.stats.metrics import analyze_ratings
from persona_collapse.stats.trajectory import (
    TooFewCommonPersonasError,
    analyze_trajectory,
    common_complete_personas,
    non_monotone_s,
)

BOOT = {"n_persona_boot": 300, "n_rerun_boot": 100}


def test_rise_then_fall_is_detected_with_evidence() -> None:
    traj = analyze_trajectory(step_runs(RISE_THEN_FALL), **BOOT)
    nm = traj.non_monotone
    assert nm is not None and nm.detected
    s = [p.metrics.S for p in traj.points]
    assert nm.peak_step == traj.steps[int(np.argmax(s))] == 200
    assert nm.drop.value == pytest.approx(s[2] - s[-1])
    assert 0 < nm.drop.low < nm.drop.value < nm.drop.high
    assert nm.rise.low > 0
    # Ratings pile up at the ceiling after the peak.
    assert nm.top1_share_final > nm.top1_share_peak
    statement = nm.statement()
    assert "step 200" in statement and f"{nm.drop.low:.3f}" in statement
    assert traj.to_records()[-1]["non_monotone_S"]["detected"] is True


def test_monotone_rise_is_not_flagged() -> None:
    traj = analyze_trajectory(step_runs(MONOTONE), **BOOT)
    s = [p.metrics.S for p in traj.points]
    assert s == sorted(s)
    assert traj.non_monotone is not None
    assert not traj.non_monotone.detected
    assert traj.non_monotone.statement() == ""


def test_chance_peak_of_a_flat_trajectory_is_not_flagged() -> None:
    traj = analyze_trajectory(step_runs(FLAT), **BOOT)
    nm = traj.non_monotone
    assert nm is not None and not nm.detected
    assert nm.drop.low < 0 or nm.rise.low < 0


def test_non_monotone_intervals_are_seeded() -> None:
    runs = step_runs(RISE_THEN_FALL)
    a = analyze_trajectory(runs, seed=3, **BOOT).non_monotone
    b = analyze_trajectory(runs, seed=3, **BOOT).non_monotone
    c = analyze_trajectory(runs, seed=4, **BOOT).non_monotone
    assert a is not None and b is not None and c is not None
    assert a.drop == b.drop
    assert a.drop.se != c.drop.se


def test_common_set_is_the_personas_complete_at_every_step() -> None:
    runs = step_runs(MONOTONE, missing={0: [1, 2], 200: [2, 5], 400: [7]})
    common = common_complete_personas(runs)
    assert len(common) == 36
    assert set(common.persona_ids) == set(range(40)) - {1, 2, 5, 7}
    assert common.complete == {0: 38, 100: 40, 200: 38, 300: 40, 400: 39}
    assert common.present == dict.fromkeys(runs, 40)
    assert set(common.slots.values()) == {150}  # 30 items x 5 repetitions

    traj = analyze_trajectory(runs, **BOOT)
    run = runs[200].columns
    keep = np.isin(run.persona_id, common.persona_ids) & (run.rating >= 0)
    direct = analyze_ratings(
        run.persona_id[keep], run.item_id[keep], run.rating[keep], **BOOT, rng=0
    )
    point = traj.points[2]
    assert point.step == 200 and point.metrics.personas == 36
    for name in ("S", "R", "sigma_bar", "entropy_bits", "top1_share", "endpoint_mass"):
        assert point.metrics.estimate(name).value == pytest.approx(direct.estimate(name).value)
    # Endpoints: stand-alone metrics as ``pcollapse metrics`` gives them (a persona
    # missing one repetition still has a valid rating on every item), shift reported.
    first, final = traj.endpoints
    assert (first.step, first.role, first.standalone.personas) == (0, "first", 40)
    assert (final.step, final.role, final.standalone.personas) == (400, "final", 40)
    assert first.shift("S") == pytest.approx(traj.points[0].metrics.S - first.standalone.S)
    assert [p.fraction_of_training for p in traj.points] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p.role for p in traj.points] == ["first", *["intermediate"] * 3, "final"]


def test_too_few_common_personas_is_a_clear_error() -> None:
    runs = step_runs(FLAT, personas=33, missing={0: [0, 1], 100: [2, 3]})
    with pytest.raises(TooFewCommonPersonasError, match=r"only 29 personas .* at least 30") as exc:
        analyze_trajectory(runs, **BOOT)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, UserError)
    assert "step 0: 31" in str(exc.value)
    assert len(common_complete_personas(runs, min_personas=29)) == 29


def test_bad_inputs() -> None:
    runs = step_runs(FLAT)
    with pytest.raises(UserError, match="at least 2 steps"):
        analyze_trajectory({0: runs[0]})
    self_run = runs[100].replace(kind="self")
    with pytest.raises(UserError, match="self run"):
        analyze_trajectory({0: runs[0], 100: self_run})
    two = analyze_trajectory({0: runs[0], 100: runs[100]}, **BOOT)
    assert two.non_monotone is None
    with pytest.raises(ValueError, match="at least 3 steps"):
        non_monotone_s({}, {})
