"""Benchmark: a full persona run (100 personas x 30 items x 10 repetitions) over HTTP.

Usage::

    python bench/collect_bench.py [--mode sampling|exact] [--concurrency N]
                                  [--max-seconds T] [--ignore-n]

Starts ``serve-sim`` (no faults) in a separate process on a free loopback port,
collects the run with the ``openai`` backend (the official SDK) into a fresh
run store, and prints the wall time, ratings (or cells) per second, the
requests the server received, the token totals and the CPU time of client and
server (the wall time of an unloaded machine is about the larger of the two).
With ``--max-seconds`` the exit status is 1 when the run takes longer.
Target on a 2-core machine: the 30 000-rating sampling run in 20 s or less.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

try:
    import persona_collapse  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))

from persona_collapse.backends.openai_compat import OpenAIBackend  # noqa: E402
from persona_collapse.core.config import SamplingSettings  # noqa: E402
from persona_collapse.core.instrument import mfq30  # noqa: E402
from persona_collapse.core.personas import builtin_personas  # noqa: E402
from persona_collapse.engine.collect import RetryPolicy, run_collection  # noqa: E402
from persona_collapse.engine.pacing import Pacer  # noqa: E402
from persona_collapse.serve import FaultSettings, SimServerSettings, serve_in_process  # noqa: E402
from persona_collapse.store.sqlite import RunStore  # noqa: E402


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sampling", "exact"), default="sampling")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--personas", type=int, default=100, help="personas (max 100)")
    parser.add_argument("--ignore-n", action="store_true", help="server ignores n")
    parser.add_argument("--max-seconds", type=float, default=None, help="fail above this")
    args = parser.parse_args(argv)

    settings = SimServerSettings(faults=FaultSettings(ignore_n=args.ignore_n))
    with serve_in_process(settings) as server:
        personas = builtin_personas().head(args.personas)
        with tempfile.TemporaryDirectory() as tmp, RunStore.open(Path(tmp) / "bench.db") as store:
            backend = OpenAIBackend("simulator", base_url=server.url, api_key_env=None, timeout=30)
            started = time.perf_counter()
            client_cpu = time.process_time()
            server_cpu = process_cpu_seconds(server.process.pid)
            summary = run_collection(
                store,
                None,
                backend,
                personas,
                mfq30(),
                pacing=Pacer.create(
                    max_concurrency=args.concurrency,
                    retry=RetryPolicy(max_retries=5, initial_wait=0.05, max_wait=1.0, jitter=0.05),
                ),
                progress=False,
                protocol=SamplingSettings(repetitions=10, mode=args.mode),
            )
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - client_cpu
            server_cpu = process_cpu_seconds(server.process.pid) - server_cpu
            counts = store.counts(summary.run.run_id)
        stats = server.stats()

    unit = "cells" if args.mode == "exact" else "ratings"
    stored = counts.distributions if args.mode == "exact" else counts.slots
    usage = summary.usage
    print(f"mode:               {args.mode}{' (server ignores n)' if args.ignore_n else ''}")
    print(f"{unit + ' stored:':<20}{stored}")
    print(f"wall time:          {elapsed:.2f} s")
    print(f"{unit + ' per second:':<20}{stored / elapsed:,.0f}")
    print(f"requests sent:      {summary.requests} (server received {stats['requests']})")
    print(
        f"tokens:             {usage.prompt_tokens:,} prompt "
        f"({usage.cached_tokens:,} cached), {usage.completion_tokens:,} completion"
    )
    print(
        f"CPU time:           client {client_cpu:.1f} s, server {server_cpu:.1f} s "
        "(on a busy machine wall time exceeds the larger of the two)"
    )
    if args.max_seconds is not None and elapsed > args.max_seconds:
        print(f"FAIL: {elapsed:.2f} s > {args.max_seconds:g} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
