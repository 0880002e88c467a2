"""Benchmark: the full estimator audit (``pcollapse audit`` with its defaults).

Usage::

    python bench/stats_bench.py [--replications N] [--max-seconds T] [--seed S]

Runs :func:`persona_collapse.stats.audit.audit_estimators` with the study protocol's
size (base, secure and insecure presets; 100 personas x 10 ratings at T = 0.1;
2000 persona + 400 rerun bootstrap draws per interval; 200 replications by
default) and prints the time it took, then the headline numbers: coverage of
the 95 % intervals for S and R (reference and corrected estimators) and the
rejection rates of the difference test under the null and for insecure vs base,
then the count statistics' coverage (first preset) and null rejection rates
(``--no-counts``: S, R and σ̄ only, about 40 % less CPU).
Also, when the reference data is present, prints the CPU time (``time.process_time``,
best of ``--repeat``) of computing every registered statistic of the 12 reference runs
(per-foundation values, 2000 persona + 400 rerun draws; CSVs read beforehand), once
with all statistics and once with only S, R and σ̄ (target: 0.30 s for all), and
times the Holm-corrected difference tests of the 12 runs. With ``--max-seconds`` the
exit status is 1 when the audit takes longer; with ``--max-compute`` when the
all-statistics compute takes longer. ``--compute-only`` skips the audit.

Coverage mode (issue 16)::

    python bench/stats_bench.py --coverage [--presets base,secure,insecure]
        [--personas 50,100,200] [--reps 500] [--boot 2000] [--seed S] [--json FILE]

runs the audit once per preset and persona count (each preset is its own null
contrast: two independent runs of it on the same personas) and prints, with
Monte-Carlo SEs, the coverage of the corrected S (jackknife-t) and R (Wald)
intervals, the reference ones for comparison, the null rejection rate of the
corrected and reference difference tests (persona scheme), and the corrected S and R
coverage on each moral foundation's items (6 each), then how many of the
preset x persona-count x foundation cells lie in 93-97 %. It runs in parts: pick
presets and persona counts per call. The rerun bootstrap only feeds the reference
rows' rerun SE component, so it is kept small here (``--rerun-boot``, default 50).
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


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def coverage_mode(args: argparse.Namespace) -> int:
    """Corrected S and R coverage and null rejection, with Monte-Carlo SEs (issue 16)."""
    from persona_collapse.stats.audit import NULL_SUFFIX, mc_se, replication_warning

    def share(value: float, n: int) -> str:
        return f"{100 * value:5.1f} ± {100 * mc_se(value, n):3.1f} %"

    warning = replication_warning(args.reps)
    if warning is not None:
        print(f"warning: {warning}")
    rows = []
    foundation_cells: dict[str, list[float]] = {}
    for n_personas in (int(p) for p in _csv(args.personas)):
        for preset in _csv(args.presets):
            start = time.perf_counter()
            report = audit_estimators(
                presets=(preset,),
                replications=args.reps,
                n_personas=n_personas,
                n_persona_boot=args.boot,
                n_rerun_boot=args.rerun_boot,
                rng=args.seed,
                counts=False,  # this mode reports S and R only
            )
            elapsed = time.perf_counter() - start
            null = f"{preset}{NULL_SUFFIX} vs {preset}"
            row: dict[str, object] = {
                "preset": preset,
                "n_personas": n_personas,
                "replications": args.reps,
                "seconds": round(elapsed, 1),
            }
            parts = []
            for estimator in ("corrected", "reference"):
                for metric in ("S", "R"):
                    e = report.estimator(preset, metric, estimator)
                    row[f"{metric}_{estimator}_coverage"] = e.coverage
                    row[f"{metric}_{estimator}_coverage_mcse"] = e.coverage_mcse
                    row[f"{metric}_{estimator}_relative_bias"] = e.relative_bias
                    parts.append(f"{metric} {estimator[:4]} cov {share(e.coverage, args.reps)}")
                for metric in ("S", "R"):
                    d = report.difference(null, metric, estimator, "persona")
                    row[f"{metric}_{estimator}_null_rejection"] = d.rejection_rate
                    row[f"{metric}_{estimator}_null_rejection_mcse"] = d.rejection_mcse
                    parts.append(
                        f"{metric} {estimator[:4]} null rej {share(d.rejection_rate, args.reps)}"
                    )
            scoped: dict[str, dict[str, float]] = {}
            for f in report.foundations:
                if f.preset == preset and f.estimator == "corrected" and f.metric in ("S", "R"):
                    scoped.setdefault(f.scope, {})[f.metric] = f.coverage
                    scoped[f.scope][f"{f.metric}_mcse"] = f.coverage_mcse
                    foundation_cells.setdefault(f.metric, []).append(f.coverage)
            row["foundations_corrected_coverage"] = scoped
            rows.append(row)
            print(f"{preset:8s} P={n_personas:3d} reps={args.reps} ({elapsed:.0f} s)")
            for k in range(0, len(parts), 4):
                print("    " + ";  ".join(parts[k : k + 4]))
            for scope, cov in scoped.items():
                print(
                    f"    {scope:22s} S corr cov {share(cov['S'], args.reps)};  "
                    f"R corr cov {share(cov['R'], args.reps)}"
                )
            sys.stdout.flush()
    for metric, values in foundation_cells.items():
        inside = sum(0.93 <= v <= 0.97 for v in values)
        print(
            f"per-foundation corrected {metric}: {inside} of {len(values)} cells in 93-97 %, "
            f"range {100 * min(values):.1f}-{100 * max(values):.1f} %"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


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
    parser.add_argument(
        "--no-counts", action="store_true", help="audit S, R and σ̄ only (no count statistics)"
    )
    parser.add_argument("--coverage", action="store_true", help="coverage mode (issue 16)")
    parser.add_argument("--presets", default="base,secure,insecure", help="coverage mode")
    parser.add_argument("--personas", default="50,100,200", help="coverage mode")
    parser.add_argument("--reps", type=int, default=500, help="coverage mode")
    parser.add_argument("--boot", type=int, default=2000, help="coverage mode")
    parser.add_argument("--rerun-boot", type=int, default=50, help="coverage mode")
    parser.add_argument("--json", type=Path, default=None, help="coverage mode: write rows")
    args = parser.parse_args(argv)
    if args.coverage:
        return coverage_mode(args)

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
    report = audit_estimators(
        replications=args.replications, rng=args.seed, counts=not args.no_counts
    )
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
    from persona_collapse.stats.audit import NULL_SUFFIX

    moments = {"S", "R", "sigma_bar"}
    for row in report.estimators:
        if row.metric not in moments and row.preset == report.presets[0]:
            print(
                f"  {row.preset:8s} {row.metric:21s} bias {100 * row.relative_bias:+6.2f} %  "
                f"coverage {100 * row.coverage:5.1f} ± {100 * row.coverage_mcse:.1f} %"
            )
    for diff in report.differences:
        null = diff.contrast.startswith(f"{report.presets[0]}{NULL_SUFFIX} ")
        if diff.metric not in moments and diff.variance == "persona" and null:
            print(
                f"  {diff.contrast:20s} {diff.metric:21s} null rejected "
                f"{100 * diff.rejection_rate:5.1f} ± {100 * diff.rejection_mcse:.1f} %"
            )
    if report.no_truth:
        print(f"  no truth available: {', '.join(report.no_truth)}")
    ref = _reference_tests(args.reference)
    if ref is not None:
        print(f"reference data: Holm-corrected tests of 4 families (2000+400 draws): {ref:.2f} s")
    if args.max_seconds is not None and elapsed > args.max_seconds:
        print(f"FAIL: {elapsed:.1f} s exceeds the limit of {args.max_seconds:.1f} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
