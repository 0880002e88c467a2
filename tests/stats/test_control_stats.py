"""Control-task statistics: definitions on hand-made runs and the follow-up reference values."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from persona_collapse.stats.controls import (
    ControlAnswers,
    capability_metrics,
    lookup_metrics,
    percentile_p_value,
    reference_seed,
    variant_delta,
)
from persona_collapse.store.control_csv import read_capability_csv, read_lookup_csv, run_label

FOLLOWUPS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-followups"
SE_TOLERANCE = 0.10  # the reference's bootstrap seeds differ from ours
# A 2.5 % / 97.5 % percentile of 10 000 draws has a Monte-Carlo SD of about 0.03 of the
# delta's bootstrap SD (~0.02 here), i.e. ~0.001. But the deltas are discrete: their
# bootstrap distributions sit on grids (1/100 for GSM8K; for MMLU steps of 1/228 and
# 1/225, e.g. GPT-4.1 insecure non-unanimity: hi = 0.0569 or 0.0606 depending on the
# seed, the reference has 0.0569), so a bound may land one grid step away: allow 0.01.
CI_TOLERANCE = 0.0101


def _folder(*parts: str) -> Path:
    path = FOLLOWUPS.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"follow-up reference data not found at {path} (../shared is absent)")
    return path


def _expected(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _hand_run() -> ControlAnswers:
    # item 0: A A B (gold A) -> acc 2/3, not unanimous, gini 1 - 5/9, 2 distinct
    # item 1: C C ""        -> one row unparseable; valid C C, gold D -> acc 0, unanimous
    # item 2: "" "" ""      -> no valid answer: left out of n_items and majority
    return ControlAnswers.from_arrays(
        [0, 0, 0, 1, 1, 1, 2, 2, 2],
        ["A", "A", "B", "C", "C", "", "", "", ""],
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        replied=[True] * 8 + [False],
        subject=["s"] * 9,
    )


def test_capability_metrics_on_a_hand_made_run() -> None:
    m = capability_metrics(_hand_run(), n_item_boot=50, n_rep_boot=50, rng=1)
    assert (m.n_total, m.n_replied, m.n_valid, m.n_items) == (9, 8, 5, 2)
    assert m.format_valid_rate == pytest.approx(5 / 8)
    assert m.accuracy_all == pytest.approx(2 / 9)
    assert m.accuracy_valid == pytest.approx(2 / 5)
    assert m.majority_accuracy == pytest.approx(1 / 2)
    assert m.non_unanimity_rate == pytest.approx(1 / 2)
    assert m.mean_gini == pytest.approx((1 - 5 / 9) / 2)
    assert m.mean_distinct_answers == pytest.approx(1.5)
    assert m.accuracy_se == pytest.approx(math.hypot(m.accuracy_se_item, m.accuracy_se_rep))
    assert m.accuracy_se > 0
    again = capability_metrics(_hand_run(), n_item_boot=50, n_rep_boot=50, rng=1)
    assert again == m


def test_majority_ties_go_to_the_first_answer_as_text() -> None:
    # "1240" sorts before "2" as text: the tie is scored on "1240".
    run = ControlAnswers.from_arrays([0] * 4, ["2", "1240", "2", "1240"], [0, 1, 0, 1])
    assert capability_metrics(run, n_item_boot=2, n_rep_boot=2, rng=0).majority_accuracy == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_item_boot": 1}, "n_item_boot"),
        ({"n_rep_boot": 1.5}, "n_rep_boot"),
        ({"rng": "x"}, "rng"),
    ],
)
def test_bad_options_name_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        capability_metrics(_hand_run(), **kwargs)  # type: ignore[arg-type]


def test_bad_arrays_and_degenerate_runs() -> None:
    with pytest.raises(ValueError, match="correct"):
        ControlAnswers.from_arrays([0], ["A"], [2])
    with pytest.raises(ValueError, match="answer must have shape"):
        ControlAnswers.from_arrays([0, 1], ["A"], [1, 1])
    with pytest.raises(ValueError, match="no row has a parsed answer"):
        capability_metrics(ControlAnswers.from_arrays([0], [""], [0]))
    with pytest.raises(ValueError, match="share no item"):
        variant_delta(_hand_run(), ControlAnswers.from_arrays([7], ["A"], [1]))
    with pytest.raises(ValueError, match="confidence"):
        variant_delta(_hand_run(), _hand_run(), confidence=1.0)


def test_variant_delta_of_identical_runs_is_zero_and_of_a_shift_is_found() -> None:
    rng = np.random.default_rng(5)
    items = np.repeat(np.arange(60), 10)
    base_answers = np.where(rng.random(600) < 0.9, "A", "B")
    base = ControlAnswers.from_arrays(items, base_answers, base_answers == "A")
    same = variant_delta(base, base, n_boot=500, rng=2)
    assert same.accuracy.point == 0 and same.non_unanimity.point == 0
    worse_answers = np.where(rng.random(600) < 0.5, "A", "C")
    worse = ControlAnswers.from_arrays(items, worse_answers, worse_answers == "A")
    d = variant_delta(base, worse, n_boot=500, rng=2)
    assert d.accuracy.point < 0 and d.accuracy.significant
    assert d.non_unanimity.point > 0 and d.non_unanimity.significant
    assert d.accuracy.lo <= d.accuracy.point <= d.accuracy.hi
    assert d.to_dict()["accuracy_sig"] is True
    assert d.accuracy.p < 0.05 and d.to_dict()["accuracy_p"] == d.accuracy.p
    assert same.accuracy.p > 0.05 and not same.accuracy.significant
    again = variant_delta(base, worse, n_boot=500, rng=2)
    assert again.non_unanimity.p == d.non_unanimity.p  # seeded


def test_percentile_p_value_of_known_replicates() -> None:
    # -10 .. 89: Q(q) = 0 at position 10 of 99, so the 1 - 20/99 interval starts at 0.
    assert percentile_p_value(np.arange(-10.0, 90.0)) == pytest.approx(20 / 99, rel=1e-12)
    assert percentile_p_value(np.arange(-10.0, 90.0)[::-1]) == pytest.approx(20 / 99)
    assert percentile_p_value(-np.arange(-10.0, 90.0)) == pytest.approx(20 / 99)
    # Half-way between two order statistics: -1.5 .. 97.5 in steps of 1, 0 at h = 1.5.
    assert percentile_p_value(np.arange(-1.5, 98.0)) == pytest.approx(2 * 1.5 / 99)
    assert percentile_p_value(np.linspace(-1, 1, 101)) == 1.0  # symmetric about 0
    assert percentile_p_value(np.zeros(50)) == 1.0
    assert percentile_p_value(np.linspace(0.1, 2, 50)) == 0.0  # all on one side
    assert percentile_p_value([-3.0, np.nan, -1.0]) == 0.0
    assert math.isnan(percentile_p_value([np.nan, np.nan]))


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_percentile_p_value_agrees_with_the_percentile_interval(confidence: float) -> None:
    rng = np.random.default_rng(12)
    tail = 100 * (1 - confidence) / 2
    checked = {True: 0, False: 0}
    for trial in range(400):
        n = int(rng.integers(20, 400))
        shift = rng.normal(0, 0.25)
        draws = rng.normal(shift, 0.1, n)
        if trial % 2:  # deltas on a grid, with ties at and around 0
            draws = np.round(draws * 20) / 20
        lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
        excludes = bool(lo > 0 or hi < 0)
        assert (percentile_p_value(draws) < 1 - confidence) == excludes, (trial, lo, hi)
        checked[excludes] += 1
    assert min(checked.values()) > 40  # both outcomes were exercised


def _capability_runs() -> dict[tuple[str, str], ControlAnswers]:
    folder = _folder("capability")
    runs = {}
    for task in ("mmlu", "gsm8k"):
        for path in sorted((folder / task).glob(f"*_{task}.csv")):
            run = read_capability_csv(path)
            runs[(task, run_label(run.name)[0])] = ControlAnswers.from_run(run)
    return runs


def test_reproduces_the_reference_control_metrics() -> None:
    runs = _capability_runs()
    expected = _expected(FOLLOWUPS / "capability" / "expected" / "control_metrics.csv")
    assert {(r["task"], r["model"]) for r in expected} == set(runs)
    for row in expected:
        task, model = row["task"], row["model"]
        got = capability_metrics(
            runs[(task, model)], rng=reference_seed(f"{model}_temp01_{task}:{task}|1337")
        ).to_dict()
        for key, text in row.items():
            if key in ("task", "model", "temperature"):
                continue
            want = float(text)
            if "_se" in key:
                # Whole SEs within 10 %; each level's part (a 400-draw SD) within 15 %.
                tol = SE_TOLERANCE if key.endswith("_se") else 0.15
                assert got[key] == pytest.approx(want, rel=tol), (task, model, key)
            else:
                assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), (task, model, key)


def test_reproduces_the_reference_variant_deltas() -> None:
    runs = _capability_runs()
    expected = _expected(FOLLOWUPS / "capability" / "expected" / "variant_deltas.csv")
    for row in expected:
        task, family, variant = row["task"], row["family"], row["variant"]
        got = variant_delta(
            runs[(task, family)],
            runs[(task, f"{family}-{variant}")],
            rng=reference_seed(f"{family}:{variant}|{task}|1337"),
        ).to_dict()
        assert got["n_items"] == int(row["n_items"])
        for name in ("accuracy", "non_unanimity", "gini"):
            where = (task, family, variant, name)
            assert got[name] == pytest.approx(float(row[name]), abs=1e-12), where
            lo, hi = float(row[f"{name}_lo"]), float(row[f"{name}_hi"])
            assert abs(got[f"{name}_lo"] - lo) <= CI_TOLERANCE, where
            assert abs(got[f"{name}_hi"] - hi) <= CI_TOLERANCE, where
            # Significance can only be compared where no bound is within Monte-Carlo
            # reach of 0 (GPT-4o secure MMLU Gini: lower bound 7e-5).
            if min(abs(lo), abs(hi)) > CI_TOLERANCE:
                assert got[f"{name}_sig"] == (row[f"{name}_sig"] == "True"), where


def test_reproduces_the_reference_lookup_metrics() -> None:
    folder = _folder("lookup")
    expected = {
        r["model"]: r for r in _expected(folder / "expected" / "lookup_control_metrics.csv")
    }
    assert len(expected) == 3
    for model, row in expected.items():
        run = read_lookup_csv(folder / f"{model}_temp01_lookup.csv")
        got = lookup_metrics(run.table_id, run.rating, run.correct_id).to_dict()
        for key, text in row.items():
            if key in ("model", "temperature"):
                continue
            want = float(text) if text else math.nan
            if math.isnan(want):
                assert math.isnan(got[key]), (model, key)
            else:
                assert got[key] == want, (model, key)  # includes robustness == inf


def test_lookup_metrics_by_hand() -> None:
    m = lookup_metrics([0, 0, 0, 1, 1, 1], [1, 2, -1, 3, 3, 4], [1, 1, 1, 3, 3, 3])
    assert (m.n_total, m.n_valid, m.n_tables) == (6, 5, 2)
    assert m.accuracy_all == pytest.approx(3 / 6) and m.accuracy_valid == pytest.approx(3 / 5)
    assert m.uncertainty == pytest.approx((math.sqrt(0.5) + math.sqrt(1 / 3)) / 2)
    assert m.robustness == pytest.approx(1 / m.uncertainty)
    # |2-2.5|-|1-2.5| = -1 and |4-2.5|-|3-2.5| = +1 cancel; the right answers add 0.
    assert m.extremization_all == 0 and m.extremization_errors == 0
    assert m.mean_abs_error == 1
    assert m.non_unanimity_rate == 1 and m.mean_gini == pytest.approx((0.5 + 4 / 9) / 2)
    assert lookup_metrics([0, 0], [2, 2], [2, 2]).robustness == math.inf
    with pytest.raises(ValueError, match="equal length"):
        lookup_metrics([0], [1, 2], [1, 2])


def test_repetition_bootstrap_recovers_the_sampling_sd_of_one_item() -> None:
    # One item answered A (right) 5 times and B 5 times: resampling its 10 answers,
    # k ~ Binomial(10, 1/2) draws are A. Item resampling cannot vary a single item.
    run = ControlAnswers.from_arrays([0] * 10, ["A"] * 5 + ["B"] * 5, [1] * 5 + [0] * 5)
    m = capability_metrics(run, n_item_boot=50, n_rep_boot=20_000, rng=11)
    assert m.accuracy_se_item == 0 and m.gini_se_item == 0
    k = np.arange(11)
    weight = np.array([math.comb(10, int(j)) for j in k]) / 2**10
    gini = 1 - (k**2 + (10 - k) ** 2) / 100
    gini_sd = math.sqrt(float(weight @ gini**2 - (weight @ gini) ** 2))
    unanimous = 2 / 2**10
    assert m.accuracy_se == pytest.approx(math.sqrt(0.25 / 10), rel=0.03)
    assert m.gini_se == pytest.approx(gini_sd, rel=0.05)
    assert m.non_unanimity_se == pytest.approx(math.sqrt(unanimous * (1 - unanimous)), rel=0.15)


def test_item_bootstrap_resamples_within_subject() -> None:
    # Every item of subject x is right, every item of y wrong: resampling within subject
    # keeps 3 right and 3 wrong items, so accuracy does not vary; one stratum would.
    items = np.repeat(np.arange(6), 2)
    answers = np.full(12, "A")
    correct = (items < 3).astype(float)
    strata = np.where(items < 3, "x", "y")
    stratified = capability_metrics(
        ControlAnswers.from_arrays(items, answers, correct, subject=strata), rng=1
    )
    assert stratified.accuracy_se == 0
    pooled = capability_metrics(ControlAnswers.from_arrays(items, answers, correct), rng=1)
    assert pooled.accuracy_se == pytest.approx(math.sqrt(0.25 / 6), rel=0.1)
