"""Write the studies beyond the paper from their runs: the horizon study's and the tuning study's
tables, figures and a README.md of what they show (scripts/analysis/study_report.py).

    python -m scripts.studies --runs results/runs \\
        --experiments study/horizons/digits study/tuning/digits --out results/local/quick/studies

``--experiments`` takes experiment names or prefixes (``study`` takes every study); runs are
read as ``python -m scripts.aggregate`` reads them, failed and unfinished ones listed, never used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.analysis.runs import NoRunsError, RunSet, load_runs, matches_experiment
from scripts.analysis.study_report import write_studies


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument(
        "--experiments", nargs="+", default=["study"], help="experiments (or prefixes) to read"
    )
    parser.add_argument("--out", type=Path, required=True, help="e.g. results/local/quick/studies")
    return parser.parse_args(argv)


def selected(runs: RunSet, prefixes: Sequence[str]) -> RunSet:
    """The runs of experiments under any of ``prefixes``."""
    keep = runs.runs["experiment"].map(lambda e: any(matches_experiment(e, p) for p in prefixes))
    if not keep.any():
        found = sorted(set(runs.runs["experiment"]))
        raise NoRunsError(f"no runs of {list(prefixes)}; experiments found: {found}")
    return runs.subset(runs.runs.loc[keep, "run_id"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = selected(load_runs(args.runs), args.experiments)
        paths = write_studies(runs, args.out)
    except (NoRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(runs.runs)} runs -> {len(paths)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
