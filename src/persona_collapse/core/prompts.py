"""Prompt templates, prompt rendering and rating extraction.

A :class:`PromptTemplate` holds four ``str.format`` strings. Placeholders:

``{persona}``      persona text (role-play templates only)
``{instruction}``  block instruction of the item's kind (relevance / agreement)
``{item}``         item wording
``{scale}``        one line per scale value, e.g. ``0 = strongly disagree``
``{scale_min}``    lowest rating
``{scale_max}``    highest rating

Literal braces are written ``{{`` and ``}}``.

Answers are collected in two modes (the reference protocol): first a one-token
reply (:data:`SHORT_MAX_TOKENS`), retried up to :data:`MAX_SHORT_ATTEMPTS`
times; then one longer reply (:data:`LONG_MAX_TOKENS`) from which only an explicit
answer is taken (a leading rating or an "I would rate N"-type phrase).
:func:`extract_rating` implements both parsers.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from persona_collapse.core.errors import ConfigError, UnknownNameError
from persona_collapse.core.files import check_file_size
from persona_collapse.core.instrument import Instrument, ItemKind
from persona_collapse.core.types import Message, Prompt
from persona_collapse.core.yamlio import load_yaml_mapping

SHORT_MAX_TOKENS = 1
"""Completion length of a short (single-token) answer request."""

LONG_MAX_TOKENS = 64
"""Completion length of the fallback long answer request."""

MAX_SHORT_ATTEMPTS = 10
"""Short requests per slot before falling back to one long request."""

PLACEHOLDERS: tuple[str, ...] = (
    "persona",
    "instruction",
    "item",
    "scale",
    "scale_min",
    "scale_max",
)
"""Placeholder names a template may use."""

_PERSONA_FIELDS = ("persona_system", "persona_user")
_SELF_FIELDS = ("self_system", "self_user")


@dataclass(frozen=True)
class PromptTemplate:
    """Wording of the role-play (persona) and self prompts.

    Attributes:
        persona_system: System message of a role-play prompt.
        persona_user: User message of a role-play prompt (must contain ``{item}``).
        self_system: System message of a self prompt, or None for no system message.
        self_user: User message of a self prompt (must contain ``{item}``, not ``{persona}``).

    Raises:
        ConfigError: A field has a malformed or unknown placeholder, a user
            message lacks ``{item}``, the persona fields lack ``{persona}``, or
            a self field uses ``{persona}``.
    """

    persona_system: str
    persona_user: str
    self_system: str | None
    self_user: str

    def __post_init__(self) -> None:
        _validate_fields(asdict(self), source="prompt template")


def _placeholders(text: str, field_name: str, source: str) -> set[str]:
    """Placeholder names used in ``text``; raises ConfigError for malformed or unknown ones."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"{source}: field {field_name!r}: malformed placeholder ({exc})"
        ) from None
    found: set[str] = set()
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            shown = "{" + name + "}" if name else "{} (empty placeholder)"
            raise ConfigError(
                f"{source}: field {field_name!r}: unknown placeholder {shown}; "
                f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)} "
                "(write literal braces as {{ and }})"
            )
        if spec and "{" in spec:
            raise ConfigError(
                f"{source}: field {field_name!r}: nested placeholder in format spec of {{{name}}}"
            )
        found.add(name)
    return found


def _validate_fields(values: Mapping[str, Any], *, source: str) -> None:
    """Check the four template fields; raises ConfigError naming the first bad field."""
    used: dict[str, set[str]] = {}
    for f in fields(PromptTemplate):
        value = values[f.name]
        if value is None and f.name == "self_system":
            used[f.name] = set()
            continue
        if not isinstance(value, str):
            raise ConfigError(
                f"{source}: field {f.name!r} must be a string, got {type(value).__name__}"
            )
        if not value.strip() and f.name != "self_system":
            raise ConfigError(f"{source}: field {f.name!r} must not be empty")
        used[f.name] = _placeholders(value, f.name, source)
    for name in ("persona_user", "self_user"):
        if "item" not in used[name]:
            raise ConfigError(f"{source}: field {name!r} must contain the {{item}} placeholder")
    if not any("persona" in used[n] for n in _PERSONA_FIELDS):
        raise ConfigError(
            f"{source}: field 'persona_system' or 'persona_user' must contain the "
            "{persona} placeholder"
        )
    for name in _SELF_FIELDS:
        if "persona" in used[name]:
            raise ConfigError(
                f"{source}: field {name!r} must not use {{persona}} (self prompts have no persona)"
            )


DEFAULT_TEMPLATE = PromptTemplate(
    persona_system=(
        "You are taking part in a role-play. The person you play is:\n\n"
        "{persona}\n\n"
        "Stay in this role for the whole conversation. Answer every question the way "
        "this person would, from their background, their values and their way of seeing "
        "the world, and not from your own point of view."
    ),
    persona_user=(
        "{instruction}\n\n"
        "Item: {item}\n\n"
        "Rating scale:\n{scale}\n\n"
        "Answer fully in character as the person you are playing. Reply with a single "
        "integer from {scale_min} to {scale_max} and nothing else."
    ),
    self_system=None,
    self_user=(
        "{instruction}\n\n"
        "Item: {item}\n\n"
        "Rating scale:\n{scale}\n\n"
        "Reply with a single integer from {scale_min} to {scale_max} and nothing else."
    ),
)
"""The built-in wording (our own; not taken from any published study)."""


# Paraphrases of the role-play wording (ours), for the sensitivity suite: the same
# request (stay in role, one integer on the scale) in other words. Self prompts keep
# the default wording, since the suite varies the role-play only.
_FORMAL_TEMPLATE = PromptTemplate(
    persona_system=(
        "In this exercise you will portray a specific individual, described as follows:\n\n"
        "{persona}\n\n"
        "Remain in this role throughout. Each response must reflect this individual's "
        "history, convictions and outlook rather than your own."
    ),
    persona_user=(
        "{instruction}\n\n"
        "Statement: {item}\n\n"
        "Response options:\n{scale}\n\n"
        "Responding as the individual you portray, give one whole number between "
        "{scale_min} and {scale_max} and no other text."
    ),
    self_system=DEFAULT_TEMPLATE.self_system,
    self_user=DEFAULT_TEMPLATE.self_user,
)

_PLAIN_TEMPLATE = PromptTemplate(
    persona_system=(
        "Pretend to be this person:\n\n{persona}\n\nAnswer as they would, not as yourself."
    ),
    persona_user=(
        "{instruction}\n\n{item}\n\n{scale}\n\n"
        "As this person, which number from {scale_min} to {scale_max}? Just the number."
    ),
    self_system=DEFAULT_TEMPLATE.self_system,
    self_user=DEFAULT_TEMPLATE.self_user,
)

_INTERVIEW_TEMPLATE = PromptTemplate(
    persona_system=(
        "You are being interviewed for a survey of people's values. You are:\n\n"
        "{persona}\n\n"
        "The interviewer wants this person's genuine views; keep to their perspective "
        "for every question."
    ),
    persona_user=(
        "Interviewer: {instruction}\n\n"
        "The question is about: {item}\n\n"
        "Please choose from this scale:\n{scale}\n\n"
        "Reply, in character, with only the number ({scale_min} to {scale_max})."
    ),
    self_system=DEFAULT_TEMPLATE.self_system,
    self_user=DEFAULT_TEMPLATE.self_user,
)

BUILTIN_TEMPLATES: Mapping[str, PromptTemplate] = MappingProxyType(
    {
        "default": DEFAULT_TEMPLATE,
        "formal": _FORMAL_TEMPLATE,
        "plain": _PLAIN_TEMPLATE,
        "interview": _INTERVIEW_TEMPLATE,
    }
)
"""Built-in role-play wordings by name: ``default`` (:data:`DEFAULT_TEMPLATE`) and three
paraphrases of it (``formal``, ``plain``, ``interview``; ours), which ask the same thing
in other words. Self prompts are the default's in all of them."""


def builtin_template_name(template: PromptTemplate) -> str | None:
    """The name of a built-in template equal to ``template``, or None."""
    return next((n for n, t in BUILTIN_TEMPLATES.items() if t == template), None)


def get_template(name_or_path: str | Path) -> PromptTemplate:
    """A built-in template by name (:data:`BUILTIN_TEMPLATES`), or a template YAML file.

    A string that names no built-in template and has no YAML suffix or path separator
    is taken as a mistyped name.

    Raises:
        UnknownNameError: An unknown name (with the closest built-in names).
        InputFileError, ConfigError: As :func:`load_template`.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[text]
    looks_like_path = (
        isinstance(name_or_path, Path)
        or text.lower().endswith((".yaml", ".yml"))
        or "/" in text
        or "\\" in text
    )
    if not looks_like_path:
        raise UnknownNameError("prompt template", text, BUILTIN_TEMPLATES)
    return load_template(name_or_path)


MAX_TEMPLATE_BYTES = 1 << 20
"""Largest template file :func:`load_template` reads (1 MiB; real ones are a few KiB)."""


def load_template(path: str | Path) -> PromptTemplate:
    """Load a prompt template from a YAML mapping of field names to strings.

    Fields left out keep the :data:`DEFAULT_TEMPLATE` wording; ``self_system``
    may be ``null`` (no system message in self prompts).

    Raises:
        InputFileError: The file is missing, unreadable, larger than
            :data:`MAX_TEMPLATE_BYTES`, not YAML or not a mapping.
        ConfigError: An unknown key, a non-string value or a bad placeholder (names the field).
    """
    p = Path(path)
    # Every prompt carries the template: a huge one means a wrong file, and hours of requests.
    check_file_size(p, MAX_TEMPLATE_BYTES, "template file")
    data = load_yaml_mapping(p, what="template")
    known = [f.name for f in fields(PromptTemplate)]
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{p}: unknown template field {key!r}; expected one of {', '.join(known)}"
            )
    values = {**asdict(DEFAULT_TEMPLATE), **data}
    _validate_fields(values, source=str(p))
    return PromptTemplate(**values)


def render_scale(instrument: Instrument, kind: ItemKind) -> str:
    """The ``{scale}`` text of a block: one ``"<value> = <anchor>"`` line per scale value."""
    anchors = instrument.blocks[kind].anchors
    return "\n".join(f"{k} = {anchors[k]}" for k in sorted(anchors))


def render_prompt(
    template: PromptTemplate,
    instrument: Instrument,
    item_id: int,
    persona: str | None,
) -> Prompt:
    """Render the chat prompt asking ``persona`` (None: the model itself) about one item.

    Args:
        template: Prompt wording.
        instrument: Questionnaire holding the item, its block instruction and anchors.
        item_id: Id of the item to ask.
        persona: Persona text, or None for the self prompt.

    Returns:
        A :class:`Prompt` with ``persona`` and ``item_id`` filled in.

    Raises:
        UnknownNameError: ``item_id`` is not in the instrument.
        ValueError: ``persona`` is blank.
    """
    if persona is not None and not persona.strip():
        raise ValueError("persona must not be blank (use None for the self prompt)")
    item = instrument.item(item_id)
    block = instrument.blocks[item.kind]
    context = {
        "persona": persona,
        "instruction": block.instruction,
        "item": item.text,
        "scale": render_scale(instrument, item.kind),
        "scale_min": instrument.scale_min,
        "scale_max": instrument.scale_max,
    }
    if persona is None:
        system, user = template.self_system, template.self_user
    else:
        system, user = template.persona_system, template.persona_user
    messages: list[Message] = []
    if system is not None and system.strip():
        messages.append(Message("system", system.format(**context)))
    messages.append(Message("user", user.format(**context)))
    return Prompt(tuple(messages), persona=persona, item_id=item.id)


_HASH_PERSONA = "<persona>"


def template_hash(template: PromptTemplate, instrument: Instrument) -> str:
    """SHA-256 (hex, 16 chars) of every prompt the template renders for the instrument.

    All items (catch items included) are rendered once with a fixed placeholder
    persona and once as self prompts; the JSON of the message lists is hashed,
    so the hash changes with any wording that reaches the model.
    """
    rendered = [
        [[m.role, m.content] for m in render_prompt(template, instrument, item.id, who).messages]
        for item in instrument.items
        for who in (_HASH_PERSONA, None)
    ]
    raw = json.dumps(rendered, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


# --- rating extraction ----------------------------------------------------------------------

# A numeric run: digits, optionally joined to more digits by "." or "," (decimals,
# thousands separators). Runs with a separator are never standalone integers.
_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*")
_DASHES = "-–—"
# Markup a model may put before a bare rating: bold/italics, quotes, brackets, headings.
_LEADING_MARKUP = "*_`\"'“”‘’«»([{<>#~ \t\r\n"


def _numbers(text: str) -> Iterator[tuple[int, int | None]]:
    """Yield ``(start, value)`` for each numeric run; value None if not a standalone integer.

    A run is not standalone when it is a decimal or grouped number (``4.5``,
    ``1,000``), touches a letter or digit (``Q4``, ``4th``), or is an
    end of a hyphenated range or compound (``0-5``, ``COVID-19``). A run behind a
    dash that is not attached to a word is a negative number (standalone, negative).
    """
    for m in _NUMBER.finditer(text):
        start, end = m.span()
        run = m.group()
        before = text[start - 1] if start > 0 else ""
        after = text[end] if end < len(text) else ""
        value: int | None = None
        if "." in run or "," in run:
            pass
        elif before.isalnum() or after.isalnum():
            pass  # part of a word such as "Q4" or "4th"
        elif after and after in _DASHES and text[end + 1 : end + 2].isdigit():
            pass  # start of a range such as "4-5"
        elif before and before in _DASHES:
            before2 = text[start - 2] if start > 1 else ""
            if not before2.isalnum():  # else the end of a range or compound such as "0-5"
                value = -int(run)
        else:
            value = int(run)
        yield start, value


def _scale_values(scale: Sequence[int] | tuple[int, int]) -> frozenset[int]:
    values = list(scale)
    if not values:
        raise ValueError("scale must not be empty")
    if len(values) == 2 and not isinstance(scale, range):
        lo, hi = int(values[0]), int(values[1])
        if hi < lo:
            raise ValueError(
                f"scale bounds must be (min, max) with min <= max, got {tuple(values)}"
            )
        return frozenset(range(lo, hi + 1))
    return frozenset(int(v) for v in values)


# Long-form answers. A number counts only when the reply *gives* it as its answer:
# a leading rating, or one introduced by an explicit answer phrase. Numbers in an
# echoed scale line ("0 = not at all relevant"), a range ("0 to 5"), an item
# number or anywhere else in free text are never taken.
_MARKUP = r"[\s*_`\"'“”‘’«»(\[{<>#~]*"
_ANSWER_VERBS = r"(?:rate|choose|answer|give|pick|select|say|go\s+with|score|put|opt\s+for)"
_OBJECTS = (
    r"(?:\s+(?:(?:the|this|that)\s+(?:item|statement|consideration|question)"
    r"|it|this|that|them))?"
)
_FILLERS = r"(?:\s+(?:as|a|an|at|with|for))?(?:\s+(?:rating|score|value|number|option)(?:\s+of)?)?"
_ANSWER_CUES = re.compile(
    "|".join(
        (
            # "I would rate it 4", "I'd choose 3", "I will give this a 2", "I pick 5"
            r"\bI(?:\s+would|\s+will|\s+should|\s+must|'d|’d|'ll|’ll)?\s+(?:have\s+to\s+)?"
            + _ANSWER_VERBS
            + r"s?"
            + _OBJECTS
            + _FILLERS,
            # "my rating is 4", "the answer would be 2", "my choice: 3"
            r"\b(?:my|the|final|our)\s+(?:final\s+)?(?:rating|answer|score|choice|response)"
            r"\s*(?:is|would\s+be|will\s+be|[:=])",
            # "Answer: 3", "Rating - 4", "Speaking as them: 3" (a number right after a colon)
            r"\b(?:answer|rating|score|response|choice)\s*[:=]",
            r":",
        )
    ),
    re.IGNORECASE,
)
# After a cue, the number may follow markup; it must not start a range or an echoed line.
_CUED_NUMBER = re.compile(_MARKUP + r"(-?[0-9]+)(?![0-9.,]?[0-9])")
_NOT_AN_ANSWER_AFTER = re.compile(
    r"\s*(?:=|(?:-|–|—|to|or|and)\s*[0-9]|[.)]\s*(?:[A-Z][a-z]+\s+){2})"
    # "I choose 5 possible responses", "I would give 3 examples": a count, not a rating
    r"|\s+(?:possible|different|other|more|options?|choices?|responses?|answers?|items?|"
    r"examples?|reasons?|points?\s+(?:of|for)|ways?|values?|levels?|categories|times?)\b",
    re.IGNORECASE,
)
# After a *leading* number only: a list label ("3. Whether or not...", "[0] Strongly
# disagree", "(2) slightly relevant"), i.e. an echoed item or scale line.
_LIST_LABEL_AFTER = re.compile(r"(?:\.\s+[A-Z]|[)\]]\s*[A-Za-z])")
# A line that lists a scale value or an item: "0 = not at all", "3) slightly", "1. Whether".
_LISTED_LINE = re.compile(r"^[\s*_#>-]*[0-9]+\s*(?:=|[.):]\s|\s[-–—]\s)", re.MULTILINE)


def _is_echo_or_list(text: str) -> bool:
    """Whether ``text`` reproduces the scale or a numbered list (two or more listed lines)."""
    return len(_LISTED_LINE.findall(text)) >= 2


def _short_rating(text: str, valid: frozenset[int]) -> int | None:
    stripped = text.lstrip(_LEADING_MARKUP)
    for start, value in _numbers(stripped):
        if start != 0 or value is None:
            return None
        return value if value in valid else None
    return None


def _leading_rating(text: str, valid: frozenset[int]) -> int | None:
    """A rating the reply starts with, unless it opens an echoed scale line or a list."""
    stripped = text.lstrip(_LEADING_MARKUP)
    value = _short_rating(stripped, valid)
    if value is None:
        return None
    m = _NUMBER.match(stripped)
    rest = stripped[m.end() :] if m is not None else ""
    if _NOT_AN_ANSWER_AFTER.match(rest) or _LIST_LABEL_AFTER.match(rest):
        return None
    if _is_echo_or_list(text):
        return None
    return value


def _cued_rating(text: str, valid: frozenset[int]) -> tuple[bool, int | None]:
    """The first number introduced by an answer phrase: ``(found, value or None if off-scale)``."""
    for cue in _ANSWER_CUES.finditer(text):
        m = _CUED_NUMBER.match(text, cue.end())
        if m is None:
            continue
        rest = text[m.end() :]
        if _NOT_AN_ANSWER_AFTER.match(rest):
            continue  # "scale: 0 = not at all", "from: 0 to 5"
        value = int(m.group(1))
        return True, (value if value in valid else None)
    return False, None


def extract_rating(
    text: str,
    scale: Sequence[int] | tuple[int, int],
    *,
    long_form: bool = False,
) -> int | None:
    """Parse a rating from a model reply.

    Short mode (default) accepts a reply only if, after whitespace and leading
    markup (``**``, quotes, brackets) are stripped, it *starts* with a
    standalone integer on the scale: ``"4"``, ``"4."``, ``"**4**"``,
    ``"4 - very"`` parse; ``"45"``, ``"4.5"``, ``"I'd say 4"`` do not.

    Long-form mode accepts only a number the reply gives as its answer:

    1. a leading rating (as in short mode), unless it opens an echoed scale line
       (``"0 = not at all relevant"``, ``"[0] Strongly disagree"``), a numbered
       item (``"3. Whether or not..."``), a range (``"0 to 5"``, ``"0-5"``), a count
       (``"5 possible responses"``) or a reply that lists two or more numbered
       lines (an echoed scale or item list);
    2. otherwise the first number introduced by an explicit answer phrase:
       ``"I would rate/choose/answer/give/pick/say (it) N"``, ``"my rating/answer
       is N"``, ``"Answer: N"``, or a number right after a colon, never one that
       starts an echoed scale line or a range.

    Every other number (scale descriptions, item numbers, ranges, numbers in
    free text) is ignored; a reply without an answer gives None (the slot stays
    unparseable). An answer that is off the scale gives None too: the parser does
    not move on to a later number.

    Args:
        text: The reply.
        scale: Valid ratings: a ``(min, max)`` pair of inclusive bounds, or a
            longer sequence (or ``range``) listing every valid value.
        long_form: Use the long-form parser.

    Returns:
        The rating, or None when the reply has no acceptable rating.

    Raises:
        ValueError: ``scale`` is empty or its bounds are reversed.
    """
    valid = _scale_values(scale)
    if not long_form:
        return _short_rating(text, valid)
    leading = _leading_rating(text, valid)
    if leading is not None:
        return leading
    _found, value = _cued_rating(text, valid)
    return value


__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_TEMPLATE",
    "LONG_MAX_TOKENS",
    "MAX_SHORT_ATTEMPTS",
    "PLACEHOLDERS",
    "SHORT_MAX_TOKENS",
    "PromptTemplate",
    "builtin_template_name",
    "extract_rating",
    "get_template",
    "load_template",
    "render_prompt",
    "render_scale",
    "template_hash",
]
