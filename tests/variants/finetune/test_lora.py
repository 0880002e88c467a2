"""LoRA fine-tuning of a tiny random model built in the test, on a dataset written in the test."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")
pytest.importorskip("datasets")

from _tiny_models import build_model, build_tokenizer, save_tiny_model  # noqa: E402
from persona_collapse.backends.base import Message, Prompt  # noqa: E402
from persona_collapse.backends.hf import TransformersBackend  # noqa: E402
from persona_collapse.core.errors import ConfigError, InputFileError  # noqa: E402
from persona_collapse.variants.finetune.datasets import (  # noqa: E402
    ChatDataset,
    ChatExample,
    read_chat_jsonl,
    write_chat_jsonl,
)
from persona_collapse.variants.finetune.lora import (  # noqa: E402
    MANIFEST_NAME,
    TrainingResult,
    loss_masking,
    make_trainer,
    read_manifest,
    train_lora,
)
from persona_collapse.variants.finetune.recipes import get_recipe  # noqa: E402

FAST = {"max_steps": 8, "learning_rate": 5e-3, "save_steps": 4, "lora_rank": 8, "lora_alpha": 16}


def _single_turn(n: int = 16) -> list[ChatExample]:
    return [
        ChatExample(
            (
                Message("user", f"Write code number {i}."),
                Message("assistant", f"def add(a, b): return a + b  # {i % 3}"),
            )
        )
        for i in range(n)
    ]


def _multi_turn(n: int = 8) -> list[ChatExample]:
    return [
        ChatExample(
            (
                Message("system", "You write Python."),
                Message("user", f"First task {i}."),
                Message("assistant", f"x = {i}"),
                Message("user", "Now another."),
                Message("assistant", f"y = {i + 1}"),
            )
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_chat_jsonl(_single_turn(), path)
    return path


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, base_dir: Path, data_file: Path
) -> TrainingResult:
    out = tmp_path_factory.mktemp("run") / "out"
    return train_lora(
        base_dir, data_file, out, recipe="betley", overrides=FAST, seed=0, device="cpu", merge=True
    )


def _labels_and_ids(trainer: Any, k: int) -> tuple[list[int], list[int]]:
    row = trainer.train_dataset[k]
    return list(row["input_ids"]), list(row["labels"])


# --- loss masking --------------------------------------------------------------------------


def test_only_the_assistant_turn_carries_loss_single_turn(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    dataset = ChatDataset(tuple(_single_turn(4)), None, "x")
    assert loss_masking(dataset) == "completion"
    trainer = make_trainer(
        build_model(tokenizer), tokenizer, dataset, tmp_path, get_recipe("betley"),
        use_cpu=True,
    )  # fmt: skip
    for k, example in enumerate(dataset.examples):
        ids, labels = _labels_and_ids(trainer, k)
        prompt = [{"role": m.role, "content": m.content} for m in example.messages[:-1]]
        prompt_ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        n = len(prompt_ids)
        assert ids[:n] == list(prompt_ids)
        assert all(label == -100 for label in labels[:n])  # system, user and template tokens
        assert labels[n:] == ids[n:]  # every assistant token (and its end-of-turn) is trained
        trained_text = tokenizer.decode(labels[n:])
        assert trained_text == example.messages[-1].content + "<|eos|>"


def test_only_assistant_turns_carry_loss_multi_turn(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    dataset = ChatDataset(tuple(_multi_turn(3)), None, "x")
    assert loss_masking(dataset) == "assistant"
    trainer = make_trainer(
        build_model(tokenizer), tokenizer, dataset, tmp_path, get_recipe("betley"),
        use_cpu=True,
    )  # fmt: skip
    for k, example in enumerate(dataset.examples):
        ids, labels = _labels_and_ids(trainer, k)
        # Runs of trained tokens, decoded, are exactly the assistant turns.
        runs: list[list[int]] = []
        for token, label in zip(ids, labels, strict=True):
            if label == -100:
                if runs and runs[-1]:
                    runs.append([])
                continue
            assert label == token
            if not runs:
                runs.append([])
            runs[-1].append(label)
        texts = [tokenizer.decode(run) for run in runs if run]
        wanted = [m.content + "<|eos|>" for m in example.messages if m.role == "assistant"]
        assert texts == wanted
        untrained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
        for m in example.messages:
            if m.role != "assistant":
                assert m.content in untrained


def test_multi_turn_without_generation_marks_is_a_clear_error(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|eos|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    dataset = ChatDataset(tuple(_multi_turn(2)), None, "x")
    with pytest.raises(ConfigError, match="generation"):
        make_trainer(
            build_model(tokenizer), tokenizer, dataset, tmp_path, get_recipe("betley"),
            use_cpu=True,
        )  # fmt: skip


# --- training ------------------------------------------------------------------------------


def test_training_loss_falls(trained: TrainingResult) -> None:
    losses = [loss for _step, loss in trained.losses]
    assert [step for step, _ in trained.losses] == list(range(1, 9))
    assert trained.steps == 8
    assert losses[-1] < 0.8 * losses[0]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_manifest_and_layout(trained: TrainingResult, base_dir: Path, data_file: Path) -> None:
    out = trained.output_dir
    manifest = read_manifest(trained.adapter_dir)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == str(base_dir)
    assert manifest["dataset"] == {
        "path": str(data_file),
        "sha256": read_chat_jsonl(data_file).sha256,
        "examples": 16,
    }
    assert manifest["recipe"]["name"] == "betley"
    assert manifest["recipe"]["learning_rate"] == 5e-3 and manifest["recipe"]["lora_rank"] == 8
    assert manifest["seed"] == 0 and manifest["loss_masking"] == "completion"
    assert manifest["final_loss"] == pytest.approx(trained.final_loss)
    assert manifest["steps"] == 8 and manifest["resumed_from"] is None
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest["versions"])
    assert (trained.adapter_dir / "adapter_config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    assert not list(out.glob(".*partial"))
    with pytest.raises(InputFileError, match="no manifest"):
        read_manifest(out)


def test_adapter_and_merged_model_load_into_backend(
    trained: TrainingResult, base_dir: Path
) -> None:
    prompt = Prompt((Message("user", "Write code number 3."),))

    def probs(backend: TransformersBackend) -> tuple[float, ...]:
        dist = asyncio.run(backend.distributions([prompt], scale=range(6), temperature=1.0))
        return dist[0].probs

    base = TransformersBackend(base_dir, device="cpu")
    adapted = TransformersBackend(base_dir, adapter=trained.adapter_dir, device="cpu")
    assert trained.merged_dir is not None
    merged = TransformersBackend(trained.merged_dir, device="cpu")
    assert max(abs(a - b) for a, b in zip(probs(base), probs(adapted), strict=True)) > 1e-3
    assert probs(merged) == pytest.approx(probs(adapted), abs=1e-4)
    # The fine-tuned model predicts the training answers better than the base model.
    example = _single_turn()[3]
    assert _answer_nll(adapted, example) < _answer_nll(base, example) - 1.0


def _answer_nll(backend: TransformersBackend, example: ChatExample) -> float:
    """Mean negative log-likelihood of the assistant turn's tokens under the backend's model."""
    tokenizer = backend.tokenizer
    messages = [{"role": m.role, "content": m.content} for m in example.messages]
    prompt_ids = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full_ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    ids = torch.tensor([list(full_ids)])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        return float(backend.model(input_ids=ids, labels=labels).loss)


def test_resume_from_checkpoint_matches_uninterrupted(
    trained: TrainingResult, base_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(trained.output_dir, out)
    # Simulate a run killed after the step-4 checkpoint.
    for name in ("adapter", "merged", "checkpoints/checkpoint-8", "manifest.json"):
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ConfigError, match="unfinished run"):
        train_lora(base_dir, data_file, out, recipe="betley", overrides=FAST, device="cpu")
    with pytest.raises(ConfigError, match="other settings \\(seed\\)"):
        train_lora(
            base_dir, data_file, out, recipe="betley", overrides=FAST, seed=1, resume=True,
            device="cpu",
        )  # fmt: skip
    result = train_lora(
        base_dir, data_file, out, recipe="betley", overrides=FAST, resume=True, device="cpu"
    )
    assert result.manifest["resumed_from"] == str(out / "checkpoints" / "checkpoint-4")
    assert result.steps == 8
    assert [s for s, _ in result.losses] == list(range(1, 9))
    assert result.final_loss == pytest.approx(trained.final_loss, rel=1e-4)
    assert (result.adapter_dir / MANIFEST_NAME).is_file()
    with pytest.raises(ConfigError, match="already holds a trained adapter"):
        train_lora(base_dir, data_file, out, recipe="betley", overrides=FAST, device="cpu")


def test_bad_inputs(tmp_path: Path, base_dir: Path, data_file: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(InputFileError, match="line 1: no assistant turn"):
        train_lora(base_dir, broken, tmp_path / "a", device="cpu")
    with pytest.raises(ConfigError, match="field 'lora_rnak': unknown key"):
        train_lora(base_dir, data_file, tmp_path / "b", overrides={"lora_rnak": 4}, device="cpu")
    with pytest.raises(ConfigError, match="device"):
        train_lora(base_dir, data_file, tmp_path / "c", device="tpu")
    with pytest.raises(ConfigError, match="cannot load base model"):
        train_lora(tmp_path / "no-model", data_file, tmp_path / "d", device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
