"""Control tasks: items files, prompts, answer parsers, item selection and lookup tables."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from persona_collapse.core.controls import (
    build_gsm8k_items,
    build_mmlu_items,
    gsm8k_gold,
    items_from_dict,
    iter_prompts,
    load_items,
    lookup_tables,
    normalise_number,
    parse_gsm8k,
    parse_lookup,
    parse_mmlu,
    render_item,
    render_lookup,
    score_reply,
    task_from_name,
)
from persona_collapse.core.errors import InputFileError

FOLLOWUPS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "costa2026-followups"


def _followups(*parts: str) -> Path:
    path = FOLLOWUPS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"follow-up reference data not found at {path} (../shared is absent)")
    return path


def _mmlu_doc(**change: Any) -> dict[str, Any]:
    item = {
        "item_id": 0,
        "subject": "anatomy",
        "question": "Q?",
        "choices": ["a", "b", "c", "d"],
        "answer_index": 1,
        "answer": "B",
    }
    return {"config": {}, "items": [item | change]}


# --- items files ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["mmlu", "gsm8k"])
def test_reference_items_files_load_and_write_back_unchanged(task: str) -> None:
    path = _followups("capability", f"items_{task}.json")
    items = load_items(path)
    assert items.task == task
    assert len(items.items) == {"mmlu": 228, "gsm8k": 100}[task]
    assert items.to_dict() == json.loads(path.read_text())


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"answer": "E"}, ["items[0]", "'answer'"]),
        ({"answer": "C"}, ["items[0]", "disagrees with answer_index 1"]),
        ({"choices": ["a", "b", "c"]}, ["items[0]", "'choices'"]),
        ({"question": ""}, ["items[0]", "'question'"]),
    ],
)
def test_bad_mmlu_item_is_one_line_naming_file_and_field(
    tmp_path: Path, change: dict[str, Any], fragments: list[str]
) -> None:
    path = tmp_path / "items_mmlu.json"
    path.write_text(json.dumps(_mmlu_doc(**change)))
    with pytest.raises(InputFileError) as exc:
        load_items(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_choices_and_duplicate_ids_are_named(tmp_path: Path) -> None:
    doc = _mmlu_doc()
    del doc["items"][0]["choices"]
    with pytest.raises(InputFileError, match=r"items\[0\].*'choices'.*Field required"):
        items_from_dict(doc, task="mmlu", source="x.json")
    doc = _mmlu_doc()
    doc["items"].append(dict(doc["items"][0]))
    with pytest.raises(InputFileError, match=r"x.json: items\[1\]: duplicate item_id 0"):
        items_from_dict(doc, task="mmlu", source="x.json")
    with pytest.raises(InputFileError, match="'answer' 'many' is not a number"):
        items_from_dict(
            {"items": [{"item_id": 0, "question": "q", "answer": "many"}]},
            task="gsm8k",
            source="g.json",
        )
    bad = tmp_path / "items_gsm8k.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="line 1: not valid JSON"):
        load_items(bad)


def test_task_from_name() -> None:
    assert task_from_name("gpt-4o_temp01_mmlu.csv") == "mmlu"
    assert task_from_name("items_gsm8k.json") == "gsm8k"
    assert task_from_name("gpt-4o_temp01.csv") is None


# --- prompts and parsing --------------------------------------------------------------------


def test_prompts_show_every_option_and_one_request_per_repetition() -> None:
    items = items_from_dict(_mmlu_doc(), task="mmlu")
    text = render_item(items.items[0], "mmlu")
    for line in ("A. a", "B. b", "C. c", "D. d", "Q?"):
        assert line in text
    prompts = list(iter_prompts(items, repetitions=3))
    assert [(p.item_id, p.run_index) for p in prompts] == [(0, 1), (0, 2), (0, 3)]
    with pytest.raises(ValueError, match="repetitions"):
        list(iter_prompts(items, repetitions=0))


@pytest.mark.parametrize(
    ("reply", "answer"),
    [("C", "C"), ("  b) because", "B"), ("To", ""), ("The answer is D", "A"), ("", "")],
)
def test_parse_mmlu_takes_the_first_letter_a_to_d(reply: str, answer: str) -> None:
    # "The answer..." gives A: the first A-D letter anywhere, as in the reference data.
    assert parse_mmlu(reply) == answer


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("3 apples + 4 = 7\n#### 7", "7"),
        ("#### 1,200.0 dollars, then 5", "1200"),
        ("first #### 3 then #### -2.50", "-2.5"),
        ("no marker: 12 then 0.25", "0.25"),
        ("I cannot say.", ""),  # a reply with no number: counted as not format-valid
        ("#### none", ""),
    ],
)
def test_parse_gsm8k(reply: str, answer: str) -> None:
    assert parse_gsm8k(reply) == answer


def test_scoring_normalises_numbers_and_counts_unparseable_as_wrong() -> None:
    items = items_from_dict(
        {"items": [{"item_id": 0, "question": "q", "answer": "10,800"}]}, task="gsm8k"
    )
    item = items.items[0]
    assert score_reply("so #### 10800.0", item, "gsm8k") == (
        score_reply("#### 10,800", item, "gsm8k")
    )
    assert score_reply("#### 10800", item, "gsm8k").correct
    missing = score_reply("no idea", item, "gsm8k")
    assert (missing.answer, missing.format_valid, missing.correct) == ("", False, False)
    assert normalise_number("3.0") == "3" and normalise_number("x") is None


# --- building items files -------------------------------------------------------------------


def _mmlu_rows() -> list[dict[str, Any]]:
    rows = []
    for s, subject in enumerate(["zoology", "algebra", "law"]):
        for i in range(7):
            n_choices = 5 if i == 0 else 4  # one 5-choice row per subject must be skipped
            rows.append(
                {
                    "question": f"  {subject} q{i} ",
                    "subject": subject,
                    "choices": [f"{subject}{i}-{c}" for c in range(n_choices)],
                    "answer": (i + s) % 4,
                }
            )
    return rows


def test_build_mmlu_items_is_seeded_stratified_and_four_choice_only() -> None:
    rows = _mmlu_rows()
    items = build_mmlu_items(rows, per_subject=2, seed=7)
    assert [it.subject for it in items.items] == ["algebra"] * 2 + ["law"] * 2 + ["zoology"] * 2
    assert [it.item_id for it in items.items] == list(range(6))
    # The same walk by hand: one generator over sorted subjects, 4-choice rows in order.
    rng = random.Random(7)
    expected = []
    for subject in ("algebra", "law", "zoology"):
        pool = [r for r in rows if r["subject"] == subject and len(r["choices"]) == 4]
        expected += [r["question"].strip() for r in rng.sample(pool, 2)]
    assert [it.question for it in items.items] == expected
    for it in items.items:
        row = next(r for r in rows if r["question"].strip() == it.question)
        assert it.gold == "ABCD"[row["answer"]] and list(it.choices) == row["choices"]
    assert items.config == {"per_subject": 2, "seed": 7}
    # Round trip through the reference layout.
    again = items_from_dict(items.to_dict(), task="mmlu")
    assert again.items == items.items
    with pytest.raises(ValueError, match="fewer than per_subject"):
        build_mmlu_items(rows, per_subject=7)


def test_build_gsm8k_items_sorts_the_sampled_rows_and_takes_gold_after_the_last_marker() -> None:
    rows = [{"question": f"q{i}", "answer": f"work #### {i}\n#### {i * 1000:,}"} for i in range(50)]
    items = build_gsm8k_items(rows, n=10, seed=3)
    picked = sorted(random.Random(3).sample(range(50), 10))
    assert [it.source_index for it in items.items] == picked
    assert [it.gold for it in items.items] == [f"{i * 1000:,}" for i in picked]
    doc = items.to_dict()
    assert doc["config"] == {"n": 10, "seed": 3}
    assert list(doc["items"][0]) == ["item_id", "source_index", "question", "answer"]
    assert gsm8k_gold("a #### 1\n####  42 ") == "42"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no marker")


# --- lookup ---------------------------------------------------------------------------------


def test_lookup_tables_reproduce_the_reference_tables() -> None:
    folder = _followups("lookup")
    tables = {t.table_id: t for t in lookup_tables()}
    assert len(tables) == 30
    assert sorted(t.correct_id for t in tables.values()) == sorted(list(range(6)) * 5)
    files = sorted(folder.glob("*_lookup.csv"))
    assert files
    for path in files:
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                table = tables[int(row["table_id"])]
                assert table.table_json == row["table_json"]
                assert table.target == row["target_persona"]
                assert table.correct_id == int(row["correct_id"])


def test_lookup_prompt_lists_every_row_in_display_order() -> None:
    table = lookup_tables(1)[0]
    text = render_lookup(table)
    positions = [text.index(f"persona {p}: id {i}") for p, i in table.display]
    assert positions == sorted(positions)
    assert f"does persona {table.target} have?" in text
    assert [p for p, _ in table.display] != list("ABCDEF")  # shuffled


@pytest.mark.parametrize(
    ("reply", "value"), [("3", 3), ("0 because", 0), ("id 12 or 5", 5), ("6", None), ("", None)]
)
def test_parse_lookup(reply: str, value: int | None) -> None:
    assert parse_lookup(reply) == value


def test_build_mmlu_items_rejects_bad_rows() -> None:
    rows = _mmlu_rows()
    rows[3] = rows[3] | {"answer": 4}
    with pytest.raises(ValueError, match="row 3: answer must be an index 0-3"):
        build_mmlu_items(rows)
    with pytest.raises(ValueError, match="no 4-choice row"):
        build_mmlu_items([r | {"choices": ["a"]} for r in _mmlu_rows()])


def test_one_task_interface_for_a_backend_run() -> None:
    from persona_collapse.core.controls import capability_task, lookup_task

    items = items_from_dict(
        {
            "items": [
                {"item_id": 4, "question": "2+2?", "answer": "4"},
                {"item_id": 9, "question": "3*3?", "answer": "9"},
            ]
        },
        task="gsm8k",
    )
    task = capability_task(items)
    prompts = list(task.prompts(repetitions=2))
    assert [(p.item_id, p.run_index) for p in prompts] == [(4, 1), (4, 2), (9, 1), (9, 2)]
    assert "3*3?" in prompts[2].prompt
    assert task.score(9, "so #### 9").correct
    assert task.score(4, "no number here") == score_reply("x", items.items[0], "gsm8k")
    assert task.gold(9) == "9"
    with pytest.raises(ValueError, match="repetitions"):
        list(task.prompts(repetitions=0))

    lookup = lookup_task()
    assert lookup.name == "lookup" and lookup.item_ids == tuple(range(30))
    table = lookup_tables()[7]
    right = lookup.score(7, f"{table.correct_id}, because")
    assert (right.answer, right.format_valid, right.correct) == (str(table.correct_id), True, True)
    wrong = lookup.score(7, "none")
    assert (wrong.answer, wrong.format_valid, wrong.correct) == ("", False, False)
    assert len(list(lookup.prompts(repetitions=10))) == 300
