"""Tests of prompt templates, rendering, hashing and rating extraction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from persona_collapse.core.errors import ConfigError, InputFileError, UnknownNameError
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    MAX_SHORT_ATTEMPTS,
    SHORT_MAX_TOKENS,
    extract_rating,
    load_template,
    render_prompt,
    render_scale,
    template_hash,
)

SCALE = (0, 5)

# --- extract_rating ---------------------------------------------------------------------------

SHORT_CASES: list[tuple[str, int | None]] = [
    ("4", 4),
    ("0", 0),
    ("5", 5),
    (" 3 ", 3),
    ("\n2\n", 2),
    ("4.", 4),
    ("4. That is my answer.", 4),
    ("4 - very relevant", 4),
    ("4 — speaking as this person", 4),
    ("4\n\nAs this person, it matters.", 4),
    ("**4**", 4),
    ("*4*", 4),
    ("__3__", 3),
    ("`2`", 2),
    ('"4"', 4),
    ("'1'", 1),
    ("“3”", 3),
    ("(4)", 4),
    ("[5]", 5),
    ("# 3", 3),
    ("4/5", 4),
    ("4)", 4),
    ("4:", 4),
    ("4,", 4),
    ("45", None),
    ("4.5", None),
    ("4,5", None),
    ("10", None),
    ("6", None),
    ("-1", None),
    ("- 4", None),
    ("4-5", None),
    ("4th", None),
    ("4x", None),
    ("I'd say 4", None),
    ("Rating: 4", None),
    ("As", None),
    ("I", None),
    ("Hmm", None),
    ("", None),
    ("   ", None),
    ("**", None),
    ("four", None),
    ("Q4", None),
]


@pytest.mark.parametrize(("text", "expected"), SHORT_CASES)
def test_extract_rating_short(text: str, expected: int | None) -> None:
    assert extract_rating(text, SCALE) == expected


LONG_CASES: list[tuple[str, int | None]] = [
    ("4", 4),
    ("I'd say 4", 4),
    ("As this person I would answer 4.", 4),
    ("Speaking as them: 3 — it matters somewhat.", 3),
    ("**Answer:** 2", 2),
    ("My rating is (5).", 5),
    # Was 3 (the first standalone integer anywhere); "so overall 3" is no explicit answer
    # and the answer given, 4.5, is off the scale (issue 15.1).
    ("I'd rate 4.5, so overall 3", None),
    ("Between 1,000 options I pick 2", 2),  # grouped number skipped
    ("On a 0-5 scale I would pick 4", 4),  # range skipped
    ("On a 0–5 scale I would pick 1", 1),  # en-dash range skipped
    ("In Q4 of 2020 ... hmm", None),  # Q4 skipped, 2020 off scale
    ("Since COVID-19 I'd answer 3", 3),  # compound skipped
    ("the 4th item: 2", 2),  # ordinal skipped
    ("I would answer 7, no, 4", None),  # first standalone integer off-scale: no skipping on
    ("10 out of 10, so 5", None),
    ("Rating -1 then 3", None),  # negative first integer is off-scale
    ("50% sure it is 4", None),
    ("I'm not able to give a number.", None),
    ("", None),
    ("Hmm, that is hard to pin down.", None),
    ("4/5", 4),
    ("Answer:3", 3),
]


@pytest.mark.parametrize(("text", "expected"), LONG_CASES)
def test_extract_rating_long(text: str, expected: int | None) -> None:
    assert extract_rating(text, SCALE, long_form=True) == expected


def test_extract_rating_scale_forms() -> None:
    # a pair is (min, max); a longer sequence or a range lists the values
    assert extract_rating("5", (1, 5)) == 5
    assert extract_rating("0", (1, 5)) is None
    assert extract_rating("3", [0, 1, 2, 3, 4, 5]) == 3
    assert extract_rating("3", (0, 1, 2)) is None
    assert extract_rating("7", range(0, 10)) == 7
    assert extract_rating("9", (1, 9)) == 9
    assert extract_rating("3", mfq30().scale) == 3
    with pytest.raises(ValueError, match="scale"):
        extract_rating("3", ())
    with pytest.raises(ValueError, match="scale"):
        extract_rating("3", (5, 0))


def test_protocol_constants() -> None:
    assert SHORT_MAX_TOKENS == 1
    assert LONG_MAX_TOKENS == 64
    assert MAX_SHORT_ATTEMPTS == 10


# --- rendering --------------------------------------------------------------------------------


def test_render_persona_prompt() -> None:
    inst = mfq30()
    persona = "A retired lighthouse keeper who collects sea glass"
    prompt = render_prompt(DEFAULT_TEMPLATE, inst, 1, persona)
    assert prompt.persona == persona
    assert prompt.item_id == 1
    roles = [m.role for m in prompt.messages]
    assert roles == ["system", "user"]
    system, user = (m.content for m in prompt.messages)
    assert persona in system
    assert persona not in user
    item = inst.item(1)
    assert item.text in user
    assert inst.blocks["relevance"].instruction in user
    assert "0 = not at all relevant" in user
    assert "5 = extremely relevant" in user
    assert "single integer from 0 to 5" in user
    assert "{" not in system + user


def test_render_agreement_item_uses_its_block() -> None:
    inst = mfq30()
    prompt = render_prompt(DEFAULT_TEMPLATE, inst, 16, "A chess coach")
    user = prompt.messages[-1].content
    assert inst.blocks["agreement"].instruction in user
    assert "0 = strongly disagree" in user
    assert "not at all relevant" not in user


def test_render_self_prompt_has_no_persona() -> None:
    inst = mfq30()
    prompt = render_prompt(DEFAULT_TEMPLATE, inst, 18, None)
    assert prompt.persona is None
    assert prompt.item_id == 18
    assert [m.role for m in prompt.messages] == ["user"]
    assert inst.item(18).text in prompt.text
    assert "role-play" not in prompt.text


def test_render_self_system_message_when_given() -> None:
    tpl = dataclasses.replace(DEFAULT_TEMPLATE, self_system="Answer honestly.")
    prompt = render_prompt(tpl, mfq30(), 2, None)
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[0].content == "Answer honestly."


def test_render_scale_lines() -> None:
    text = render_scale(mfq30(), "agreement")
    lines = text.splitlines()
    assert len(lines) == 6
    assert lines[0] == "0 = strongly disagree"
    assert lines[-1] == "5 = strongly agree"


def test_render_errors() -> None:
    with pytest.raises(UnknownNameError):
        render_prompt(DEFAULT_TEMPLATE, mfq30(), 99, "x")
    with pytest.raises(ValueError, match="persona"):
        render_prompt(DEFAULT_TEMPLATE, mfq30(), 1, "   ")


def test_literal_braces_and_format_spec() -> None:
    tpl = dataclasses.replace(
        DEFAULT_TEMPLATE, persona_user="{{json}} {item} ({scale_min:d}-{scale_max:d}) {persona}"
    )
    text = render_prompt(tpl, mfq30(), 1, "P").messages[-1].content
    assert text.startswith("{json} Whether or not someone suffered emotionally (0-5) P")


# --- template validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field_in_message"),
    [
        ({"persona_user": "{instruction} {scale}"}, "persona_user"),  # no {item}
        ({"self_user": "{scale}"}, "self_user"),  # no {item}
        ({"persona_system": "Be someone.", "persona_user": "{item}"}, "persona"),  # no {persona}
        ({"self_user": "{persona} {item}"}, "self_user"),  # persona in self prompt
        ({"self_system": "{persona}"}, "self_system"),
        ({"persona_user": "{item} {itme}"}, "persona_user"),  # unknown placeholder
        ({"persona_user": "{item} {0}"}, "persona_user"),  # positional
        ({"persona_user": "{item} {}"}, "persona_user"),  # empty
        ({"persona_user": "{item.text}"}, "persona_user"),  # attribute access
        ({"persona_system": "{persona"}, "persona_system"),  # malformed
        ({"persona_user": ""}, "persona_user"),  # empty field
    ],
)
def test_template_validation(change: dict[str, str], field_in_message: str) -> None:
    with pytest.raises(ConfigError, match=field_in_message):
        dataclasses.replace(DEFAULT_TEMPLATE, **change)


def test_load_template_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "persona_system: 'You are {persona}.'\n"
        "persona_user: '{instruction} {item}\\n{scale}\\nOne integer, {scale_min}-{scale_max}.'\n"
        "self_system: null\n"
        "self_user: '{item} {scale}'\n",
        encoding="utf-8",
    )
    tpl = load_template(path)
    assert tpl.persona_system == "You are {persona}."
    assert tpl.self_system is None
    prompt = render_prompt(tpl, mfq30(), 3, "a baker")
    assert prompt.messages[0].content == "You are a baker."


def test_load_template_partial_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("self_system: 'Be brief.'\n", encoding="utf-8")
    tpl = load_template(path)
    assert tpl.self_system == "Be brief."
    assert tpl.persona_user == DEFAULT_TEMPLATE.persona_user


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        ("colour: red\n", ConfigError, "colour"),
        ("persona_user: '{instruction}'\n", ConfigError, "persona_user"),
        ("persona_user: '{item} {bogus}'\n", ConfigError, "bogus"),
        ("persona_system: 'x'\npersona_user: '{item}'\n", ConfigError, "persona"),
        ("persona_user: 5\n", ConfigError, "persona_user"),
        ("", InputFileError, "empty"),
        ("- a\n- b\n", InputFileError, "mapping"),
        ("a: [unclosed\n", InputFileError, "YAML"),
    ],
)
def test_load_template_errors(
    tmp_path: Path, content: str, error: type[Exception], match: str
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=match) as info:
        load_template(path)
    assert str(path) in str(info.value)


def test_load_template_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_template(tmp_path / "nope.yaml")


# --- hashing ---------------------------------------------------------------------------------


def test_template_hash_stable_and_sensitive() -> None:
    inst = mfq30()
    h = template_hash(DEFAULT_TEMPLATE, inst)
    assert len(h) == 16
    int(h, 16)
    assert template_hash(DEFAULT_TEMPLATE, mfq30()) == h
    changed = dataclasses.replace(DEFAULT_TEMPLATE, self_user=DEFAULT_TEMPLATE.self_user + " ")
    assert template_hash(changed, inst) != h
    # wording of the instrument reaches the prompts, so it changes the hash too
    items = tuple(dataclasses.replace(i, text=i.text + "!") if i.id == 7 else i for i in inst.items)
    assert template_hash(DEFAULT_TEMPLATE, dataclasses.replace(inst, items=items)) != h


def test_bfi44_ratings_are_one_to_five() -> None:
    from persona_collapse.core.instrument import bfi44

    scale = bfi44().scale
    assert [extract_rating(r, scale) for r in ("1", "5", " **3**", "4.")] == [1, 5, 3, 4]
    assert [extract_rating(r, scale) for r in ("0", "6", "45", "I'd say 4")] == [None] * 4
    assert extract_rating("I would rate it 2, as it fits me.", scale, long_form=True) == 2
    assert extract_rating("My rating: 0", scale, long_form=True) is None


def test_bfi44_prompt_uses_our_wording_and_its_scale() -> None:
    from persona_collapse.core.instrument import bfi44

    prompt = render_prompt(DEFAULT_TEMPLATE, bfi44(), 6, "a retired sailor")
    text = "\n".join(m.content for m in prompt.messages)
    assert "Is reserved" in text and "I see myself as someone who" in text
    assert "1 = disagree completely" in text and "5 = agree completely" in text
    assert "from 1 to 5" in text
    assert "0 =" not in text
