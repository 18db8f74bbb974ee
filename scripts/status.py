"""Grid status and cost: what a launch's grid has finished, what still runs, what is left, and how
long the rest will take.

    python -m scripts.status --runs results/runs --experiments quick/digits \
        --grid "scheduler=autodrop,step" --seeds 0,1,2 --gpus 2 [--dry-run]
    python -m scripts.status --launch "experiment=quick/fixed_lr" \
        --launch "experiment=quick/digits scheduler=autodrop,step seed=0,1,2"

The grid comes from the command line (the Makefile passes its own variables, see
:mod:`scripts.analysis.grid`): every --experiments x --grid launch with --seeds, and each
--launch as the runner's overrides; the states and the estimate from
:mod:`scripts.analysis.status`. Runs found outside the grid are counted per experiment below it.
``--dry-run`` lists what a launch would train and starts nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException

from scripts.analysis.grid import plan
from scripts.analysis.status import (
    count_table,
    dry_run_lines,
    grid_status,
    missing_data_lines,
    outside_grid_lines,
    saving_lines,
    scan_runs,
    summary_lines,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument("--experiments", nargs="+", default=[], help="presets, e.g. quick/digits")
    parser.add_argument(
        "--grid",
        nargs="*",
        default=[],
        help='sweeps per preset, e.g. "scheduler=hd optimizer.beta=1e-3,1e-4"',
    )
    parser.add_argument("--seeds", default=None, help="e.g. 0,1,2,3 (default: the preset's)")
    parser.add_argument(
        "--launch",
        action="append",
        default=[],
        help='one launch\'s overrides, e.g. "experiment=quick/digits scheduler=step seed=0,1" '
        "(repeatable)",
    )
    parser.add_argument("--gpus", type=int, default=1, help="devices running runs in parallel")
    parser.add_argument("--dry-run", action="store_true", help="list what a launch would train")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the launch's paths.data_dir: the dry run checks that each dataset it needs is there",
    )
    parser.add_argument(
        "--totals", action="store_true", help="only the totals (no table of runs, no listing)"
    )
    args = parser.parse_args(argv)
    if not (args.experiments or args.launch):
        parser.error("name the grid with --experiments or --launch")
    if args.gpus < 1:
        parser.error(f"--gpus {args.gpus} is invalid: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    where = f" paths.data_dir={args.data_dir}" if args.data_dir else ""
    grids = [grid + where for grid in args.grid or [""]]
    launches = [launch + where for launch in args.launch]
    try:
        planned = plan(args.experiments, grids, args.seeds, launches)
        runs = scan_runs(args.runs)
    except (ValueError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was planned", file=sys.stderr)
        return 130
    status = grid_status(planned, runs)
    if args.dry_run and not args.totals:
        print("\n".join(dry_run_lines(status) + missing_data_lines(planned, status)))
    elif not args.totals:
        print(count_table(status).to_string())
    print("\n".join(summary_lines(status, args.gpus) + saving_lines(planned, runs)))
    others = [] if args.dry_run or args.totals else outside_grid_lines(planned, runs)
    if others:
        print("\n".join(others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
