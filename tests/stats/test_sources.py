"""Tests of stats.sources: loaded runs and self-profiles of reverse-keyed instruments."""

from __future__ import annotations

import numpy as np
import pandas as pd

from persona_collapse.core.frames import SELF_PERSONA_ID
from persona_collapse.core.instrument import bfi44, mfq30
from persona_collapse.stats.sources import (
    LoadedRun,
    profile_notes,
    run_completeness,
    run_self_profile,
)
from persona_collapse.store.reference_csv import RatingColumns


def _no_ratings() -> RatingColumns:
    empty = np.zeros(0, dtype=np.int64)
    return RatingColumns(empty, empty, empty, empty, empty, "self", "test")


def test_exact_self_profile_reflects_reverse_keyed_items() -> None:
    # Item 1 (talkative): all mass on 5; item 6 (reserved, reverse-keyed): all mass on 1.
    # Item 11 (full of energy): all mass on 3.
    probs = np.zeros((3, 5))
    probs[0, 4] = probs[1, 0] = probs[2, 2] = 1.0
    frame = pd.DataFrame(probs, columns=[f"p{k}" for k in range(1, 6)])
    frame.insert(0, "item_id", [1, 6, 11])
    frame.insert(0, "persona_id", SELF_PERSONA_ID)
    run = LoadedRun("self", "self", "test", bfi44(), _no_ratings(), distributions=frame)
    profile = run_self_profile(run)
    assert profile.mean["Extraversion"] == (5 + 5 + 3) / 3
    assert frame["p1"].tolist() == [0.0, 1.0, 0.0]  # the run's own frame is left alone
    assert profile_notes(run)["reverse_keyed_reflected"] is True


def test_sampled_self_profile_leaves_failed_ratings_alone() -> None:
    items = np.array([1, 6, 6, 11])
    ratings = np.array([5, 1, -1, 3])
    zeros = np.zeros(4, dtype=np.int64)
    columns = RatingColumns(
        np.full(4, SELF_PERSONA_ID), items, np.array([1, 1, 2, 1]), ratings, zeros, "self", "t"
    )
    profile = run_self_profile(LoadedRun("self", "self", "t", bfi44(), columns))
    # -1 (no rating) is not reflected into 7: item 6 has one valid rating, 1 -> 5.
    assert profile.mean["Extraversion"] == (5 + 5 + 3) / 3


def test_loaded_run_builds_its_frame_on_demand() -> None:
    columns = RatingColumns(
        np.array([0, 0]),
        np.array([1, 2]),
        np.array([1, 1]),
        np.array([4, 5]),
        np.array([0, 0]),
        "persona",
        "f.csv",
    )
    run = LoadedRun("r", "persona", "f.csv", bfi44(), columns)
    assert not run.has_frame
    assert run.ratings["rating"].tolist() == [4, 5]
    assert run.has_frame
    assert run.replace(name="other").ratings is run.ratings
    assert run.foundations == {1: "Extraversion", 2: "Agreeableness"}


def _mfq_run(personas: list[int], items: list[int], reps: list[int]) -> LoadedRun:
    n = len(items)
    zeros = np.zeros(n, dtype=np.int32)
    columns = RatingColumns(
        np.array(personas, dtype=np.int32),
        np.array(items, dtype=np.int32),
        np.array(reps, dtype=np.int32),
        np.full(n, 3, dtype=np.int32),
        zeros,
        "persona",
        "f.csv",
    )
    return LoadedRun("r", "persona", "f.csv", mfq30(include_catch=True), columns)


def test_completeness_counts_scored_items_of_real_personas_only() -> None:
    # Two personas, every scored item twice, except persona 1 misses item 30's repetition 2.
    personas, items, reps = [], [], []
    for p in (0, 1):
        for q in range(1, 31):
            for r in (1, 2):
                if (p, q, r) != (1, 30, 2):
                    personas.append(p)
                    items.append(q)
                    reps.append(r)
    full = run_completeness(_mfq_run(personas, items, reps))
    assert (full.slots, full.planned) == (119, 120)
    # Rows of a catch item (31) and of no persona (-1) are left out, not counted as slots.
    extra = run_completeness(
        _mfq_run([*personas, 0, SELF_PERSONA_ID], [*items, 31, 5], [*reps, 1, 1])
    )
    assert (extra.slots, extra.planned) == (119, 120)
    # A retry stored as a third repetition of one cell does not fill another cell's gap.
    retry = run_completeness(_mfq_run([*personas, 0], [*items, 7], [*reps, 3]))
    assert (retry.slots, retry.planned) == (119, 120)


def test_foundations_of_the_items_present() -> None:
    group = {item.id: item.foundation for item in mfq30(include_catch=True).items}
    run = _mfq_run([0, 0, 0], [3, 1, 3], [1, 1, 2])
    assert run.foundations == {1: group[1], 3: group[3]}
    assert list(run.foundations) == [1, 3]
    # Ids far apart (or unknown to the instrument) take the general route.
    sparse = _mfq_run([0, 0], [2, 10**8], [1, 1])
    assert sparse.foundations == {2: group[2]}
