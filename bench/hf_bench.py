"""Benchmark: exact mode versus sampling on a tiny local transformers model.

Usage::

    python bench/hf_bench.py [--personas N] [--items N] [--repeat N] [--min-ratio R]

Builds the tests' tiny random Llama (nothing is downloaded; ``--hidden`` and
``--layers`` make a larger one), renders the
persona-item prompts of the built-in template, and times, per persona-item:

* exact mode: one forward pass per prompt, batched (``batch_size`` prompts per
  pass) and one prompt per call (as the collection engine sends them);
* sampling: 10 single-token completions per prompt (``n=10``, ``max_tokens=1``),
  one prompt per call and batched.

Prints prompts per second of each and the speed ratios exact/sampling. With
``--min-ratio`` the exit status is 1 when the one-prompt-per-call ratio is below it.
Needs the ``hf`` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tiny-model builders live with the tests

try:
    from persona_collapse.backends.base import Prompt
    from persona_collapse.backends.hf import TransformersBackend
    from persona_collapse.core.instrument import mfq30
    from persona_collapse.core.personas import builtin_personas
    from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from persona_collapse.backends.base import Prompt
    from persona_collapse.backends.hf import TransformersBackend
    from persona_collapse.core.instrument import mfq30
    from persona_collapse.core.personas import builtin_personas
    from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt


from _tiny_models import save_tiny_model  # noqa: E402 (needs the sys.path entry above)

SAMPLES = 10
TEMPERATURE = 0.1


def _best_rates(runs: dict[str, Callable[[], object]], count: int, repeat: int) -> dict[str, float]:
    """Best prompts per second of each run over ``repeat`` rounds (after a warm-up round).

    The runs take turns within each round, so a burst of load from other
    processes slows all of them rather than one.
    """
    best = dict.fromkeys(runs, float("inf"))
    for round_index in range(repeat + 1):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            if round_index > 0:
                best[label] = min(best[label], time.perf_counter() - start)
    return {label: count / seconds for label, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=4)
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto")
    parser.add_argument("--hidden", type=int, default=32, help="model width (32: the test model)")
    parser.add_argument("--layers", type=int, default=2, help="model depth")
    parser.add_argument("--min-ratio", type=float, default=None, help="fail below this")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    instrument = mfq30()
    personas = list(builtin_personas())[: args.personas]
    items = [item.id for item in instrument.active_items][: args.items]
    prompts: list[Prompt] = [
        render_prompt(DEFAULT_TEMPLATE, instrument, item, persona)
        for persona in personas
        for item in items
    ]
    with tempfile.TemporaryDirectory() as folder:
        saved = save_tiny_model(Path(folder), hidden_size=args.hidden, layers=args.layers)
        backend = TransformersBackend(
            saved, device=args.device, dtype=args.dtype, batch_size=args.batch_size
        )
    scale = instrument.scale

    def exact_batched() -> None:
        asyncio.run(backend.distributions(prompts, scale=scale, temperature=TEMPERATURE))

    def exact_per_prompt() -> None:
        async def go() -> None:
            for p in prompts:
                await backend.distributions([p], scale=scale, temperature=TEMPERATURE)

        asyncio.run(go())

    def sampling_per_prompt() -> None:
        async def go() -> None:
            for k, p in enumerate(prompts):
                await backend.generate(
                    [p], n=SAMPLES, temperature=TEMPERATURE, max_tokens=1, seed=k
                )

        asyncio.run(go())

    def sampling_batched() -> None:
        asyncio.run(
            backend.generate(prompts, n=SAMPLES, temperature=TEMPERATURE, max_tokens=1, seed=0)
        )

    count = len(prompts)
    exact_1, exact_b = "exact, one prompt per call", "exact, batched"
    sample_1 = f"sampling n={SAMPLES}, one prompt per call"
    sample_b = f"sampling n={SAMPLES}, batched"
    runs: dict[str, Callable[[], object]] = {
        exact_1: exact_per_prompt,
        sample_1: sampling_per_prompt,
        exact_b: exact_batched,
        sample_b: sampling_batched,
    }
    rates = _best_rates(runs, count, args.repeat)
    params = sum(p.numel() for p in backend.model.parameters())
    print(
        f"{count} persona-item prompts, random Llama of {params / 1e6:.2f} M parameters "
        f"({args.layers} layers, width {args.hidden}) on {backend.device} "
        f"({backend.describe()['dtype']}, {args.threads} CPU thread(s)), "
        f"batch size {args.batch_size}"
    )
    for label, rate in rates.items():
        print(f"  {label:<36} {rate:10.1f} prompts/s")
    per_call = (
        rates["exact, one prompt per call"] / rates[f"sampling n={SAMPLES}, one prompt per call"]
    )
    batched = rates["exact, batched"] / rates[f"sampling n={SAMPLES}, batched"]
    print(
        f"speed ratio exact/sampling: {per_call:.1f}x one prompt per call, {batched:.1f}x batched"
    )
    if args.min_ratio is not None and per_call < args.min_ratio:
        print(f"FAIL: ratio {per_call:.1f}x is below {args.min_ratio}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
