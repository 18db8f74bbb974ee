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
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SYNC_HINT = "upload it later with `make wandb-sync` (or `wandb sync <run dir>/wandb/offline-run-*`)"
EPOCH_METRIC_PREFIXES = ("step", "lr", "train/*", "test/*", "time/*", "autodrop/*", "angle/*")
TRACE_STEP = "trace/step"


class NullTracker:
    """Tracking switched off (logger=none, ranks other than 0, or wandb unusable)."""

    run_id: str | None = None

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        pass

    def log_measurements(self, records: list[Mapping[str, Any]]) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


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
        return "offline", f"no W&B API key found, so this run logs offline; {SYNC_HINT}"
    return mode, None


class WandbTracker:
    """One wandb run: per-epoch records against ``epoch``, AutoDrop measurements against
    ``trace/step`` (the optimizer step of the measurement)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.run_id: str | None = run.id
        run.define_metric("epoch")
        for prefix in EPOCH_METRIC_PREFIXES:
            run.define_metric(prefix, step_metric="epoch")
        run.define_metric(TRACE_STEP)
        run.define_metric("trace/*", step_metric=TRACE_STEP)

    def _guarded(self, what: str, action: Any) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - wandb must never stop training
            log.warning(
                "wandb %s failed (%s: %s); training continues", what, type(error).__name__, error
            )

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        values = {k: v for k, v in record.items() if v is not None}
        self._guarded("log", lambda: self.run.log(values))

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

    def finish(self, status: str) -> None:
        def close() -> None:
            self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status == "finished" else 1)

        self._guarded("finish", close)


def new_run_id() -> str:
    """A fresh wandb-style run id (8 lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _init_run(mode: str, options: dict[str, Any], init_timeout_s: float) -> Any:
    import wandb

    settings = wandb.Settings(
        init_timeout=init_timeout_s, console="off", silent=True, x_disable_stats=mode != "online"
    )
    return wandb.init(mode=mode, settings=settings, **options)


def _release_failed_run() -> None:
    # A failed online init leaves its run id held by wandb's service ("run ID ... is in use"),
    # so the offline retry with the same id would fail too: shut the service down first.
    import wandb

    try:
        wandb.teardown()
    except Exception as error:  # noqa: BLE001 - the offline retry reports any lasting problem
        log.warning("wandb teardown after the failed init raised %r", error)


def start_wandb(
    logger_cfg: Mapping[str, Any],
    *,
    run_dir: Path,
    group: str,
    name: str,
    config: dict[str, Any],
    run_id: str | None,
) -> WandbTracker | NullTracker:
    """Start (or continue, given ``run_id``) the wandb run of a training run."""
    try:
        mode, reason = resolve_mode(logger_cfg.get("mode"))
    except ValueError as error:
        log.warning("%s; wandb is off for this run", error)
        return NullTracker()
    if reason:
        log.warning(reason)
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
        "tags": list(logger_cfg.get("tags") or []),
        "id": run_id or new_run_id(),
        "resume": "allow",
        "dir": str(run_dir),
        "job_type": "train",
    }
    timeout = float(logger_cfg.get("init_timeout_s", 30.0))
    try:
        return WandbTracker(_init_run(mode, options, timeout))
    except Exception as error:  # noqa: BLE001 - any failure: fall back, never crash
        if mode != "online":
            log.warning("wandb.init failed (%s); tracking is off for this run", error)
            return NullTracker()
        log.warning("wandb online init failed (%s); logging offline, %s", error, SYNC_HINT)
        _release_failed_run()
    try:
        return WandbTracker(_init_run("offline", options, timeout))
    except Exception as error:  # noqa: BLE001
        log.warning("wandb offline init failed too (%s); tracking is off for this run", error)
        return NullTracker()
