"""The long-answer parser on real SmolLM2-135M-Instruct replies plus adversarial echoes (15.1).

``tests/fixtures/smollm2_replies.jsonl`` holds replies collected with
``bench/collect_smollm2_replies.py`` (``source: smollm2``; ``kind`` short or long,
labelled by hand with the rating the reply explicitly gives, or null) and
hand-written adversarial replies (``source: adversarial``): echoed scale lines,
item numbers, ranges, counts, and explicit answers next to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from persona_collapse.core.instrument import mfq30
from persona_collapse.core.prompts import extract_rating

FIXTURES = Path(__file__).parents[1] / "fixtures" / "smollm2_replies.jsonl"
SCALE = mfq30().scale


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines()]


def _parse(row: dict[str, Any]) -> int | None:
    return extract_rating(row["reply"], SCALE, long_form=row["kind"] == "long")


def test_fixture_set_covers_real_and_adversarial_replies() -> None:
    rows = _rows()
    sources = {r["source"] for r in rows}
    assert sources == {"smollm2", "adversarial"}
    real_long = [r for r in rows if r["source"] == "smollm2" and r["kind"] == "long"]
    assert len(real_long) >= 15
    assert any(r["expected"] is not None for r in real_long)


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['source']}-{r['reply'][:30]!r}")
def test_parser_matches_the_label(row: dict[str, Any]) -> None:
    assert _parse(row) == row["expected"]


def test_accuracy_figures() -> None:
    rows = [r for r in _rows() if r["kind"] == "long"]
    no_answer = [r for r in rows if r["expected"] is None]
    answers = [r for r in rows if r["expected"] is not None]
    echoed_accepted = sum(_parse(r) is not None for r in no_answer)
    found = sum(_parse(r) == r["expected"] for r in answers)
    # No echoed (or other non-answer) number accepted; every explicit answer found.
    assert (echoed_accepted, found) == (0, len(answers))
