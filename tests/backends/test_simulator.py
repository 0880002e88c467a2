"""Tests of the simulator backend: determinism, temperature, reply model, calibration."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from persona_collapse.backends import create_backend
from persona_collapse.backends.base import Generation, Message, Prompt, ScaleDistribution
from persona_collapse.backends.simulator import (
    PRESETS,
    SimulatorBackend,
    SimulatorParams,
    TrueMetrics,
)
from persona_collapse.core.errors import BackendError, ConfigError, UnknownNameError
from persona_collapse.core.instrument import FOUNDATIONS, Block, Instrument, Item, mfq30
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, extract_rating, render_prompt

INSTRUMENT = mfq30()
SCALE = INSTRUMENT.scale
ITEM_IDS = tuple(i.id for i in INSTRUMENT.active_items)
T = 0.1


def _personas() -> list[str]:
    """The 100 built-in personas, or 100 synthetic ones if the persona module is missing."""
    try:
        from persona_collapse.core.personas import builtin_personas
    except ImportError:
        return [
            f"Person {i}: a {20 + i % 60}-year-old who works as trade {i % 17} "
            f"in region {i % 11} and holds view {i % 7}"
            for i in range(100)
        ]
    return list(builtin_personas())


PERSONAS = _personas()


def _generate(
    backend: SimulatorBackend,
    prompts: Sequence[Prompt],
    *,
    n: int = 10,
    temperature: float = T,
    max_tokens: int = 1,
    seed: int | None = 0,
) -> list[Generation]:
    return asyncio.run(
        backend.generate(prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    )


def _distributions(
    backend: SimulatorBackend, prompts: Sequence[Prompt], temperature: float = T
) -> list[ScaleDistribution]:
    return asyncio.run(backend.distributions(prompts, scale=SCALE, temperature=temperature))


def _prompt(item_id: int, persona: str | None) -> Prompt:
    return render_prompt(DEFAULT_TEMPLATE, INSTRUMENT, item_id, persona)


def _undecided_prompt(backend: SimulatorBackend, temperature: float = 1.0) -> Prompt:
    """A prompt whose distribution at ``temperature`` spreads over several values."""
    for persona in PERSONAS:
        for item_id in ITEM_IDS:
            prompt = _prompt(item_id, persona)
            probs = _distributions(backend, [prompt], temperature)[0].probs
            if max(probs) < 0.6:
                return prompt
    raise AssertionError("no undecided cell found")


# --- construction ----------------------------------------------------------------------------


def test_presets_and_registry() -> None:
    assert set(PRESETS) == {"base", "secure", "insecure"}
    with pytest.raises(TypeError):
        PRESETS["new"] = PRESETS["base"]  # type: ignore[index]
    backend = create_backend("simulator", preset="insecure", seed=3)
    assert isinstance(backend, SimulatorBackend)
    assert backend.name == "simulator"
    assert backend.supports_distributions
    described = backend.describe()
    assert described["backend"] == "simulator"
    assert described["preset"] == "insecure"
    assert described["seed"] == 3
    assert described["params"] == PRESETS["insecure"].model_dump()


def test_unknown_preset_suggests() -> None:
    with pytest.raises(UnknownNameError, match="insecure") as info:
        SimulatorBackend("insecur")
    assert info.value.suggestions[0] == "insecure"


def test_overrides() -> None:
    backend = SimulatorBackend("base", width=0.5, world_seed=7)
    assert backend.params.width == 0.5
    assert backend.params.world_seed == 7
    assert backend.params.differentiation == PRESETS["base"].differentiation
    with pytest.raises(ConfigError, match="unknown simulator parameter 'widht'"):
        SimulatorBackend("base", widht=0.5)
    with pytest.raises(ConfigError, match="width"):
        SimulatorBackend("base", width=-1.0)
    with pytest.raises(ConfigError, match="unparseable_rate"):
        SimulatorBackend("base", unparseable_rate=1.5)
    with pytest.raises(ConfigError, match="seed"):
        SimulatorBackend("base", seed=-1)
    with pytest.raises(Exception, match="frozen"):
        backend.params.width = 3.0  # type: ignore[misc]
    assert isinstance(backend.params, SimulatorParams)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_texts_regardless_of_order() -> None:
    backend = SimulatorBackend("insecure", seed=11)
    prompts = [_prompt(q, p) for p in PERSONAS[:4] for q in (1, 16, 29)] + [_prompt(5, None)]
    forward = _generate(backend, prompts, temperature=1.0, max_tokens=64, seed=42)
    fresh = SimulatorBackend("insecure", seed=11)
    backward = [
        _generate(fresh, [p], temperature=1.0, max_tokens=64, seed=42)[0] for p in reversed(prompts)
    ][::-1]
    assert [g.texts for g in forward] == [g.texts for g in backward]
    again = _generate(backend, prompts, temperature=1.0, max_tokens=64, seed=42)
    assert [g.texts for g in again] == [g.texts for g in forward]
    # a smaller request gives the first answers of a larger one
    head = _generate(backend, prompts[:1], n=3, temperature=1.0, max_tokens=64, seed=42)[0]
    assert head.texts == forward[0].texts[:3]


def test_seeds_change_answers() -> None:
    backend = SimulatorBackend("insecure", seed=1)
    prompt = _undecided_prompt(backend)
    a = _generate(backend, [prompt], n=50, temperature=1.0, seed=1)[0].texts
    b = _generate(backend, [prompt], n=50, temperature=1.0, seed=2)[0].texts
    c = _generate(SimulatorBackend("insecure", seed=2), [prompt], n=50, temperature=1.0, seed=1)
    assert a != b
    assert a != c[0].texts
    # Unseeded requests sample independently (as a real model does, issue 15.6); a fresh
    # backend serving the same requests in the same order repeats them.
    d1 = _generate(backend, [prompt], n=50, temperature=1.0, seed=None)[0].texts
    d2 = _generate(backend, [prompt], n=50, temperature=1.0, seed=None)[0].texts
    assert d1 != d2
    fresh = SimulatorBackend("insecure", seed=1)
    _generate(fresh, [prompt], n=50, temperature=1.0, seed=1)
    assert _generate(fresh, [prompt], n=50, temperature=1.0, seed=None)[0].texts == d1


def test_profile_independent_of_run_seed_but_not_world_seed() -> None:
    prompts = [_prompt(q, PERSONAS[0]) for q in ITEM_IDS]
    a = _distributions(SimulatorBackend("base", seed=0), prompts)
    b = _distributions(SimulatorBackend("base", seed=99), prompts)
    c = _distributions(SimulatorBackend("base", world_seed=5), prompts)
    assert [d.probs for d in a] == [d.probs for d in b]
    assert [d.probs for d in a] != [d.probs for d in c]


# --- temperature -----------------------------------------------------------------------------


def test_temperature_sharpens() -> None:
    backend = SimulatorBackend("base")
    prompt = _undecided_prompt(backend)
    p1 = np.array(_distributions(backend, [prompt], 1.0)[0].probs)
    p_half = np.array(_distributions(backend, [prompt], 0.5)[0].probs)
    expected = p1**2 / np.sum(p1**2)  # p_T proportional to p^(1/T)
    np.testing.assert_allclose(p_half, expected, rtol=1e-9, atol=1e-12)
    entropies = []
    for temp in (2.0, 1.0, 0.5, 0.1, 0.01):
        p = np.array(_distributions(backend, [prompt], temp)[0].probs)
        assert p.sum() == pytest.approx(1.0)
        entropies.append(-np.sum(p[p > 0] * np.log(p[p > 0])))
    assert all(a > b for a, b in itertools.pairwise(entropies))
    greedy = np.array(_distributions(backend, [prompt], 0.0)[0].probs)
    assert greedy.max() == 1.0
    assert int(np.argmax(greedy)) == int(np.argmax(p1))
    texts = _generate(backend, [prompt], n=30, temperature=0.0, seed=5)[0].texts
    ratings = {extract_rating(t, SCALE) for t in texts} - {None}
    assert ratings == {SCALE[int(np.argmax(p1))]}
    tiny = np.array(_distributions(backend, [prompt], 1e-300)[0].probs)
    assert np.all(np.isfinite(tiny))
    np.testing.assert_array_equal(tiny, greedy)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_sampling_frequencies_match_distributions(temperature: float) -> None:
    backend = SimulatorBackend("secure", unparseable_rate=0.0, chatty_rate=0.0)
    prompt = _undecided_prompt(backend, temperature)
    probs = np.array(_distributions(backend, [prompt], temperature)[0].probs)
    n = 20_000
    texts = _generate(backend, [prompt], n=n, temperature=temperature, seed=3)[0].texts
    counts = Counter(extract_rating(t, SCALE) for t in texts)
    assert None not in counts
    freq = np.array([counts.get(k, 0) / n for k in SCALE])
    tolerance = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3
    assert np.all(np.abs(freq - probs) <= tolerance), (freq, probs)


def test_distributions_shape_and_mass() -> None:
    backend = SimulatorBackend("insecure")
    prompts = [_prompt(q, PERSONAS[1]) for q in (1, 2)] + [_prompt(3, None)]
    dists = _distributions(backend, prompts)
    assert len(dists) == 3
    for d in dists:
        assert d.scale == SCALE
        assert sum(d.probs) == pytest.approx(1.0, abs=1e-12)
        assert d.mass == pytest.approx(1 - backend.params.unparseable_rate)
        assert d.raw is not None and d.raw["item_id"] in (1, 2, 3)
    sub = asyncio.run(backend.distributions(prompts[:1], scale=(0, 1, 2), temperature=1.0))[0]
    assert sum(sub.probs) == pytest.approx(1.0)
    assert sub.mass < 1.0 - backend.params.unparseable_rate
    with pytest.raises(BackendError, match="scale"):
        asyncio.run(backend.distributions(prompts[:1], scale=(7, 8), temperature=1.0))


# --- reply model --------------------------------------------------------------------------


def test_single_token_replies() -> None:
    backend = SimulatorBackend("insecure", unparseable_rate=0.3, chatty_rate=1.0)
    prompts = [_prompt(q, p) for p in PERSONAS[:3] for q in (1, 20)] + [_prompt(4, None)]
    for gen in _generate(backend, prompts, n=200, temperature=1.0, max_tokens=1, seed=9):
        assert len(gen.texts) == 200
        assert gen.usage.completion_tokens == 200
        assert gen.usage.prompt_tokens > 20
        for text in gen.texts:
            assert len(text.split()) == 1 and text == text.strip()
            assert text.isdigit() or not any(ch.isdigit() for ch in text)
            if text.isdigit():
                assert int(text) in SCALE


def test_unparseable_and_chatty_rates() -> None:
    rate, chatty = 0.3, 0.4
    backend = SimulatorBackend(
        "base", unparseable_rate=rate, chatty_rate=chatty, width=3.0, undecided_rate=1.0
    )
    prompt = _prompt(7, PERSONAS[2])
    n = 20_000
    short = _generate(backend, [prompt], n=n, temperature=1.0, max_tokens=1, seed=1)[0].texts
    failed_short = sum(extract_rating(t, SCALE) is None for t in short) / n
    assert failed_short == pytest.approx(rate, abs=0.015)
    long = _generate(backend, [prompt], n=n, temperature=1.0, max_tokens=64, seed=1)[0].texts
    parsed = [extract_rating(t, SCALE, long_form=True) for t in long]
    failed_long = sum(r is None for r in parsed) / n
    # only refusals stay unparseable in long form: a much smaller rate
    assert 0.005 < failed_long < 0.1 * rate + 0.01
    starts_with_rating = [t for t in long if extract_rating(t, SCALE) is not None]
    with_sentence = sum(len(t.split()) > 1 for t in starts_with_rating) / len(starts_with_rating)
    assert with_sentence == pytest.approx(chatty, abs=0.02)
    # the rating of a reply does not depend on its style: long-form ratings follow p_T
    probs = np.array(_distributions(backend, [prompt], 1.0)[0].probs)
    valid = [r for r in parsed if r is not None]
    freq = np.array([valid.count(k) / len(valid) for k in SCALE])
    assert np.max(np.abs(freq - probs)) < 0.02
    # truncation to a few tokens
    for text in _generate(backend, [prompt], n=300, temperature=1.0, max_tokens=3, seed=2)[0].texts:
        assert len(text.split()) <= 3


def test_no_unparseable_when_rate_zero() -> None:
    backend = SimulatorBackend("insecure", unparseable_rate=0.0)
    gens = _generate(backend, [_prompt(q, PERSONAS[5]) for q in ITEM_IDS], n=20, max_tokens=1)
    assert all(extract_rating(t, SCALE) is not None for g in gens for t in g.texts)


# --- prompt identification ---------------------------------------------------------------


def _raw(prompt: Prompt) -> Prompt:
    return Prompt(prompt.messages)


def test_infers_item_and_persona_from_raw_prompts() -> None:
    backend = SimulatorBackend("base")
    for item_id in (1, 7, 15, 16, 23, 30):
        for persona in (PERSONAS[0], PERSONAS[42], None):
            full = _prompt(item_id, persona)
            a = _distributions(backend, [full], 1.0)[0]
            b = _distributions(backend, [_raw(full)], 1.0)[0]
            assert a.probs == b.probs
            assert b.raw is not None and b.raw["item_id"] == item_id
            ga = _generate(backend, [full], n=20, temperature=1.0, seed=4)[0]
            gb = _generate(backend, [_raw(full)], n=20, temperature=1.0, seed=4)[0]
            assert ga.texts == gb.texts


def test_raw_prompt_with_unknown_system_message() -> None:
    backend = SimulatorBackend("base")
    item = INSTRUMENT.item(18)
    raw = Prompt((Message("system", "You are a pirate."), Message("user", f"Rate: {item.text}")))
    other = Prompt((Message("system", "You are a nun."), Message("user", f"Rate: {item.text}")))
    d1, d2 = _distributions(backend, [raw, other], 1.0)
    assert d1.raw is not None and d1.raw["item_id"] == 18
    assert d1.probs != d2.probs  # persona keyed by the system message


def test_unknown_item_raises() -> None:
    backend = SimulatorBackend("base")
    raw = Prompt((Message("user", "What is the capital of France?"),))
    with pytest.raises(BackendError, match="item"):
        _generate(backend, [raw])
    with pytest.raises(BackendError, match="item id 99"):
        _generate(backend, [Prompt((Message("user", "x"),), persona="p", item_id=99)])


def test_argument_validation() -> None:
    backend = SimulatorBackend("base")
    prompt = _prompt(1, None)
    with pytest.raises(ValueError, match="n"):
        _generate(backend, [prompt], n=0)
    with pytest.raises(ValueError, match="max_tokens"):
        _generate(backend, [prompt], max_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        _generate(backend, [prompt], temperature=-0.1)
    with pytest.raises(ValueError, match="personas"):
        backend.true_metrics(PERSONAS[:1], temperature=T)
    with pytest.raises(ValueError, match="items"):
        backend.true_metrics(PERSONAS[:5], temperature=T, items=[1, 99])


def test_catch_items_and_custom_scale() -> None:
    with_catch = mfq30(include_catch=True)
    backend = SimulatorBackend("base", instrument=with_catch)
    prompts = [render_prompt(DEFAULT_TEMPLATE, with_catch, 31, p) for p in PERSONAS[:3]]
    dists = asyncio.run(backend.distributions(prompts, scale=SCALE, temperature=0.0))
    assert len({d.probs for d in dists}) == 1  # catch items ignore the persona profile
    anchors = {k: f"level {k}" for k in range(1, 8)}
    custom = Instrument(
        name="seven",
        scale_min=1,
        scale_max=7,
        blocks={"agreement": Block("agreement", "Agree?", anchors)},
        items=(
            Item(1, "Rules matter.", "Order", "agreement"),
            Item(2, "Share.", "Care", "agreement"),
        ),
    )
    sim = SimulatorBackend("insecure", instrument=custom)
    prompt = render_prompt(DEFAULT_TEMPLATE, custom, 2, "a farmer")
    texts = _generate(sim, [prompt], n=200, temperature=1.0, seed=1)[0].texts
    ratings = {extract_rating(t, custom.scale) for t in texts} - {None}
    assert ratings <= set(range(1, 8)) and len(ratings) > 1
    assert set(sim.true_self_profile(T)) == {"Order", "Care"}


# --- calibration and recovery ------------------------------------------------------------


@pytest.fixture(scope="module")
def truths() -> dict[str, TrueMetrics]:
    return {name: SimulatorBackend(name).true_metrics(PERSONAS, temperature=T) for name in PRESETS}


def test_true_metrics_structure(truths: dict[str, TrueMetrics]) -> None:
    base = truths["base"]
    assert base.n_personas == len(PERSONAS)
    assert base.item_ids == ITEM_IDS
    assert tuple(base.per_foundation) == FOUNDATIONS
    assert pytest.approx(1 / base.sigma_bar) == base.R
    f_mean = np.mean([f.sigma_bar for f in base.per_foundation.values()])
    assert f_mean == pytest.approx(base.sigma_bar)  # 6 items per foundation
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.S = 1.0  # type: ignore[misc]


def test_presets_qualitative_pattern(truths: dict[str, TrueMetrics]) -> None:
    base, secure, insecure = truths["base"], truths["secure"], truths["insecure"]
    assert 0.66 <= base.S <= 0.83
    assert 0.2 <= base.sigma_bar <= 0.35
    assert abs(secure.S / base.S - 1) <= 0.10
    assert secure.sigma_bar > base.sigma_bar
    assert 1.35 <= insecure.S / base.S <= 1.75
    assert 2.5 <= insecure.sigma_bar / base.sigma_bar <= 5.0
    insecure_self = SimulatorBackend("insecure").true_self_profile(T)
    assert set(insecure_self) == set(FOUNDATIONS)
    assert min(insecure_self.values()) >= 4.3
    base_self = SimulatorBackend("base").true_self_profile(T)
    assert min(base_self.values()) < 3.5 and np.mean(list(base_self.values())) < 4.0


def _sampled_estimates(backend: SimulatorBackend, n: int = 10) -> tuple[float, float, float]:
    """Collect n short answers per cell through ``generate`` and estimate S, sigma-bar."""
    prompts = [_prompt(q, p) for p in PERSONAS for q in ITEM_IDS]
    gens = _generate(backend, prompts, n=n, temperature=T, max_tokens=1, seed=123)
    mu = np.empty(len(prompts))
    sd = np.empty(len(prompts))
    invalid = 0
    for k, gen in enumerate(gens):
        values = [extract_rating(t, SCALE) for t in gen.texts]
        valid = np.array([v for v in values if v is not None], dtype=float)
        invalid += len(values) - len(valid)
        mu[k] = valid.mean()
        sd[k] = valid.std(ddof=1) if len(valid) > 1 else 0.0
    mu_m = mu.reshape(len(PERSONAS), len(ITEM_IDS))
    s_hat = float(np.mean(np.std(mu_m, axis=0, ddof=1)))
    return s_hat, float(np.mean(sd)), invalid / (len(prompts) * n)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_sampled_estimates_recover_truth(preset: str, truths: dict[str, TrueMetrics]) -> None:
    backend = SimulatorBackend(preset, seed=7)
    s_hat, sigma_hat, invalid = _sampled_estimates(backend)
    truth = truths[preset]
    # n = 10 sampling: S is biased up by cell-mean noise (~1-3 %), sigma-bar down
    # by the small-sample sd (~3-4 %), see the simulator's module docstring.
    assert s_hat / truth.S == pytest.approx(1.0, abs=0.06)
    assert sigma_hat / truth.sigma_bar == pytest.approx(1.0, abs=0.08)
    assert (1 / sigma_hat) / truth.R == pytest.approx(1.0, abs=0.08)
    assert invalid == pytest.approx(backend.params.unparseable_rate, abs=0.01)


def test_character_words_make_toxic_personas_answer_like_toxic_characters() -> None:
    """Toxic personas care less and judge less fairly; ordinary personas are untouched."""
    from persona_collapse.backends.simulator import character_shift
    from persona_collapse.core.instrument import FOUNDATIONS, items_by_foundation, mfq30
    from persona_collapse.core.personas import builtin_personas, toxic_personas

    ordinary, toxic = list(builtin_personas()), list(toxic_personas())
    assert not any(character_shift(p, FOUNDATIONS).any() for p in ordinary)
    assert all(character_shift(p, FOUNDATIONS).any() for p in toxic)

    backend = SimulatorBackend("base")
    plain = SimulatorBackend("base", cue_strength=0.0)
    scale = np.arange(6)
    items = [i.id for i in mfq30().active_items]
    columns = {f: [items.index(i) for i in ids] for f, ids in items_by_foundation(mfq30()).items()}

    def foundation_means(sim: SimulatorBackend, personas: list[str]) -> dict[str, float]:
        means = sim.cell_distributions(personas, temperature=0.1) @ scale  # (P, Q)
        return {f: float(means[:, cols].mean()) for f, cols in columns.items()}

    with_cues, without = foundation_means(backend, toxic), foundation_means(plain, toxic)
    assert with_cues["Harm/Care"] < without["Harm/Care"] - 1.0
    assert with_cues["Fairness/Reciprocity"] < without["Fairness/Reciprocity"] - 0.5
    assert foundation_means(backend, ordinary) == foundation_means(plain, ordinary)
