"""Tests of the transformers backend on a tiny random Llama built in the test (no downloads)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _tiny_models import build_model, build_tokenizer, save_tiny_model  # noqa: E402
from persona_collapse.backends import create_backend  # noqa: E402
from persona_collapse.backends.base import (  # noqa: E402
    SCALE_MASS_TEMPERATURE,
    Generation,
    Message,
    Prompt,
    ScaleDistribution,
)
from persona_collapse.backends.hf import TransformersBackend  # noqa: E402
from persona_collapse.core.config import PacingSettings, SamplingSettings  # noqa: E402
from persona_collapse.core.errors import BackendError, ConfigError  # noqa: E402
from persona_collapse.core.instrument import Instrument, instrument_from_dict, mfq30  # noqa: E402
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, extract_rating, render_prompt  # noqa: E402
from persona_collapse.engine.collect import run_collection  # noqa: E402
from persona_collapse.store.sqlite import RunStore  # noqa: E402

SCALE = (0, 1, 2, 3, 4, 5)
INSTRUMENT = mfq30()
PERSONAS = (
    "A retired sailor.",
    "A young nurse who grew up on a farm in the north and now works night shifts in a city.",
    "A judge.",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(model_dir, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def gpt2_backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersBackend:
    """Learned absolute positions: wrong position ids under left padding would show."""
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2")
    return TransformersBackend(folder, device="cpu", batch_size=8)


def _prompts() -> list[Prompt]:
    """Role-play and self prompts of different lengths (so batches need padding)."""
    items = [item.id for item in INSTRUMENT.active_items]
    who: list[str | None] = [PERSONAS[0], None, PERSONAS[1], PERSONAS[2], None]
    return [
        render_prompt(DEFAULT_TEMPLATE, INSTRUMENT, items[k * 5], persona)
        for k, persona in enumerate(who)
    ]


def _short_prompt() -> Prompt:
    return Prompt((Message("user", "Rate this item: 3"),))


def _dists(
    backend: TransformersBackend, prompts: Sequence[Prompt], temperature: float
) -> list[ScaleDistribution]:
    return asyncio.run(backend.distributions(prompts, scale=SCALE, temperature=temperature))


def _generate(
    backend: TransformersBackend,
    prompts: Sequence[Prompt],
    *,
    n: int,
    temperature: float,
    max_tokens: int = 1,
    seed: int | None = 0,
) -> list[Generation]:
    return asyncio.run(
        backend.generate(prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    )


def _reference(
    model: Any, tokenizer: Any, prompt: Prompt, temperature: float
) -> tuple[list[float], float]:
    """Probabilities and mass from a plain single-prompt forward pass (no padding, no batch)."""
    conversation = [{"role": m.role, "content": m.content} for m in prompt.messages]
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    probs = torch.softmax(logits / temperature, dim=-1)
    vocab = tokenizer.get_vocab()
    per_value = [float(probs[[vocab[str(v)], vocab[f"Ġ{v}"]]].sum()) for v in SCALE]
    mass = sum(per_value)
    return [p / mass for p in per_value], mass


# --- loading -------------------------------------------------------------------------------


def test_loads_by_path_and_describes(backend: TransformersBackend, model_dir: Path) -> None:
    info = backend.describe()
    assert info == {
        "backend": "transformers",
        "model": str(model_dir),
        "adapter": None,
        "dtype": "float32",
    }
    assert backend.supports_distributions
    built = create_backend("transformers", model=str(model_dir), device="cpu", dtype="float32")
    assert isinstance(built, TransformersBackend)
    assert built.describe() == info


def test_bad_options_are_config_errors(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the tokenizer"):
        TransformersBackend(tmp_path / "missing", local_files_only=True)
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):
        TransformersBackend(model_dir, dtype="float8")
    with pytest.raises(ConfigError, match="invalid device"):
        TransformersBackend(model_dir, device="quantum")
    with pytest.raises(ConfigError, match="batch_size"):
        TransformersBackend(model_dir, device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="cannot load adapter"):
        TransformersBackend(model_dir, device="cpu", adapter=tmp_path / "no-adapter")
    with pytest.raises(ConfigError, match="invalid options"):
        create_backend("transformers", model=str(model_dir), temperature=0.3)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    model = build_model(tokenizer)
    with pytest.raises(ConfigError, match="no chat template"):
        TransformersBackend.from_pretrained_objects(model, tokenizer)


# --- exact mode ----------------------------------------------------------------------------


def test_scale_tokens_include_space_variants(backend: TransformersBackend) -> None:
    vocab = backend.tokenizer.get_vocab()
    token_map = backend.scale_token_ids(SCALE)
    assert token_map == {v: tuple(sorted((vocab[str(v)], vocab[f"Ġ{v}"]))) for v in SCALE}
    assert backend.scale_token_ids(list(SCALE)) is token_map  # built once


@pytest.mark.parametrize(("arch", "temperature"), [("llama", 1.0), ("llama", 0.7), ("gpt2", 1.0)])
def test_exact_equals_single_prompt_forward(
    request: pytest.FixtureRequest, arch: str, temperature: float
) -> None:
    backend = request.getfixturevalue("backend" if arch == "llama" else "gpt2_backend")
    prompts = _prompts()
    lengths = {len(backend.tokenizer(backend._render(p))["input_ids"]) for p in prompts}
    assert len(lengths) == len(prompts)  # all different: the batch is left-padded
    dists = _dists(backend, prompts, temperature)
    assert len(dists) == len(prompts)
    for prompt, dist in zip(prompts, dists, strict=True):
        probs, _ = _reference(backend.model, backend.tokenizer, prompt, temperature)
        # The on-scale mass is measured at T = 1 whatever the run's temperature.
        _, mass = _reference(backend.model, backend.tokenizer, prompt, SCALE_MASS_TEMPERATURE)
        assert dist.scale == SCALE
        assert dist.probs == pytest.approx(probs, abs=1e-5)
        assert dist.mass == pytest.approx(mass, abs=1e-5)
        assert 0.0 < dist.mass < 1.0  # digits 6-9 and words take the rest
        assert math.isclose(sum(dist.probs), 1.0, abs_tol=1e-9)
        assert dist.raw is not None and len(dist.raw["top_tokens"]) == 20
        assert dist.usage.prompt_tokens > 200


def test_exact_does_not_depend_on_batching(model_dir: Path, backend: TransformersBackend) -> None:
    one_at_a_time = TransformersBackend(model_dir, device="cpu", batch_size=1)
    prompts = _prompts()
    for a, b in zip(
        _dists(one_at_a_time, prompts, 1.0), _dists(backend, prompts, 1.0), strict=True
    ):
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


def test_tokenizer_without_pad_token(backend: TransformersBackend) -> None:
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    no_pad = TransformersBackend.from_pretrained_objects(backend.model, tokenizer, label="x")
    assert tokenizer.pad_token == tokenizer.eos_token
    prompts = _prompts()[:3]
    for a, b in zip(_dists(no_pad, prompts, 1.0), _dists(backend, prompts, 1.0), strict=True):
        assert a.probs == pytest.approx(b.probs, abs=1e-5)
    texts = _generate(no_pad, prompts, n=2, temperature=1.0, max_tokens=2, seed=1)
    assert all(len(g.texts) == 2 for g in texts)


def test_temperature_zero_is_the_greedy_limit(backend: TransformersBackend) -> None:
    prompt = _short_prompt()
    cold = _dists(backend, [prompt], 0.0)[0]
    near_zero = _dists(backend, [prompt], 1e-3)[0]
    assert cold.probs == pytest.approx(near_zero.probs, abs=1e-6)
    assert sorted(cold.probs)[-1] == 1.0
    greedy = _generate(backend, [prompt], n=1, temperature=0.0)[0].texts[0]
    assert extract_rating(greedy, SCALE) in (*SCALE, None)
    # The on-scale mass is the T = 1 mass, not a greedy 0/1 limit.
    assert cold.mass == pytest.approx(_dists(backend, [prompt], 1.0)[0].mass, abs=1e-9)


def test_on_scale_mass_is_one_definition_at_t1(backend: TransformersBackend) -> None:
    prompt = _short_prompt()
    _, mass_t1 = _reference(backend.model, backend.tokenizer, prompt, 1.0)
    for temperature in (0.0, 0.3, 0.7, 1.0, 2.0):
        dist = _dists(backend, [prompt], temperature)[0]
        assert dist.mass == pytest.approx(mass_t1, abs=1e-6), temperature


# --- sampling mode -------------------------------------------------------------------------


def test_sampling_frequencies_converge_to_exact(backend: TransformersBackend) -> None:
    prompt = _short_prompt()
    temperature = 0.7
    dist = _dists(backend, [prompt], temperature)[0]
    draws = 16_000
    texts = _generate(backend, [prompt], n=draws, temperature=temperature, seed=3)[0].texts
    assert len(texts) == draws
    ratings = [r for r in (extract_rating(t, SCALE) for t in texts) if r is not None]
    # Share of replies that are ratings estimates the scale mass at the sampling
    # temperature (binomial sd ~0.0025); the stored on-scale mass is the T = 1 one.
    _, mass_at_t = _reference(backend.model, backend.tokenizer, prompt, temperature)
    assert len(ratings) / draws == pytest.approx(mass_at_t, abs=0.015)
    counts = Counter(ratings)
    frequencies = [counts[v] / len(ratings) for v in SCALE]
    total_variation = 0.5 * sum(abs(f - p) for f, p in zip(frequencies, dist.probs, strict=True))
    assert total_variation < 0.05


def test_sampling_seeds_and_global_rng(backend: TransformersBackend) -> None:
    prompts = _prompts()[:2]
    state = torch.get_rng_state()
    first = _generate(backend, prompts, n=10, temperature=1.0, max_tokens=3, seed=11)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    again = _generate(backend, prompts, n=10, temperature=1.0, max_tokens=3, seed=11)
    other = _generate(backend, prompts, n=10, temperature=1.0, max_tokens=3, seed=12)
    assert first == again
    assert first != other
    assert first[0].texts != first[1].texts  # prompts of one request draw independently
    for gen in first:
        assert len(gen.texts) == 10
        assert gen.usage.prompt_tokens > 200
        assert 10 <= gen.usage.completion_tokens <= 30


def test_greedy_gives_n_copies(backend: TransformersBackend) -> None:
    prompt = _prompts()[0]
    gen = _generate(backend, [prompt], n=4, temperature=0.0, max_tokens=5, seed=None)[0]
    assert len(gen.texts) == 4 and len(set(gen.texts)) == 1
    enc = backend._encode([prompt])
    with torch.no_grad():
        first_token = int(backend.model(enc["input_ids"]).logits[0, -1].argmax())
    expected = backend.tokenizer.decode([first_token], skip_special_tokens=True)
    assert gen.texts[0].startswith(expected)


def test_argument_checks(backend: TransformersBackend) -> None:
    prompt = _short_prompt()
    with pytest.raises(ValueError, match="n:"):
        _generate(backend, [prompt], n=0, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        _generate(backend, [prompt], n=1, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        _dists(backend, [prompt], math.nan)
    with pytest.raises(BackendError, match="no vocabulary token"):
        asyncio.run(backend.distributions([prompt], scale=(17, 18), temperature=1.0))


# --- adapters ------------------------------------------------------------------------------


def test_lora_adapter_loads_and_changes_outputs(
    tmp_path: Path, model_dir: Path, backend: TransformersBackend
) -> None:
    peft = pytest.importorskip("peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(5)
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")

    adapted = TransformersBackend(model_dir, adapter=tmp_path / "adapter", device="cpu")
    assert adapted.describe()["adapter"] == str(tmp_path / "adapter")
    prompts = _prompts()[:3]
    with_adapter = _dists(adapted, prompts, 1.0)
    without = _dists(backend, prompts, 1.0)
    difference = max(
        abs(a - b)
        for x, y in zip(with_adapter, without, strict=True)
        for a, b in zip(x.probs, y.probs, strict=True)
    )
    assert difference > 1e-3
    for prompt, dist in zip(prompts, with_adapter, strict=True):
        probs, _mass = _reference(adapted.model, adapted.tokenizer, prompt, 1.0)
        assert dist.probs == pytest.approx(probs, abs=1e-5)


# --- through the engine --------------------------------------------------------------------


def _small_instrument(n_items: int = 2) -> Instrument:
    data = mfq30().to_dict()
    data["name"] = f"mfq-{n_items}"
    data["items"] = data["items"][:n_items]
    return instrument_from_dict(data)


@pytest.mark.parametrize("mode", ["exact", "sampling"])
def test_collection_through_engine(tmp_path: Path, backend: TransformersBackend, mode: str) -> None:
    instrument = _small_instrument()
    with RunStore.open(tmp_path / "runs.db") as store:
        summary = run_collection(
            store,
            None,
            backend,
            PERSONAS,
            instrument,
            pacing=PacingSettings(max_concurrency=3),
            progress=False,
            close_backend=False,
            protocol=SamplingSettings(mode=mode, repetitions=2, temperature=1.0, seed=4),
        )
        counts = store.counts(summary.run.run_id)
    assert summary.complete
    cells = len(PERSONAS) * len(instrument.active_items)
    if mode == "exact":
        assert counts.distributions == cells
    else:
        assert counts.slots == cells * 2
        assert counts.valid + counts.failed == cells * 2
        assert counts.valid > 0
        assert summary.usage.prompt_tokens > 0 and summary.usage.completion_tokens > 0


def test_exact_run_records_and_warns_about_scale_mass(
    tmp_path: Path, backend: TransformersBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The transformers backend gets the engine's check like every distribution backend.
    instrument = _small_instrument()
    backend.min_scale_mass = 0.999  # the tiny model's mass is always below this
    try:
        with (
            RunStore.open(tmp_path / "runs.db") as store,
            caplog.at_level("WARNING", logger="persona_collapse.engine.collect"),
        ):
            summary = run_collection(
                store,
                None,
                backend,
                PERSONAS,
                instrument,
                progress=False,
                close_backend=False,
                protocol=SamplingSettings(mode="exact", temperature=0.5),
            )
            meta = store.get_run(summary.run.run_id).metadata
            masses = store.distributions_frame(summary.run.run_id)["mass"]
    finally:
        del backend.min_scale_mass
    cells = len(PERSONAS) * len(instrument.active_items)
    assert len(masses) == cells and masses.between(0.0, 0.999).all()
    assert meta["scale_mass"]["low_mass_cells"] == cells
    assert meta["scale_mass"]["temperature"] == SCALE_MASS_TEMPERATURE
    assert meta["protocol_check"]["follows"] is False
    assert sum("on scale values" in r.getMessage() for r in caplog.records) >= min(cells, 10)


def test_min_scale_mass_option(model_dir: Path) -> None:
    assert TransformersBackend(model_dir, device="cpu", min_scale_mass=0.2).min_scale_mass == 0.2
    with pytest.raises(ConfigError, match="min_scale_mass"):
        TransformersBackend(model_dir, device="cpu", min_scale_mass=2.0)
