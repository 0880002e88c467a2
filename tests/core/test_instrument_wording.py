"""Every item of every built-in instrument reads exactly as its published wording.

The wording is a fact of the instrument, so it is transcribed here independently
of ``persona_collapse.core.instrument`` (from the MFQ-30 form, Graham et al. 2011,
moralfoundations.org, in the form's own order: part 1 items 1-16, part 2 items
17-32, catch items 6 and 22). The test maps the form's order to our item ids.
"""

from __future__ import annotations

import pytest

from persona_collapse.core.instrument import BUILTIN_INSTRUMENTS, CATCH, bfi44, mfq30

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


# BFI-44 (John, Donahue & Kentle 1991), completions of "I see myself as someone who ...",
# in the form's order; the letter is the domain, "R" marks a reverse-scored item.
BFI44_PUBLISHED: tuple[tuple[int, str, str], ...] = (
    (1, "Is talkative", "E"),
    (2, "Tends to find fault with others", "AR"),
    (3, "Does a thorough job", "C"),
    (4, "Is depressed, blue", "N"),
    (5, "Is original, comes up with new ideas", "O"),
    (6, "Is reserved", "ER"),
    (7, "Is helpful and unselfish with others", "A"),
    (8, "Can be somewhat careless", "CR"),
    (9, "Is relaxed, handles stress well", "NR"),
    (10, "Is curious about many different things", "O"),
    (11, "Is full of energy", "E"),
    (12, "Starts quarrels with others", "AR"),
    (13, "Is a reliable worker", "C"),
    (14, "Can be tense", "N"),
    (15, "Is ingenious, a deep thinker", "O"),
    (16, "Generates a lot of enthusiasm", "E"),
    (17, "Has a forgiving nature", "A"),
    (18, "Tends to be disorganized", "CR"),
    (19, "Worries a lot", "N"),
    (20, "Has an active imagination", "O"),
    (21, "Tends to be quiet", "ER"),
    (22, "Is generally trusting", "A"),
    (23, "Tends to be lazy", "CR"),
    (24, "Is emotionally stable, not easily upset", "NR"),
    (25, "Is inventive", "O"),
    (26, "Has an assertive personality", "E"),
    (27, "Can be cold and aloof", "AR"),
    (28, "Perseveres until the task is finished", "C"),
    (29, "Can be moody", "N"),
    (30, "Values artistic, aesthetic experiences", "O"),
    (31, "Is sometimes shy, inhibited", "ER"),
    (32, "Is considerate and kind to almost everyone", "A"),
    (33, "Does things efficiently", "C"),
    (34, "Remains calm in tense situations", "NR"),
    (35, "Prefers work that is routine", "OR"),
    (36, "Is outgoing, sociable", "E"),
    (37, "Is sometimes rude to others", "AR"),
    (38, "Makes plans and follows through with them", "C"),
    (39, "Gets nervous easily", "N"),
    (40, "Likes to reflect, play with ideas", "O"),
    (41, "Has few artistic interests", "OR"),
    (42, "Likes to cooperate with others", "A"),
    (43, "Is easily distracted", "CR"),
    (44, "Is sophisticated in art, music, or literature", "O"),
)

_DOMAIN = {
    "E": "Extraversion",
    "A": "Agreeableness",
    "C": "Conscientiousness",
    "N": "Neuroticism",
    "O": "Openness",
}

PUBLISHED: dict[str, tuple[tuple[int, str, str], ...]] = {
    "mfq30": MFQ30_PUBLISHED,
    "bfi44": BFI44_PUBLISHED,
}


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


@pytest.mark.parametrize(("number", "wording", "key"), BFI44_PUBLISHED)
def test_bfi44_item_reads_as_published(number: int, wording: str, key: str) -> None:
    item = bfi44().item(number)  # BFI-44 keeps the form's numbers as item ids
    assert item.text == wording
    assert item.foundation == _DOMAIN[key[0]]
    assert item.reverse == key.endswith("R")


def test_bfi44_has_exactly_the_published_items() -> None:
    assert [(i.id, i.text) for i in bfi44().items] == [(n, w) for n, w, _ in BFI44_PUBLISHED]
