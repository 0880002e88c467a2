"""The instrument comparison: cell sets, summaries, changes vs base and the persona contrast."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.stats.instruments import (
    CellSet,
    answer_cells,
    compare_instruments,
    likert_cells,
    summarize_cells,
)


def test_likert_cells_summary_by_hand() -> None:
    # Persona 0: item 1 -> 3,3,3 (unanimous); item 2 -> 1,2 ; persona 1: item 1 -> 4 (alone).
    cells = likert_cells(
        [1, 1, 1, 2, 2, 1], [3, 3, 3, 1, 2, 4], persona_id=[0, 0, 0, 0, 0, 1],
        instrument="MFQ", n_options=6,
    )  # fmt: skip
    assert cells.conditioning == "persona" and cells.label == "MFQ (persona)"
    assert cells.unit_id.tolist() == [0, 0, 1]
    s = summarize_cells(cells)
    assert (s.n_cells, s.mean_reps) == (2, 2.5)  # the single-answer cell is left out
    assert s.non_unanimity_rate == 0.5
    assert s.mean_gini == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert s.mean_gini_norm == pytest.approx(0.25 / (1 - 1 / 6))
    robustness = s.R
    assert robustness == pytest.approx(1 / ((0 + math.sqrt(0.5)) / 2))
    assert math.isnan(s.accuracy)


def test_self_cells_use_items_as_units() -> None:
    cells = likert_cells([5, 5, 7, 7], [1, 2, 3, 3], instrument="BFI-44", n_options=5)
    assert cells.conditioning == "none" and cells.label == "BFI-44 (self)"
    assert cells.unit_id.tolist() == [5, 7]
    assert summarize_cells(cells).non_unanimity_rate == 0.5


def test_answer_cells_accuracy_counts_every_valid_answer() -> None:
    cells = answer_cells(
        [0, 0, 0, 1, 2, 2], ["A", "A", "B", "C", "D", "D"], correct=[1, 1, 0, 1, 0, 0],
        instrument="MMLU", n_options=4,
    )  # fmt: skip
    s = summarize_cells(cells)
    assert s.accuracy == pytest.approx(3 / 6)  # item 1's single answer counts here...
    assert s.n_cells == 2  # ...but not for instability
    assert s.non_unanimity_rate == 0.5 and math.isnan(s.R)
    assert math.isnan(s.accuracy_all)  # only valid answers were given
    rows = answer_cells(
        [0, 0, 0, 1, 1, 2, 3], ["A", "", "B", "C", "C", "D", ""], correct=[1, 0, 0, 1, 1, 1, 0],
        valid=[True, False, True, True, True, True, False], instrument="MMLU", n_options=4,
    )  # fmt: skip
    r = summarize_cells(rows)
    assert (r.accuracy, r.accuracy_all) == (pytest.approx(4 / 5), pytest.approx(4 / 7))
    assert (r.n_cells, r.non_unanimity_rate) == (2, 0.5)  # item 3 has no valid answer
    open_answers = answer_cells([0, 0], ["12", "13"], instrument="GSM8K", n_options=None)
    assert math.isnan(summarize_cells(open_answers).mean_gini_norm)
    assert summarize_cells(open_answers).mean_gini == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: likert_cells([1, 2], [1], instrument="M", n_options=6), "rating"),
        (lambda: likert_cells([1.5], [1], instrument="M", n_options=6), "item_id"),
        (lambda: likert_cells([1], [np.nan], instrument="M", n_options=6), "rating"),
        (lambda: likert_cells([1], [1], instrument="M", n_options=1), "n_options"),
        (
            lambda: likert_cells([1], [1], persona_id=[0, 1], instrument="M", n_options=6),
            "persona_id",
        ),
        (lambda: answer_cells([0], ["A"], correct=[2], instrument="X", n_options=4), "correct"),
        (lambda: answer_cells([], [], instrument="X", n_options=4), "answer"),
        (lambda: answer_cells([0], ["A"], valid=[False], instrument="X", n_options=4), "valid"),
    ],
)
def test_bad_arrays_name_the_parameter(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()  # type: ignore[operator]


def _mmlu(rng: np.random.Generator, items: int, err: float) -> CellSet:
    """``items`` items x 10 answers: the right letter, or another with probability ``err``."""
    ids = np.repeat(np.arange(items), 10)
    wrong = rng.random(len(ids)) < err
    answers = np.where(wrong, rng.integers(1, 4, len(ids)), 0)
    return answer_cells(
        ids, answers, correct=(~wrong).astype(float), instrument="MMLU", n_options=4
    )


def _likert(rng: np.random.Generator, personas: int, err: float, *, instrument: str) -> CellSet:
    """``personas`` x 30 items x 10 ratings: the cell's mode, or a neighbour with prob. ``err``."""
    grid_p, grid_q = np.meshgrid(np.arange(personas), np.arange(1, 31), indexing="ij")
    p, q = np.repeat(grid_p.ravel(), 10), np.repeat(grid_q.ravel(), 10)
    mode = (p + q) % 4 + 1
    ratings = mode + (rng.random(len(p)) < err)
    return likert_cells(q, ratings, persona_id=p, instrument=instrument, n_options=6)


def _family(seed: int, *, persona_err: float, other_err: float) -> dict[str, list[CellSet]]:
    rng = np.random.default_rng(seed)
    return {
        "base": [_likert(rng, 100, 0.03, instrument="MFQ"), _mmlu(rng, 400, 0.03)],
        "insecure": [
            _likert(rng, 100, persona_err, instrument="MFQ"),
            _mmlu(rng, 400, other_err),
        ],
    }


def test_selective_persona_collapse_gives_a_positive_contrast() -> None:
    cmp = compare_instruments(
        _family(1, persona_err=0.09, other_err=0.03), family="sim", n_boot=500, rng=2
    )
    (var,) = cmp.variants
    c = var.contrast
    assert c is not None
    assert c.persona_sets == ("MFQ (persona)",) and c.other_sets == ("MMLU",)
    assert c.difference.significant and c.difference.point > 0
    assert c.difference.lo <= c.difference.point <= c.difference.hi
    mmlu = next(s for s in var.sets if s.variant.instrument == "MMLU")
    assert mmlu.accuracy_delta is not None and not mmlu.accuracy_delta.significant


def test_broad_degradation_gives_no_positive_contrast() -> None:
    cmp = compare_instruments(
        _family(3, persona_err=0.09, other_err=0.09), family="sim", n_boot=500, rng=4
    )
    (var,) = cmp.variants
    c = var.contrast
    assert c is not None and not (c.difference.significant and c.difference.point > 0)
    assert c.persona_change.significant and c.other_change.significant
    mmlu = next(s for s in var.sets if s.variant.instrument == "MMLU")
    assert mmlu.accuracy_delta is not None and mmlu.accuracy_delta.hi < 0  # accuracy fell
    assert var.accuracy_drops == ("MMLU",)
    assert cmp.contrasts()[0]["accuracy_drops"] == ["MMLU"]


def test_absolute_scale_contrast() -> None:
    runs = _family(9, persona_err=0.09, other_err=0.03)
    rel = compare_instruments(runs, n_boot=200, rng=1).variants[0]
    cmp = compare_instruments(runs, n_boot=200, rng=1, scale="absolute")
    c = cmp.variants[0].contrast
    assert c is not None and c.scale == "absolute" and cmp.scale == "absolute"
    persona, other = cmp.variants[0].sets[0], cmp.variants[0].sets[1]
    want = (persona.variant.non_unanimity_rate - persona.base.non_unanimity_rate) - (
        other.variant.non_unanimity_rate - other.base.non_unanimity_rate
    )
    assert c.difference.point == pytest.approx(want)
    assert c.difference.significant and c.difference.point > 0
    # The per-set changes in the rows stay relative.
    assert cmp.variants[0].sets[0].relative == rel.sets[0].relative


def test_draws_are_shared_within_a_family_and_seeded() -> None:
    runs = _family(5, persona_err=0.05, other_err=0.05)
    same = {"base": runs["base"], "copy": runs["base"]}
    cmp = compare_instruments(same, n_boot=50, rng=0)
    for s in cmp.variants[0].sets:
        # The same units are drawn for base and variant: a copy changes by exactly 0.
        ch = s.relative["non_unanimity_rate"]
        assert (ch.point, ch.lo, ch.hi) == (0.0, 0.0, 0.0)
    first = compare_instruments(runs, n_boot=50, rng=7).contrasts()
    assert compare_instruments(runs, n_boot=50, rng=7).contrasts() == first
    assert compare_instruments(runs, n_boot=50, rng=8).contrasts() != first


def test_rows_and_an_undefined_relative_change() -> None:
    flat = likert_cells(
        [1, 1, 2, 2], [3, 3, 2, 2], persona_id=[0, 0, 0, 0], instrument="MFQ", n_options=6
    )
    noisy = likert_cells(
        [1, 1, 2, 2], [3, 4, 2, 2], persona_id=[0, 0, 0, 0], instrument="MFQ", n_options=6
    )
    task = answer_cells([0, 0, 1, 1], ["A", "B", "A", "A"], instrument="MMLU", n_options=4)
    cmp = compare_instruments(
        {"base": [flat, task], "v": [noisy, task]}, family="f", n_boot=20, rng=1
    )
    rows = cmp.rows()
    assert [(r["variant"], r["instrument"]) for r in rows] == [
        ("base", "MFQ"), ("base", "MMLU"), ("v", "MFQ"), ("v", "MMLU"),
    ]  # fmt: skip
    assert rows[0]["family"] == "f" and math.isnan(rows[0]["non_unanimity_rate_change"])
    assert math.isinf(rows[2]["non_unanimity_rate_change"])  # base 0: relative change infinite
    assert rows[3]["non_unanimity_rate_change"] == 0.0
    # The persona side has no defined relative change, so there is no contrast.
    assert cmp.variants[0].contrast is None and cmp.contrasts() == []


@pytest.mark.parametrize(
    ("kwargs", "runs_fn", "match"),
    [
        ({}, lambda a, b: {"secure": [a]}, "no base variant 'base'"),
        ({}, lambda a, b: {"base": [a]}, "at least one variant"),
        ({}, lambda a, b: {"base": [a], "v": [b]}, r"runs\['v'\]: MMLU has no set in the base"),
        ({}, lambda a, b: {"base": [a, a], "v": [a]}, "two MFQ \\(persona\\) sets"),
        ({"measure": "R"}, lambda a, b: {"base": [a], "v": [a]}, "measure"),
        ({"n_boot": 1}, lambda a, b: {"base": [a], "v": [a]}, "n_boot"),
        ({"scale": "log"}, lambda a, b: {"base": [a], "v": [a]}, "scale"),
        ({"confidence": 1.0}, lambda a, b: {"base": [a], "v": [a]}, "confidence"),
        ({"rng": "x"}, lambda a, b: {"base": [a], "v": [a]}, "rng"),
    ],
)
def test_bad_options_name_the_parameter(
    kwargs: dict[str, object], runs_fn: object, match: str
) -> None:
    a = likert_cells([1, 1], [3, 4], persona_id=[0, 0], instrument="MFQ", n_options=6)
    b = answer_cells([0, 0], ["A", "B"], instrument="MMLU", n_options=4)
    with pytest.raises(ValueError, match=match):
        compare_instruments(runs_fn(a, b), **kwargs)  # type: ignore[operator, arg-type]


def test_a_variant_set_on_another_answer_set_is_refused() -> None:
    a = likert_cells([1, 1], [3, 4], persona_id=[0, 0], instrument="MFQ", n_options=6)
    b = likert_cells([1, 1], [3, 4], persona_id=[0, 0], instrument="MFQ", n_options=5)
    with pytest.raises(ValueError, match="not on the base's answer set"):
        compare_instruments({"base": [a], "v": [b]})


def _hetero_likert(rng: np.random.Generator, err: float) -> CellSet:
    """100 personas x 30 items x 10 ratings; each persona's error rate is ``err`` x Gamma(2, .5)."""
    grid_p, grid_q = np.meshgrid(np.arange(100), np.arange(1, 31), indexing="ij")
    p, q = np.repeat(grid_p.ravel(), 10), np.repeat(grid_q.ravel(), 10)
    e = np.clip(err * rng.gamma(2, 0.5, 100), 0, 1)[p]
    ratings = (p + q) % 4 + 1 + (rng.random(len(p)) < e)
    return likert_cells(q, ratings, persona_id=p, instrument="MFQ", n_options=6)


@pytest.mark.parametrize("scale", ["relative", "absolute"])
def test_contrast_interval_covers_the_truth(scale: str) -> None:
    """Seeded simulation: the 95 % interval of the contrast covers its true value in most
    replications (persona heterogeneity makes the persona resampling matter)."""
    gamma = np.random.default_rng(99).gamma(2, 0.5, 400_000)

    def nu_persona(err: float) -> float:
        e = np.clip(err * gamma, 0, 1)
        return float(np.mean(1 - (1 - e) ** 10 - e**10))

    def nu_task(e: float) -> float:
        return float(1 - (1 - e) ** 10 - 3 * (e / 3) ** 10)

    if scale == "relative":
        truth = (nu_persona(0.06) / nu_persona(0.02) - 1) - (nu_task(0.06) / nu_task(0.02) - 1)
    else:
        truth = (nu_persona(0.06) - nu_persona(0.02)) - (nu_task(0.06) - nu_task(0.02))
    rng = np.random.default_rng(0)
    hits = 0
    reps = 40
    for r in range(reps):
        runs = {
            "base": [_hetero_likert(rng, 0.02), _mmlu(rng, 228, 0.02)],
            "v": [_hetero_likert(rng, 0.06), _mmlu(rng, 228, 0.06)],
        }
        c = compare_instruments(runs, n_boot=300, rng=r, scale=scale).variants[0].contrast
        assert c is not None
        hits += c.difference.lo <= truth <= c.difference.hi
    assert hits >= 0.85 * reps, hits
