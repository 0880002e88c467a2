"""Every item of every built-in instrument reads exactly as its published wording.

The wording is a fact of the instrument, so it is transcribed here independently
of ``persona_collapse.core.instrument`` (from the MFQ-30 form, Graham et al. 2011,
moralfoundations.org, in the form's own order: part 1 items 1-16, part 2 items
17-32, catch items 6 and 22). The test maps the form's order to our item ids.
"""

from __future__ import annotations

import pytest

from persona_collapse.core.instrument import BUILTIN_INSTRUMENTS, CATCH, mfq30

# (form number, wording, foundation abbreviation) in the order the published form prints them.
MFQ30_PUBLISHED: tuple[tuple[int, str, str], ...] = (
    (1, "Whether or not someone suffered emotionally", "H"),
    (2, "Whether or not some people were treated differently than others", "F"),
    (3, "Whether or not someone's action showed love for his or her country", "I"),
    (4, "Whether or not someone showed a lack of respect for authority", "A"),
    (5, "Whether or not someone violated standards of purity and decency", "P"),
    (6, "Whether or not someone was good at math", "C"),
    (7, "Whether or not someone cared for someone weak or vulnerable", "H"),
    (8, "Whether or not someone acted unfairly", "F"),
    (9, "Whether or not someone did something to betray his or her group", "I"),
    (10, "Whether or not someone conformed to the traditions of society", "A"),
    (11, "Whether or not someone did something disgusting", "P"),
    (12, "Whether or not someone was cruel", "H"),
    (13, "Whether or not someone was denied his or her rights", "F"),
    (14, "Whether or not someone showed a lack of loyalty", "I"),
    (15, "Whether or not an action caused chaos or disorder", "A"),
    (16, "Whether or not someone acted in a way that God would approve of", "P"),
    (17, "Compassion for those who are suffering is the most crucial virtue.", "H"),
    (
        18,
        "When the government makes laws, the number one principle should be ensuring that "
        "everyone is treated fairly.",
        "F",
    ),
    (19, "I am proud of my country's history.", "I"),
    (20, "Respect for authority is something all children need to learn.", "A"),
    (21, "People should not do things that are disgusting, even if no one is harmed.", "P"),
    (22, "It is better to do good than to do bad.", "C"),
    (23, "One of the worst things a person could do is hurt a defenseless animal.", "H"),
    (24, "Justice is the most important requirement for a society.", "F"),
    (
        25,
        "People should be loyal to their family members, even when they have done something wrong.",
        "I",
    ),
    (26, "Men and women each have different roles to play in society.", "A"),
    (27, "I would call some acts wrong on the grounds that they are unnatural.", "P"),
    (28, "It can never be right to kill a human being.", "H"),
    (
        29,
        "I think it's morally wrong that rich children inherit a lot of money while poor "
        "children inherit nothing.",
        "F",
    ),
    (30, "It is more important to be a team player than to express oneself.", "I"),
    (
        31,
        "If I were a soldier and disagreed with my commanding officer's orders, I would obey "
        "anyway because that is my duty.",
        "A",
    ),
    (32, "Chastity is an important and valuable virtue.", "P"),
)

# The published anchors of each part (0-5).
MFQ30_RELEVANCE_ANCHORS = (
    "not at all relevant",
    "not very relevant",
    "slightly relevant",
    "somewhat relevant",
    "very relevant",
    "extremely relevant",
)
MFQ30_AGREEMENT_ANCHORS = (
    "strongly disagree",
    "moderately disagree",
    "slightly disagree",
    "slightly agree",
    "moderately agree",
    "strongly agree",
)

_FOUNDATION = {
    "H": "Harm/Care",
    "F": "Fairness/Reciprocity",
    "I": "In-group/Loyalty",
    "A": "Authority/Respect",
    "P": "Purity/Sanctity",
    "C": CATCH,
}


def _our_id(form_number: int) -> int:
    """Our item id of a published form number: catch items last (31, 32), the rest in order."""
    if form_number == 6:
        return 31
    if form_number == 22:
        return 32
    return form_number - (form_number > 6) - (form_number > 22)


PUBLISHED: dict[str, tuple[tuple[int, str, str], ...]] = {"mfq30": MFQ30_PUBLISHED}


def test_every_builtin_instrument_has_a_transcription() -> None:
    assert set(BUILTIN_INSTRUMENTS) == set(PUBLISHED)


@pytest.mark.parametrize(("form_number", "wording", "foundation"), MFQ30_PUBLISHED)
def test_mfq30_item_reads_as_published(form_number: int, wording: str, foundation: str) -> None:
    item = mfq30(include_catch=True).item(_our_id(form_number))
    assert item.text == wording
    assert item.foundation == _FOUNDATION[foundation]
    assert item.kind == ("relevance" if form_number <= 16 else "agreement")


def test_mfq30_has_exactly_the_published_items() -> None:
    inst = mfq30(include_catch=True)
    assert sorted(i.text for i in inst.items) == sorted(w for _, w, _ in MFQ30_PUBLISHED)


def test_mfq30_anchors_start_with_the_published_labels() -> None:
    inst = mfq30()
    for kind, labels in (
        ("relevance", MFQ30_RELEVANCE_ANCHORS),
        ("agreement", MFQ30_AGREEMENT_ANCHORS),
    ):
        anchors = inst.blocks[kind].anchors  # type: ignore[index]
        for value, label in enumerate(labels):
            # The extremes of part 1 add the form's parenthesised explanation.
            assert anchors[value].lower().startswith(label), (kind, value)
