"""CPU time of the CLI's help screens (target: each <= 0.30 s CPU on the 2-core dev machine).

Each command runs in a fresh process; the figure is the child's user + system CPU
time (``getrusage(RUSAGE_CHILDREN)``), which does not grow when other work loads the
machine the way wall time does. The best of ``--repeat`` runs is printed, with the
median, and the heavy modules the process imported (there should be none).

    python bench/startup_bench.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("metrics", "--help"),
    ("study", "run", "--help"),
)
TARGET_CPU_S = 0.30
HEAVY = ("pandas", "matplotlib", "openai", "fastapi", "torch", "transformers", "pyarrow", "scipy")

_PROBE = (
    "import sys\n"
    "sys.argv = ['pcollapse', *sys.argv[1:]]\n"
    "try:\n"
    "    from persona_collapse.cli import main\n"
    "    code = main()\n"
    "finally:\n"
    f"    heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
    "    sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    "sys.exit(code)\n"
)


def _cpu_of(argv: list[str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (best is kept)")
    args = parser.parse_args()
    worst = 0.0
    print(f"{'command':<28} {'best CPU s':>10} {'median':>8}  heavy modules")
    for command in COMMANDS:
        runs = [_cpu_of([sys.executable, "-c", _PROBE, *command]) for _ in range(args.repeat)]
        cpus = [cpu for cpu, _ in runs]
        best = min(cpus)
        worst = max(worst, best)
        heavy = runs[-1][1] or "none"
        label = "pcollapse " + " ".join(command)
        print(f"{label:<28} {best:>10.3f} {statistics.median(cpus):>8.3f}  {heavy}")
    verdict = "meets" if worst <= TARGET_CPU_S else "misses"
    print(f"slowest help screen: {worst:.3f} s CPU ({verdict} the {TARGET_CPU_S:.2f} s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
