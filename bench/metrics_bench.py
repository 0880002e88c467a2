"""Benchmark: metrics of the 12 reference runs (persona files of expected.json).

Usage::

    python bench/metrics_bench.py [--repeat N] [--max-seconds T] [--reference DIR]

Prints the time to load the CSV files, the time to compute every run's metrics
(per-foundation values, 2000 persona + 400 rerun bootstrap draws) and the total;
then the whole-process CPU time and peak RSS of ``pcollapse metrics --per-foundation``
on the same 12 files (best of ``--repeat`` fresh processes; targets 0.67 s CPU, the
reference pipeline's 16.8 s / 25, and 112 MB, its peak RSS), and how that CPU time
splits into imports, reading the files and computing the metrics.
With ``--max-seconds`` the exit status is 1 when the best compute time exceeds it.
Exits with status 0 and a message when the reference data is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "costa2026-persona-collapse"

try:
    from persona_collapse.stats.metrics import analyze_ratings
    from persona_collapse.store.reference_csv import read_rating_columns
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from persona_collapse.stats.metrics import analyze_ratings
    from persona_collapse.store.reference_csv import read_rating_columns


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed compute passes (best kept)")
    parser.add_argument("--max-seconds", type=float, default=None, help="fail above this")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    expected_file = args.reference / "expected.json"
    if not expected_file.is_file():
        print(f"reference data not found at {args.reference}; nothing to benchmark")
        return 0
    expected = json.loads(expected_file.read_text())

    start = time.perf_counter()
    runs = []
    for variants in expected["families"].values():
        for entry in variants.values():
            columns = read_rating_columns(args.reference / entry["persona_file"])
            runs.append((columns.persona_id, columns.item_id, columns.rating))
    load_s = time.perf_counter() - start

    times = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        for persona_ids, item_ids, ratings in runs:
            analyze_ratings(
                persona_ids,
                item_ids,
                ratings,
                n_persona_boot=2000,
                n_rerun_boot=400,
                rng=args.seed,
            )
        times.append(time.perf_counter() - start)
    best, first = min(times), times[0]
    print(f"load: {len(runs)} CSV files: {load_s:.2f} s")
    print(
        f"metrics: {len(runs)} runs, per-foundation, 2000+400 draws: {best:.2f} s "
        f"(best of {len(times)}; first pass {first:.2f} s)"
    )
    print(f"total (load + first pass): {load_s + first:.2f} s")
    files = [
        str(args.reference / entry["persona_file"])
        for variants in expected["families"].values()
        for entry in variants.values()
    ]
    cpu, rss = _whole_process(files, repeat=max(1, args.repeat))
    print(
        f"pcollapse metrics --per-foundation, 12 runs, whole process: {cpu:.2f} s CPU "
        f"(target 0.67 s), peak RSS {rss:.0f} MB (target 112 MB)"
    )
    imports, read, compute = _split(files, repeat=max(1, args.repeat))
    print(
        f"  split (best of {max(1, args.repeat)}): imports {imports:.2f} s, "
        f"read {read:.2f} s, compute {compute:.2f} s CPU; the rest is interpreter start "
        "and output"
    )
    if args.max_seconds is not None and best > args.max_seconds:
        print(f"FAIL: {best:.2f} s exceeds the limit of {args.max_seconds:.2f} s")
        return 1
    return 0


def _whole_process(files: list[str], *, repeat: int) -> tuple[float, float]:
    """Best CPU seconds and the largest peak RSS (MB) of ``pcollapse metrics`` on ``files``.

    Each run is started by a small launcher process, not by this one: a child's
    peak RSS counts the memory it shares with its parent before ``exec``, and this
    process holds the loaded frames.
    """
    command = [
        sys.executable,
        "-c",
        "import sys; from persona_collapse.cli import main; sys.exit(main(sys.argv[1:]))",
        "metrics",
        *files,
        "--per-foundation",
    ]
    best_cpu, peak = float("inf"), 0.0
    for _ in range(repeat):
        cpu, rss = _launch(command)
        best_cpu = min(best_cpu, cpu)
        peak = max(peak, rss)
    return best_cpu, peak


_LAUNCHER = (
    "import json, resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps([u.ru_utime + u.ru_stime, u.ru_maxrss / 1024]))\n"
)


def _launch(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of ``command`` run from a fresh launcher process."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], check=True, capture_output=True, text=True
    )
    cpu, rss = json.loads(out.stdout.strip().splitlines()[-1])
    return float(cpu), float(rss)


_SPLIT = (
    "import json, sys, time\n"
    "t0 = time.process_time()\n"
    "from persona_collapse.cli import main\n"
    "import persona_collapse.cli.core, persona_collapse.stats.compare\n"
    "from persona_collapse.stats.sources import Bootstrap, load_runs, metrics_by_name\n"
    "t1 = time.process_time()\n"
    "runs = load_runs(sys.argv[1:], kind='persona')\n"
    "t2 = time.process_time()\n"
    "metrics_by_name(runs, Bootstrap())\n"
    "t3 = time.process_time()\n"
    "print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))\n"
)


def _split(files: list[str], *, repeat: int) -> tuple[float, float, float]:
    """Best CPU seconds of the command's imports, reading and compute, in one fresh process."""
    best = (float("inf"),) * 3
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _SPLIT, *files], check=True, capture_output=True, text=True
        )
        parts = tuple(float(x) for x in json.loads(out.stdout.strip().splitlines()[-1]))
        best = min(best, parts, key=sum)
    return best[0], best[1], best[2]


if __name__ == "__main__":
    sys.exit(main())
