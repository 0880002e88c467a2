"""The questionnaires: MFQ-30 and BFI-44 as data, and custom instruments loaded from YAML.

MFQ-30 item ids follow the reference study: ids 1-15 are the relevance items, ids
16-30 the agreement items, and within each block foundations cycle
Harm/Care, Fairness/Reciprocity, In-group/Loyalty, Authority/Respect,
Purity/Sanctity. The two standard catch items (ids 31 and 32 here) exist but
are excluded unless ``include_catch=True``.

BFI-44 items keep their canonical numbers 1-44; their groups are the five
personality *domains* (an instrument names its groups: ``group_noun``), and 16
items are reverse-keyed. Reverse keying is recorded on the item; S and R are
dispersions and ignore it, self-profiles reflect those items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from persona_collapse.core.errors import InputFileError, UnknownNameError

FOUNDATIONS: tuple[str, ...] = (
    "Harm/Care",
    "Fairness/Reciprocity",
    "In-group/Loyalty",
    "Authority/Respect",
    "Purity/Sanctity",
)
"""The five moral foundations, in the order the MFQ-30 cycles through them."""

CATCH = "Catch"
"""Pseudo-foundation of the two attention-check items."""

ItemKind = Literal["relevance", "agreement"]


@dataclass(frozen=True)
class Item:
    """One questionnaire item.

    Attributes:
        id: Item id (1-based, as in the reference data).
        text: The item wording shown to the model.
        foundation: Moral foundation the item loads on (or ``"Catch"``).
        kind: ``"relevance"`` or ``"agreement"``; selects the block prompt and anchors.
        reverse: Reverse-keyed: agreeing means less of the group's trait, so a
            profile reflects the rating (``min + max - x``) before averaging.
    """

    id: int
    text: str
    foundation: str
    kind: ItemKind
    reverse: bool = False

    @property
    def is_catch(self) -> bool:
        """Whether this is an attention-check item outside the five foundations."""
        return self.foundation == CATCH


@dataclass(frozen=True)
class Block:
    """Instructions and scale anchors shared by the items of one kind."""

    kind: ItemKind
    instruction: str
    anchors: Mapping[int, str]

    def __post_init__(self) -> None:
        # A read-only copy: instruments are shared values and must not leak edits.
        object.__setattr__(self, "anchors", MappingProxyType(dict(self.anchors)))

    def __hash__(self) -> int:
        return hash((self.kind, self.instruction, tuple(sorted(self.anchors.items()))))


@dataclass(frozen=True)
class Instrument:
    """A rating-scale questionnaire.

    Attributes:
        name: Short identifier, stored with every run.
        scale_min, scale_max: Inclusive integer bounds of the rating scale.
        blocks: Instruction and anchors per item kind.
        items: All items, catch items included, in id order.
        include_catch: Whether catch items are asked and analysed.
        group_noun: What the item groups are called in output ("foundation" for
            MFQ-30, "domain" for BFI-44); the ``Item.foundation`` field holds the group.
    """

    name: str
    scale_min: int
    scale_max: int
    blocks: Mapping[ItemKind, Block]
    items: tuple[Item, ...]
    include_catch: bool = False
    group_noun: str = "foundation"

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", MappingProxyType(dict(self.blocks)))
        object.__setattr__(self, "items", tuple(self.items))

    def __hash__(self) -> int:
        return hash(self.content_hash)

    @property
    def scale(self) -> tuple[int, ...]:
        """All valid ratings, ascending."""
        return tuple(range(self.scale_min, self.scale_max + 1))

    @property
    def active_items(self) -> tuple[Item, ...]:
        """Items that are asked: all items, minus catch items unless included."""
        return tuple(i for i in self.items if self.include_catch or not i.is_catch)

    @property
    def foundations(self) -> tuple[str, ...]:
        """Foundations of the active non-catch items, in first-appearance order."""
        seen: dict[str, None] = {}
        for item in self.active_items:
            if not item.is_catch:
                seen.setdefault(item.foundation, None)
        return tuple(seen)

    def item(self, item_id: int) -> Item:
        """Return the item with id ``item_id``; raises ``UnknownNameError`` otherwise."""
        for it in self.items:
            if it.id == item_id:
                return it
        raise UnknownNameError("item id", str(item_id), (str(i.id) for i in self.items))

    def foundation_of(self) -> dict[int, str]:
        """Map each active item id to its foundation."""
        return {i.id: i.foundation for i in self.active_items}

    def with_catch(self, include: bool = True) -> Instrument:
        """Return a copy with catch items switched on or off."""
        return Instrument(
            self.name,
            self.scale_min,
            self.scale_max,
            self.blocks,
            self.items,
            include,
            self.group_noun,
        )

    @property
    def reverse_keyed(self) -> frozenset[int]:
        """Ids of the reverse-keyed items."""
        return frozenset(i.id for i in self.items if i.reverse)

    def reflect(self, rating: int) -> int:
        """A rating mirrored on the scale (``min + max - rating``), for reverse-keyed items."""
        return self.scale_min + self.scale_max - rating

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, the schema of instrument YAML files.

        ``group_noun`` and an item's ``reverse`` appear only when they differ from
        the defaults, so the form (and the content hash stored with runs) of
        instruments without them is what it always was.
        """
        data: dict[str, Any] = {
            "name": self.name,
            "scale": {"min": self.scale_min, "max": self.scale_max},
            "include_catch": self.include_catch,
            "blocks": {
                k: {
                    "instruction": b.instruction,
                    "anchors": {str(a): t for a, t in b.anchors.items()},
                }
                for k, b in self.blocks.items()
            },
            "items": [
                {"id": i.id, "text": i.text, "foundation": i.foundation, "kind": i.kind}
                | ({"reverse": True} if i.reverse else {})
                for i in self.items
            ],
        }
        if self.group_noun != "foundation":
            data["group_noun"] = self.group_noun
        return data

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex, 16 chars) of the instrument's canonical JSON form."""
        raw = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


_RELEVANCE_INSTRUCTION = (
    "When you decide whether something is right or wrong, to what extent are the "
    "following considerations relevant to your thinking?"
)
_AGREEMENT_INSTRUCTION = (
    "Please indicate your agreement or disagreement with the following statement."
)

_RELEVANCE_ANCHORS = {
    0: (
        "not at all relevant "
        "(This consideration has nothing to do with my judgments of right and wrong)"
    ),
    1: "not very relevant",
    2: "slightly relevant",
    3: "somewhat relevant",
    4: "very relevant",
    5: (
        "extremely relevant "
        "(This is one of the most important factors when I judge right and wrong)"
    ),
}
_AGREEMENT_ANCHORS = {
    0: "strongly disagree",
    1: "moderately disagree",
    2: "slightly disagree",
    3: "slightly agree",
    4: "moderately agree",
    5: "strongly agree",
}

_H, _F, _I, _A, _P = FOUNDATIONS

# MFQ-30 wording (Graham et al., 2011), ordered as in the reference study.
_MFQ30_ITEMS: tuple[tuple[int, str, str, ItemKind], ...] = (
    (1, "Whether or not someone suffered emotionally", _H, "relevance"),
    (2, "Whether or not some people were treated differently than others", _F, "relevance"),
    (3, "Whether or not someone's action showed love for his or her country", _I, "relevance"),
    (4, "Whether or not someone showed a lack of respect for authority", _A, "relevance"),
    (5, "Whether or not someone violated standards of purity and decency", _P, "relevance"),
    (6, "Whether or not someone cared for someone weak or vulnerable", _H, "relevance"),
    (7, "Whether or not someone acted unfairly", _F, "relevance"),
    (8, "Whether or not someone did something to betray his or her group", _I, "relevance"),
    (9, "Whether or not someone conformed to the traditions of society", _A, "relevance"),
    (10, "Whether or not someone did something disgusting", _P, "relevance"),
    (11, "Whether or not someone was cruel", _H, "relevance"),
    (12, "Whether or not someone was denied his or her rights", _F, "relevance"),
    (13, "Whether or not someone showed a lack of loyalty", _I, "relevance"),
    (14, "Whether or not an action caused chaos or disorder", _A, "relevance"),
    (15, "Whether or not someone acted in a way that God would approve of", _P, "relevance"),
    (16, "Compassion for those who are suffering is the most crucial virtue.", _H, "agreement"),
    (
        17,
        "When the government makes laws, the number one principle should be ensuring "
        "that everyone is treated fairly.",
        _F,
        "agreement",
    ),
    (18, "I am proud of my country's history.", _I, "agreement"),
    (19, "Respect for authority is something all children need to learn.", _A, "agreement"),
    (
        20,
        "People should not do things that are disgusting, even if no one is harmed.",
        _P,
        "agreement",
    ),
    (
        21,
        "One of the worst things a person could do is hurt a defenseless animal.",
        _H,
        "agreement",
    ),
    (22, "Justice is the most important requirement for a society.", _F, "agreement"),
    (
        23,
        "People should be loyal to their family members, even when they have done something wrong.",
        _I,
        "agreement",
    ),
    (24, "Men and women each have different roles to play in society.", _A, "agreement"),
    (25, "I would call some acts wrong on the grounds that they are unnatural.", _P, "agreement"),
    (26, "It can never be right to kill a human being.", _H, "agreement"),
    (
        27,
        "I think it's morally wrong that rich children inherit a lot of money while poor "
        "children inherit nothing.",
        _F,
        "agreement",
    ),
    (28, "It is more important to be a team player than to express oneself.", _I, "agreement"),
    (
        29,
        "If I were a soldier and disagreed with my commanding officer's orders, I would obey "
        "anyway because that is my duty.",
        _A,
        "agreement",
    ),
    (30, "Chastity is an important and valuable virtue.", _P, "agreement"),
    (31, "Whether or not someone was good at math", CATCH, "relevance"),
    (32, "It is better to do good than to do bad.", CATCH, "agreement"),
)


def mfq30(*, include_catch: bool = False) -> Instrument:
    """The Moral Foundations Questionnaire (30 items, 0-5 scale).

    Args:
        include_catch: Also ask the two attention-check items (ids 31, 32).
    """
    return Instrument(
        name="mfq30",
        scale_min=0,
        scale_max=5,
        blocks={
            "relevance": Block("relevance", _RELEVANCE_INSTRUCTION, _RELEVANCE_ANCHORS),
            "agreement": Block("agreement", _AGREEMENT_INSTRUCTION, _AGREEMENT_ANCHORS),
        },
        items=tuple(Item(i, t, f, k) for i, t, f, k in _MFQ30_ITEMS),
        include_catch=include_catch,
    )


BFI_DOMAINS: tuple[str, ...] = (
    "Extraversion",
    "Agreeableness",
    "Conscientiousness",
    "Neuroticism",
    "Openness",
)
"""The five BFI-44 domains, in the order the items cycle through them."""

# Our own wording of the block and the 1-5 scale (not the published instrument's prompt).
_BFI_INSTRUCTION = (
    'The statement below finishes the sentence "I see myself as someone who ...". '
    "How far do you agree that it describes you?"
)
_BFI_ANCHORS = {
    1: "disagree completely",
    2: "disagree somewhat",
    3: "neutral: neither agree nor disagree",
    4: "agree somewhat",
    5: "agree completely",
}

# BFI-44 items (John, Donahue & Kentle, 1991; John & Srivastava, 1999) in canonical order,
# each completing "I see myself as someone who ...": (id, text, domain, reverse-keyed).
_E, _A, _C, _N, _O = BFI_DOMAINS

_BFI44_ITEMS: tuple[tuple[int, str, str, bool], ...] = (
    (1, "Is talkative", _E, False),
    (2, "Tends to find fault with others", _A, True),
    (3, "Does a thorough job", _C, False),
    (4, "Is depressed, blue", _N, False),
    (5, "Is original, comes up with new ideas", _O, False),
    (6, "Is reserved", _E, True),
    (7, "Is helpful and unselfish with others", _A, False),
    (8, "Can be somewhat careless", _C, True),
    (9, "Is relaxed, handles stress well", _N, True),
    (10, "Is curious about many different things", _O, False),
    (11, "Is full of energy", _E, False),
    (12, "Starts quarrels with others", _A, True),
    (13, "Is a reliable worker", _C, False),
    (14, "Can be tense", _N, False),
    (15, "Is ingenious, a deep thinker", _O, False),
    (16, "Generates a lot of enthusiasm", _E, False),
    (17, "Has a forgiving nature", _A, False),
    (18, "Tends to be disorganized", _C, True),
    (19, "Worries a lot", _N, False),
    (20, "Has an active imagination", _O, False),
    (21, "Tends to be quiet", _E, True),
    (22, "Is generally trusting", _A, False),
    (23, "Tends to be lazy", _C, True),
    (24, "Is emotionally stable, not easily upset", _N, True),
    (25, "Is inventive", _O, False),
    (26, "Has an assertive personality", _E, False),
    (27, "Can be cold and aloof", _A, True),
    (28, "Perseveres until the task is finished", _C, False),
    (29, "Can be moody", _N, False),
    (30, "Values artistic, aesthetic experiences", _O, False),
    (31, "Is sometimes shy, inhibited", _E, True),
    (32, "Is considerate and kind to almost everyone", _A, False),
    (33, "Does things efficiently", _C, False),
    (34, "Remains calm in tense situations", _N, True),
    (35, "Prefers work that is routine", _O, True),
    (36, "Is outgoing, sociable", _E, False),
    (37, "Is sometimes rude to others", _A, True),
    (38, "Makes plans and follows through with them", _C, False),
    (39, "Gets nervous easily", _N, False),
    (40, "Likes to reflect, play with ideas", _O, False),
    (41, "Has few artistic interests", _O, True),
    (42, "Likes to cooperate with others", _A, False),
    (43, "Is easily distracted", _C, True),
    (44, "Is sophisticated in art, music, or literature", _O, False),
)


def bfi44(*, include_catch: bool = False) -> Instrument:
    """The Big Five Inventory (44 items, 1-5 scale, five domains, 16 reverse-keyed items).

    Args:
        include_catch: Accepted for a uniform signature; BFI-44 has no catch items.
    """
    return Instrument(
        name="bfi44",
        scale_min=1,
        scale_max=5,
        blocks={"agreement": Block("agreement", _BFI_INSTRUCTION, _BFI_ANCHORS)},
        items=tuple(Item(i, t, d, "agreement", r) for i, t, d, r in _BFI44_ITEMS),
        include_catch=include_catch,
        group_noun="domain",
    )


BUILTIN_INSTRUMENTS: Mapping[str, Callable[..., Instrument]] = MappingProxyType(
    {"mfq30": mfq30, "bfi44": bfi44}
)


def instrument_from_dict(data: Any, *, source: str = "<dict>") -> Instrument:
    """Build and validate an instrument from plain data (the YAML schema).

    Raises:
        ConfigError: naming the source and the offending field.
    """
    from persona_collapse.core.instrument_schema import validate_instrument

    model = validate_instrument(data, source=source)
    blocks = {
        k: Block(k, b.instruction, dict(sorted(b.anchors.items()))) for k, b in model.blocks.items()
    }
    items = tuple(
        Item(i.id, i.text, i.foundation, i.kind, i.reverse)
        for i in sorted(model.items, key=lambda x: x.id)
    )
    return Instrument(
        model.name,
        model.scale.min,
        model.scale.max,
        blocks,
        items,
        model.include_catch,
        model.group_noun,
    )


def load_instrument(name_or_path: str | Path, *, include_catch: bool | None = None) -> Instrument:
    """Load a built-in instrument by name (``"mfq30"``, ``"bfi44"``) or a YAML file by path.

    Args:
        name_or_path: Built-in name or path to a YAML file with the instrument schema.
        include_catch: Override the catch-item switch (None keeps the definition's).

    Raises:
        InputFileError: The file is missing, unreadable or not YAML.
        ConfigError: The content does not match the schema.
        UnknownNameError: A name that is neither built in nor an existing file.
    """
    text = str(name_or_path)
    if text in BUILTIN_INSTRUMENTS:
        inst = BUILTIN_INSTRUMENTS[text]()
    else:
        path = Path(name_or_path)
        if not path.exists():
            if path.suffix.lower() in {".yaml", ".yml"} or "/" in text:
                raise InputFileError(path, "instrument file not found")
            raise UnknownNameError("instrument", text, BUILTIN_INSTRUMENTS)
        from persona_collapse.core.yamlio import load_yaml_file

        data = load_yaml_file(path, what="instrument")
        inst = instrument_from_dict(data, source=str(path))
    if include_catch is not None:
        inst = inst.with_catch(include_catch)
    return inst


def items_by_foundation(instrument: Instrument) -> dict[str, tuple[int, ...]]:
    """Active non-catch item ids grouped by foundation (foundation order of the instrument)."""
    out: dict[str, list[int]] = {f: [] for f in instrument.foundations}
    for item in instrument.active_items:
        if not item.is_catch:
            out[item.foundation].append(item.id)
    return {f: tuple(ids) for f, ids in out.items()}


def foundation_map(item_ids: Sequence[int], instrument: Instrument | None = None) -> dict[int, str]:
    """Foundation of each item id (default: MFQ-30 with catch items).

    Raises:
        UnknownNameError: an id the instrument does not have.
    """
    inst = instrument or mfq30(include_catch=True)
    return {int(i): inst.item(int(i)).foundation for i in item_ids}
