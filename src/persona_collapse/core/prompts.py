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
times; then one longer reply (:data:`LONG_MAX_TOKENS`) whose first standalone
integer is taken. :func:`extract_rating` implements both parsers.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from persona_collapse.core.errors import ConfigError
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

    Long-form mode takes the first standalone integer anywhere in the text
    (decimals, grouped numbers, ranges and digits inside words are skipped) and
    accepts it only if it is on the scale; an off-scale first integer gives
    None (the parser does not move on to a later one).

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
    if long_form:
        for _start, value in _numbers(text):
            if value is not None:
                return value if value in valid else None
        return None
    stripped = text.lstrip(_LEADING_MARKUP)
    for start, value in _numbers(stripped):
        if start != 0 or value is None:
            return None
        return value if value in valid else None
    return None


__all__ = [
    "DEFAULT_TEMPLATE",
    "LONG_MAX_TOKENS",
    "MAX_SHORT_ATTEMPTS",
    "PLACEHOLDERS",
    "SHORT_MAX_TOKENS",
    "PromptTemplate",
    "extract_rating",
    "load_template",
    "render_prompt",
    "render_scale",
    "template_hash",
]
