"""Benchmark: peak memory of ``pcollapse metrics`` on a large reference-format CSV file.

Usage::

    python bench/memory_bench.py [--mb 200] [--max-ratio 3] [--seed 0] [--keep DIR]

Generates a persona file in the reference layout (``persona_id,question_id,
run_index,rating,failures,response,collected_at``; 30 items, 10 repetitions,
failed parses, retries and quoted multi-line replies with commas) of about
``--mb`` megabytes in a temporary folder, runs ``pcollapse metrics`` (default
bootstrap: 2000 persona and 400 rerun draws) on it in a child process and
prints the file size, the child's peak resident memory
(``resource.getrusage(RUSAGE_CHILDREN)``) and the wall time. The target is a
peak of at most ``--max-ratio`` times the file size; the exit status is 1 above it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
ITEMS = 30
REPETITIONS = 10
# Replies as models write them: mostly a bare digit, sometimes prose with commas
# and line breaks (quoted in the file), sometimes nothing usable (rating -1).
PROSE = (
    "I would rate this {r}, because, on reflection,\nfairness matters to me.",
    "Rating: {r}\n\nThe persona cares about loyalty, tradition and order.",
)


def _chunk(first_persona: int, personas: int, rng: np.random.Generator) -> pd.DataFrame:
    """Rows of ``personas`` personas (every item, every repetition, a few retries)."""
    p = np.repeat(np.arange(first_persona, first_persona + personas), ITEMS * REPETITIONS)
    q = np.tile(np.repeat(np.arange(1, ITEMS + 1), REPETITIONS), personas)
    r = np.tile(np.arange(1, REPETITIONS + 1), personas * ITEMS)
    # Low-temperature answers: each persona-item cell mostly repeats one rating
    # (about a third of the cells vary, as in the reference runs).
    base = np.repeat(rng.integers(0, 6, size=personas * ITEMS), REPETITIONS)
    draw = rng.random(len(p))
    step = np.where(rng.random(len(p)) < 0.5, -1, 1)
    rating = np.where(draw < 0.96, base, np.clip(base + step, 0, 5))
    rating = np.where(draw > 0.995, rng.integers(0, 6, size=len(p)), rating)
    failed = rng.random(len(p)) < 0.01
    rating[failed] = -1
    kind = rng.random(len(p))
    response = rating.astype(str).astype(object)
    prose = kind < 0.05
    response[prose] = [PROSE[i % 2].format(r=v) for i, v in enumerate(rating[prose].tolist())]
    response[failed] = "I cannot answer that."
    frame = pd.DataFrame(
        {
            "persona_id": p,
            "question_id": q,
            "run_index": r,
            "rating": rating,
            "failures": (failed | (kind > 0.995)).astype(np.int64),
            "response": response,
            "collected_at": "2025-10-28T11:20:15.844921",
        }
    )
    # retries: a second row for about 0.3 % of the slots
    retries = frame[rng.random(len(frame)) < 0.003].assign(
        collected_at="2025-10-28T11:21:02.100000"
    )
    return pd.concat([frame, retries], ignore_index=True)


def generate(path: Path, megabytes: float, seed: int) -> int:
    """Write a reference-format persona file of about ``megabytes`` MB; return its size."""
    rng = np.random.default_rng(seed)
    target = int(megabytes * 1_000_000)
    block = 500  # personas per chunk (150 000 rows, about 6.5 MB)
    first = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        header = True
        while handle.tell() < target:
            _chunk(first, block, rng).to_csv(
                handle, index=False, header=header, lineterminator="\n"
            )
            header = False
            first += block
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0, help="file size to generate (MB)")
    parser.add_argument("--max-ratio", type=float, default=3.0, help="fail above this peak/size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the file here instead")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pcollapse-membench-") as tmp:
        folder = args.keep if args.keep is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = folder / "large_temp01.csv"
        start = time.perf_counter()
        size = generate(csv_path, args.mb, args.seed)
        print(
            f"generated {csv_path.name}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
        )

        command = [
            sys.executable,
            "-m",
            "persona_collapse.cli",
            "metrics",
            str(csv_path),
            "--format",
            "json",
        ]
        env_path = str(REPO_ROOT / "src")
        start = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            env={**_environ(), "PYTHONPATH": env_path},
        )
        wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr.strip(), file=sys.stderr)
        print(f"pcollapse metrics failed (exit {done.returncode})")
        return 1
    # ru_maxrss is in KiB on Linux: the largest resident set of any waited-for child.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    ratio = peak / size
    print(f"pcollapse metrics: wall {wall:.1f} s, peak RSS {peak / 1e6:.0f} MB")
    print(f"peak RSS / file size = {ratio:.2f} (target <= {args.max_ratio:g})")
    return 0 if ratio <= args.max_ratio else 1


def _environ() -> dict[str, str]:
    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())
