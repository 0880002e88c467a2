"""Scale-free instability measures: definitions on hand-made cells, and the authors'
instrument comparison for the MFQ runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from persona_collapse.stats.instability import (
    answer_counts,
    distinct_answers,
    distribution_from_counts,
    entropy_bits,
    gini_impurity,
    non_unanimity,
    normalised_gini,
    rating_distribution,
    row_argmax,
    row_max,
    row_sums,
)

FOLLOWUPS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-followups"
PAPER = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-persona-collapse"


def test_cell_measures_on_hand_made_cells() -> None:
    cells, options, counts = answer_counts(
        [0, 0, 0, 1, 1, 1, 1, 2], ["A", "A", "A", "A", "B", "C", "C", "D"]
    )
    assert cells.tolist() == [0, 1, 2]
    assert options.tolist() == ["A", "B", "C", "D"]
    assert counts.tolist() == [[3, 0, 0, 0], [1, 1, 2, 0], [0, 0, 0, 1]]
    assert non_unanimity(counts).tolist() == [0.0, 1.0, 0.0]
    assert distinct_answers(counts).tolist() == [1.0, 3.0, 1.0]
    gini = gini_impurity(counts)
    assert gini[0] == 0.0
    assert gini[1] == pytest.approx(1 - (1 + 1 + 4) / 16)
    assert normalised_gini([0.75], n_options=4)[0] == pytest.approx(1.0)


def test_bad_inputs_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="counts"):
        gini_impurity([1, 2, 3])
    with pytest.raises(ValueError, match="counts"):
        non_unanimity([[1, -1]])
    with pytest.raises(ValueError, match="n_options"):
        normalised_gini([0.5], n_options=1)
    with pytest.raises(ValueError, match="ratings: 7 is not on the scale"):
        rating_distribution([1, 7], scale=range(6))
    with pytest.raises(ValueError, match="cell_keys and answers"):
        answer_counts([0, 1], [1])


@pytest.mark.parametrize("n_cols", range(1, 11))
def test_row_reductions_are_numpys_bit_for_bit(n_cols: int) -> None:
    """The column-by-column row sums, maxima and argmaxima equal numpy's reductions
    exactly (values spanning 16 orders of magnitude, so any other order of additions
    shows; ties, zeros, -0.0 rows and NaN), in C and Fortran order; a numpy that sums
    short rows differently fails here."""
    rng = np.random.default_rng(n_cols)
    values = rng.random((4000, n_cols)) * 10.0 ** rng.integers(-8, 8, size=(4000, n_cols))
    values[:500] = rng.integers(0, 3, size=(500, n_cols))  # ties and zeros
    values[500] = -0.0
    values[501, -1] = np.nan
    for arr in (values, np.asfortranarray(values), values[::2]):
        for mine, numpys in (
            (row_sums, arr.sum(axis=1)),
            (row_max, arr.max(axis=1)),
            (row_argmax, arr.argmax(axis=1)),
        ):
            got = mine(arr)
            assert got.dtype == numpys.dtype
            np.testing.assert_array_equal(got, numpys, strict=True)
            assert np.array_equal(np.signbit(got), np.signbit(numpys))


def test_entropy_bits_keeps_the_definition() -> None:
    """0 log 0 = 0 (and an empty row's NaN shares give 0), -p log2 p summed per row."""
    p = np.array([[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0], [np.nan] * 4])
    assert entropy_bits(p).tolist() == [1.5, 0.0, 0.0]
    assert not np.signbit(entropy_bits(p)).any()
    rng = np.random.default_rng(0)
    q = rng.random((50, 6))
    q /= q.sum(axis=1, keepdims=True)
    expected = np.where(q > 0, -q * np.log2(np.where(q > 0, q, 1.0)), 0.0).sum(axis=1)
    np.testing.assert_array_equal(entropy_bits(q), expected)
    assert float(entropy_bits(q[0])) == expected[0]


def test_rating_distribution() -> None:
    dist = rating_distribution([5, 5, 5, 0, 2, 5], scale=range(6))
    assert dist.n_ratings == 6
    assert dist.top1_value == 5.0 and dist.top1_share == pytest.approx(4 / 6)
    assert dist.endpoint_mass == pytest.approx(5 / 6)
    p = np.array([1, 1, 4]) / 6
    assert dist.entropy_bits == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert dist.max_entropy_bits == pytest.approx(math.log2(6))
    uniform = distribution_from_counts(np.ones(6), scale=range(6))
    assert uniform.entropy_bits == pytest.approx(math.log2(6))
    assert math.isnan(distribution_from_counts(np.zeros(6), scale=range(6)).entropy_bits)
    assert entropy_bits([[1.0, 0.0], [0.5, 0.5]]).tolist() == [0.0, 1.0]


def _likert_cells(path: Path, persona: bool) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys, ratings = [], []
    for row in rows:
        rating = int(float(row["rating"]))
        if rating < 0:
            continue
        persona_id = int(row["persona_id"]) if persona else 0
        keys.append(persona_id * 1000 + int(row["question_id"]))
        ratings.append(rating)
    return np.asarray(keys), np.asarray(ratings)


@pytest.mark.skipif(not FOLLOWUPS.is_dir(), reason="needs ../shared/reference (absent)")
@pytest.mark.parametrize(
    ("variant", "conditioning", "file"),
    [
        ("base", "persona", "base/gpt-4o_temp01.csv"),
        ("secure", "persona", "secure-code/gpt-4o-secure_temp01.csv"),
        ("insecure", "persona", "insecure-code/gpt-4o-misaligned_temp01.csv"),
        ("base", "none", "base/gpt-4o_temp01_self.csv"),
    ],
)
def test_mfq_instrument_comparison_matches_the_reference(
    variant: str, conditioning: str, file: str
) -> None:
    expected_rows = list(
        csv.DictReader((FOLLOWUPS / "capability/expected/instrument_comparison_long.csv").open())
    )
    (want,) = [
        r
        for r in expected_rows
        if r["family"] == "gpt-4o"
        and r["variant"] == variant
        and r["instrument"] == "MFQ"
        and r["conditioning"] == conditioning
    ]
    keys, ratings = _likert_cells(PAPER / file, persona=conditioning == "persona")
    _, _, counts = answer_counts(keys, ratings)
    used = counts.sum(axis=1) >= 2
    counts = counts[used]
    gini = gini_impurity(counts)
    assert int(used.sum()) == int(want["n_cells"])
    assert float(non_unanimity(counts).mean()) == pytest.approx(
        float(want["non_unanimity_rate"]), rel=1e-12
    )
    assert float(gini.mean()) == pytest.approx(float(want["mean_gini"]), rel=1e-12)
    assert float(normalised_gini(gini, n_options=6).mean()) == pytest.approx(
        float(want["mean_gini_norm"]), rel=1e-12
    )
    assert float(counts.sum(axis=1).mean()) == pytest.approx(float(want["mean_reps"]), rel=1e-12)
