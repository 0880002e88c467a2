"""Tests of persona_collapse.core.personas: built-in sets, file formats, error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from persona_collapse.core.errors import InputFileError, UnknownNameError, UserError
from persona_collapse.core.personas import (
    BUILTIN_PERSONA_SETS,
    SUPPORTED_EXTENSIONS,
    PersonaSet,
    builtin_personas,
    get_persona_set,
    load_personas,
    toxic_personas,
)

SAMPLE = ("A shy 20-year-old poet in Lima.", "A jovial 70-year-old baker in Oslo.", "A nurse.")


# --- built-in sets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "size"), [(builtin_personas, 100), (toxic_personas, 8)], ids=["default", "toxic"]
)
def test_builtin_sizes_uniqueness_and_length(loader: object, size: int) -> None:
    personas = loader()  # type: ignore[operator]
    assert isinstance(personas, PersonaSet)
    assert len(personas) == size
    assert len(set(personas)) == size
    # Near-duplicates (same text up to case and spacing) would also defeat diversity.
    assert len({" ".join(p.lower().split()) for p in personas}) == size
    for text in personas:
        assert 8 <= len(text.split()) <= 40, text
        assert text == text.strip()
        assert text[0].isupper() and text.endswith("."), text
        # One sentence: no full stop before the final one.
        assert "." not in text[:-1].replace("St.", ""), text


def test_builtin_names_sources_and_registry() -> None:
    assert set(BUILTIN_PERSONA_SETS) == {"default", "toxic"}
    assert builtin_personas().name == "default"
    assert builtin_personas().source == "default"
    assert toxic_personas().name == "toxic"
    assert get_persona_set("default") == builtin_personas()
    assert get_persona_set("toxic") == toxic_personas()
    with pytest.raises(TypeError):
        BUILTIN_PERSONA_SETS["extra"] = builtin_personas  # type: ignore[index]


def test_builtin_sets_do_not_overlap() -> None:
    assert not set(builtin_personas()) & set(toxic_personas())


def test_default_personas_are_third_person_with_correct_article() -> None:
    for text in builtin_personas():
        assert re.match(r"(A|An) ", text), text
        assert not re.search(r"\b(I|my|me)\b", text), text
        m = re.match(r"(A|An) (\d+)-year-old", text)
        if m:
            # "An 18-year-old", "An 81-year-old", but "A 19-year-old".
            age = m.group(2)
            wants_an = age.startswith("8") or age in {"11", "18"}
            assert (m.group(1) == "An") == wants_an, text


def test_default_personas_span_ages() -> None:
    ages = [int(a) for p in builtin_personas() for a in re.findall(r"(\d+)-year-old", p)]
    assert len(ages) >= 80
    decades = {a // 10 * 10 for a in ages}
    assert {10, 20, 30, 40, 50, 60, 70, 80, 90} <= decades
    assert sum(a < 20 for a in ages) >= 5
    assert sum(a >= 80 for a in ages) >= 5


def _count_matching(texts: PersonaSet, words: list[str]) -> dict[str, int]:
    return {w: sum(bool(re.search(rf"\b{w}", t)) for t in texts) for w in words}


def test_default_personas_span_faiths() -> None:
    faiths = [
        "Lutheran", "Catholic", "Orthodox", "Muslim", "Jewish", "Hindu", "Buddhist", "Sikh",
        "Jain", "Shinto", "Zoroastrian", "Bahá'í", "Quaker", "Latter-day Saint", "Baptist",
        "Pentecostal", "Anglican", "Methodist", "Taoist", "Rastafarian", "Wicca", "Vodou",
        "Sufi", "Coptic", "Confucian",
    ]  # fmt: skip
    counts = _count_matching(builtin_personas(), faiths)
    assert sum(c > 0 for c in counts.values()) >= 20, counts
    secular = _count_matching(builtin_personas(), ["atheist", "agnostic", "secular", "humanist"])
    assert sum(secular.values()) >= 8, secular
    # No single tradition dominates the set.
    assert max(counts.values()) <= 20, counts


def test_default_personas_span_continents() -> None:
    places = {
        "Africa": ["Kenya", "Lagos", "Ghana", "Egypt", "Morocco", "South Africa", "Durban",
                   "Tanzania", "Ethiopia", "Somaliland", "Nigeria", "Sudanese"],
        "Asia": ["Chennai", "Osaka", "Seoul", "Shenzhen", "Hanoi", "Dhaka", "Lahore", "Kyoto",
                 "Singapore", "Kazakhstan", "Thailand", "Indonesia"],
        "Europe": ["Berlin", "Budapest", "Glasgow", "Ireland", "Sweden", "Poland", "Vienna",
                   "Munich", "Belgrade", "Estonia", "Marseille", "Norway"],
        "North America": ["Minnesota", "Alberta", "Toronto", "Texas", "Utah", "Mexico",
                          "Philadelphia", "Vermont", "Havana", "Haiti", "Jamaica"],
        "South America": ["Chile", "Rio de Janeiro", "Buenos Aires", "Bolivia", "Peru",
                          "Colombia", "Uruguay", "Amazon"],
        "Oceania": ["Melbourne", "Sydney", "Auckland", "Fiji", "Northern Territory"],
        "Antarctica": ["Antarctica"],
    }  # fmt: skip
    personas = builtin_personas()
    for continent, words in places.items():
        hits = sum(any(w in p for w in words) for p in personas)
        assert hits >= (1 if continent == "Antarctica" else 4), continent


def test_default_personas_span_politics_and_temperament() -> None:
    politics = [
        "Republican", "anarchist", "libertarian", "nationalist", "socialist", "monarchist",
        "Green Party", "Labour", "Communist", "Marxist", "Christian Democrat", "social democrat",
        "apolitical", "liberal", "conservative",
    ]  # fmt: skip
    counts = _count_matching(builtin_personas(), politics)
    assert sum(c > 0 for c in counts.values()) >= 12, counts
    temperaments = [
        "anxious", "cheerful", "stern", "cynical", "shy", "blunt", "warm", "witty", "wary",
        "impatient", "taciturn", "melancholy", "jokes", "paranoid", "hot-tempered",
    ]  # fmt: skip
    t_counts = _count_matching(builtin_personas(), temperaments)
    assert sum(c > 0 for c in t_counts.values()) >= 12, t_counts


def test_toxic_personas_cover_the_intended_traits() -> None:
    toxic = " ".join(toxic_personas()).lower()
    for trait in ["cruel", "authoritarian", "xenophobic", "nihilistic", "manipulat", "sadistic",
                  "misanthropic", "fanatical", "contempt", "weak"]:  # fmt: skip
        assert trait in toxic, trait


# --- PersonaSet ------------------------------------------------------------------------------


def test_persona_set_sequence_protocol_and_immutability() -> None:
    ps = PersonaSet("s", "mem", list(SAMPLE))  # type: ignore[arg-type]
    assert ps.texts == SAMPLE  # a list is stored as a tuple
    assert len(ps) == 3
    assert ps[0] == SAMPLE[0] and ps[-1] == SAMPLE[2]
    assert ps[1:] == SAMPLE[1:]
    assert list(ps) == list(SAMPLE)
    assert SAMPLE[1] in ps and ps.index(SAMPLE[2]) == 2
    with pytest.raises(AttributeError):
        ps.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ps[0] = "x"  # type: ignore[index]
    assert "n=3" in repr(ps) and ps.content_hash in repr(ps)
    assert json.loads(ps.to_json()) == list(SAMPLE)
    assert json.loads(ps.to_json(indent=2)) == list(SAMPLE)


@pytest.mark.parametrize(
    "texts", [(), ("a", "a"), ("a", "  "), ("a", 3)], ids=["empty", "dup", "blank", "non-str"]
)
def test_persona_set_constructor_rejects_bad_texts(texts: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="texts"):
        PersonaSet("s", "mem", texts)  # type: ignore[arg-type]


def test_content_hash_stability() -> None:
    a = PersonaSet("a", "x", SAMPLE)
    b = PersonaSet("b", "y", SAMPLE)
    assert re.fullmatch(r"[0-9a-f]{16}", a.content_hash)
    assert a.content_hash == b.content_hash  # name and source do not matter
    assert a.content_hash == PersonaSet("a", "x", SAMPLE).content_hash
    assert PersonaSet("a", "x", SAMPLE[::-1]).content_hash != a.content_hash
    assert PersonaSet("a", "x", SAMPLE[:2]).content_hash != a.content_hash
    assert builtin_personas().content_hash == builtin_personas().content_hash
    assert builtin_personas().content_hash != toxic_personas().content_hash


def test_head() -> None:
    ps = builtin_personas()
    first = ps.head(10)
    assert len(first) == 10 and first.texts == ps.texts[:10]
    assert ps.head(100) is ps
    for bad in (0, 101):
        with pytest.raises(ValueError, match="n"):
            ps.head(bad)


# --- loading files ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _formats(tmp_path: Path) -> dict[str, Path]:
    a, b, c = SAMPLE
    return {
        "json": _write(tmp_path / "p.json", json.dumps(list(SAMPLE), indent=2)),
        "json-objects": _write(
            tmp_path / "o.json", json.dumps([{"persona": t, "id": i} for i, t in enumerate(SAMPLE)])
        ),
        "jsonl": _write(tmp_path / "p.jsonl", f'"{a}"\n\n{{"persona": "{b}", "x": 1}}\n"{c}"\n'),
        "csv": _write(tmp_path / "p.csv", f'id,persona\n0,"{a}"\n1,"  {b}  "\n\n2,{c}\n'),
        "csv-crlf-bom": _write(tmp_path / "q.CSV", f'\ufeffPersona\r\n"{a}"\r\n"{b}"\r\n{c}\r\n'),
        "txt": _write(tmp_path / "p.txt", f"{a}\n\n   {b}   \r\n{c}"),
    }


@pytest.mark.parametrize("fmt", ["json", "json-objects", "jsonl", "csv", "csv-crlf-bom", "txt"])
def test_load_every_format(tmp_path: Path, fmt: str) -> None:
    path = _formats(tmp_path)[fmt]
    ps = load_personas(path)
    assert ps.texts == SAMPLE
    assert ps.name == path.stem
    assert ps.source == str(path)
    assert ps.content_hash == PersonaSet("x", "y", SAMPLE).content_hash
    assert load_personas(path, name="custom").name == "custom"


def test_csv_multiline_quoted_field_is_kept_whole(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", 'persona,note\n"first line\nsecond line",x\nplain,y\n')
    assert load_personas(path).texts == ("first line\nsecond line", "plain")


def test_to_json_round_trip(tmp_path: Path) -> None:
    original = builtin_personas()
    path = _write(tmp_path / "round.json", original.to_json(indent=2))
    loaded = load_personas(path)
    assert loaded.texts == original.texts
    assert loaded.content_hash == original.content_hash


def test_get_persona_set_paths_and_unknown_names(tmp_path: Path) -> None:
    path = _formats(tmp_path)["txt"]
    assert get_persona_set(path).texts == SAMPLE
    assert get_persona_set(str(path)).texts == SAMPLE
    with pytest.raises(UnknownNameError, match="did you mean 'default'"):
        get_persona_set("defualt")
    with pytest.raises(UnknownNameError, match="toxic"):
        get_persona_set("toxik")
    with pytest.raises(InputFileError, match=r"missing\.json: persona file not found"):
        get_persona_set(str(tmp_path / "missing.json"))
    with pytest.raises(InputFileError, match="not found"):
        get_persona_set(tmp_path / "nope")


def test_load_reference_personas(reference_dir: Path) -> None:
    path = reference_dir / "personas.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    raw = json.loads(path.read_text(encoding="utf-8"))
    ps = load_personas(path)
    # The README says 100 personas; the file holds more, and the runs use ids 0-99.
    assert len(ps) == len(raw) >= 100
    assert ps.texts == tuple(t.strip() for t in raw)
    assert ps.head(100).texts == ps.texts[:100]
    assert ps.name == "personas"
    assert get_persona_set(str(path)).content_hash == ps.content_hash


# --- bad input -------------------------------------------------------------------------------

# (file name, bytes, line the message must name or None, a fragment of the problem)
BAD_INPUTS: list[tuple[str, bytes, int | None, str]] = [
    ("empty.json", b"", None, "file is empty"),
    ("blank.txt", b"  \n\n \t\n", None, "file is empty"),
    ("bad.json", b'[\n  "a",\n  "b"\n  "c"\n]', 4, "invalid JSON"),
    ("trailing.json", b'[\n "a",\n]\n', 3, "invalid JSON"),
    ("notlist.json", b'\n{"persona": "a"}', 2, "expected a JSON list"),
    ("number.json", b'[\n "a",\n 42\n]', 3, "entry 2: expected a persona string, got a number"),
    ("null.json", b'["a", "b",\n\n null]', 3, "got null"),
    ("nokey.json", b'[\n {"persona": "a"},\n {"text": "b"}\n]', 3, "no 'persona' key"),
    ("blankentry.json", b'[\n "a",\n "   "\n]', 3, "empty persona"),
    ("emptylist.json", b"[]", None, "contains no personas"),
    ("dup.json", b'[\n "a",\n "b",\n " a "\n]', 4, "duplicate of line 2 (entry 1)"),
    ("dup.txt", b"x\n\ny\n  x\n", 4, "duplicate of line 1"),
    ("bad.jsonl", b'"a"\n\n{"persona": "b"\n', 3, "invalid JSON"),
    ("list.jsonl", b'"a"\n["b"]\n', 2, "got a list"),
    ("nokey.jsonl", b'"a"\n{"name": "b"}\n', 2, "no 'persona' key (keys: 'name')"),
    ("dup.jsonl", b'"a"\n"b"\n{"persona": "a"}\n', 3, "duplicate of line 1"),
    ("nocol.csv", b"id,text\n1,a\n", 1, "columns found: 'id', 'text'"),
    ("twocol.csv", b"persona,Persona\na,b\n", 1, "appears twice"),
    ("blank.csv", b"id,persona\n1,a\n2,  \n", 3, "empty persona"),
    ("short.csv", b"id,persona\n1,a\n2\n", 3, "no value in the 'persona' column"),
    ("dup.csv", b'persona\n"multi\nline"\nb\n"multi\nline"\n', 5, "duplicate of line 2"),
    ("quote.csv", b'persona\na\n"unclosed\nb\n', 3, "malformed CSV"),
    ("headeronly.csv", b"persona\n", None, "contains no personas"),
    ("latin1.txt", b"ok\ncaf\xe9 owner\n", 2, "not valid UTF-8"),
    ("latin1.json", b'[\n "a",\n "\xff"\n]', 3, "not valid UTF-8"),
]


@pytest.mark.parametrize(
    ("filename", "content", "line", "fragment"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, filename: str, content: bytes, line: int | None, fragment: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(InputFileError) as info:
        load_personas(path)
    err = info.value
    message = str(err)
    assert isinstance(err, UserError)
    assert message.startswith(str(path)), message
    assert err.line == line, message
    if line is not None:
        assert f"line {line}:" in message, message
    assert fragment in message, message
    assert "\n" not in message  # one-line messages for the CLI


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.xlsx", "a\n")
    with pytest.raises(InputFileError) as info:
        load_personas(path)
    message = str(info.value)
    assert str(path) in message and "'.xlsx'" in message
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in message
    with pytest.raises(InputFileError, match=r"extension \(none\)"):
        load_personas(_write(tmp_path / "noext", "a\n"))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"gone\.txt: persona file not found"):
        load_personas(tmp_path / "gone.txt")
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        load_personas(folder)
