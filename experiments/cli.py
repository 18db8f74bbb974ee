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

from experiments import rundir as rd
from experiments import sweep_report
from experiments.errors import (
    USER_ERRORS,
    ConfigError,
    TrainingDiverged,
    TrainingFailed,
    TrainingInterrupted,
    error_message,
)
from experiments.overrides import check_overrides, check_single_run

log = logging.getLogger("experiments.train")

USER_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT (128 + 2)
SKIPPED = "skipped"
# Ctrl-C twice (experiments.running.preemption): no checkpoint of the step in flight; what is said.
STOPPED_AT_ONCE = (
    "error: stopped at once by Ctrl-C: a run in progress is marked failed and keeps its last "
    "checkpoint; relaunch the same command to resume it"
)


# Errors reported in one line: the user's mistakes, a run another process is training, and
# runs that ended badly (their details are in train.log and summary.json).
TRAINING_ERRORS = (TrainingDiverged, TrainingFailed)
ONE_LINE_ERRORS = (*USER_ERRORS, rd.RunLocked, rd.UnsafeRunDirectory, *TRAINING_ERRORS)


def full_errors_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


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


def _sweeping() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def failed_job(error: BaseException) -> dict[str, Any]:
    """A job that raised ``error``: a single run exits on an expected error (one line, exit 2
    or 1); a sweep job returns its outcome (status, message, line) so the sweep goes on."""
    if isinstance(error, TrainingInterrupted):
        # Saved and logged by the run; exit as a process ended by that signal would (128 + n),
        # also from a sweep: the scheduler stopped this whole process.
        sys.exit(error.exit_code)
    if isinstance(error, KeyboardInterrupt) and not full_errors_wanted():
        print(STOPPED_AT_ONCE, file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    sweeping = isinstance(error, Exception) and _sweeping()
    if (
        not isinstance(error, Exception)
        or full_errors_wanted()
        or not (sweeping or isinstance(error, ONE_LINE_ERRORS))
    ):
        raise error
    line = error_line(error)
    if not sweeping:
        print(line, file=sys.stderr)
        sys.exit(USER_ERROR_EXIT if isinstance(error, USER_ERRORS) else RUN_FAILED_EXIT)
    if not isinstance(error, TRAINING_ERRORS):  # the training process logged those
        log.error(line)
    return {"status": status_of(error), "message": error_message(error), "line": line}


def finished_job(result: Any) -> dict[str, Any]:
    """A job that finished or was skipped (an ``experiments.train.LaunchResult``): its result
    line, logged, and its outcome."""
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


def check_command_line(argv: Sequence[str]) -> None:
    """Check the command line's overrides before Hydra composes anything: a mistake prints one
    line and exits 2 (``HYDRA_FULL_ERROR=1`` leaves it to Hydra). ``--help`` is answered here
    (``print_help``)."""
    arguments = hydra_arguments(argv)
    if not arguments.shell_completion and not full_errors_wanted():
        try:
            check_overrides(arguments.overrides)
            if not (arguments.multirun or arguments.help or arguments.hydra_help):
                check_single_run(arguments.overrides)
            if arguments.help:
                print_help(arguments.overrides)
                sys.exit(0)
        except ConfigError as error:
            print(error_line(error), file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
    sweep_report.reset()


#: Hydra's own groups ``--help`` lists: those a user chooses from.
HYDRA_GROUPS_SHOWN = ("hydra/launcher", "hydra/sweeper")


def print_help(overrides: Sequence[str]) -> None:
    """Hydra's ``--help`` page (the template of ``hydra.help`` in conf/config.yaml: the config
    groups with their options, then the composed config), written without Hydra's listing of
    its config search path, which copies Hydra's whole config store once per group it lists
    (seconds): the app's groups are read from conf/, Hydra's from its loader."""
    import string

    from experiments.answer_cache import remembered
    from experiments.config import CONF_DIR
    from experiments.overrides import hydra_group_options

    template, config = remembered("help", list(overrides), lambda: _composed_help(overrides))
    app_groups = {
        str(folder.relative_to(CONF_DIR)): folder
        for folder in sorted(CONF_DIR.rglob("*"))
        if folder.is_dir()
        and any(folder.glob("*.yaml"))
        and folder.name != "hydra"
        and "hydra" not in folder.relative_to(CONF_DIR).parts
    }
    app = "".join(
        f"{group}: {', '.join(sorted(p.stem for p in folder.glob('*.yaml')))}\n"
        for group, folder in sorted(app_groups.items())
    )
    hydra = "".join(
        f"{group}: {', '.join(sorted(hydra_group_options(group)))}\n"
        for group in HYDRA_GROUPS_SHOWN
    )
    text = string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=app, HYDRA_CONFIG_GROUPS=hydra, CONFIG=config
    )
    print(text)


def _composed_help(overrides: Sequence[str]) -> list[str]:
    """The help template (``hydra.help.template``) and the composed config's YAML."""
    from omegaconf import OmegaConf, open_dict

    from experiments.config import compose_config

    cfg = compose_config(overrides, with_hydra=True)
    template = str(cfg.hydra.help.template)
    with open_dict(cfg):
        del cfg["hydra"]
    return [template, OmegaConf.to_yaml(cfg)]


def is_completion_query(argv: Sequence[str]) -> bool:
    """Whether the command line is a shell's tab-completion query (``-sc query=bash``)."""
    arguments = hydra_arguments(argv)
    return bool(arguments.shell_completion) and any(
        o.startswith("query=") for o in arguments.overrides
    )


def answer_completion(argv: Sequence[str], run_hydra: Callable[[], None]) -> None:
    """Print Hydra's answer to a completion query (``run_hydra`` computes it, composing the
    config), kept for the same line and source tree (``experiments.answer_cache``); an answer
    that lists files is computed each time."""
    import contextlib
    import io

    from experiments.answer_cache import remembered

    line = os.environ.get("COMP_LINE", "")

    def hydras_answer() -> str:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_hydra()
        return printed.getvalue()

    key = [Path(sys.argv[0]).name, list(argv), line, os.environ.get("COMP_POINT")]
    answer = remembered("completion", key, hydras_answer, keep=lambda _: not _lists_files(line))
    sys.stdout.write(answer)


def _lists_files(line: str) -> bool:
    """Whether Hydra completes the line's last word with file names (a value after ``=`` that
    starts like a path): that answer depends on the current folder."""
    if not line.strip() or line.endswith(" "):
        return False
    _, equals, value = line.split()[-1].rpartition("=")
    return bool(equals) and value.startswith((".", "/", "\\"))


def exit_after_sweep() -> None:
    """Exit 1 after a sweep with a job that did not finish."""
    if sweep_report.unfinished_jobs():
        sys.exit(RUN_FAILED_EXIT)
