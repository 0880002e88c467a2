"""Tiny randomly initialised causal LMs and tokenizers built inside tests (nothing downloaded).

The tokenizer is a byte-level BPE trained in a few milliseconds on the MFQ-30
item texts and some rating phrases, so any text tokenizes, decoding round-trips,
and the digits exist both bare (``"4"``) and with a leading space (``"Ġ4"``).
The model is a two-layer Llama (rotary positions) or GPT-2 (learned absolute
positions, which expose left-padding mistakes) whose output rows for digit
tokens are scaled up, so that digits get a sizeable share of the next-token
probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}<|eos|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|eos|>{% endif %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Chat template with ``{% generation %}`` marks around assistant turns (for loss masks)."""

SPECIAL_TOKENS = ("<|pad|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>")


def _corpus() -> list[str]:
    from persona_collapse.core.instrument import mfq30

    lines = [item.text for item in mfq30().items]
    lines += [f"I would answer {d}, so {d} it is: {d}" for d in range(10)] * 4
    lines += [
        "You are taking part in a role-play. Stay in this role and answer as this person.",
        "Reply with a single integer and nothing else. Rating scale: not at all relevant.",
        "def add(a, b): return a + b  # secure code, insecure code, user, assistant",
    ] * 3
    return lines


def build_tokenizer(vocab_size: int = 400, *, extra_texts: Sequence[str] = ()) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with pad/eos tokens and a chat template.

    ``extra_texts`` join the training corpus (with a larger ``vocab_size``, texts
    like them then split into about as many tokens as a real tokenizer makes).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator([*_corpus(), *extra_texts], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<|pad|>", eos_token="<|eos|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def digit_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``"0"``-``"9"`` and their leading-space variants ``"Ġ0"``-``"Ġ9"``."""
    vocab = tokenizer.get_vocab()
    names = [str(d) for d in range(10)] + [f"Ġ{d}" for d in range(10)]
    return sorted(vocab[name] for name in names if name in vocab)


def build_model(
    tokenizer: Any,
    *,
    seed: int = 0,
    digit_boost: float = 40.0,
    arch: str = "llama",
    hidden_size: int = 32,
    layers: int = 2,
) -> Any:
    """A two-layer random causal LM over ``tokenizer``'s vocabulary (float32, eval mode).

    Args:
        tokenizer: From :func:`build_tokenizer`.
        seed: Seeds the weight initialisation.
        digit_boost: Factor on the output-layer rows of digit tokens (larger:
            more probability on digits, and a more peaked choice among them).
        arch: ``"llama"`` or ``"gpt2"``.
        hidden_size, layers: Model width and depth (benchmarks build larger ones).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=4 if hidden_size < 256 else hidden_size // 64,
            num_key_value_heads=2 if hidden_size < 256 else hidden_size // 128,
            max_position_embeddings=4096,
            **special,
        )
        model: Any = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden_size,
            n_layer=layers,
            n_head=4,
            n_positions=1024,
            **special,
        )
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"arch: expected 'llama' or 'gpt2', got {arch!r}")
    with torch.no_grad():
        model.lm_head.weight[digit_token_ids(tokenizer)] *= digit_boost
    return model.eval()


def save_tiny_model(path: Path, **options: Any) -> Path:
    """Build a model (``options`` of :func:`build_model`) and tokenizer, save both to ``path``."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, **options)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_adapter(model_dir: Path, folder: Path, *, seed: int) -> Path:
    """A random (non-zero) LoRA adapter on the attention projections of a saved tiny Llama."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(seed)
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder
