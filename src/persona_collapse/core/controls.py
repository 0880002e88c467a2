"""Control tasks without a persona: capability items (MMLU-, GSM8K-style) and the lookup task.

They answer whether a fine-tune makes a model unstable on *any* task or only when it
role-plays. A task is a list of items; each item is asked ``repetitions`` times and
each reply is parsed into an answer (``""`` when it does not parse) and a
correctness flag, the rows a backend run stores and :mod:`persona_collapse.stats.controls`
analyses.

* Items files use the JSON layout of the follow-up studies: ``{"config": {...},
  "items": [...]}``; :func:`load_items` validates one and :func:`build_mmlu_items` /
  :func:`build_gsm8k_items` select items from the public releases (seeded, stratified).
* Parsers follow the reference rules so data collected elsewhere are re-scored alike:
  MMLU takes the first letter A-D in the reply; GSM8K the first number after the last
  ``####``, else the last number, normalised (commas dropped, integral values as ints).
* The lookup task builds 30 seeded 6-row tables mapping personas A-F to ids 0-5.

Prompt wording here is the toolkit's own; only the answer formats are shared.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from persona_collapse.core.errors import InputFileError, format_validation_error

TaskName = Literal["mmlu", "gsm8k"]
TASKS: tuple[TaskName, ...] = ("mmlu", "gsm8k")
LETTERS = "ABCD"
SEED = 1337
"""Seed of the reference selections and lookup tables."""

# --- items ----------------------------------------------------------------------------------


class _MmluItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    item_id: int = Field(ge=0)
    subject: str = Field(min_length=1)
    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=4, max_length=4)
    answer_index: int | None = Field(default=None, ge=0, le=3)
    answer: Literal["A", "B", "C", "D"]

    @model_validator(mode="after")
    def _index_matches_letter(self) -> _MmluItem:
        if self.answer_index is not None and LETTERS[self.answer_index] != self.answer:
            raise ValueError(
                f"answer {self.answer!r} disagrees with answer_index {self.answer_index}"
            )
        return self


class _GsmItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    item_id: int = Field(ge=0)
    source_index: int | None = Field(default=None, ge=0)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


@dataclass(frozen=True)
class ControlItem:
    """One capability item.

    Attributes:
        item_id: Identifier, unique in its file.
        question: Question text.
        gold: The correct answer as the items file writes it (a letter, or a number
            such as ``10,800``); :attr:`gold_answer` is its parsed form.
        subject: Stratum for the bootstrap (MMLU subject; ``""`` for GSM8K).
        choices: The four options (MMLU); empty for GSM8K.
        source_index: Row of the public release the item came from, when known.
    """

    item_id: int
    question: str
    gold: str
    subject: str = ""
    choices: tuple[str, ...] = ()
    source_index: int | None = None

    @property
    def gold_answer(self) -> str:
        """The gold answer as a parsed reply would give it (numbers normalised)."""
        return self.gold if self.choices else (normalise_number(self.gold) or self.gold)


@dataclass(frozen=True)
class ItemSet:
    """A validated items file: the task, its items in file order and its ``config`` block."""

    task: TaskName
    items: tuple[ControlItem, ...]
    config: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The reference JSON layout."""
        rows: list[dict[str, Any]] = []
        for it in self.items:
            if self.task == "mmlu":
                rows.append(
                    {
                        "item_id": it.item_id,
                        "subject": it.subject,
                        "question": it.question,
                        "choices": list(it.choices),
                        "answer_index": LETTERS.index(it.gold),
                        "answer": it.gold,
                    }
                )
            else:
                row: dict[str, Any] = {"item_id": it.item_id}
                if it.source_index is not None:
                    row["source_index"] = it.source_index
                rows.append({**row, "question": it.question, "answer": it.gold})
        return {"config": dict(self.config), "items": rows}


def _field_path(exc: ValidationError, index: int) -> str:
    return f"items[{index}]: " + format_validation_error(exc)


def items_from_dict(data: Any, *, task: TaskName, source: object = "<dict>") -> ItemSet:
    """Validate an items document (already parsed JSON) of ``task``.

    Raises:
        InputFileError: Not an object with an ``items`` list, a bad field (named with
            its item index), or a duplicate ``item_id``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise InputFileError(source, 'expected a JSON object with an "items" list')
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise InputFileError(source, 'field "config" must be an object')
    if not data["items"]:
        raise InputFileError(source, 'field "items" is empty')
    items: list[ControlItem] = []
    seen: dict[int, int] = {}
    for index, raw in enumerate(data["items"]):
        try:
            if task == "mmlu":
                m = _MmluItem.model_validate(raw)
                item = ControlItem(m.item_id, m.question, m.answer, m.subject, tuple(m.choices))
            else:
                g = _GsmItem.model_validate(raw)
                gold = normalise_number(g.answer)
                if gold is None:
                    raise InputFileError(
                        source, f"items[{index}]: field 'answer' {g.answer!r} is not a number"
                    )
                item = ControlItem(g.item_id, g.question, g.answer, source_index=g.source_index)
        except ValidationError as exc:
            raise InputFileError(source, _field_path(exc, index)) from None
        if item.item_id in seen:
            raise InputFileError(
                source,
                f"items[{index}]: duplicate item_id {item.item_id} "
                f"(also items[{seen[item.item_id]}])",
            )
        seen[item.item_id] = index
        items.append(item)
    return ItemSet(task, tuple(items), config)


def load_items(path: str | Path, *, task: TaskName | None = None) -> ItemSet:
    """Read and validate an items JSON file.

    Args:
        path: The file.
        task: ``mmlu`` or ``gsm8k``; by default read from the file name
            (``*mmlu*`` / ``*gsm8k*``) or, failing that, from the first item's fields.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(p, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(p, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    resolved = task or task_from_name(p.name)
    if resolved is None:
        first = data.get("items", [None])[0] if isinstance(data, dict) else None
        resolved = "mmlu" if isinstance(first, dict) and "choices" in first else "gsm8k"
    return items_from_dict(data, task=resolved, source=p)


def task_from_name(name: str) -> TaskName | None:
    """``mmlu`` or ``gsm8k`` when the file name says so (``*_mmlu.csv``, ``items_gsm8k.json``)."""
    stem = Path(name).stem.lower()
    for task in TASKS:
        if stem.endswith(f"_{task}") or stem == task:
            return task
    return None


# --- prompts --------------------------------------------------------------------------------

MMLU_TEMPLATE = (
    "{question}\n\n{options}\n\n"
    "Reply with the letter of the correct option (A, B, C or D) first; "
    "you may explain afterwards."
)
GSM8K_TEMPLATE = (
    "{question}\n\n"
    "Work the problem out step by step. Finish with a last line that holds only the "
    "numeric answer after four hash signs, like this: #### 42"
)


def render_item(item: ControlItem, task: TaskName) -> str:
    """The toolkit's prompt for one capability item."""
    if task == "mmlu":
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        return MMLU_TEMPLATE.format(question=item.question, options=options)
    return GSM8K_TEMPLATE.format(question=item.question)


@dataclass(frozen=True)
class ControlPrompt:
    """One request of a control run: which item, which repetition, and the prompt text."""

    item_id: int
    run_index: int
    prompt: str


def iter_prompts(items: ItemSet, *, repetitions: int = 10) -> Iterator[ControlPrompt]:
    """Every (item, repetition) request of a capability run (see :class:`ControlTask`)."""
    return capability_task(items).prompts(repetitions=repetitions)


# --- parsers --------------------------------------------------------------------------------

_LETTER = re.compile(r"[A-Da-d]")
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_mmlu(reply: str) -> str:
    """First letter A-D (either case) anywhere in the reply, upper-cased; ``""`` if none."""
    m = _LETTER.search(reply.strip())
    return m.group(0).upper() if m else ""


def normalise_number(text: str) -> str | None:
    """A number written canonically: commas dropped, integral values as ints, else ``repr``."""
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def parse_gsm8k(reply: str) -> str:
    """First number after the last ``####``, else the last number; normalised (``""``: none)."""
    if "####" in reply:
        m = _NUM.search(reply.rsplit("####", 1)[1])
        raw = m.group(0) if m else None
    else:
        found = _NUM.findall(reply)
        raw = found[-1] if found else None
    if raw is None:
        return ""
    return normalise_number(raw) or ""


@dataclass(frozen=True)
class ParsedAnswer:
    """A scored reply: the parsed answer (``""`` when none), ``format_valid`` and ``correct``."""

    answer: str
    format_valid: bool
    correct: bool


def score_reply(reply: str, item: ControlItem, task: TaskName) -> ParsedAnswer:
    """Parse a reply to ``item`` and score it against the gold answer."""
    answer = parse_mmlu(reply) if task == "mmlu" else parse_gsm8k(reply)
    return ParsedAnswer(answer, bool(answer), bool(answer) and answer == item.gold_answer)


# --- building items files from the public releases ------------------------------------------


def build_mmlu_items(
    rows: Sequence[Mapping[str, Any]], *, per_subject: int = 4, seed: int = SEED
) -> ItemSet:
    """Stratified seeded MMLU selection.

    One ``random.Random(seed)`` walks the subjects in sorted order and samples
    ``per_subject`` of each subject's 4-choice rows (in dataset order); item ids run in
    that order.

    Args:
        rows: Dataset rows with ``question``, ``subject``, ``choices`` and ``answer``
            (an index 0-3, as in the public release).
    """
    by_subject: dict[str, list[Mapping[str, Any]]] = {}
    for number, row in enumerate(rows):
        choices = row["choices"]
        if isinstance(choices, str) or not isinstance(choices, Sequence):
            raise ValueError(f"row {number}: choices must be a list, got {choices!r}")
        if len(choices) != 4:
            continue
        answer = row["answer"]
        if isinstance(answer, bool) or answer not in (0, 1, 2, 3):
            raise ValueError(f"row {number}: answer must be an index 0-3, got {answer!r}")
        by_subject.setdefault(str(row["subject"]), []).append(row)
    if not by_subject:
        raise ValueError("no 4-choice row in the dataset")
    rng = random.Random(seed)
    items: list[ControlItem] = []
    for subject in sorted(by_subject):
        pool = by_subject[subject]
        if len(pool) < per_subject:
            raise ValueError(
                f"subject {subject!r} has {len(pool)} 4-choice rows, fewer than "
                f"per_subject={per_subject}"
            )
        for row in rng.sample(pool, per_subject):
            index = int(row["answer"])
            items.append(
                ControlItem(
                    len(items),
                    str(row["question"]).strip(),
                    LETTERS[index],
                    subject,
                    tuple(str(c) for c in row["choices"]),
                )
            )
    return ItemSet("mmlu", tuple(items), {"per_subject": per_subject, "seed": seed})


def gsm8k_gold(solution: str) -> str:
    """The text after the last ``####`` of a GSM8K solution, stripped."""
    if "####" not in solution:
        raise ValueError("solution has no '####' line")
    return solution.rsplit("####", 1)[1].strip()


def build_gsm8k_items(
    rows: Sequence[Mapping[str, Any]], *, n: int = 100, seed: int = SEED
) -> ItemSet:
    """Seeded GSM8K selection: ``random.Random(seed).sample(range(len(rows)), n)``, sorted.

    Args:
        rows: Dataset rows with ``question`` and ``answer`` (the worked solution).
    """
    if n > len(rows):
        raise ValueError(f"n={n} exceeds the {len(rows)} rows given")
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    items: list[ControlItem] = []
    for i, src in enumerate(picked):
        gold = gsm8k_gold(str(rows[src]["answer"]))
        if normalise_number(gold) is None:
            raise ValueError(f"row {src}: the answer after '####' is not a number")
        items.append(ControlItem(i, str(rows[src]["question"]), gold, source_index=src))
    return ItemSet("gsm8k", tuple(items), {"n": n, "seed": seed})


def arithmetic_items(n: int = 12, *, seed: int = SEED) -> ItemSet:
    """A small GSM8K-style items set of the toolkit's own arithmetic word problems.

    For demos and tests (not the reference items): ``random.Random(seed)`` draws
    two to four whole numbers per question; the gold answer is their sum or product.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    rng = random.Random(seed)
    items: list[ControlItem] = []
    for i in range(n):
        if rng.random() < 0.5:
            values = [rng.randint(2, 40) for _ in range(rng.randint(2, 4))]
            question = (
                "A shop sells "
                + ", then ".join(f"{v} apples" for v in values)
                + " in one morning. How many apples does it sell in total?"
            )
            gold = sum(values)
        else:
            boxes, per_box = rng.randint(2, 12), rng.randint(3, 25)
            question = (
                f"There are {boxes} boxes with {per_box} pencils in each. "
                "How many pencils are there?"
            )
            gold = boxes * per_box
        items.append(ControlItem(i, question, str(gold)))
    return ItemSet("gsm8k", tuple(items), {"generator": "arithmetic", "n": n, "seed": seed})


def items_json(items: ItemSet) -> str:
    """The items file text (the reference layout: one-space indent, ASCII escapes)."""
    return json.dumps(items.to_dict(), indent=1) + "\n"


def read_source_rows(paths: Sequence[str | Path], *, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a public dataset release the user has locally, in file order.

    Reads Parquet files (the Hugging Face layout, e.g. ``all/test-*.parquet`` of MMLU,
    ``main/test-*.parquet`` of GSM8K) and JSON Lines files (``.jsonl``, one object a
    line); several files (shards) are concatenated in the order given.

    Raises:
        InputFileError: An unreadable file, an unknown suffix, a bad JSON line, or a
            row without one of ``fields`` (named with the file and line or row).
    """
    rows: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise InputFileError(path, "no such file")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:  # pragma: no cover - pyarrow is a core dependency
                raise InputFileError(path, "reading Parquet needs pyarrow") from None
            try:
                table = pq.read_table(path)
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise InputFileError(path, f"not a readable Parquet file ({exc})") from None
            missing = [f for f in fields if f not in table.column_names]
            if missing:
                raise InputFileError(
                    path,
                    f"missing column(s) {', '.join(missing)}; has {', '.join(table.column_names)}",
                )
            rows.extend(table.select(list(fields)).to_pylist())
        elif suffix in (".jsonl", ".ndjson"):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputFileError(path, f"cannot read ({exc})") from None
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFileError(path, f"not valid JSON ({exc.msg})", line=number) from None
                if not isinstance(obj, dict):
                    raise InputFileError(path, "expected a JSON object", line=number)
                missing = [f for f in fields if f not in obj]
                if missing:
                    raise InputFileError(
                        path, f"missing field(s) {', '.join(missing)}", line=number
                    )
                rows.append({f: obj[f] for f in fields})
        else:
            raise InputFileError(path, "expected a .parquet or .jsonl file of the public release")
    return rows


# --- lookup task ----------------------------------------------------------------------------

LOOKUP_PERSONAS = "ABCDEF"
LOOKUP_TABLES = 30


@dataclass(frozen=True)
class LookupTable:
    """One lookup table.

    Attributes:
        table_id: 0-based index.
        mapping: Persona letter -> id, in letter order (the reference ``table_json``).
        display: The (persona, id) rows in the order the prompt lists them.
        target: The persona asked about.
        correct_id: Its id.
    """

    table_id: int
    mapping: Mapping[str, int]
    display: tuple[tuple[str, int], ...]
    target: str
    correct_id: int

    @property
    def table_json(self) -> str:
        """The mapping as the reference CSVs store it."""
        return json.dumps(dict(self.mapping))


def lookup_tables(n_tables: int = LOOKUP_TABLES, *, seed: int = SEED) -> tuple[LookupTable, ...]:
    """The seeded lookup tables.

    One ``random.Random(seed)``: per table, shuffle the ids 0-5 to give A-F their ids;
    the correct id is ``table_id mod 6`` (so each id is the answer equally often); then
    shuffle the rows with the same generator for the display order.
    """
    rng = random.Random(seed)
    tables: list[LookupTable] = []
    for t in range(n_tables):
        ids = list(range(len(LOOKUP_PERSONAS)))
        rng.shuffle(ids)
        mapping = dict(zip(LOOKUP_PERSONAS, ids, strict=True))
        correct = t % len(LOOKUP_PERSONAS)
        target = next(p for p, i in mapping.items() if i == correct)
        display = list(mapping.items())
        rng.shuffle(display)
        tables.append(LookupTable(t, mapping, tuple(display), target, correct))
    return tuple(tables)


LOOKUP_TEMPLATE = (
    "Here is a table that gives each persona an id:\n{rows}\n\n"
    "Which id does persona {target} have? Start your reply with that id, a single "
    "digit from 0 to 5; any explanation comes after it."
)


def render_lookup(table: LookupTable) -> str:
    """The toolkit's prompt for one lookup table."""
    rows = "\n".join(f"  persona {p}: id {i}" for p, i in table.display)
    return LOOKUP_TEMPLATE.format(rows=rows, target=table.target)


_LOOKUP_ID = re.compile(r"\b[0-5]\b")


def parse_lookup(reply: str) -> int | None:
    """The first stand-alone digit 0-5 in the reply, or ``None``."""
    m = _LOOKUP_ID.search(reply)
    return int(m.group(0)) if m else None


def score_lookup(reply: str, table: LookupTable) -> ParsedAnswer:
    """Parse a lookup reply and score it against the table's correct id."""
    value = parse_lookup(reply)
    answer = "" if value is None else str(value)
    return ParsedAnswer(answer, value is not None, value == table.correct_id)


# --- reading a control prompt back from its text ------------------------------------------


@dataclass(frozen=True)
class ParsedControlPrompt:
    """What a control prompt's text says (the inverse of :func:`render_item` and
    :func:`render_lookup`).

    Attributes:
        task: ``mmlu``, ``gsm8k`` or ``lookup``.
        question: The question (capability tasks; ``""`` for lookup).
        choices: The four options (``mmlu``), else empty.
        display: The lookup table's (persona, id) rows in prompt order (``lookup``).
        target: The persona asked about (``lookup``).
    """

    task: str
    question: str = ""
    choices: tuple[str, ...] = ()
    display: tuple[tuple[str, int], ...] = ()
    target: str = ""

    @property
    def lookup_answer(self) -> int | None:
        """The id the lookup table gives the target persona (None for other tasks)."""
        return dict(self.display).get(self.target) if self.task == "lookup" else None


_FIELD_PATTERNS = {
    "question": r"(?P<question>.+)",
    "options": r"(?P<options>A\. [^\n]*\nB\. [^\n]*\nC\. [^\n]*\nD\. [^\n]*)",
    "rows": r"(?P<rows>(?:  persona [A-Z]: id \d+\n?)+?)",
    "target": r"(?P<target>[A-Z])",
}


def _template_pattern(template: str) -> re.Pattern[str]:
    """The whole-text pattern of a prompt template: its literal text escaped, each
    ``{field}`` replaced by the field's pattern (so the parser follows the template)."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(_FIELD_PATTERNS[name])
    return re.compile("".join(parts), re.DOTALL)


def _template_tail(template: str) -> str:
    """The literal text after a template's last field (a cheap first check)."""
    return [literal for literal, _, _, _ in string.Formatter().parse(template)][-1]


_PROMPT_PATTERNS = tuple(
    (task, _template_tail(template), _template_pattern(template))
    for task, template in (
        ("mmlu", MMLU_TEMPLATE),
        ("gsm8k", GSM8K_TEMPLATE),
        ("lookup", LOOKUP_TEMPLATE),
    )
)
_LOOKUP_ROW = re.compile(r"  persona ([A-Z]): id (\d+)")


def parse_control_prompt(text: str) -> ParsedControlPrompt | None:
    """The task and content of a control prompt built by :func:`render_item` or
    :func:`render_lookup`, from its text alone; None for any other text.

    ``parse_control_prompt(render_item(item, task))`` gives back ``task``, the question
    and the choices (an option holding a line break cannot be told apart from the
    next option, so such an MMLU item is not recognised).
    """
    for task, tail, pattern in _PROMPT_PATTERNS:
        if not text.endswith(tail):
            continue
        m = pattern.fullmatch(text)
        if m is None:
            continue
        if task == "mmlu":
            lines = m.group("options").split("\n")
            return ParsedControlPrompt(task, m.group("question"), tuple(line[3:] for line in lines))
        if task == "gsm8k":
            return ParsedControlPrompt(task, m.group("question"))
        display = tuple((p, int(i)) for p, i in _LOOKUP_ROW.findall(m.group("rows")))
        return ParsedControlPrompt(task, display=display, target=m.group("target"))
    return None


# --- one interface for running any control task ---------------------------------------------


@dataclass(frozen=True)
class ControlTask:
    """A control task as a backend run sees it: prompts to send and a scorer of replies.

    Attributes:
        name: ``mmlu``, ``gsm8k`` or ``lookup``.
        item_ids: The items (tables for lookup) in order.
    """

    name: str
    item_ids: tuple[int, ...]
    _prompts: Mapping[int, str]
    _items: Mapping[int, ControlItem | LookupTable]

    def prompts(self, *, repetitions: int = 10) -> Iterator[ControlPrompt]:
        """Every (item, repetition) request, item by item, repetitions numbered from 1."""
        if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
            raise ValueError(f"repetitions must be an integer >= 1, got {repetitions!r}")
        for item_id in self.item_ids:
            for r in range(1, repetitions + 1):
                yield ControlPrompt(item_id, r, self._prompts[item_id])

    def score(self, item_id: int, reply: str) -> ParsedAnswer:
        """The parsed answer, ``format_valid`` and ``correct`` of one reply."""
        item = self._items[item_id]
        if isinstance(item, LookupTable):
            return score_lookup(reply, item)
        return score_reply(reply, item, "mmlu" if item.choices else "gsm8k")

    def item(self, item_id: int) -> ControlItem | LookupTable:
        """The item (lookup: table) with id ``item_id``."""
        return self._items[item_id]

    def prompt(self, item_id: int) -> str:
        """The prompt text of an item."""
        return self._prompts[item_id]

    def gold(self, item_id: int) -> str:
        """The right answer of an item, as the CSVs write it."""
        item = self._items[item_id]
        return str(item.correct_id) if isinstance(item, LookupTable) else item.gold


def capability_task(items: ItemSet) -> ControlTask:
    """The :class:`ControlTask` of an items file."""
    return ControlTask(
        items.task,
        tuple(it.item_id for it in items.items),
        {it.item_id: render_item(it, items.task) for it in items.items},
        {it.item_id: it for it in items.items},
    )


def lookup_task(n_tables: int = LOOKUP_TABLES, *, seed: int = SEED) -> ControlTask:
    """The :class:`ControlTask` of the seeded lookup tables."""
    tables = lookup_tables(n_tables, seed=seed)
    return ControlTask(
        "lookup",
        tuple(t.table_id for t in tables),
        {t.table_id: render_lookup(t) for t in tables},
        {t.table_id: t for t in tables},
    )


__all__ = [
    "GSM8K_TEMPLATE",
    "LOOKUP_TEMPLATE",
    "MMLU_TEMPLATE",
    "TASKS",
    "ControlItem",
    "ControlPrompt",
    "ControlTask",
    "ItemSet",
    "LookupTable",
    "ParsedAnswer",
    "ParsedControlPrompt",
    "TaskName",
    "arithmetic_items",
    "build_gsm8k_items",
    "build_mmlu_items",
    "capability_task",
    "gsm8k_gold",
    "items_from_dict",
    "items_json",
    "iter_prompts",
    "load_items",
    "lookup_tables",
    "lookup_task",
    "normalise_number",
    "parse_control_prompt",
    "parse_gsm8k",
    "parse_lookup",
    "parse_mmlu",
    "read_source_rows",
    "render_item",
    "render_lookup",
    "score_lookup",
    "score_reply",
    "task_from_name",
]
