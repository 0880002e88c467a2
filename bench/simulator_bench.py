"""Time of one simulator ``generate`` call (one prompt, n = 10, cold cell caches).

The simulator answers most tests and the demo, so it must stay cheap: target well
under 0.5 ms per call. Prints the median over ``--repeat`` passes of 600 calls.

Usage: python bench/simulator_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt

TARGET_SECONDS = 5e-4


def one_pass(seed_offset: int) -> float:
    """Seconds per call over 20 personas x 30 items, on a fresh backend."""
    instrument = mfq30()
    backend = SimulatorBackend("base")
    personas = list(builtin_personas())[:20]
    prompts = [
        render_prompt(DEFAULT_TEMPLATE, instrument, item.id, persona)
        for persona in personas
        for item in instrument.active_items
    ]

    async def run_all() -> float:
        await backend.generate(prompts[:1], n=10, temperature=0.1, max_tokens=1)  # warm-up
        start = time.perf_counter()
        for k, prompt in enumerate(prompts):
            await backend.generate([prompt], n=10, temperature=0.1, max_tokens=1, seed=k)
        return (time.perf_counter() - start) / len(prompts)

    return asyncio.run(run_all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times = [one_pass(k) for k in range(args.repeat)]
    median = statistics.median(times)
    verdict = "met" if median < TARGET_SECONDS else "NOT met"
    print(
        f"simulator generate: {median * 1e3:.3f} ms per call (median of {args.repeat}; "
        f"best {min(times) * 1e3:.3f} ms); target < {TARGET_SECONDS * 1e3:.1f} ms: {verdict}"
    )


if __name__ == "__main__":
    main()
