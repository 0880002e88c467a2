"""Scripted replies for inspect's built-in ``mockllm`` provider (no network).

``mockllm`` takes ``custom_outputs``: a callable of the request. Every output here
carries its token usage, because mockllm otherwise counts tokens with a tiktoken
encoding it downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

SCALE = range(6)
FIRST = (0.4, 0.25, 0.15, 0.1, 0.06, 0.04)
"""First-token probabilities of the scale values in logprob replies (sum 1)."""


def _digest(*parts: object) -> int:
    raw = "\0".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def _prompt_text(messages: list[Any]) -> str:
    return "\n\n".join(str(m.text) for m in messages)


def _output(texts: list[str], *, logprobs: bool = False) -> Any:
    from inspect_ai.model import (
        ChatCompletionChoice,
        ChatMessageAssistant,
        Logprob,
        Logprobs,
        ModelOutput,
        ModelUsage,
        TopLogprob,
    )

    choices = []
    for text in texts:
        lp = None
        if logprobs:
            top = [
                TopLogprob(token=str(v), logprob=math.log(p))
                for v, p in zip(SCALE, FIRST, strict=True)
            ]
            lp = Logprobs(content=[Logprob(token=text, logprob=-0.2, top_logprobs=top)])
        choices.append(
            ChatCompletionChoice(
                message=ChatMessageAssistant(content=text, model="mock"),
                stop_reason="stop",
                logprobs=lp,
            )
        )
    usage = ModelUsage(input_tokens=11, output_tokens=len(texts), total_tokens=11 + len(texts))
    return ModelOutput(model="mock", choices=choices, usage=usage)


def reply_for(prompt: str, index: int, max_tokens: int | None) -> str:
    """The ``index``-th reply to ``prompt``: mostly a rating that depends on the prompt
    (so personas differ) and on ``index`` (so repetitions differ), sometimes not."""
    h = _digest(prompt, index)
    if h % 7 == 0:
        # Not a rating: a short request fails; the long form answers with a cue.
        return "I would rate it 2" if (max_tokens or 0) > 1 else "Well"
    base = _digest(prompt) % 4
    return str(min(base + h % 3, 5))


class SeededOutputs:
    """Replies determined by the prompt and the request seed (a seeded request repeats);
    ``num_choices`` and logprobs honoured when asked for."""

    def __init__(self, *, choices: bool = True, logprobs: bool = True) -> None:
        self.choices = choices
        self.logprobs = logprobs
        self.requests = 0

    def __call__(self, messages: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
        self.requests += 1
        n = (config.num_choices or 1) if self.choices else 1
        text = _prompt_text(messages)
        seed = config.seed if config.seed is not None else 0
        texts = [reply_for(text, seed * 100 + j, config.max_tokens) for j in range(n)]
        return _output(texts, logprobs=self.logprobs and bool(config.logprobs))


class StreamOutputs:
    """Replies to each distinct prompt taken in order from its own scripted stream.

    Whatever order requests arrive in, the k-th request for a prompt gets the k-th
    reply of that prompt's stream, so two collection paths that ask the same prompts
    see the same replies (one per request; ``num_choices`` is not supported).
    """

    def __init__(self, salt: str = "") -> None:
        self.salt = salt
        self.counts: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def __call__(self, messages: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
        text = _prompt_text(messages)
        long_form = (config.max_tokens or 0) > 1
        key = f"{long_form}\0{text}"
        with self.lock:
            index = self.counts[key]
            self.counts[key] += 1
        return _output([reply_for(self.salt + key, index, config.max_tokens)])


_LOGGERS = ("", "httpx", "httpx2", "inspect_ai", "persona_collapse")


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Undo what ``inspect_ai.eval`` does to process-wide logging (root level and
    handlers, httpx levels), so later tests capture logs as without inspect."""
    saved = []
    for name in _LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.level, list(log.handlers), log.propagate))
    try:
        yield
    finally:
        for log, level, handlers, propagate in saved:
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate = propagate
