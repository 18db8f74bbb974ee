"""Draw the figures: the theory figures (no runs needed), every figure the runs allow, or only
the performance profile and lr-sensitivity figures.

    python -m scripts.figures theory --out results/local/paper/figures [--iterations 4000] \\
        [--seed 0]
    python -m scripts.figures curves --runs results/runs --experiment paper \\
        --out results/local/paper/figures
    python -m scripts.figures summary --runs results/runs --experiment ablation/lr_sensitivity \\
        --out results/local/quick/lr_sensitivity/figures

``curves`` draws the per-task training curves (validation beside test where runs hold out a
validation split), the fixed-lr angle study and AutoDrop's measurement trace, then what
``summary`` draws (the performance profiles: over the IQM, and over time to the validation
target from 3 tasks on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.analysis.figures.curves import make_all_figures
from scripts.analysis.figures.summary import make_summary_figures
from scripts.analysis.figures.theory import make_theory_figures
from scripts.analysis.runs import NoRunsError, load_runs
from scripts.analysis.time_to_target import TARGETS_FILE, load_targets


def _from_runs(args: argparse.Namespace) -> list[Path]:
    targets = load_targets(args.targets)
    if args.figures == "curves":
        return make_all_figures(args.runs, args.out, experiment=args.experiment, targets=targets)
    runs = load_runs(args.runs, experiment=args.experiment).finished()
    return make_summary_figures(runs, args.out, targets=targets) if not runs.runs.empty else []


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="figures", required=True, metavar="FIGURES")
    theory = commands.add_parser("theory", help="NQM (Figs. 1-2) and velocity model (Figs. 4-5)")
    theory.add_argument("--out", type=Path, default=Path("results/local/quick/figures"))
    theory.add_argument("--iterations", type=int, default=4000)
    theory.add_argument("--seed", type=int, default=0)
    for name, help_text in (
        ("curves", "every figure the finished runs allow"),
        ("summary", "performance profile and lr-sensitivity figures"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
        sub.add_argument("--out", type=Path, required=True, help="e.g. results/local/quick/figures")
        sub.add_argument("--experiment", default=None, help="only experiments under this prefix")
        sub.add_argument(
            "--targets", type=Path, default=TARGETS_FILE, help="validation targets (time to target)"
        )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.figures == "theory":
        for path in make_theory_figures(args.out, iterations=args.iterations, seed=args.seed):
            print(path)
        return 0
    try:
        paths = _from_runs(args)
    except (NoRunsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(paths)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
