"""The end-of-sweep summary: a Hydra callback (registered in conf/config.yaml) that lists every
job of a ``-m`` sweep as finished, skipped, diverged or failed, with its message, then per task
and schedule label the mean ± std over seeds of the finished and skipped jobs' test error: the
honest number (``test_err_at_best_val``, the test error at the best validation epoch) when each
of the label's runs has one, else the paper's (``min_test_err``), each line saying which. The
numbers come with each job's outcome, from its run's summary.json (:func:`job_result`).

Jobs may run in other processes (joblib, submitit), so each job's outcome is written by
``on_job_end`` into a folder of the sweep directory that ``on_multirun_start`` names; the
launching process reads them back in ``on_multirun_end``, prints the summary and removes them.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

ORDER = ("finished", "skipped", "diverged", "failed")
DONE = ("finished", "skipped")  # the jobs whose runs the per-schedule lines average
# The summary.json fields a job's outcome carries ("run"): its task and label, and its number
# under each protocol (the honest one is preferred).
RUN_KEYS = ("experiment", "dataset", "model", "scheduler")
HONEST, PAPER = "test_err_at_best_val", "min_test_err"
PROTOCOL_VALUES = {
    HONEST: "honest: test error at the best validation epoch",
    PAPER: "paper: minimum test error over the epochs",
}
_last_sweep: list[dict[str, Any]] = []


def reset() -> None:
    _last_sweep.clear()


def unfinished_jobs() -> list[dict[str, Any]]:
    """Jobs of the last sweep of this process that diverged or failed."""
    return [job for job in _last_sweep if job["status"] not in ("finished", "skipped")]


def job_result(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a job's outcome the per-schedule lines read, from its run's summary.json:
    ``{"run": {experiment, dataset, model, scheduler, test_err_at_best_val, min_test_err}}``
    ({} without a summary)."""
    if summary is None:
        return {}
    return {"run": {key: summary.get(key) for key in (*RUN_KEYS, *PROTOCOL_VALUES)}}


def outcome_of(job_return: JobReturn) -> dict[str, Any]:
    """The job's outcome: what the task function returned, or the exception it raised."""
    overrides = list(job_return.overrides or [])
    if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
        return {**job_return.return_value, "overrides": overrides}
    if job_return.status == JobStatus.COMPLETED:
        return {"status": "finished", "message": None, "overrides": overrides}
    error = job_return._return_value  # the exception; .return_value would raise it
    message = f"{type(error).__name__}: {error}"
    return {"status": "failed", "message": message, "overrides": overrides}


def format_summary(outcomes: list[dict[str, Any]]) -> str:
    """'sweep of N jobs: a finished, b skipped, ...' then one line per job, named by the
    overrides that differ between the jobs, with its result or its error message."""
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ORDER}
    lines = [
        f"sweep of {len(outcomes)} jobs: "
        + ", ".join(f"{count} {status}" for status, count in counts.items())
    ]
    shared = set.intersection(*(set(o["overrides"]) for o in outcomes)) if outcomes else set()
    width = max(len(status) for status in ORDER)
    for number, outcome in enumerate(outcomes):
        name = " ".join(o for o in outcome["overrides"] if o not in shared) or f"#{number}"
        detail = outcome.get("message") or ""
        if outcome.get("line") and outcome["status"] in ("finished", "skipped"):
            detail = outcome["line"].split(": ", 1)[-1]
        lines.append(f"  {outcome['status']:<{width}}  {name}: {detail}")
    return "\n".join(lines + schedule_lines(outcomes))


def schedule_lines(outcomes: list[dict[str, Any]]) -> list[str]:
    """Per task (``<experiment>/<dataset>-<model>``) and schedule label, in sweep order: the mean
    ± sample std over seeds of the finished and skipped jobs' number (the honest one when every
    run of the label has it, else the paper's); [] without any."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for outcome in outcomes:
        run = outcome.get("run")
        if outcome["status"] in DONE and run:
            task = f"{run['experiment']}/{run['dataset']}-{run['model']}"
            groups.setdefault(task, {}).setdefault(str(run["scheduler"]), []).append(run)
    if not groups:
        return []
    heading = (
        "test error (%) per schedule, mean ± std over seeds (n) of the finished and skipped jobs:"
    )
    lines = [heading]
    for task, labels in groups.items():
        lines.append(f"  {task}:")
        width = max(len(label) for label in labels)
        for label, runs in labels.items():
            key = HONEST if all(run.get(HONEST) is not None for run in runs) else PAPER
            values = [float(run[key]) for run in runs if run.get(key) is not None]
            if values:
                cell = mean_std(values)
                lines.append(f"    {label:<{width}}  {cell:<20}  {PROTOCOL_VALUES[key]}")
    return lines


def mean_std(values: list[float]) -> str:
    """'mean ± sample std (n)' with two decimals; no std for one value."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f} (1)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


class SweepReport(Callback):
    """Collects the outcome of each job of a sweep and prints them all at its end."""

    def __init__(self) -> None:
        self.folder: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        self.folder = str(sweep_dir / f".sweep-outcomes-{os.getpid()}-{time.time_ns()}")
        Path(self.folder).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.folder is None:  # a single run: nothing to collect
            return
        outcome = outcome_of(job_return)
        path = Path(self.folder) / f"{config.hydra.job.num}.json"
        path.write_text(json.dumps(outcome))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.folder is None:
            return
        folder = Path(self.folder)
        files = sorted(folder.glob("*.json"), key=lambda p: int(p.stem))
        outcomes = [json.loads(path.read_text()) for path in files]
        shutil.rmtree(folder, ignore_errors=True)
        _last_sweep[:] = outcomes
        print(format_summary(outcomes), flush=True)
