"""Benchmark: metrics of the 12 reference runs (persona files of expected.json).

Usage::

    python bench/metrics_bench.py [--repeat N] [--max-seconds T] [--reference DIR]

Prints the time to load the CSV files, the time to compute every run's metrics
(per-foundation values, 2000 persona + 400 rerun bootstrap draws) and the total;
then the whole-process CPU time and peak RSS of ``pcollapse metrics --per-foundation``
on the same 12 files (best of ``--repeat`` fresh processes; targets 0.67 s CPU, the
reference pipeline's 16.8 s / 25, and 112 MB, its peak RSS; best and median), and how
that CPU time splits: interpreter start, imports (numpy; typer, its click and rich; the
package), reading the files, computing every registered statistic (first, cold, as the
command does), the bias-corrected estimates, and printing the table; then, apart, S, R
and σ̄ alone (the reference pipeline's work, warm).
The split applies the process settings ``pcollapse metrics`` makes (one BLAS thread, freed
memory kept, a higher cycle-collector threshold); it leaves out Typer's option parsing and
the exit.
With ``--max-seconds`` the exit status is 1 when the best compute time exceeds it.
Exits with status 0 and a message when the reference data is absent. The package's
bytecode is compiled first, as an install does: with ``PYTHONDONTWRITEBYTECODE`` set
and no cached bytecode, every run would compile the package's modules anew (~0.1 s).
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import statistics
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
    package = Path(sys.modules[analyze_ratings.__module__].__file__ or "").parents[1]
    compileall.compile_dir(package, quiet=1)

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
    cpus, rss = _whole_process(files, repeat=max(1, args.repeat))
    print(
        f"pcollapse metrics --per-foundation, 12 runs, whole process: {min(cpus):.2f} s CPU "
        f"best, {statistics.median(cpus):.2f} s median of {len(cpus)} (target 0.67 s), "
        f"peak RSS {rss:.0f} MB (target 112 MB)"
    )
    split = _split(files, repeat=max(1, args.repeat))
    print(f"  split (best of {max(1, args.repeat)} by total, CPU s): " + ", ".join(
        f"{name} {value:.3f}" for name, value in split.items()
    ))  # fmt: skip
    if args.max_seconds is not None and best > args.max_seconds:
        print(f"FAIL: {best:.2f} s exceeds the limit of {args.max_seconds:.2f} s")
        return 1
    return 0


def _whole_process(files: list[str], *, repeat: int) -> tuple[list[float], float]:
    """CPU seconds of each run and the largest peak RSS (MB) of ``pcollapse metrics``.

    Each run is started by a small launcher process, not by this one: a child's
    peak RSS counts the memory it shares with its parent before ``exec``, and this
    process holds the loaded frames.
    """
    command = [
        sys.executable,
        "-c",
        # The console script's own entry point (what `pcollapse` runs), exit included.
        "from persona_collapse.cli import entry_point; entry_point()",
        "metrics",
        *files,
        "--per-foundation",
    ]
    cpus, peak = [], 0.0
    for _ in range(repeat):
        cpu, rss = _launch(command)
        cpus.append(cpu)
        peak = max(peak, rss)
    return cpus, peak


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


_SPLIT = """
import gc, io, json, os, sys, time
marks = [time.process_time()]  # interpreter start
# As pcollapse metrics does (cli._app.single_threaded_blas and keep_freed_memory),
# inline here so that the CLI's imports are counted in their own phase below.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import ctypes
ctypes.CDLL(None).mallopt(-3, 32 << 20)
ctypes.CDLL(None).mallopt(-1, 128 << 20)
# As pcollapse's main() does once the CLI's modules are imported (cli._GC_THRESHOLD).
gc.set_threshold(200_000, *gc.get_threshold()[1:])
import numpy, numpy.random
marks.append(time.process_time())
import typer.main, rich.console, rich.table
marks.append(time.process_time())
from persona_collapse.cli import main
import persona_collapse.cli.core, persona_collapse.cli.controls, persona_collapse.stats.compare
from persona_collapse.cli._app import metrics_table
from persona_collapse.stats import metrics
from persona_collapse.stats.compare import DEFAULT_S_BAND
from persona_collapse.stats.registry import statistics
from persona_collapse.stats.sources import Bootstrap, load_runs, metrics_by_name, run_completeness
statistics()  # the registry's statistic modules
marks.append(time.process_time())
runs = load_runs(sys.argv[1:], kind="persona")
marks.append(time.process_time())
results = metrics_by_name(runs, Bootstrap())  # first, as in the command: cold
marks.append(time.process_time())
from persona_collapse.stats.significance import corrected_fields, run_cells  # as the CLI: lazily
corrected = {
    r.name: corrected_fields(run_cells(r), n_boot=2000, rng=0, per_foundation=True) for r in runs
}
marks.append(time.process_time())
coverage = {r.name: run_completeness(r, results[r.name]) for r in runs}
checks = {r.name: r.protocol for r in runs}
console = rich.console.Console(file=io.StringIO(), soft_wrap=True, width=160)
console.print(
    metrics_table(
        results, per_foundation=True, band=DEFAULT_S_BAND, coverage=coverage, checks=checks,
        corrected=corrected,
    )
)
marks.append(time.process_time())
# Not part of the command: S, R and sigma_bar alone (the reference pipeline's work), warm.
every_set = metrics.feature_sets
metrics.feature_sets = lambda: ()
metrics_by_name(runs, Bootstrap())
metrics.feature_sets = every_set
marks.append(time.process_time())
print(json.dumps(marks))
"""

_PHASES = (
    "interpreter",
    "numpy",
    "typer+click+rich",
    "package",
    "read",
    "compute every statistic",
    "bias-corrected estimates",
    "table output",
    "(not in the command: S/R/σ̄ alone, warm)",
)


def _split(files: list[str], *, repeat: int) -> dict[str, float]:
    """CPU seconds per phase (see :data:`_PHASES`) in one fresh process, best of ``repeat``."""
    best: list[float] | None = None
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _SPLIT, *files], check=True, capture_output=True, text=True
        )
        marks = json.loads(out.stdout.strip().splitlines()[-1])
        parts = [marks[0]] + [b - a for a, b in itertools.pairwise(marks)]
        if best is None or sum(parts[:-1]) < sum(best[:-1]):
            best = parts
    return dict(zip(_PHASES, best or [], strict=True))


if __name__ == "__main__":
    sys.exit(main())
