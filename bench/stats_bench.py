"""Benchmark: the full estimator audit (``pcollapse audit`` with its defaults).

Usage::

    python bench/stats_bench.py [--replications N] [--max-seconds T] [--seed S]

Runs :func:`persona_collapse.stats.audit.audit_estimators` with the study protocol's
size (base, secure and insecure presets; 100 personas x 10 ratings at T = 0.1;
2000 persona + 400 rerun bootstrap draws per interval; 200 replications by
default) and prints the time it took, then the headline numbers: coverage of
the 95 % intervals for S and R (reference and corrected estimators) and the
rejection rates of the difference test under the null and for insecure vs base.
Also, when the reference data is present, prints the CPU time (``time.process_time``,
best of ``--repeat``) of computing every registered statistic of the 12 reference runs
(per-foundation values, 2000 persona + 400 rerun draws; CSVs read beforehand), once
with all statistics and once with only S, R and σ̄ (target: 0.30 s for all), and
times the Holm-corrected difference tests of the 12 runs. With ``--max-seconds`` the
exit status is 1 when the audit takes longer; with ``--max-compute`` when the
all-statistics compute takes longer. ``--compute-only`` skips the audit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "costa2026-persona-collapse"

try:
    from persona_collapse.stats.audit import audit_estimators
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from persona_collapse.stats.audit import audit_estimators


def _reference_tests(reference: Path) -> float | None:
    """Seconds for the study-wide difference tests of the reference runs (None if absent)."""
    from persona_collapse.stats.significance import RunCells, cells_from_ratings, study_significance
    from persona_collapse.store.reference_csv import read_ratings_csv

    expected_file = reference / "expected.json"
    if not expected_file.is_file():
        return None
    expected = json.loads(expected_file.read_text())
    families: dict[str, dict[str, RunCells]] = {}
    for family, variants in expected["families"].items():
        families[family] = {}
        for variant, entry in variants.items():
            frame = read_ratings_csv(reference / entry["persona_file"])
            families[family][variant] = cells_from_ratings(
                frame["persona_id"], frame["item_id"], frame["rating"]
            )
    start = time.perf_counter()
    study_significance(families, rng=0)
    return time.perf_counter() - start


def _reference_compute(reference: Path, repeat: int) -> tuple[float, float, int] | None:
    """Best CPU seconds of the metrics of the reference runs: (all statistics, only the
    moment statistics S, R, σ̄, number of statistics); None when the data is absent."""
    from persona_collapse.stats import metrics, registry
    from persona_collapse.store.reference_csv import read_ratings_csv

    expected_file = reference / "expected.json"
    if not expected_file.is_file():
        return None
    expected = json.loads(expected_file.read_text())
    runs = []
    for variants in expected["families"].values():
        for entry in variants.values():
            frame = read_ratings_csv(reference / entry["persona_file"])
            runs.append(tuple(frame[c].to_numpy() for c in ("persona_id", "item_id", "rating")))

    def best() -> float:
        times = []
        for _ in range(max(1, repeat)):
            start = time.process_time()
            for persona_ids, item_ids, ratings in runs:
                metrics.analyze_ratings(
                    persona_ids, item_ids, ratings, n_persona_boot=2000, n_rerun_boot=400, rng=0
                )
            times.append(time.process_time() - start)
        return min(times)

    every = best()
    n_stats = len(registry.statistics())
    original = metrics.feature_sets
    metrics.feature_sets = lambda: ()  # type: ignore[assignment]
    try:
        moments = best()
    finally:
        metrics.feature_sets = original  # type: ignore[assignment]
    return every, moments, n_stats


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="fail above this")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeat", type=int, default=3, help="compute passes (best kept)")
    parser.add_argument("--max-compute", type=float, default=None, help="fail above this")
    parser.add_argument("--compute-only", action="store_true", help="skip the audit")
    args = parser.parse_args(argv)

    compute = _reference_compute(args.reference, args.repeat)
    if compute is not None:
        every, moments, n_stats = compute
        print(
            f"reference data: metrics of 12 runs (per foundation, 2000+400 draws), CPU: "
            f"{every:.3f} s with all {n_stats} statistics, {moments:.3f} s with S, R, σ̄ only"
        )
        if args.max_compute is not None and every > args.max_compute:
            print(f"FAIL: {every:.3f} s exceeds the limit of {args.max_compute:.3f} s")
            return 1
    if args.compute_only:
        return 0

    start = time.perf_counter()
    report = audit_estimators(replications=args.replications, rng=args.seed)
    elapsed = time.perf_counter() - start
    print(
        f"audit: {args.replications} replications x {len(report.presets)} presets, "
        f"{report.n_personas} personas x {report.n_repetitions} ratings, "
        f"{report.n_persona_boot}+{report.n_rerun_boot} draws: {elapsed:.1f} s"
    )
    for row in report.estimators:
        if row.metric in ("S", "R"):
            print(
                f"  {row.preset:8s} {row.metric:2s} {row.estimator:9s} "
                f"bias {100 * row.relative_bias:+5.2f} %  coverage {100 * row.coverage:5.1f} %"
            )
    for diff in report.differences:
        if diff.metric in ("S", "R") and diff.variance == "persona":
            print(
                f"  {diff.contrast:20s} {diff.metric:2s} {diff.estimator:9s} "
                f"rejected {100 * diff.rejection_rate:5.1f} %  "
                f"coverage {100 * diff.coverage:5.1f} %"
            )
    ref = _reference_tests(args.reference)
    if ref is not None:
        print(f"reference data: Holm-corrected tests of 4 families (2000+400 draws): {ref:.2f} s")
    if args.max_seconds is not None and elapsed > args.max_seconds:
        print(f"FAIL: {elapsed:.1f} s exceeds the limit of {args.max_seconds:.1f} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
