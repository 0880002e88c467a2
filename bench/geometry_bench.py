"""Benchmark: hidden-state collection for persona geometry, batched versus one prompt at a time.

Usage::

    python bench/geometry_bench.py [--personas N] [--batch-size B] [--max-batch-tokens T]
                                   [--repeat N] [--min-ratio R]

Builds the tests' tiny random Llama (nothing is downloaded; ``--hidden`` and
``--layers`` make a larger one) with a byte-level BPE tokenizer of ``--vocab``
tokens trained on the prompts too, so that a prompt splits into about as many
tokens as a real tokenizer makes of it (the tests' 400-token one splits it almost
into characters, which makes every pass compute-bound). It puts the first
``--personas`` built-in personas into persona-only template 0 and times the
final-token states at every layer
(:meth:`~persona_collapse.backends.hidden_states.StateReader.final_states`) in one
call, length-sorted into forward passes of at most ``--batch-size`` prompts and
``--max-batch-tokens`` padded tokens, and with one prompt per call.
Prints personas per second of each (best of ``--repeat``; wall clock and CPU time
of this process, one torch thread by default) and their ratios; the exit status
is 1 when both ratios are below ``--min-ratio`` (default 5). Needs the ``hf`` extra.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tiny-model builders live with the tests

try:
    from persona_collapse.backends import hidden_states as hs
    from persona_collapse.backends.hidden_states import PERSONA_TEMPLATES, StateReader
    from persona_collapse.core.personas import builtin_personas
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from persona_collapse.backends import hidden_states as hs
    from persona_collapse.backends.hidden_states import PERSONA_TEMPLATES, StateReader
    from persona_collapse.core.personas import builtin_personas

from _tiny_models import build_model, build_tokenizer  # noqa: E402


def best_rates(
    reader: StateReader, texts: list[str], batch_size: int, repeat: int
) -> tuple[float, float]:
    """Personas per wall-clock second and per CPU second of this process (best of
    ``repeat`` timed passes, after one warm-up). With ``batch_size`` 1 every prompt is
    its own call (tokenised and run alone), as a loop over personas would do. On a busy
    shared machine the CPU figure is the stable one (the wall time also counts other
    processes' turns)."""

    def run() -> None:
        if batch_size == 1:
            for text in texts:
                reader.final_states([text])
        else:
            reader.final_states(texts, batch_size=batch_size)

    reader.final_states(texts[: max(min(batch_size, len(texts)), 2)], batch_size=batch_size)
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return len(texts) / wall, len(texts) / cpu


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--personas", type=int, default=100, help="personas (max 100)")
    parser.add_argument("--batch-size", type=int, default=128, help="most prompts per pass")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=8192, help="most padded tokens per pass"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--vocab", type=int, default=4000, help="tokenizer size (400: the tests' tokenizer)"
    )
    parser.add_argument("--hidden", type=int, default=32, help="model width")
    parser.add_argument("--layers", type=int, default=2, help="model depth")
    parser.add_argument("--min-ratio", type=float, default=5.0, help="fail below this ratio")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    personas = list(builtin_personas())[: args.personas]
    texts = [PERSONA_TEMPLATES[0].replace("{persona}", p) for p in personas]
    tokenizer = build_tokenizer(args.vocab, extra_texts=texts if args.vocab > 400 else ())
    model = build_model(tokenizer, hidden_size=args.hidden, layers=args.layers)
    reader = StateReader(
        model, tokenizer, label="tiny-llama", max_batch_tokens=args.max_batch_tokens
    )
    tokens = sum(len(row) for row in tokenizer(texts)["input_ids"]) / len(texts)

    torch.set_num_threads(args.threads)
    batched, batched_cpu = best_rates(reader, texts, args.batch_size, args.repeat)
    single, single_cpu = best_rates(reader, texts, 1, args.repeat)
    # The two paths must give the same states (float16 rounding aside).
    same = np.allclose(
        reader.final_states(texts, batch_size=args.batch_size),
        reader.final_states(texts, batch_size=1),
        rtol=2e-3,
        atol=2e-3,
    )
    ratio, cpu_ratio = batched / single, batched_cpu / single_cpu
    print(
        f"hidden-state collection, tiny Llama ({args.layers} layers, width {args.hidden}), "
        f"{len(texts)} personas of {tokens:.0f} tokens on average (vocabulary {len(tokenizer)}), "
        f"torch threads {torch.get_num_threads()}"
    )
    passes = len(hs.plan_batches(sorted(len(r) for r in tokenizer(texts)["input_ids"]),
                            args.batch_size, args.max_batch_tokens))  # fmt: skip
    print(
        f"  batched (<= {args.batch_size} prompts, <= {args.max_batch_tokens} tokens per pass; "
        f"{passes} pass{'' if passes == 1 else 'es'}): {batched:8.1f} personas/s "
        f"({batched_cpu:.1f} per CPU second)"
    )
    print(f"  one at a time:     {single:8.1f} personas/s ({single_cpu:.1f} per CPU second)")
    print(
        f"  ratio: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (target >= {args.min_ratio:g}x); "
        f"same states: {same}"
    )
    return 0 if max(ratio, cpu_ratio) >= args.min_ratio and same else 1


if __name__ == "__main__":
    sys.exit(main())
