"""Set the validation targets of time to target from reference runs (AlgoPerf's rule): per
experiment and task, the median over seeds of the reference schedule's minimum validation error.

    python -m scripts.targets --runs results/runs --experiment quick/digits          # print
    python -m scripts.targets --runs results/runs --experiment quick/digits --write  # and keep

``--write`` adds them to the targets file (``scripts/analysis/targets.yaml`` unless --targets
names another), replacing earlier targets of the same experiment and task; the tables
(``python -m scripts.aggregate``) read that file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.analysis.runs import NoRunsError, load_runs
from scripts.analysis.time_to_target import (
    REFERENCE,
    TARGETS_FILE,
    compute_targets,
    write_targets,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument("--experiment", default=None, help="only experiments under this prefix")
    parser.add_argument("--reference", default=REFERENCE, help="the reference schedule's label")
    parser.add_argument("--targets", type=Path, default=TARGETS_FILE, help="the targets file")
    parser.add_argument("--write", action="store_true", help="add them to the targets file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        targets = compute_targets(load_runs(args.runs, args.experiment), args.reference)
    except (NoRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not targets:
        print(
            f"error: no finished {args.reference!r} runs with a validation split under "
            f"{args.runs} (experiment {args.experiment or 'any'}): run them with a split first "
            "(protocol=honest)",
            file=sys.stderr,
        )
        return 2
    for target in targets:
        print(
            f"{target.experiment} {target.task}: target validation error {target.val_err:.4g} % "
            f"(median of {target.seeds} {target.reference} runs; validation split "
            f"{target.val_size}, {target.val_fingerprint})"
        )
    if args.write:
        print(f"written to {write_targets(targets, args.targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
