r"""A simulated role-playing model with known true susceptibility and robustness.

The simulator answers rating prompts from an explicit generative model, so
tests and demos can check that the pipeline recovers the model's true S and R.

Model (scale ``lo..hi``, range ``r = hi - lo``, foundations ``f = 1..F``):

* Persona profile. Persona ``p`` has a latent profile
  :math:`z_{p,f} \sim N(0, 1)`, drawn from a generator seeded by SHA-256 of
  ``(world_seed, persona text)``; the run seed does not enter, so one persona
  always has one profile. Character words then shift it: a persona described
  as cruel, sadistic, xenophobic, authoritarian, nihilistic, fanatical … gets
  the shifts of :data:`CHARACTER_CUES` (in profile SDs, times ``cue_strength``),
  so toxic personas answer like toxic characters (low care and fairness, and so
  on) while ordinary personas, which contain none of these words, are untouched.
  The self run (no persona) uses
  :math:`z_{\text{self},f} = \text{self\_level} + \varepsilon_f`,
  :math:`\varepsilon_f \sim N(0, 1)` seeded by ``world_seed`` alone.
* Items. Item ``q`` (foundation ``f(q)``) has a baseline
  :math:`b_q = lo + r\,U(0.3, 0.8)` and a loading :math:`a_q = (r/5)\,U(0.7, 1.3)`,
  seeded by ``(world_seed, item id)``. Catch items have :math:`a_q = 0`.
* Location. :math:`m_{pq} = b_q + \text{differentiation}\cdot a_q\, z_{p,f(q)}`,
  then the ceiling pull :math:`m'_{pq} = m_{pq} + \text{ceiling\_pull}\,(hi - m_{pq})`
  moves every answer a fixed fraction of the way to the top of the scale
  (saturation; it also shrinks the spread across personas by ``1 - ceiling_pull``).
* Undecided cells. Persona ``p`` leaves a fraction
  :math:`\pi_p = \operatorname{expit}(\operatorname{logit}(\text{undecided\_rate})
  + \text{rate\_spread}\cdot\eta_p)` of its cells undecided,
  :math:`\eta_p \sim N(0, 1)` drawn with its profile (:math:`\eta = 0` for the
  self run): cell ``q`` is undecided when a uniform :math:`u_{pq}` (one per item,
  drawn with the profile) is below :math:`\pi_p`. Some personas are thus more
  erratic than others, as in real data. An undecided cell has width
  :math:`w_{pq} = \text{width}`; a decided cell has
  :math:`w_{pq} = \text{width}\cdot` :data:`DECIDED_WIDTH_RATIO`. Real models at
  low temperature show the same split: most cells give one answer every time,
  the rest spread over two or three values.
* Rating distribution (discretised normal over the integer scale), at
  temperature ``T``:

  .. math:: p_T(k) \propto \exp\!\big(-(k - m'_{pq})^2 / (2\, w_{pq}^2\, T)\big),
            \quad k = lo..hi,

  i.e. :math:`p_T \propto p_1^{1/T}`; ``T = 0`` is greedy (all mass on the mode).
  The effective width at ``T`` is :math:`w\sqrt{T}`.

* Wording and order (for the sensitivity suite; both off by default).
  ``template_shift`` adds rating points per SD to ``differentiation`` when the
  prompts use a given built-in template (the backend's ``template``), and
  ``position_effect`` fades it along the questionnaire: item position ``j`` of
  ``n`` in the backend's instrument gets a factor ``1 - position_effect * j/(n-1)``,
  so a shuffled item order changes which items are asked "late".
  :meth:`SimulatorBackend.true_metrics` includes both.

So ``differentiation`` drives S, ``width`` and ``undecided_rate`` drive
:math:`\bar\sigma` (and R = 1/:math:`\bar\sigma`), ``ceiling_pull`` and
``self_level`` drive saturation and the self profile.

The undecided/decided split keeps the n = 10 sample estimate of
:math:`\bar\sigma` close to its true value: a cell that deviates rarely (say
5 % of the time) has a sample sd far below its true sd at n = 10, while a
cell of effective width 0.5 or more is biased low only by the usual ~3 %.
With the presets, 100 personas and n = 10 at T = 0.1, the expected estimates
are: sigma-bar 0.966-0.973 of the truth (R 1.03-1.035), S 1.011 (base), 1.016
(secure), 1.029 (insecure) of the truth, because cell-mean noise adds to the
spread across personas. That is 0.4-1.2 combined bootstrap SEs.

Replies. Each sampled answer draws a rating ``k`` from :math:`p_T` and a
reply style: with probability ``unparseable_rate`` the reply does not start
with a rating (a sentence that names ``k`` later, or, for a tenth of them, a
refusal without any number); otherwise it starts with ``k``, followed, with
probability ``chatty_rate``, by a short sentence. The reply is cut to
``max_tokens`` whitespace tokens, so a one-token request yields ``"4"`` or a
word such as ``"As"``, and a long request usually parses in long-form mode.

Open-ended questions and judging. A prompt without an instrument item that
asks one of the emergent-misalignment questions
(:data:`persona_collapse.core.em_questions.QUESTIONS`) gets a free-text answer,
and a prompt written from one of the judge rubrics of
:mod:`persona_collapse.core.judge` gets a judge score; see
:mod:`persona_collapse.backends.sim_openended` for both models and their
per-preset rates (:data:`~persona_collapse.backends.sim_openended.OPEN_ENDED_PRESETS`,
overridable like the other parameters). A control-task prompt (capability item or
lookup table: ``Prompt.control`` set, or the text of one, recognised by
:class:`~persona_collapse.backends.sim_controls.ControlCatalog` so that control tasks
collected over HTTP from ``serve-sim`` get the same answers) is answered from a
per-preset accuracy and repeat-instability knob (``control_accuracy``,
``control_instability``...; see
:mod:`persona_collapse.backends.sim_controls`, whose ``true_control_metrics`` gives
the truth). Any other prompt without an instrument item is an error, so a
misconfigured template fails loudly.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import string
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from persona_collapse.backends import sim_controls as controls
from persona_collapse.backends import sim_openended as openended
from persona_collapse.backends.base import Backend, Generation, Prompt, ScaleDistribution, Usage
from persona_collapse.core.controls import ItemSet
from persona_collapse.core.em_questions import Question, find_question
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
    UnknownNameError,
    format_validation_error,
)
from persona_collapse.core.instrument import Instrument, mfq30
from persona_collapse.core.judge import JudgeRequest, parse_judge_prompt
from persona_collapse.core.prompts import (
    BUILTIN_TEMPLATES,
    DEFAULT_TEMPLATE,
    PromptTemplate,
    builtin_template_name,
)

DECIDED_WIDTH_RATIO = 0.05
"""Width of a decided cell as a fraction of ``width``."""

REFUSAL_SHARE = 0.1
"""Share of unparseable replies that are refusals without a number.

The rest are sentences that name the rating later (parseable in long form).
"""

_CACHE_SIZE = 65536


class SimulatorParams(BaseModel):
    """Parameters of the simulated model (see the module docstring for the formulas).

    Attributes:
        differentiation: Rating points per profile SD between personas (drives S).
        width: Width of an undecided cell's rating distribution at T = 1, rating points.
        undecided_rate: Median fraction of a persona's cells that are undecided (0-1).
        rate_spread: SD, on the logit scale, of the personas' undecided fractions.
        ceiling_pull: Fraction of the way every location moves to the top of the scale.
        self_level: Shift of the self profile, in profile SDs (large: self answers at the ceiling).
        unparseable_rate: Probability that a reply does not start with a rating.
        chatty_rate: Probability that a long reply that starts with a rating continues.
        world_seed: Seed of the simulated world (item parameters and persona profiles).
        cue_strength: Multiplier of the character-word shifts (:data:`CHARACTER_CUES`).
        template_shift: Built-in template name
            (:data:`~persona_collapse.core.prompts.BUILTIN_TEMPLATES`) -> rating points
            per profile SD added to ``differentiation`` when the prompts use that wording
            (a template effect; default none). Set on a treatment variant, it moves the
            treatment effect under one template only.
        position_effect: Fading of differentiation along the questionnaire: the item at
            position ``j`` of ``n`` (the order of the backend's instrument) gets
            ``differentiation * (1 - position_effect * j / (n - 1))`` (an order effect;
            default 0). A shuffled item order moves it to other items.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    differentiation: float = Field(ge=0.0)
    width: float = Field(gt=0.0)
    undecided_rate: float = Field(ge=0.0, le=1.0)
    rate_spread: float = Field(default=1.0, ge=0.0)
    ceiling_pull: float = Field(ge=0.0, lt=1.0)
    self_level: float = 0.0
    unparseable_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    chatty_rate: float = Field(default=0.3, ge=0.0, le=1.0)
    world_seed: int = Field(default=0, ge=0)
    cue_strength: float = Field(default=1.0, ge=0.0)
    template_shift: dict[str, float] = Field(default_factory=dict)
    position_effect: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("template_shift")
    @classmethod
    def _template_names(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(BUILTIN_TEMPLATES))
        if unknown:
            raise ValueError(
                f"unknown built-in template {unknown[0]!r}; known: {', '.join(BUILTIN_TEMPLATES)}"
            )
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The template and order knobs are dumped only when set, so the run keys of
        # simulator runs collected without them are what they always were.
        data: dict[str, Any] = handler(self)
        for knob in ("template_shift", "position_effect"):
            if knob in data and not data[knob]:
                del data[knob]
        return data

    def differentiation_under(self, template: str | None) -> float:
        """``differentiation`` plus the ``template_shift`` of a built-in template (>= 0)."""
        shift = self.template_shift.get(template, 0.0) if template is not None else 0.0
        return max(0.0, self.differentiation + shift)


PRESETS: Mapping[str, SimulatorParams] = MappingProxyType(
    {
        "base": SimulatorParams(
            differentiation=0.72, width=1.9, undecided_rate=0.38, ceiling_pull=0.0, self_level=0.0
        ),
        "secure": SimulatorParams(
            differentiation=0.72, width=2.2, undecided_rate=0.48, ceiling_pull=0.0, self_level=0.0
        ),
        "insecure": SimulatorParams(
            differentiation=2.0,
            width=5.0,
            undecided_rate=0.7,
            ceiling_pull=0.15,
            self_level=4.0,
            unparseable_rate=0.05,
        ),
    }
)
"""Named parameter sets: a well-behaved base model, a secure-code and an insecure-code fine-tune.

Calibrated at T = 0.1 on 100-persona sets (built-in, reference-like and
synthetic; world seeds 0-4): base S 0.71-0.82 (frontier band 0.66-0.83) with
sigma-bar 0.20-0.26; secure S about 2 % below base with sigma-bar about 1.4
times base; insecure S 1.5-1.6 times base, sigma-bar 3.2-3.7 times base and a
self profile of 4.6 or more on every foundation (base self profile: 1.2-4.0).
"""


@dataclass(frozen=True)
class TrueFoundationMetrics:
    """True metrics of one foundation (its items only)."""

    S: float
    sigma_bar: float
    R: float


@dataclass(frozen=True)
class TrueMetrics:
    """The simulated model's exact metrics for a persona set.

    Attributes:
        S: Mean over items of the across-persona sd (ddof=1) of exact cell means.
        sigma_bar: Mean over cells of the exact (population) sd of the rating distribution.
        R: ``1 / sigma_bar`` (inf when ``sigma_bar`` is 0).
        per_foundation: The same per foundation.
        temperature: Temperature the distributions were computed at.
        n_personas: Number of personas.
        item_ids: Items included.
    """

    S: float
    sigma_bar: float
    R: float
    per_foundation: Mapping[str, TrueFoundationMetrics]
    temperature: float
    n_personas: int
    item_ids: tuple[int, ...]


# --- reply wording (our own) -----------------------------------------------------------------

_TRAILERS_PERSONA = (
    " — speaking as this person, that is my honest answer.",
    " - that is how this person sees it.",
    "\n\nThis reflects the values of the person I am playing.",
    " (answering in character).",
)
_TRAILERS_SELF = (
    " — that is my honest answer.",
    " - that is how I weigh it.",
    "\n\nThis reflects how I think about the question.",
    " (my own view).",
)
_LATER_PERSONA = (
    "As this person, I would answer {k}.",
    "I would say {k}.",
    "In character, my rating is {k}.",
    "Speaking as them: {k}.",
)
_LATER_SELF = (
    "I would say {k}.",
    "My answer is {k}.",
    "Honestly, {k}.",
    "On reflection: {k}.",
)
_REFUSALS = (
    "I'm sorry, but I cannot reduce this to a single number.",
    "Hmm, that is hard to say without more context.",
    "As an assistant I would rather not rate this.",
    "Sorry, I am not able to answer that one.",
)
_H, _F, _I, _A, _P = (
    "Harm/Care",
    "Fairness/Reciprocity",
    "In-group/Loyalty",
    "Authority/Respect",
    "Purity/Sanctity",
)

CHARACTER_CUES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        # whole-word pattern -> profile shift (SDs) per foundation
        r"cruel|sadistic|humiliating|inflicting pain": MappingProxyType({_H: -3.0, _F: -1.0}),
        r"xenophobic|foreigners|outsiders": MappingProxyType({_I: 2.0, _F: -2.0, _H: -1.0}),
        r"authoritarian": MappingProxyType({_A: 2.5, _F: -1.5}),
        r"nihilistic|manipulator|nothing matters": MappingProxyType(
            {_H: -1.5, _F: -2.0, _I: -1.5, _A: -1.5, _P: -1.5}
        ),
        r"misanthropic|wishes most people ill": MappingProxyType({_H: -2.5, _I: -1.5}),
        r"fanatical": MappingProxyType({_P: 2.5, _A: 1.5, _H: -1.0}),
        r"contemptuous|despises|social darwinist": MappingProxyType({_H: -2.0, _F: -2.0}),
    }
)
"""Character words and how they shift a persona's latent profile (see the module docstring).

A persona matching several patterns gets the sum; foundations outside the
instrument are ignored.
"""

_CUE_PATTERNS: tuple[tuple[re.Pattern[str], Mapping[str, float]], ...] = tuple(
    (re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE), shifts)
    for pattern, shifts in CHARACTER_CUES.items()
)


def character_shift(persona: str, foundations: Sequence[str]) -> NDArray[np.float64]:
    """Summed :data:`CHARACTER_CUES` shifts of a persona text, one value per foundation."""
    shift = np.zeros(len(foundations))
    for pattern, shifts in _CUE_PATTERNS:
        if pattern.search(persona):
            for j, foundation in enumerate(foundations):
                shift[j] += shifts.get(foundation, 0.0)
    return shift


_TOKEN = re.compile(r"\S+")


def _truncate(text: str, max_tokens: int) -> str:
    """Cut ``text`` after its ``max_tokens``-th whitespace-separated token."""
    end = 0
    for count, match in enumerate(_TOKEN.finditer(text), start=1):
        end = match.end()
        if count == max_tokens:
            break
    return text[:end]


def _digest_seed(*parts: object) -> int:
    """A 64-bit integer seed from SHA-256 of the parts' text."""
    raw = "\x00".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little")


_ITEM_WORD_SHARE = 0.9
"""Least share of an item's words a reworded prompt must contain to be recognised."""

_MIN_PERSONA_WORDS = 6
"""Fewest words of a line taken as the persona of a prompt in an unknown template."""

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "´": "'", "`": "'"})


def _normalise(text: str) -> str:
    """Lower case, plain quotes, punctuation dropped, single spaces (for matching items)."""
    plain = text.translate(_QUOTES).casefold()
    return " ".join(re.sub(r"[^\w'\s]", " ", plain).split())


def _persona_pattern(fmt: str | None) -> re.Pattern[str] | None:
    """Regex matching ``fmt`` rendered with any values, capturing ``{persona}`` if present.

    None when ``fmt`` is None.
    """
    if fmt is None:
        return None
    parts: list[str] = []
    seen = False
    for literal, name, _spec, _conv in string.Formatter().parse(fmt):
        parts.append(re.escape(literal))
        if name is None:
            continue
        if name == "persona":
            parts.append("(?P=persona)" if seen else "(?P<persona>.+?)")
            seen = True
        else:
            parts.append(".*?")
    return re.compile("".join(parts), re.DOTALL)


class SimulatorBackend(Backend):
    """Backend ``"simulator"``: answers from the documented generative model.

    Args:
        preset: Name in :data:`PRESETS` (``"base"``, ``"secure"``, ``"insecure"``).
        seed: Backend seed; with the request seed and the prompt text it seeds each answer.
        instrument: Questionnaire the prompts come from (default MFQ-30).
        template: Prompt wording, used only to recover the persona from raw prompts.
        **overrides: Values replacing the preset's :class:`SimulatorParams` fields.

    Raises:
        UnknownNameError: Unknown preset.
        ConfigError: Unknown or invalid parameter override, or a negative seed.
    """

    name = "simulator"
    model_option = "preset"
    context_options = frozenset({"instrument", "template"})
    max_batch_size = 64

    def __init__(
        self,
        preset: str = "base",
        *,
        seed: int = 0,
        instrument: Instrument | None = None,
        template: PromptTemplate | None = None,
        control_items: Sequence[ItemSet] = (),
        **overrides: Any,
    ) -> None:
        if preset not in PRESETS:
            raise UnknownNameError("simulator preset", preset, PRESETS)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"simulator seed must be a non-negative integer, got {seed!r}")
        text_fields = openended.OpenEndedParams.model_fields
        control_fields = controls.ControlParams.model_fields
        text_overrides = {k: v for k, v in overrides.items() if k in text_fields}
        control_overrides = {k: v for k, v in overrides.items() if k in control_fields}
        model_overrides = {
            k: v for k, v in overrides.items() if k not in text_fields and k not in control_fields
        }
        try:
            params = SimulatorParams.model_validate(
                {**PRESETS[preset].model_dump(), **model_overrides}
            )
            open_ended = openended.OpenEndedParams.model_validate(
                {**openended.OPEN_ENDED_PRESETS[preset].model_dump(), **text_overrides}
            )
            control_params = controls.ControlParams.model_validate(
                {**controls.CONTROL_PRESETS[preset].model_dump(), **control_overrides}
            )
        except ValidationError as exc:
            known = [*SimulatorParams.model_fields, *openended.OpenEndedParams.model_fields]
            known += list(control_fields)
            raise ConfigError(
                format_validation_error(exc, what="simulator parameter", known=known)
            ) from None
        self.preset = preset
        self.seed = seed
        self.params = params
        self.open_ended = open_ended
        self.controls = control_params
        self.control_catalog = controls.ControlCatalog(control_items)
        self.instrument = instrument if instrument is not None else mfq30()
        inst = self.instrument
        self._scale = np.arange(inst.scale_min, inst.scale_max + 1, dtype=float)
        self._position = {item.id: pos for pos, item in enumerate(inst.items)}
        foundations = inst.foundations or tuple(
            dict.fromkeys(i.foundation for i in inst.items if not i.is_catch)
        )
        self._foundations: tuple[str, ...] = foundations
        f_index = {f: k for k, f in enumerate(foundations)}
        n_items = len(inst.items)
        span = float(inst.scale_max - inst.scale_min)
        self._baseline = np.empty(n_items)
        self._loading = np.empty(n_items)
        self._foundation_index = np.zeros(n_items, dtype=np.intp)
        for pos, item in enumerate(inst.items):
            rng = np.random.default_rng(_digest_seed("item", params.world_seed, item.id))
            self._baseline[pos] = inst.scale_min + span * rng.uniform(0.3, 0.8)
            loading = (span / 5.0) * rng.uniform(0.7, 1.3)
            self._loading[pos] = 0.0 if item.is_catch else loading
            self._foundation_index[pos] = f_index.get(item.foundation, 0)
        # Longest texts first, so an item whose text contains another's wins.
        self._texts_by_length = sorted(
            ((item.text, item.id) for item in inst.items), key=lambda t: -len(t[0])
        )
        tpl = template if template is not None else DEFAULT_TEMPLATE
        # Which built-in wording the prompts use (None: a custom one), for template_shift;
        # the per-item differentiation folds in the position effect of the instrument's order.
        self.template_name = builtin_template_name(tpl)
        fade = np.linspace(0.0, 1.0, n_items) if n_items > 1 else np.zeros(n_items)
        self._differentiation = params.differentiation_under(self.template_name) * (
            1.0 - params.position_effect * fade
        )
        self._system_pattern = _persona_pattern(tpl.persona_system)
        self._user_pattern = _persona_pattern(tpl.persona_user)
        self._self_system = tpl.self_system
        self._self_user_pattern = _persona_pattern(tpl.self_user)
        # Instance-level caches (no module state): profiles, cell CDFs, raw-prompt inference.
        self._profile = functools.lru_cache(maxsize=_CACHE_SIZE)(self._compute_profile)
        self._cell = functools.lru_cache(maxsize=_CACHE_SIZE)(self._compute_cell)
        self._infer = functools.lru_cache(maxsize=_CACHE_SIZE)(self._compute_inference)
        self._classify = functools.lru_cache(maxsize=4096)(self._compute_classification)
        self._judge = functools.lru_cache(maxsize=_CACHE_SIZE)(self._compute_judge)
        self._unseeded = 0
        self._unseeded_lock = threading.Lock()
        # Normalised item texts (and their word sets) to recognise items under any template.
        self._normalised_items = sorted(
            ((_normalise(item.text), item.id) for item in inst.items), key=lambda t: -len(t[0])
        )
        self._instructions = tuple(_normalise(b.instruction) for b in inst.blocks.values())

    # --- the model ------------------------------------------------------------------------

    def _compute_profile(
        self, persona: str | None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Profile z (per foundation) and undecided flags (per item position) of a persona."""
        p = self.params
        n_f, n_items = len(self._foundations), len(self.instrument.items)
        if persona is None:
            rng = np.random.default_rng(_digest_seed("self", p.world_seed))
            z = p.self_level + rng.standard_normal(n_f)
            volatility = 0.0
        else:
            rng = np.random.default_rng(_digest_seed("persona", p.world_seed, persona))
            z = rng.standard_normal(n_f)
            volatility = float(rng.standard_normal())
            z = z + p.cue_strength * character_shift(persona, self._foundations)
        rate = p.undecided_rate
        if 0.0 < rate < 1.0:
            logit = math.log(rate / (1.0 - rate)) + p.rate_spread * volatility
            rate = 1.0 / (1.0 + math.exp(-logit))
        undecided = rng.random(n_items) < rate
        return z, undecided

    def _locations(self, persona: str | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Location m' and width w (at T = 1) of every item for one persona."""
        p = self.params
        z, undecided = self._profile(persona)
        m = self._baseline + self._differentiation * self._loading * z[self._foundation_index]
        m = m + p.ceiling_pull * (self.instrument.scale_max - m)
        w = np.where(undecided, p.width, p.width * DECIDED_WIDTH_RATIO)
        return m, w

    def _probabilities(
        self, m: NDArray[np.float64], w: NDArray[np.float64], temperature: float
    ) -> NDArray[np.float64]:
        """p_T over the scale for locations ``m`` and widths ``w`` (shape ``(len(m), K)``)."""
        logits = -((self._scale[None, :] - m[:, None]) ** 2) / (2.0 * w[:, None] ** 2)
        if temperature == 0.0:
            probs = np.zeros_like(logits)
            probs[np.arange(len(m)), np.argmax(logits, axis=1)] = 1.0
            return probs
        # Shift before dividing, so a tiny T sends every non-mode logit to -inf, not NaN.
        scaled = (logits - logits.max(axis=1, keepdims=True)) / temperature
        probs = np.exp(scaled)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs

    def _compute_cell(
        self, persona: str | None, item_id: int, temperature: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], float, float]:
        """(probs, cdf, location, width) of one cell."""
        pos = self._position[item_id]
        m, w = self._locations(persona)
        probs = self._probabilities(m[pos : pos + 1], w[pos : pos + 1], temperature)[0]
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0
        return probs, cdf, float(m[pos]), float(w[pos])

    def cell_distributions(
        self,
        personas: Sequence[str | None],
        *,
        temperature: float,
        items: Sequence[int] | None = None,
    ) -> NDArray[np.float64]:
        """Exact rating distributions, shape ``(len(personas), len(items), K)``.

        Args:
            personas: Persona texts (None for the self profile).
            temperature: Sampling temperature (>= 0).
            items: Item ids (default: active non-catch items of the instrument).
        """
        _check_temperature(temperature)
        ids = self._item_ids(items)
        cols = np.array([self._position[i] for i in ids], dtype=np.intp)
        out = np.empty((len(personas), len(ids), len(self._scale)))
        for row, persona in enumerate(personas):
            m, w = self._locations(persona)
            out[row] = self._probabilities(m[cols], w[cols], temperature)
        return out

    def _item_ids(self, items: Sequence[int] | None) -> tuple[int, ...]:
        if items is None:
            return tuple(i.id for i in self.instrument.active_items if not i.is_catch)
        ids = tuple(int(i) for i in items)
        unknown = [i for i in ids if i not in self._position]
        if unknown:
            raise ValueError(f"items: unknown item ids {unknown}")
        if not ids:
            raise ValueError("items: need at least one item")
        return ids

    def true_metrics(
        self,
        personas: Sequence[str],
        *,
        temperature: float,
        items: Sequence[int] | None = None,
    ) -> TrueMetrics:
        """The model's exact S, sigma-bar and R for ``personas`` at ``temperature``.

        S is the mean over items of the ddof-1 sd across personas of the exact
        cell means; sigma-bar the mean of the cells' population sds; R = 1/sigma-bar.

        Raises:
            ValueError: Fewer than two personas, a negative temperature or unknown items.
        """
        if len(personas) < 2:
            raise ValueError(f"personas: need at least 2 personas, got {len(personas)}")
        ids = self._item_ids(items)
        probs = self.cell_distributions(list(personas), temperature=temperature, items=ids)
        means = probs @ self._scale
        var = probs @ self._scale**2 - means**2
        sds = np.sqrt(np.maximum(var, 0.0))
        foundation_of = {i.id: i.foundation for i in self.instrument.items}

        def summarise(cols: NDArray[np.intp]) -> tuple[float, float, float]:
            s = float(np.mean(np.std(means[:, cols], axis=0, ddof=1)))
            sb = float(np.mean(sds[:, cols]))
            return s, sb, (math.inf if sb == 0.0 else 1.0 / sb)

        per_foundation: dict[str, TrueFoundationMetrics] = {}
        for f in dict.fromkeys(foundation_of[i] for i in ids):
            cols = np.array([k for k, i in enumerate(ids) if foundation_of[i] == f], dtype=np.intp)
            per_foundation[f] = TrueFoundationMetrics(*summarise(cols))
        s, sb, r = summarise(np.arange(len(ids), dtype=np.intp))
        return TrueMetrics(
            S=s,
            sigma_bar=sb,
            R=r,
            per_foundation=MappingProxyType(per_foundation),
            temperature=float(temperature),
            n_personas=len(personas),
            item_ids=ids,
        )

    def true_self_profile(self, temperature: float) -> Mapping[str, float]:
        """Exact mean rating of the self run per foundation (mean of its items' cell means)."""
        ids = self._item_ids(None)
        probs = self.cell_distributions([None], temperature=temperature, items=ids)[0]
        means = probs @ self._scale
        foundation_of = {i.id: i.foundation for i in self.instrument.items}
        out: dict[str, float] = {}
        for f in dict.fromkeys(foundation_of[i] for i in ids):
            out[f] = float(np.mean([means[k] for k, i in enumerate(ids) if foundation_of[i] == f]))
        return MappingProxyType(out)

    # --- prompt identification --------------------------------------------------------------

    def _identify(self, prompt: Prompt) -> tuple[str | None, int]:
        """(persona, item id) of a prompt: from its fields, else inferred from its text."""
        if prompt.item_id is not None:
            if prompt.item_id not in self._position:
                raise BackendError(
                    f"simulator: item id {prompt.item_id} is not in instrument "
                    f"{self.instrument.name!r}"
                )
            return prompt.persona, prompt.item_id
        system = "\n\n".join(m.content for m in prompt.messages if m.role == "system")
        user = "\n\n".join(m.content for m in prompt.messages if m.role != "system")
        persona, item_id = self._infer(system, user)
        return (prompt.persona if prompt.persona is not None else persona), item_id

    def _find_item(self, text: str) -> int | None:
        """Id of the item whose wording ``text`` contains, under any template.

        Exact text first; then the text with case, quotes, punctuation and spacing
        normalised; then, for reworded items, the one item whose words are almost all
        (at least :data:`_ITEM_WORD_SHARE`) present.
        """
        exact = next((i for t, i in self._texts_by_length if t in text), None)
        if exact is not None:
            return exact
        norm = _normalise(text)
        found = next((i for t, i in self._normalised_items if t and t in norm), None)
        if found is not None:
            return found
        words = set(norm.split())
        scored = sorted(
            (
                (sum(w in words for w in t.split()) / max(len(t.split()), 1), i)
                for t, i in self._normalised_items
            ),
            reverse=True,
        )
        unique = len(scored) == 1 or (len(scored) > 1 and scored[1][0] < scored[0][0])
        if scored and scored[0][0] >= _ITEM_WORD_SHARE and unique:
            return scored[0][1]
        return None

    def _persona_in(self, text: str, item_id: int) -> str | None:
        """The persona of a conversation whose template is unknown: its longest line that
        is not the item, a scale line or a block instruction (None when no line is
        long enough to be a persona)."""
        item_text = _normalise(self.instrument.item(item_id).text)
        best: str | None = None
        for line in text.splitlines():
            norm = _normalise(line)
            if len(norm.split()) < _MIN_PERSONA_WORDS or (item_text and item_text in norm):
                continue
            if line.lstrip()[:1].isdigit() or any(i and i in norm for i in self._instructions):
                continue
            if best is None or len(line) > len(best):
                best = line.strip()
        return best

    def _compute_inference(self, system: str, user: str) -> tuple[str | None, int]:
        """Infer (persona, item id) from raw message text."""
        # The user message is searched first, so a persona that quotes an item cannot win.
        item_id = self._find_item(user)
        if item_id is None:
            item_id = self._find_item(system)
        if item_id is None:
            raise BackendError(
                "simulator: cannot tell which item the prompt asks about "
                f"(no item text of instrument {self.instrument.name!r} found in it)"
            )
        persona: str | None = None
        if system:
            match = self._system_pattern.fullmatch(system) if self._system_pattern else None
            if match is not None and "persona" in match.groupdict():
                persona = match.group("persona")
            elif self._self_system is not None and system == self._self_system:
                persona = None
            else:
                persona = system  # an unknown system message: its text is the persona key
        elif self._user_pattern is not None and "persona" in self._user_pattern.groupindex:
            match = self._user_pattern.fullmatch(user)
            if match is not None:
                persona = match.group("persona")
            else:
                persona = self._persona_in(user, item_id)
        else:
            # Our template asks self prompts in the user message alone; other clients may
            # put the persona there (the reference study's client does).
            own = self._self_user_pattern
            if own is None or own.fullmatch(user) is None:
                persona = self._persona_in(user, item_id)
        return persona, item_id

    def _compute_classification(self, user: str) -> JudgeRequest | Question | None:
        """A judge request, an open-ended question, or None (an instrument prompt)."""
        judged = parse_judge_prompt(user)
        return judged if judged is not None else find_question(user)

    def _open_ended(self, prompt: Prompt) -> JudgeRequest | Question | None:
        """What a prompt without an instrument item asks (None: an instrument prompt)."""
        if prompt.item_id is not None:
            return None
        return self._classify("\n\n".join(m.content for m in prompt.messages if m.role != "system"))

    def _compute_judge(self, scale: str, answer: str) -> openended.JudgeModel:
        return openended.judge_model(scale, answer, self.open_ended, self.params.world_seed)

    def _prompt_rng(self, text: str, seed: int | None) -> np.random.Generator:
        """The generator of one prompt: (backend seed, request seed, SHA-256 of the text).

        An unseeded request takes the next number of a per-backend counter instead of
        the request seed, so repeated unseeded requests sample independently (as a real
        model does), while a fresh backend serving the same requests in the same order
        repeats them.
        """
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if seed is None:
            with self._unseeded_lock:
                self._unseeded += 1
                stream, value = 2, self._unseeded
        else:
            stream, value = 1, seed
        return np.random.default_rng(
            [
                self.seed,
                stream,
                value,
                int.from_bytes(digest[:8], "little"),
                int.from_bytes(digest[8:16], "little"),
            ]
        )

    def _open_generation(
        self,
        prompt: Prompt,
        what: JudgeRequest | Question,
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> Generation:
        """Replies to an open-ended question or a judge prompt (see sim_openended)."""
        text = prompt.text
        rng = self._prompt_rng(text, seed)
        draws = rng.random((n, 3))
        texts: list[str] = []
        for row in draws:
            if isinstance(what, JudgeRequest):
                model = self._judge(what.scale, what.answer)
                reply = openended.judge_reply(model, self.open_ended, temperature, row)
            elif temperature == 0.0:
                reply = openended.greedy_answer(what.id)
            else:
                reply = openended.sample_answer(what.id, self.open_ended, row[0], row[1])
            texts.append(_truncate(reply, max_tokens))
        usage = Usage(
            prompt_tokens=len(text.split()), completion_tokens=sum(len(t.split()) for t in texts)
        )
        return Generation(tuple(texts), usage)

    def _control_generation(
        self,
        prompt: Prompt,
        control: tuple[str, int, str],
        *,
        n: int,
        temperature: float,
        seed: int | None,
    ) -> Generation:
        """Replies to a control item (see :mod:`~persona_collapse.backends.sim_controls`)."""
        task, item_id, gold = control
        model = controls.item_model(self.controls, self.params.world_seed, task, item_id, gold)
        # The preset enters the reply stream: variants sharing a world (and so which
        # items they know) still sample their replies independently.
        rng = self._prompt_rng(f"{self.preset}\x00{prompt.text}", seed)
        answers = controls.sample_answers(
            model, self.controls, float(temperature), rng.random((n, 3))
        )
        texts = tuple(controls.render_answer(task, a) for a in answers)
        usage = Usage(
            prompt_tokens=len(prompt.text.split()),
            completion_tokens=sum(len(t.split()) for t in texts),
        )
        return Generation(texts, usage)

    def true_control_metrics(
        self, items: Sequence[tuple[str, int, str]], *, temperature: float, repetitions: int
    ) -> dict[str, float]:
        """True mean accuracy and non-unanimity rate of control ``items`` ((task, id, gold))."""
        return controls.true_control_metrics(
            self.controls,
            self.params.world_seed,
            items,
            temperature=temperature,
            repetitions=repetitions,
        )

    def first_token_logprobs(
        self, prompt: Prompt, *, temperature: float, top: int = 20
    ) -> list[tuple[str, float]] | None:
        """Top first-token logprobs of a judge prompt (numbers, verdict, other), else None.

        For servers (``serve-sim``) that report logprobs: judge prompts have their
        own tokens (``"0"``..``"100"``, ``"CODE"``, ``"REFUSAL"``); instrument
        prompts return None (use :meth:`distributions`).
        """
        _check_temperature(temperature)
        what = self._open_ended(prompt)
        if not isinstance(what, JudgeRequest):
            return None
        model = self._judge(what.scale, what.answer)
        return openended.top_logprobs(model, self.open_ended, float(temperature), top)

    # --- Backend API ----------------------------------------------------------------------

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        """Sample ``n`` replies per prompt (see the module docstring for the reply model).

        The generator of one prompt is seeded by (backend seed, request seed,
        SHA-256 of the prompt text), so answers do not depend on call order, and
        the first ``n`` answers of a larger request equal those of a smaller one.

        Raises:
            BackendError: The item of a prompt is unknown.
            ValueError: ``n < 1``, ``max_tokens < 1``, negative temperature or seed.
        """
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        _check_temperature(temperature)
        p = self.params
        refusal_rate = p.unparseable_rate * REFUSAL_SHARE
        out: list[Generation] = []
        for prompt in prompts:
            control = prompt.control
            if control is None:  # over HTTP the tag is lost: read it from the text
                control = self.control_catalog.identify(prompt.text)
            if control is not None:
                out.append(
                    self._control_generation(
                        prompt, control, n=n, temperature=temperature, seed=seed
                    )
                )
                continue
            what = self._open_ended(prompt)
            if what is not None:
                out.append(
                    self._open_generation(
                        prompt,
                        what,
                        n=n,
                        temperature=float(temperature),
                        max_tokens=max_tokens,
                        seed=seed,
                    )
                )
                continue
            persona, item_id = self._identify(prompt)
            _probs, cdf, _m, _w = self._cell(persona, item_id, float(temperature))
            text = prompt.text
            rng = self._prompt_rng(text, seed)
            draws = rng.random((n, 4))
            ratings = np.searchsorted(cdf, draws[:, 0], side="right")
            ratings = np.minimum(ratings, len(cdf) - 1)
            later, trailers = (
                (_LATER_SELF, _TRAILERS_SELF)
                if persona is None
                else (_LATER_PERSONA, _TRAILERS_PERSONA)
            )
            texts: list[str] = []
            completion_tokens = 0
            for row, k_index in zip(draws.tolist(), ratings.tolist(), strict=True):
                k = int(self._scale[k_index])
                style, chatty, variant = row[1], row[2], row[3]
                if style < refusal_rate:
                    reply = _REFUSALS[int(variant * len(_REFUSALS))]
                elif style < p.unparseable_rate:
                    reply = later[int(variant * len(later))].format(k=k)
                elif chatty < p.chatty_rate:
                    reply = f"{k}{trailers[int(variant * len(trailers))]}"
                else:
                    texts.append(str(k))
                    completion_tokens += 1
                    continue
                reply = _truncate(reply, max_tokens)
                completion_tokens += len(reply.split())
                texts.append(reply)
            usage = Usage(prompt_tokens=len(text.split()), completion_tokens=completion_tokens)
            out.append(Generation(tuple(texts), usage))
        return out

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Exact first-token probability of each value of ``scale`` (renormalised).

        ``mass`` is ``1 - unparseable_rate``: the probability that the first
        token is a rating at all.

        Raises:
            BackendError: Unknown item, or ``scale`` shares no value with the instrument's.
        """
        _check_temperature(temperature)
        values = [int(v) for v in scale]
        own = {int(v): k for k, v in enumerate(self._scale)}
        out: list[ScaleDistribution] = []
        for prompt in prompts:
            what = self._open_ended(prompt)
            if isinstance(what, Question):
                raise BackendError(
                    f"simulator: question {what.id!r} is open-ended; it has no rating distribution"
                )
            if isinstance(what, JudgeRequest):
                out.append(self._judge_distribution(what, values, float(temperature)))
                continue
            persona, item_id = self._identify(prompt)
            probs, _cdf, m, w = self._cell(persona, item_id, float(temperature))
            picked = np.array([probs[own[v]] if v in own else 0.0 for v in values])
            total = float(picked.sum())
            if total <= 0.0:
                raise BackendError(
                    f"simulator: scale {values} has no probability on instrument scale "
                    f"{self.instrument.scale_min}..{self.instrument.scale_max}"
                )
            out.append(
                ScaleDistribution(
                    probs=tuple(float(x) for x in picked / total),
                    scale=tuple(values),
                    mass=total * (1.0 - self.params.unparseable_rate),
                    raw={"item_id": item_id, "location": m, "width": w},
                )
            )
        return out

    def _judge_distribution(
        self, what: JudgeRequest, values: list[int], temperature: float
    ) -> ScaleDistribution:
        """Judge score distribution over ``values`` (numbers 0..100 outside it get nothing)."""
        model = self._judge(what.scale, what.answer)
        numbers, _verdict_p, _failure_p = openended.first_token_probs(
            model, self.open_ended, temperature
        )
        picked = np.array([numbers[v] if 0 <= v <= 100 else 0.0 for v in values])
        total = float(picked.sum())
        if total <= 0.0:
            if not any(0 <= v <= 100 for v in values):
                raise BackendError(f"simulator: judge scores are 0..100; scale {values} has none")
            picked = np.full(len(values), 1.0)  # no number at all: uniform, with mass 0
        top = openended.top_logprobs(model, self.open_ended, temperature)
        return ScaleDistribution(
            probs=tuple(float(x) for x in picked / picked.sum()),
            scale=tuple(values),
            mass=total,
            raw={
                "top_logprobs": [[t, lp] for t, lp in top],
                "verdict": model.verdict,
                "answer_kind": model.kind,
                "true_score": model.centre,
            },
        )

    def describe(self) -> dict[str, Any]:
        """Preset, parameters, seed and instrument: what identifies the simulated model.

        Open-ended parameters are included only when they differ from the preset's,
        so the run keys of instrument runs do not depend on them.
        """
        out: dict[str, Any] = {
            "backend": self.name,
            "preset": self.preset,
            "params": self.params.model_dump(),
            "seed": self.seed,
            "instrument": self.instrument.name,
            "instrument_hash": self.instrument.content_hash,
        }
        if self.open_ended != openended.OPEN_ENDED_PRESETS[self.preset]:
            out["open_ended"] = self.open_ended.model_dump()
        if self.controls != controls.CONTROL_PRESETS[self.preset]:
            out["controls"] = self.controls.model_dump()
        return out


def _check_temperature(temperature: float) -> None:
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be finite and >= 0, got {temperature}")


__all__ = [
    "DECIDED_WIDTH_RATIO",
    "PRESETS",
    "REFUSAL_SHARE",
    "SimulatorBackend",
    "SimulatorParams",
    "TrueFoundationMetrics",
    "TrueMetrics",
]
