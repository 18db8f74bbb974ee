"""What the entry point prints around a run: one-line errors, the run's result line, exit codes.

- A mistake of the user (a bad key or value, missing data) prints ``error: <message>`` and
  exits 2; a run that diverged or failed prints one line and exits 1. ``HYDRA_FULL_ERROR=1``
  gives Hydra's full traceback instead.
- Under ``-m`` a job never raises: its outcome (finished, skipped, diverged, failed with the
  message) is returned to Hydra, every job of the sweep runs, and ``experiments.sweep_report``
  prints the summary; the sweep exits 1 when a job did not finish.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from experiments import rundir as rd
from experiments import sweep_report
from experiments.config import ConfigError
from experiments.data.errors import DatasetUnavailableError
from experiments.loop import TrainingDiverged
from experiments.overrides import check_overrides, check_single_run
from experiments.preemption import TrainingInterrupted

log = logging.getLogger("experiments.train")

USER_ERRORS = (ConfigError, DatasetUnavailableError)
USER_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT (128 + 2)
SKIPPED = "skipped"
# Ctrl-C twice (experiments.preemption): no checkpoint of the step in flight; what is said.
STOPPED_AT_ONCE = (
    "error: stopped at once by Ctrl-C: a run in progress is marked failed and keeps its last "
    "checkpoint; relaunch the same command to resume it"
)


class TrainingFailed(RuntimeError):
    """A worker process of a multi-process run failed (its traceback is in train.log)."""


# Errors reported in one line: the user's mistakes, a run another process is training, and
# runs that ended badly (their details are in train.log and summary.json).
TRAINING_ERRORS = (TrainingDiverged, TrainingFailed)
ONE_LINE_ERRORS = (*USER_ERRORS, rd.RunLocked, rd.UnsafeRunDirectory, *TRAINING_ERRORS)


def full_errors_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def error_message(error: BaseException) -> str:
    """The error's message on one line. A message quoting a traceback (a worker process's
    error, as torch.multiprocessing reports it) is cut to the exception line it ends with."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        lines = text.partition("Traceback (most recent call last)")[2].splitlines()
        starts = [i for i, line in enumerate(lines) if line and not line[0].isspace()]
        if starts:  # the exception line, then what the message adds after the traceback
            name, sep, message = lines[starts[-1]].partition(": ")
            after = " ".join(lines[starts[-1] + 1 :])
            text = f"{name.rsplit('.', 1)[-1]}{sep}{message} {after}"
    return " ".join(text.split())


def error_line(error: BaseException) -> str:
    """``error: <message>`` on one line."""
    what = "training diverged: " if isinstance(error, TrainingDiverged) else ""
    return "error: " + what + error_message(error)


def status_of(error: BaseException) -> str:
    return rd.DIVERGED if isinstance(error, TrainingDiverged) else rd.FAILED


def finish_line(status: str, summary: dict[str, Any] | None, run_dir: Path) -> str:
    """``finished: min test err 1.67 % at epoch 21, final 2.22 %, 33 s -> <dir>``."""
    summary = summary or {}
    if summary.get("min_test_err") is None:
        return f"{status}: no epoch recorded -> {run_dir}"
    return (
        f"{status}: min test err {summary['min_test_err']:.2f} % at epoch "
        f"{summary['min_test_err_epoch']}, final {summary['final_test_err']:.2f} %, "
        f"{summary.get('wall_time_s') or 0:.0f} s -> {run_dir}"
    )


def job_outcome(run: Callable[[], Any]) -> dict[str, Any]:
    """Run one job; print its result line; return its outcome (status, message, line, and for
    a run that finished or was skipped the numbers the sweep's summary averages).

    A single run exits on an expected error (one line, exit 2 or 1); a sweep job returns it.
    """
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = run()  # an experiments.train.LaunchResult
    except TrainingInterrupted as stop:
        # Saved and logged by the run; exit as a process ended by that signal would (128 + n),
        # also from a sweep: the scheduler stopped this whole process.
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        if full_errors_wanted():
            raise
        print(STOPPED_AT_ONCE, file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except Exception as error:
        if full_errors_wanted() or not (sweeping or isinstance(error, ONE_LINE_ERRORS)):
            raise
        line = error_line(error)
        if not sweeping:
            print(line, file=sys.stderr)
            sys.exit(USER_ERROR_EXIT if isinstance(error, USER_ERRORS) else RUN_FAILED_EXIT)
        if not isinstance(error, TRAINING_ERRORS):  # the training process logged those
            log.error(line)
        return {"status": status_of(error), "message": error_message(error), "line": line}
    status = SKIPPED if result.action == rd.LaunchAction.SKIP.value else rd.FINISHED
    summary = rd.RunDir(result.run_dir).read_summary()
    line = finish_line(status, summary, result.run_dir)
    if result.note:
        line += f"; {result.note}"
    log.info(line)
    return {"status": status, "message": None, "line": line, **sweep_report.job_result(summary)}


def hydra_arguments(argv: Sequence[str]) -> Any:
    """The command line as Hydra parses it (same flags, same overrides)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(list(argv))


def main(hydra_entry: Callable[[], Any], argv: Sequence[str] | None = None) -> None:
    """Check the command line's overrides, then hand over to Hydra; exit 1 after a sweep with
    a job that did not finish."""
    arguments = hydra_arguments(sys.argv[1:] if argv is None else argv)
    if not arguments.shell_completion and not full_errors_wanted():
        try:
            check_overrides(arguments.overrides)
            if not (arguments.multirun or arguments.help or arguments.hydra_help):
                check_single_run(arguments.overrides)
        except ConfigError as error:
            print(error_line(error), file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
    sweep_report.reset()
    hydra_entry()
    if sweep_report.unfinished_jobs():
        sys.exit(RUN_FAILED_EXIT)
