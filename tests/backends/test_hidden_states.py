"""Hidden-state collection on tiny random models built in the test (batched, adapters, resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from _tiny_models import save_tiny_adapter, save_tiny_model  # noqa: E402
from persona_collapse.backends.hf import TransformersBackend  # noqa: E402
from persona_collapse.backends.hidden_states import (  # noqa: E402
    PERSONA_TEMPLATES,
    StateReader,
    Variant,
    collect_variant,
    collect_variants,
    load_states,
    plan_batches,
    prompt_texts,
)
from persona_collapse.core.errors import ConfigError, InputFileError  # noqa: E402

PERSONAS = (
    "A retired sailor.",
    "A young nurse who grew up on a farm in the north and now works night shifts.",
    "A judge.",
    "A software engineer who volunteers at an animal shelter on weekends.",
    "A poet.",
)
TEMPLATES = PERSONA_TEMPLATES[:2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def adapters(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return (
        save_tiny_adapter(model_dir, root / "a", seed=11),
        save_tiny_adapter(model_dir, root / "b", seed=12),
    )


def _reader(model_dir: Path, **options: Any) -> StateReader:
    return StateReader.load(model_dir, device="cpu", **options)


def _direct(reader: StateReader, text: str) -> np.ndarray:
    """States of one unpadded text at its last token, straight from the model."""
    ids = reader.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = reader._active(input_ids=ids, output_hidden_states=True)
    return torch.stack([h[0, -1] for h in out.hidden_states]).numpy()


def test_prompt_texts_are_template_major() -> None:
    texts, pid, tid = prompt_texts(PERSONAS[:2], ["A {persona}", "B {persona}"])
    assert texts == [f"A {PERSONAS[0]}", f"A {PERSONAS[1]}", f"B {PERSONAS[0]}", f"B {PERSONAS[1]}"]
    assert pid.tolist() == [0, 1, 0, 1] and tid.tolist() == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match="placeholder"):
        prompt_texts(PERSONAS, ["no slot"])


def test_batched_states_equal_unbatched_final_token(model_dir: Path) -> None:
    reader = _reader(model_dir, batch_size=3)
    texts, _, _ = prompt_texts(PERSONAS, TEMPLATES)
    states = reader.final_states(texts)
    n_layers = reader.model.config.num_hidden_layers
    assert states.shape == (len(texts), n_layers + 1, reader.model.config.hidden_size)
    assert states.dtype == np.float16
    for k in (0, 1, 7):
        np.testing.assert_allclose(states[k], _direct(reader, texts[k]), rtol=2e-3, atol=2e-3)
    one = reader.final_states(texts, batch_size=1)
    np.testing.assert_allclose(states, one, rtol=2e-3, atol=2e-3)


def test_token_budget_batches_give_the_same_states(model_dir: Path) -> None:
    # Ascending lengths: a batch grows while it keeps <= size rows and rows x longest
    # <= budget; a row over the budget goes alone.
    assert plan_batches([2, 3, 3, 5, 9, 20], 4, 10) == [(0, 3), (3, 4), (4, 5), (5, 6)]
    assert plan_batches([2, 3, 3, 5, 5, 20], 4, 10) == [(0, 3), (3, 5), (5, 6)]
    assert plan_batches([2, 3, 3, 5, 9, 20], 4, None) == [(0, 4), (4, 6)]
    assert plan_batches([4], 8, 2) == [(0, 1)]
    texts, _, _ = prompt_texts(PERSONAS, TEMPLATES)
    lengths = sorted(len(r) for r in _reader(model_dir).tokenizer(texts)["input_ids"])
    budget = 2 * lengths[-1]  # long prompts go two at a time, short ones more
    assert len(plan_batches(lengths, 64, budget)) > 1
    capped = _reader(model_dir, batch_size=64, max_batch_tokens=budget)
    np.testing.assert_array_equal(
        capped.final_states(texts), _reader(model_dir).final_states(texts, batch_size=1)
    )
    with pytest.raises(ConfigError, match="max_batch_tokens must be a positive integer"):
        _reader(model_dir, max_batch_tokens=0)


def test_device_map_load_gives_the_same_states(model_dir: Path) -> None:
    pytest.importorskip("accelerate")
    texts = list(PERSONAS[:3])
    spread = StateReader.load(model_dir, device_map="auto", dtype="float32")
    np.testing.assert_array_equal(
        spread.final_states(texts), _reader(model_dir).final_states(texts)
    )


def test_gpt2_right_padding_keeps_positions(tmp_path: Path) -> None:
    reader = StateReader.load(save_tiny_model(tmp_path / "g", arch="gpt2"), device="cpu")
    texts = [PERSONAS[0], PERSONAS[1]]  # different lengths: one row is padded
    states = reader.final_states(texts, batch_size=2)
    np.testing.assert_allclose(states[0], _direct(reader, texts[0]), rtol=2e-3, atol=2e-3)


def test_reader_from_backend(model_dir: Path) -> None:
    backend = TransformersBackend(model_dir, device="cpu")
    reader = StateReader.from_backend(backend, batch_size=2)
    assert reader.model is backend.model and reader.batch_size == 2


def test_adapters_swap_on_one_model_and_base_first(
    model_dir: Path, adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    reader = _reader(model_dir)
    variants = [
        Variant("a", str(adapters[0])),
        Variant("base"),
        Variant("b", str(adapters[1])),
    ]
    files = collect_variants(reader, variants, PERSONAS, TEMPLATES, tmp_path)
    assert list(files) == ["base", "a", "b"]  # adapter-free first
    base, a, b = (load_states(files[v]) for v in ("base", "a", "b"))
    assert base.states.shape[0] == len(PERSONAS) * len(TEMPLATES)
    assert base.adapter is None and a.adapter == str(adapters[0])
    assert base.layer_indices.tolist() == [0, 1, 2]
    assert base.personas == PERSONAS and base.templates == TEMPLATES
    # Slot 0 is the embeddings, which LoRA on attention leaves alone.
    np.testing.assert_array_equal(a.states[:, 0], base.states[:, 0])
    assert np.abs(a.states[:, -1] - base.states[:, -1]).max() > 1e-2
    assert np.abs(a.states[:, -1] - b.states[:, -1]).max() > 1e-2
    # The swapped-in adapter gives what a model with only that adapter gives.
    alone = TransformersBackend(model_dir, adapter=adapters[1], device="cpu")
    single = StateReader(alone.model, alone.tokenizer, label="x").final_states(
        prompt_texts(PERSONAS, TEMPLATES)[0]
    )
    np.testing.assert_allclose(b.states, single, rtol=2e-3, atol=2e-3)
    assert b.by_template(1).shape == (len(PERSONAS), 3, b.states.shape[2])
    np.testing.assert_array_equal(b.by_persona()[:, 1], b.by_template(1))
    with pytest.raises(ConfigError, match="before adapters"):
        reader.use_adapter(None)


def test_killed_collection_resumes_from_saved_parts(model_dir: Path, tmp_path: Path) -> None:
    reader = _reader(model_dir, batch_size=2)
    calls: list[int] = []
    real = reader.final_states

    def dies_on_third_chunk(texts: list[str], **kw: Any) -> np.ndarray:
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts, **kw)

    reader.final_states = dies_on_third_chunk  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        collect_variant(reader, Variant("base"), PERSONAS, TEMPLATES, tmp_path, chunk=3)
    assert len(list((tmp_path / "base.parts").glob("part-*.npz"))) == 2
    assert not (tmp_path / "base.npz").exists()
    calls.clear()
    path = collect_variant(reader, Variant("base"), PERSONAS, TEMPLATES, tmp_path, chunk=3)
    assert calls == [3, 1]  # only the 4 prompts the parts did not hold
    assert not (tmp_path / "base.parts").exists()
    fresh = collect_variant(
        _reader(model_dir), Variant("base"), PERSONAS, TEMPLATES, tmp_path / "f"
    )
    np.testing.assert_array_equal(load_states(path).states, load_states(fresh).states)
    calls.clear()
    collect_variant(reader, Variant("base"), PERSONAS, TEMPLATES, tmp_path, chunk=3)
    assert calls == []  # finished: reused
    # Other personas: the file is redone, not reused.
    collect_variant(reader, Variant("base"), PERSONAS[:3], TEMPLATES, tmp_path, chunk=10)
    assert calls == [6]
    assert load_states(path).personas == PERSONAS[:3]


def test_bad_inputs(model_dir: Path, tmp_path: Path) -> None:
    reader = _reader(model_dir)
    with pytest.raises(ConfigError, match="unique"):
        collect_variants(reader, [Variant("x"), Variant("x")], PERSONAS, TEMPLATES, tmp_path)
    with pytest.raises(ConfigError, match="at least 2 personas"):
        collect_variants(reader, [Variant("x")], PERSONAS[:1], TEMPLATES, tmp_path)
    with pytest.raises(ConfigError, match="cannot load adapter"):
        collect_variants(
            reader, [Variant("x", str(tmp_path / "none"))], PERSONAS, TEMPLATES, tmp_path
        )
    with pytest.raises(ConfigError, match="cannot load model"):
        StateReader.load(tmp_path / "no-model", device="cpu", local_files_only=True)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match=r"junk\.npz"):
        load_states(tmp_path / "junk.npz")
