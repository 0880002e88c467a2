"""Benchmark: the first five minutes (issue 10.11-10.12).

Usage::

    python bench/demo_bench.py [--fresh] [--max-personas N] [--workdir DIR]

Prints the time from the start to the demo's printed headline, the size of the
environment it ran in, and the time of a no-op re-render (``pcollapse study report``
with nothing new to collect) and of a no-op ``pcollapse study run`` (targets:
headline within 90 s from a fresh clone, venv under 400 MB, no-op re-render within
5 s). Both reuse the cached analysis and draw no figure.

Without ``--fresh`` the demo runs with the ``pcollapse`` of this interpreter's
environment. With ``--fresh`` the repository is cloned into the work folder and
``make demo`` runs there (creating ``.venv`` with the core and the report extra
from the package index; needs network access), which is what a new user does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    return total


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``cmd``; return its wall time (s) and output; exit on failure."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the three figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="clone and `make demo` (network)")
    parser.add_argument("--max-personas", type=int, default=None, help="smaller demo (tests)")
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pcollapse-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    extra = [] if args.max_personas is None else ["--max-personas", str(args.max_personas)]
    if args.fresh:
        clone = work / "clone"
        shutil.rmtree(clone, ignore_errors=True)
        start = time.perf_counter()
        timed(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], work)
        _, printed = timed(["make", "demo"], clone)
        headline_s = time.perf_counter() - start
        venv = clone / ".venv"
        pcollapse = venv / "bin" / "pcollapse"
        demo_dir = clone / "pcollapse-demo"
    else:
        pcollapse = Path(sys.executable).with_name("pcollapse")
        demo_dir = work / "demo"
        cmd = [str(pcollapse), "demo", "--output", str(demo_dir), "--no-progress", "--force"]
        headline_s, printed = timed([*cmd, *extra], work)
        venv = Path(sys.prefix)
    if "Headline: demo" not in printed:
        sys.exit("the demo printed no headline:\n" + printed)
    study = str(demo_dir / "study.yaml")
    timed([str(pcollapse), "study", "report", study], work)  # fills the figure cache
    cpu_before = children_cpu()
    noop_s, _ = timed([str(pcollapse), "study", "report", study], work)
    noop_cpu = children_cpu() - cpu_before
    run_s, _ = timed([str(pcollapse), "study", "run", "--no-progress", study], work)
    run_cpu = children_cpu() - cpu_before - noop_cpu
    how = "fresh clone" if args.fresh else "installed"
    print(f"start to demo headline: {headline_s:.1f} s ({how})")
    print(f"environment size: {folder_size(venv) / 1e6:.0f} MB ({venv})")
    print(f"no-op re-render (study report): {noop_s:.1f} s ({noop_cpu:.1f} s CPU)")
    print(f"no-op study run (nothing to collect): {run_s:.1f} s ({run_cpu:.1f} s CPU)")
    # Wall times grow with whatever else loads the machine; the load says how much did.
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
