"""Benchmark: the full estimator audit (``pcollapse audit`` with its defaults).

Usage::

    python bench/stats_bench.py [--replications N] [--max-seconds T] [--seed S]

Runs :func:`persona_collapse.stats.audit.audit_estimators` with the study protocol's
size (base, secure and insecure presets; 100 personas x 10 ratings at T = 0.1;
2000 persona + 400 rerun bootstrap draws per interval; 200 replications by
default) and prints the time it took, then the headline numbers: coverage of
the 95 % intervals for S and R (reference and corrected estimators) and the
rejection rates of the difference test under the null and for insecure vs base.
Also times the Holm-corrected difference tests of the 12 reference runs when the
reference data is present. With ``--max-seconds`` the exit status is 1 when the
audit takes longer.
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="fail above this")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    args = parser.parse_args(argv)

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
