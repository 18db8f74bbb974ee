"""Weights & Biases logging (rank 0 only). Local files stay the source of truth: a wandb problem
is logged as a warning and never stops training.

The mode is decided before ``wandb.init`` (wandb 0.31 raises without a key and no terminal,
prompts and blocks with a terminal, and hangs up to 90 s with a key and no network): no API key
means offline; an online init has a short timeout and falls back to offline on any error.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import secrets
import shutil
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from experiments.rundir import LOG_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

SYNC_HINT = "`make wandb-sync` uploads offline runs later"
# Summarised by their minimum (the run summary of a wandb run otherwise holds the last value).
MIN_METRICS = ("test/err", "test/loss", "train/loss", "val/err", "val/loss")
TRACE_STEP = "trace/step"
# Files of the run directory uploaded with the run (at its end).
UPLOADED_FILES = (LOG_FILE, SUMMARY_FILE)


class NullTracker:
    """Tracking switched off (logger=none, ranks other than 0, or wandb unusable)."""

    run_id: str | None = None

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        pass

    def log_measurements(self, records: list[Mapping[str, Any]]) -> None:
        pass

    def finish(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        pass


def run_identity(
    *, experiment: str, dataset: str, model: str, label: str, schedule: str, seed: int
) -> dict[str, Any]:
    """wandb group, name and tags of a run. The group is task and schedule label, so wandb's
    grouped view averages the seeds of one schedule and compares schedules side by side."""
    task = f"{dataset}-{model}"
    return {
        "group": f"{experiment}/{task}/{label}",
        "name": f"{label}-s{seed}",
        "tags": [
            f"schedule:{schedule}",
            f"task:{task}",
            f"experiment:{experiment}",
            f"seed:{seed}",
        ],
    }


def wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""


def has_api_key() -> bool:
    """An API key in WANDB_API_KEY or in a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(wandb_host())
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def resolve_mode(requested: str | None) -> tuple[str, str | None]:
    """(mode, reason for a change): the config's mode, else WANDB_MODE, else online."""
    mode = requested or os.environ.get("WANDB_MODE") or "online"
    if mode == "dryrun":
        mode = "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(
            f"wandb mode {mode!r} (from logger.mode or WANDB_MODE) is invalid: allowed values "
            "are online, offline, disabled"
        )
    if mode == "online" and not has_api_key():
        return "offline", f"no W&B API key found, so this run logs offline ({SYNC_HINT})"
    return mode, None


class WandbTracker:
    """One wandb run: per-epoch records against ``epoch``, AutoDrop measurements against
    ``trace/step`` (the optimizer step of the measurement)."""

    def __init__(self, run: Any, run_dir: Path | None = None) -> None:
        self.run = run
        self.run_id: str | None = run.id
        self.run_dir = run_dir
        run.define_metric("epoch")
        for name in MIN_METRICS:
            run.define_metric(name, step_metric="epoch", summary="min")
        run.define_metric(TRACE_STEP)
        run.define_metric("trace/*", step_metric=TRACE_STEP)
        # Every field of an epoch record is plotted against "epoch", whichever fields the
        # schedule adds (ScheduleHooks.epoch_fields): each is defined when first logged.
        self.epoch_metrics = {"epoch", *MIN_METRICS}
        # What went wrong, one line each: training ignores it, an upload of records does not.
        self.failures: list[str] = []

    @property
    def offline_dir(self) -> Path | None:
        """The run's offline directory (what `wandb sync` uploads); None for an online run."""
        if not getattr(self.run, "offline", False):
            return None
        return Path(self.run.settings.sync_dir)

    def _guarded(self, what: str, action: Any) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - wandb must never stop training
            self.failures.append(f"wandb {what}: {type(error).__name__}: {error}")
            log.warning(
                "wandb %s failed (%s: %s); training continues", what, type(error).__name__, error
            )

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        values = {k: v for k, v in record.items() if v is not None}

        def log() -> None:
            for name in values.keys() - self.epoch_metrics:
                self.run.define_metric(name, step_metric="epoch")
                self.epoch_metrics.add(name)
            self.run.log(values)

        self._guarded("log", log)

    def log_measurements(self, records: list[Mapping[str, Any]]) -> None:
        def log_all() -> None:
            for record in records:
                values = {f"trace/{k}": v for k, v in record.items() if k != "step"}
                values = {
                    k: float(v) if isinstance(v, bool) else v
                    for k, v in values.items()
                    if v is not None
                }
                self.run.log({TRACE_STEP: record["step"], **values})

        self._guarded("log", log_all)

    def upload_run_files(self) -> None:
        """Copy train.log and summary.json into the wandb run, uploaded when it finishes."""
        if self.run_dir is None:
            return
        for name in UPLOADED_FILES:
            source = self.run_dir / name
            if source.is_file():
                copy = Path(self.run.dir) / name
                shutil.copyfile(source, copy)
                self.run.save(str(copy), base_path=self.run.dir, policy="end")

    def finish(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """summary.json's fields into the run summary, the run files uploaded, run closed."""

        def close() -> None:
            self.run.summary.update({**(summary or {}), "status": status})
            self._guarded("file upload", self.upload_run_files)
            self.run.finish(exit_code=0 if status == "finished" else 1)

        self._guarded("finish", close)


def new_run_id() -> str:
    """A fresh wandb-style run id (8 lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _started(run: Any, run_dir: Path, reason: str | None = None) -> WandbTracker:
    """The tracker of a run wandb.init returned; an offline run says (in one line, with the
    reason it is offline) where it went and how to upload it."""
    tracker = WandbTracker(run, run_dir)
    sync_dir = tracker.offline_dir
    if sync_dir is not None:
        why = f"{reason}; " if reason else ""
        log.info(
            "wandb: %soffline run in %s; upload it with: wandb sync %s", why, sync_dir, sync_dir
        )
    return tracker


def _init_run(mode: str, options: dict[str, Any], init_timeout_s: float) -> Any:
    import wandb

    settings = wandb.Settings(
        init_timeout=init_timeout_s, console="off", silent=True, x_disable_stats=mode != "online"
    )
    return wandb.init(mode=mode, settings=settings, **options)


def stop_wandb() -> None:
    """Stop wandb's service in this process, which first writes out (or sends) every run it
    holds: ``run.finish`` returns before an offline run's ``.wandb`` log is complete, so whoever
    reads or deletes that log in the same process calls this first (a process's exit does it).
    Also frees the run ids the service holds."""
    import wandb

    try:
        wandb.teardown()
    except Exception as error:  # noqa: BLE001 - callers report any lasting problem
        log.warning("wandb teardown raised %r", error)


def start_wandb(
    logger_cfg: Mapping[str, Any],
    *,
    run_dir: Path,
    group: str,
    name: str,
    tags: Sequence[str] = (),
    config: dict[str, Any],
    run_id: str | None,
) -> WandbTracker | NullTracker:
    """Start (or continue, given ``run_id``) the wandb run of a training run."""
    try:
        mode, reason = resolve_mode(logger_cfg.get("mode"))
    except ValueError as error:
        log.warning("%s; wandb is off for this run", error)
        return NullTracker()
    if mode == "disabled":
        return NullTracker()
    if importlib.util.find_spec("wandb") is None:
        log.warning("wandb is not installed; tracking is off for this run")
        return NullTracker()
    run_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "project": logger_cfg.get("project"),
        "entity": logger_cfg.get("entity"),
        "group": group,
        "name": name,
        "config": config,
        "tags": [*tags, *(logger_cfg.get("tags") or [])],
        "id": run_id or new_run_id(),
        "resume": "allow",
        "dir": str(run_dir),
        "job_type": "train",
    }
    timeout = float(logger_cfg.get("init_timeout_s", 30.0))
    try:
        return _started(_init_run(mode, options, timeout), run_dir, reason)
    except Exception as error:  # noqa: BLE001 - any failure: fall back, never crash
        if mode != "online":
            log.warning("wandb.init failed (%s); tracking is off for this run", error)
            return NullTracker()
        log.warning("wandb online init failed (%s); logging offline, %s", error, SYNC_HINT)
        # The failed init's run id stays held by wandb's service ("run ID ... is in use"), so
        # the offline retry with the same id would fail too: shut the service down first.
        stop_wandb()
    try:
        return _started(_init_run("offline", options, timeout), run_dir)
    except Exception as error:  # noqa: BLE001
        log.warning("wandb offline init failed too (%s); tracking is off for this run", error)
        return NullTracker()
