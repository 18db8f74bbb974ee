"""Compare schedules on one task: train what is missing, then print and write the comparison.

    python -m scripts.compare --task quick/digits --schedules autodrop,step,cosine --seeds 0-4 \\
        [--runs results/runs] [--out results/local/compare/quick/digits] [--dry-run] \\
        [-- trainer.epochs=5 ...]

(``make compare TASK=... SCHEDULES=... SEEDS=... [OUT=...] [OVERRIDES=...] [DRY_RUN=1]``.)

1. The task (an experiment preset), each schedule, the seeds and the extra overrides are
   checked first: a mistake is one line naming the value, the valid choices and the likely one,
   and nothing runs (exit 2).
2. The runner trains the grid as one ``-m`` sweep, ``python -m experiments.train -m
   experiment=<task> scheduler=<schedules> seed=<seeds> <overrides>``: finished runs are
   skipped and unfinished ones resumed (the runner decides). A failed or diverged run is
   reported and the comparison goes on with what finished. The extra overrides go to every run;
   run identity puts them in the run's label, and the comparison reads exactly those runs.
3. It prints, per schedule (the first first), the seeds that finished and the mean ± std of the
   honest number (the test error at the best validation epoch, for runs with a validation
   split) and of the paper's (the minimum test error over the epochs); then each schedule's
   paired difference to the first schedule with its 95 % interval, p values and mark
   (:mod:`scripts.analysis.statistics`; nothing is marked below 5 paired seeds).
4. It writes into ``--out`` (default ``<runs>/../local/compare/<task>``): ``tables/``
   compare_schedules and compare_paired (what was printed), table2, table2_honest and
   comparisons (as ``make tables`` writes them, for these runs only), runs.csv, as CSV and
   Markdown; ``figures/fig_task.{png,pdf}``, the per-task training curves.

Exit status: 0 when every requested run finished, 1 when some did not (the comparison is of
those that did), 2 for a refused request; a stopped runner's own status otherwise.
``--dry-run`` prints the launch, what it would train and where it would write; it trains and
writes nothing.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.config import ConfigError
from scripts.analysis.compare_request import Comparison, plan_comparison

RUNNER = ("-m", "experiments.train", "-m")
USAGE_ERROR, RUNS_MISSING = 2, 1


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The arguments before ``--`` and the extra overrides after it."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Extra overrides for every run follow --, e.g. -- trainer.epochs=5 logger=none",
    )
    parser.add_argument("--task", required=True, help="experiment preset, e.g. quick/digits")
    parser.add_argument(
        "--schedules", required=True, help="schedules, the baseline first: autodrop,step,cosine"
    )
    parser.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,1,2 (default 0-4)")
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("results/runs"),
        help="runs directory, <results>/runs (the runner's paths.results_dir is its parent)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="tables and figure (default <runs>/../local/compare/<task>)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be trained and written"
    )
    return parser.parse_args(argv)


def results_dir_of(runs: Path) -> Path:
    """The runner's ``paths.results_dir`` for a runs directory: the runner files its runs in
    ``<results_dir>/runs``."""
    if runs.name != "runs":
        raise ConfigError(
            f"--runs {runs} is invalid: the runner writes runs into <results>/runs, so the "
            "folder must be named runs (e.g. results/runs)"
        )
    return runs.parent


def dry_run(comparison: Comparison, runs_dir: Path, command: list[str], out: Path) -> None:
    """What a launch would train (as ``make status`` words it) and write; nothing is done."""
    from scripts.analysis.status import FINISHED, dry_run_lines, grid_status, scan_runs

    status = grid_status(comparison.planned_runs(), scan_runs(runs_dir))
    print(f"would launch (the runner skips finished runs): {shlex.join(command)}")
    if all(row["state"] == FINISHED for row in status):
        print(f"would train nothing: all {len(status)} requested runs finished")
    else:
        print("\n".join(dry_run_lines(status)))
    print(f"would write the comparison's tables and figure to {out}/")


def launch(command: list[str]) -> int:
    """Run the runner's sweep in the foreground (its output is the user's); its exit status."""
    print(f"launching: {shlex.join(command)}", flush=True)
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # the runner got the Ctrl-C too: let it checkpoint and stop
        return process.wait()


def compare(
    task: str,
    schedules: str,
    seeds: str = "0-4",
    runs: Path = Path("results/runs"),
    out: Path | None = None,
    overrides: Sequence[str] = (),
    dry: bool = False,
) -> int:
    """Everything ``python -m scripts.compare`` does; its exit status."""
    try:
        results = results_dir_of(runs)
        comparison = plan_comparison(task, schedules, seeds, overrides, results)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    out = out or results / "local" / "compare" / task
    command = [sys.executable, *RUNNER, *comparison.runner_overrides(results)]
    if dry:
        dry_run(comparison, runs, command, out)
        return 0
    status = launch(command)
    if status not in (0, 1):  # 1: a job did not finish; anything else stopped the sweep
        print(
            f"error: the runner stopped with exit status {status}: nothing compared",
            file=sys.stderr,
        )
        return status
    return report(comparison, runs, out)


def report(comparison: Comparison, runs_dir: Path, out: Path) -> int:
    """Print the comparison of the finished runs and write its outputs; the exit status."""
    from scripts.analysis import compare as cmp
    from scripts.analysis.runs import NoRunsError, load_runs

    try:
        found = cmp.requested_runs(load_runs(runs_dir, comparison.experiment), comparison)
    except NoRunsError as error:
        print(f"error: {error}", file=sys.stderr)
        return RUNS_MISSING
    left_out = cmp.not_compared(found, comparison)
    finished = found.finished()
    print()
    if left_out:
        print(f"{len(left_out)} of {len(comparison.run_ids())} runs are left out:")
        print("\n".join(left_out))
    if finished.runs.empty:
        print("error: no requested run finished: nothing to compare", file=sys.stderr)
        return RUNS_MISSING
    print(cmp.printed(cmp.schedule_table(finished, comparison)))
    print()
    print(cmp.printed(cmp.paired_table(finished, comparison)))
    written = cmp.write_outputs(finished, comparison, out)
    print(f"\n{len(written)} files in {out}/ (tables/, figures/)")
    return RUNS_MISSING if left_out else 0


def main(argv: Sequence[str] | None = None) -> int:
    own, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parse_args(own)
    return compare(
        args.task, args.schedules, args.seeds, args.runs, args.out, overrides, args.dry_run
    )


if __name__ == "__main__":
    sys.exit(main())
