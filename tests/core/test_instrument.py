"""Tests of persona_collapse.core.instrument: the MFQ-30 layout and YAML instruments."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from persona_collapse.core.errors import ConfigError, InputFileError, UnknownNameError, UserError
from persona_collapse.core.instrument import (
    CATCH,
    FOUNDATIONS,
    Instrument,
    foundation_map,
    instrument_from_dict,
    items_by_foundation,
    load_instrument,
    mfq30,
)

# --- MFQ-30 layout ---------------------------------------------------------------------------


def test_thirty_active_items_with_ids_1_to_30() -> None:
    inst = mfq30()
    assert isinstance(inst, Instrument)
    assert [i.id for i in inst.active_items] == list(range(1, 31))
    assert not any(i.is_catch for i in inst.active_items)
    assert inst.scale == (0, 1, 2, 3, 4, 5)
    assert len({i.text for i in inst.active_items}) == 30


def test_foundations_cycle_within_each_block() -> None:
    inst = mfq30()
    for item in inst.active_items:
        expected_kind = "relevance" if item.id <= 15 else "agreement"
        assert item.kind == expected_kind, item
        # Position within its block (0-based) selects the foundation cyclically.
        position = (item.id - 1) % 15
        assert item.foundation == FOUNDATIONS[position % 5], item
    assert FOUNDATIONS == (
        "Harm/Care",
        "Fairness/Reciprocity",
        "In-group/Loyalty",
        "Authority/Respect",
        "Purity/Sanctity",
    )


def test_six_items_per_foundation() -> None:
    groups = items_by_foundation(mfq30())
    assert tuple(groups) == FOUNDATIONS
    assert all(len(ids) == 6 for ids in groups.values())
    assert groups["Harm/Care"] == (1, 6, 11, 16, 21, 26)
    assert groups["Purity/Sanctity"] == (5, 10, 15, 20, 25, 30)
    assert sorted(i for ids in groups.values() for i in ids) == list(range(1, 31))
    assert mfq30().foundations == FOUNDATIONS


def test_some_known_item_wordings() -> None:
    inst = mfq30()
    assert "suffered emotionally" in inst.item(1).text
    assert "God would approve" in inst.item(15).text
    assert inst.item(30).text.startswith("Chastity")
    with pytest.raises(UnknownNameError, match="item id '99'"):
        inst.item(99)


def test_catch_items_off_by_default_and_on_when_included() -> None:
    default = mfq30()
    assert default.include_catch is False
    assert [i.id for i in default.items][-2:] == [31, 32]
    assert {31, 32}.isdisjoint(i.id for i in default.active_items)
    assert set(default.foundation_of()) == set(range(1, 31))

    with_catch = mfq30(include_catch=True)
    active = [i.id for i in with_catch.active_items]
    assert active == list(range(1, 33))
    assert with_catch.item(31).is_catch and with_catch.item(31).kind == "relevance"
    assert with_catch.item(32).is_catch and with_catch.item(32).kind == "agreement"
    assert with_catch.foundation_of()[32] == CATCH
    # Catch items never count as a foundation.
    assert with_catch.foundations == FOUNDATIONS
    assert all(len(ids) == 6 for ids in items_by_foundation(with_catch).values())
    assert default.with_catch().include_catch is True
    assert with_catch.with_catch(False) == default
    assert load_instrument("mfq30", include_catch=True) == with_catch
    assert default.content_hash != with_catch.content_hash


def test_foundation_map() -> None:
    assert foundation_map([1, 17, 31]) == {1: "Harm/Care", 17: "Fairness/Reciprocity", 31: CATCH}
    with pytest.raises(UnknownNameError):
        foundation_map([33])


def test_blocks_and_anchors_cover_the_scale() -> None:
    inst = mfq30()
    assert set(inst.blocks) == {"relevance", "agreement"}
    for block in inst.blocks.values():
        assert set(block.anchors) == set(inst.scale)
        assert block.instruction.strip()


def test_builtin_name_and_hash_are_stable() -> None:
    assert load_instrument("mfq30") == mfq30()
    assert load_instrument("mfq30").content_hash == mfq30().content_hash
    assert len(mfq30().content_hash) == 16
    int(mfq30().content_hash, 16)


def test_instrument_is_hashable() -> None:
    assert hash(mfq30()) == hash(mfq30())
    assert len({mfq30(), mfq30(), mfq30(include_catch=True)}) == 2


def test_mutating_one_instrument_does_not_leak() -> None:
    first = mfq30()
    original = first.blocks["relevance"].anchors[0]
    try:
        first.blocks["relevance"].anchors[0] = "changed"  # type: ignore[index]
    except TypeError:
        return  # read-only mapping: fine
    try:
        assert mfq30().blocks["relevance"].anchors[0] == original
    finally:
        first.blocks["relevance"].anchors[0] = original  # type: ignore[index]


# --- YAML round trip -------------------------------------------------------------------------


def _dump(tmp_path: Path, data: Any, name: str = "inst.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("include_catch", [False, True])
def test_yaml_round_trip_keeps_content_hash(tmp_path: Path, include_catch: bool) -> None:
    original = mfq30(include_catch=include_catch)
    path = _dump(tmp_path, original.to_dict())
    loaded = load_instrument(path)
    assert loaded.content_hash == original.content_hash
    assert loaded == original
    assert load_instrument(str(path)).content_hash == original.content_hash
    assert load_instrument(path, include_catch=not include_catch).include_catch is (
        not include_catch
    )


def test_yaml_with_int_anchor_keys_and_shuffled_items(tmp_path: Path) -> None:
    data = mfq30().to_dict()
    for block in data["blocks"].values():
        block["anchors"] = {int(k): v for k, v in block["anchors"].items()}
    data["items"] = list(reversed(data["items"]))
    loaded = load_instrument(_dump(tmp_path, data))
    assert loaded.content_hash == mfq30().content_hash
    assert [i.id for i in loaded.items] == list(range(1, 33))


def test_custom_small_instrument(tmp_path: Path) -> None:
    data = {
        "name": "tiny",
        "scale": {"min": 1, "max": 3},
        "blocks": {
            "agreement": {"instruction": "Agree?", "anchors": {1: "no", 2: "meh", 3: "yes"}}
        },
        "items": [
            {"id": 2, "text": " Second ", "foundation": "B", "kind": "agreement"},
            {"id": 1, "text": "First", "foundation": "A", "kind": "agreement"},
        ],
    }
    inst = load_instrument(_dump(tmp_path, data))
    assert inst.scale == (1, 2, 3)
    assert [i.id for i in inst.items] == [1, 2]
    assert inst.item(2).text == "Second"
    assert inst.foundations == ("A", "B")
    assert items_by_foundation(inst) == {"A": (1,), "B": (2,)}


# --- invalid YAML ----------------------------------------------------------------------------


def _base() -> dict[str, Any]:
    return copy.deepcopy(mfq30().to_dict())


def _drop_name(d: dict[str, Any]) -> None:
    del d["name"]


def _drop_item_text(d: dict[str, Any]) -> None:
    del d["items"][3]["text"]


def _duplicate_id(d: dict[str, Any]) -> None:
    d["items"][6]["id"] = 4


def _short_anchors(d: dict[str, Any]) -> None:
    del d["blocks"]["agreement"]["anchors"]["5"]


def _extra_anchor(d: dict[str, Any]) -> None:
    d["blocks"]["relevance"]["anchors"]["6"] = "beyond the scale"


def _unknown_item_kind(d: dict[str, Any]) -> None:
    d["items"][0]["kind"] = "frequency"


def _unknown_block_kind(d: dict[str, Any]) -> None:
    d["blocks"]["frequency"] = d["blocks"]["agreement"]


def _reversed_scale(d: dict[str, Any]) -> None:
    d["scale"] = {"min": 5, "max": 0}


def _wide_scale(d: dict[str, Any]) -> None:
    d["scale"] = {"min": 0, "max": 10}


def _text_scale(d: dict[str, Any]) -> None:
    d["scale"]["max"] = "five"


def _extra_top_key(d: dict[str, Any]) -> None:
    d["colour"] = "blue"


def _extra_item_key(d: dict[str, Any]) -> None:
    d["items"][2]["reverse_scored"] = True


def _blank_text(d: dict[str, Any]) -> None:
    d["items"][0]["text"] = "   "


def _zero_id(d: dict[str, Any]) -> None:
    d["items"][0]["id"] = 0


def _missing_block(d: dict[str, Any]) -> None:
    del d["blocks"]["agreement"]


def _only_catch(d: dict[str, Any]) -> None:
    d["items"] = [i for i in d["items"] if i["foundation"] == CATCH]


def _no_items(d: dict[str, Any]) -> None:
    d["items"] = []


# (mutation, fragments the ConfigError message must contain besides the file name)
SCHEMA_ERRORS = [
    (_drop_name, ["field 'name'", "Field required"]),
    (_drop_item_text, ["field 'items.3.text'", "Field required"]),
    (_duplicate_id, ["duplicate item ids", "[4]"]),
    (_short_anchors, ["blocks.agreement.anchors", "[0, 1, 2, 3, 4, 5]"]),
    (_extra_anchor, ["blocks.relevance.anchors", "[0, 1, 2, 3, 4, 5, 6]"]),
    (_unknown_item_kind, ["field 'items.0.kind'", "'relevance' or 'agreement'"]),
    (_unknown_block_kind, ["blocks.frequency"]),
    (_reversed_scale, ["field 'scale'", "greater than scale.min"]),
    (_wide_scale, ["field 'scale'", "0..9"]),
    (_text_scale, ["field 'scale.max'", "integer"]),
    (_extra_top_key, ["field 'colour'", "unknown key"]),
    (_extra_item_key, ["field 'items.2.reverse_scored'", "unknown key"]),
    (_blank_text, ["field 'items.0.text'", "blank"]),
    (_zero_id, ["field 'items.0.id'", "greater than or equal to 1"]),
    (_missing_block, ["kind 'agreement'", "no such block"]),
    (_only_catch, ["other than 'Catch'"]),
    (_no_items, ["field 'items'"]),
]


@pytest.mark.parametrize(
    ("mutate", "fragments"), SCHEMA_ERRORS, ids=[m.__name__.strip("_") for m, _ in SCHEMA_ERRORS]
)
def test_schema_errors_name_file_and_field(
    tmp_path: Path, mutate: Any, fragments: list[str]
) -> None:
    data = _base()
    mutate(data)
    path = _dump(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_instrument(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid instrument"), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "error", "fragments"),
    [
        ("name: mfq\nitems: [1, 2\nscale: {", InputFileError, ["not valid YAML", "line "]),
        ("\tname: x\n", InputFileError, ["not valid YAML", "line 1"]),
        ("just a sentence, not an instrument\n", ConfigError, ["(top level)", "dictionary"]),
        ("- a\n- b\n", ConfigError, ["(top level)", "dictionary"]),
        ("", InputFileError, ["empty"]),
        ("# only a comment\n\n", InputFileError, ["empty"]),
    ],
    ids=["broken-syntax", "tab-indent", "scalar", "list", "empty", "comment-only"],
)
def test_not_an_instrument_file(
    tmp_path: Path, content: str, error: type[UserError], fragments: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(error) as info:
        load_instrument(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nscale:\n  min: 0\n  max: [5\n", encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        load_instrument(path)
    assert info.value.line is not None and info.value.line >= 4


def test_undecodable_instrument_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(InputFileError, match="cannot read instrument file"):
        load_instrument(path)


def test_nonexistent_paths(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(InputFileError, match=r"missing\.yaml: instrument file not found"):
        load_instrument(missing)
    with pytest.raises(InputFileError, match="not found"):
        load_instrument(str(tmp_path / "sub" / "inst"))


def test_unknown_builtin_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="unknown instrument 'mfq3'; did you mean 'mfq30'"):
        load_instrument("mfq3")
    # BFI-44 is built in now: "bfi" finds it, a name like no built-in lists them all.
    with pytest.raises(UnknownNameError, match="did you mean 'bfi44'"):
        load_instrument("bfi")
    with pytest.raises(UnknownNameError, match="known: bfi44, mfq30"):
        load_instrument("hexaco")


def test_instrument_from_dict_uses_source_label() -> None:
    with pytest.raises(ConfigError, match=r"^study\.yaml#instrument: invalid instrument"):
        instrument_from_dict({"name": "x"}, source="study.yaml#instrument")


def test_schema_module_agrees_with_the_instrument_module() -> None:
    # The YAML schema repeats two constants so that built-in instruments load without pydantic.
    import typing

    from persona_collapse.core import instrument, instrument_schema

    assert instrument_schema.CATCH == instrument.CATCH
    assert typing.get_args(instrument_schema.ItemKind) == typing.get_args(instrument.ItemKind)


# --- BFI-44 -------------------------------------------------------------------------------

# SPEC section 1: domain -> (item ids, reverse-keyed ids).
BFI_DOMAIN_ITEMS = {
    "Extraversion": ((1, 6, 11, 16, 21, 26, 31, 36), {6, 21, 31}),
    "Agreeableness": ((2, 7, 12, 17, 22, 27, 32, 37, 42), {2, 12, 27, 37}),
    "Conscientiousness": ((3, 8, 13, 18, 23, 28, 33, 38, 43), {8, 18, 23, 43}),
    "Neuroticism": ((4, 9, 14, 19, 24, 29, 34, 39), {9, 24, 34}),
    "Openness": ((5, 10, 15, 20, 25, 30, 35, 40, 41, 44), {35, 41}),
}


def test_bfi44_items_domains_and_reverse_keys() -> None:
    from persona_collapse.core.instrument import bfi44, items_by_foundation

    inst = load_instrument("bfi44")
    assert inst == bfi44()
    assert (inst.name, inst.scale, inst.group_noun) == ("bfi44", (1, 2, 3, 4, 5), "domain")
    assert [i.id for i in inst.active_items] == list(range(1, 45))
    assert inst.item(1).text == "Is talkative"
    assert inst.item(2).text == "Tends to find fault with others"
    assert inst.item(44).text == "Is sophisticated in art, music, or literature"
    assert items_by_foundation(inst) == {d: ids for d, (ids, _) in BFI_DOMAIN_ITEMS.items()}
    reverse = set().union(*(rev for _, rev in BFI_DOMAIN_ITEMS.values()))
    assert inst.reverse_keyed == reverse and len(reverse) == 16
    assert set(inst.blocks[inst.item(1).kind].anchors) == {1, 2, 3, 4, 5}
    assert inst.reflect(1) == 5 and inst.reflect(4) == 2
    assert load_instrument("bfi44", include_catch=True).active_items == inst.active_items


def test_group_noun_and_reverse_keys_round_trip_through_yaml(tmp_path: Path) -> None:
    bfi = load_instrument("bfi44")
    path = _dump(tmp_path, bfi.to_dict())
    again = load_instrument(path)
    assert again == bfi
    assert again.content_hash == bfi.content_hash
    # Instruments without them keep the form (and hash) they always had.
    plain = mfq30(include_catch=True).to_dict()
    assert "group_noun" not in plain
    assert all("reverse" not in item for item in plain["items"])
    assert mfq30().group_noun == "foundation" and not mfq30().reverse_keyed
