"""Aggregate run directories (or W&B runs) into the paper's tables.

    python -m scripts.aggregate --runs results/runs --out results/local/paper --experiment paper
    python -m scripts.aggregate --source wandb --project autodrop-bench --out results/local/paper

Writes ``<out>/tables/runs.csv`` (every run), ``failed_runs.{csv,md}`` and, each as CSV,
Markdown and LaTeX: table2 (the paper's protocol), table2_honest and time_to_target (the honest
protocol, for runs with a validation split; targets from --targets), table2_vs_paper, table16,
table3, comparisons (paired statistics), iqm, lr_sensitivity and one ablation table per varied
setting. Failed, diverged and still-running runs are listed and never averaged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.analysis.report import aggregate
from scripts.analysis.runs import FINISHED, NoRunsError, RunSet, load_runs
from scripts.analysis.time_to_target import TARGETS_FILE, load_targets, untargeted_splits

SOURCES = ("local", "wandb")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument("--out", type=Path, required=True, help="output, e.g. results/local/quick")
    parser.add_argument("--experiment", default=None, help="only experiments under this prefix")
    parser.add_argument("--source", default="local", help=f"one of {', '.join(SOURCES)}")
    parser.add_argument("--project", default="autodrop-bench", help="W&B project (wandb)")
    parser.add_argument("--entity", default=None, help="W&B entity (wandb; default: yours)")
    parser.add_argument(
        "--targets", type=Path, default=TARGETS_FILE, help="validation targets (time to target)"
    )
    return parser.parse_args(argv)


def load_from_source(args: argparse.Namespace) -> RunSet:
    """The RunSet named by the command line's --source."""
    if args.source == "local":
        return load_runs(args.runs, experiment=args.experiment)
    if args.source == "wandb":
        from scripts.analysis.wandb_reader import load_runs_from_wandb

        return load_runs_from_wandb(args.project, args.entity, experiment=args.experiment)
    raise ValueError(f"--source {args.source!r} is not one of {', '.join(SOURCES)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = load_from_source(args)
        targets = load_targets(args.targets)
    except (NoRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = aggregate(runs, args.out, targets)
    finished = int((runs.runs["status"] == FINISHED).sum())
    print(f"{len(runs.runs)} runs ({finished} finished) -> {len(paths)} files in {args.out}/tables")
    for split in untargeted_splits(runs.finished().runs, targets):
        print(
            f"note: no time to target for {split}: {args.targets} has no target for this split; "
            f"write one with python -m scripts.targets --runs {args.runs} --experiment "
            f"{split.split()[0]} --write"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
