"""Read runs from Weights & Biases into the same RunSet the local run directories give.

Where each field comes from, first found wins:
- the W&B summary (the summary.json fields, when the runner copies them there; always 'status');
- the W&B config (the resolved Hydra config: experiment_name, data.name, model.name,
  scheduler.{name,label,...}, seed, trainer.{epochs,batch_size});
- the run's group ``<experiment>/<dataset>-<model>`` and name ``<scheduler>-s<seed>``.
History rows carrying ``epoch`` are the per-epoch records (keys as in metrics.jsonl); rows
carrying ``trace/step`` are AutoDrop measurements (``trace/omega``, ``trace/smoothed``, ...).
Pass ``api`` to read from any object with the ``wandb.Api`` interface (tests pass a fake one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from experiments.rundir import FAILED, FINISHED, RUNNING, STALE
from scripts.analysis.runs import RawRun, RunSet, build_run_set, run_id_for

TRACE_PREFIX = "trace/"
TRACE_STEP = "trace/step"
# W&B run states -> summary.json statuses, for runs whose summary lacks a status. "crashed"
# (no heartbeat, no finish) is what the local files call stale: the process died unrecorded.
_LIVE_STATES = ("running", "pending")
_STATE_TO_STATUS = {
    "finished": FINISHED,
    "running": RUNNING,
    "pending": RUNNING,
    "crashed": STALE,
    "failed": FAILED,
    "killed": FAILED,
}
_IDENTITY = ("experiment", "dataset", "model", "scheduler", "seed")
_NAME = re.compile(r"^(?P<scheduler>.+)-s(?P<seed>-?\d+)$")
_GROUP = re.compile(r"^(?P<experiment>.+)/(?P<dataset>[^/-]+)-(?P<model>[^/]+)$")


def load_runs_from_wandb(
    project: str = "autodrop-bench",
    entity: str | None = None,
    experiment: str | None = None,
    api: Any = None,
) -> RunSet:
    """All runs of ``entity/project`` (only experiments under ``experiment``) as a RunSet.

    When one run id has several W&B runs (a relaunch after a crash without checkpoint), a
    finished one wins, else the newest.
    """
    if api is None:
        api = _connect()
    path = f"{entity}/{project}" if entity else project
    try:
        wandb_runs = list(api.runs(path))
    except Exception as err:  # the client raises many types (network, auth, missing project)
        raise ValueError(f"could not list W&B runs of {path!r}: {err}") from err
    chosen: dict[str, RawRun] = {}
    for wandb_run in wandb_runs:  # oldest first, so on a tie the later one replaces
        raw = raw_run_from_wandb(wandb_run, path)
        previous = chosen.get(raw.run_id)
        if previous is None or _is_finished(raw) or not _is_finished(previous):
            chosen[raw.run_id] = raw
    return build_run_set(chosen.values(), experiment=experiment, where=f"W&B project {path}")


def raw_run_from_wandb(wandb_run: Any, path: str) -> RawRun:
    """One W&B run as a RawRun: summary fields, per-epoch records, AutoDrop measurements."""
    summary = dict(wandb_run.summary_metrics)
    fallbacks = {**_fields_from_names(wandb_run), **_fields_from_config(wandb_run.config or {})}
    for key, value in fallbacks.items():
        if summary.get(key) is None:
            summary[key] = value
    missing = [key for key in _IDENTITY if summary.get(key) is None]
    if missing:
        raise ValueError(
            f"W&B run {path}/{wandb_run.id}: neither summary nor config give {missing}, and "
            f"group/name ({wandb_run.group!r}, {wandb_run.name!r}) do not follow "
            f"'<experiment>/<dataset>-<model>' / '<scheduler>-s<seed>'"
        )
    state = str(wandb_run.state).lower()
    if not summary.get("status"):
        summary["status"] = _STATE_TO_STATUS.get(state, FAILED)
    elif summary["status"] == RUNNING and state not in _LIVE_STATES:
        summary["status"] = STALE  # says running, but W&B saw its process end
    if not summary.get("wandb_run_id"):
        summary["wandb_run_id"] = wandb_run.id
    rows = list(wandb_run.scan_history())
    identity = [summary[key] for key in _IDENTITY]
    return RawRun(
        run_id=run_id_for(*identity[:4], int(identity[4])),
        summary=summary,
        metrics=epoch_records(rows),
        trace=trace_records(rows),
        source=f"wandb:{path}/{wandb_run.id}",
    )


def epoch_records(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """History rows of per-epoch records, without W&B's own ('_step', ...) keys."""
    return [
        {key: value for key, value in row.items() if not key.startswith(("_", TRACE_PREFIX))}
        for row in rows
        if row.get("epoch") is not None
    ]


def trace_records(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """History rows of AutoDrop measurements, keyed as in autodrop.jsonl."""
    records = []
    for row in rows:
        if row.get(TRACE_STEP) is None:
            continue
        record = {
            key.removeprefix(TRACE_PREFIX): value
            for key, value in row.items()
            if key.startswith(TRACE_PREFIX)
        }
        record["dropped"] = bool(record.get("dropped") or False)  # logged as 0.0 / 1.0
        records.append(record)
    return records


def _fields_from_names(wandb_run: Any) -> dict:
    fields: dict = {}
    group = _GROUP.match(wandb_run.group or "")
    if group:
        fields.update(group.groupdict())
    name = _NAME.match(wandb_run.name or "")
    if name:
        fields.update(scheduler=name["scheduler"], seed=int(name["seed"]))
    return fields


def _fields_from_config(config: Mapping[str, Any]) -> dict:
    scheduler = config.get("scheduler") or {}
    trainer = config.get("trainer") or {}
    fields = {
        "experiment": config.get("experiment_name"),
        "dataset": (config.get("data") or {}).get("name"),
        "model": (config.get("model") or {}).get("name"),
        "scheduler": scheduler.get("label"),
        "scheduler_name": scheduler.get("name"),
        "scheduler_options": {k: v for k, v in scheduler.items() if k not in ("name", "label")},
        "seed": config.get("seed"),
        "epochs_planned": trainer.get("epochs"),
        "batch_size": trainer.get("batch_size"),
        "optimizer_lr": (config.get("optimizer") or {}).get("lr"),
    }
    return {key: value for key, value in fields.items() if value not in (None, {})}


def _is_finished(raw: RawRun) -> bool:
    return raw.summary.get("status") == "finished"


def _connect() -> Any:
    import wandb

    try:
        return wandb.Api(timeout=30)
    except Exception as err:  # no key, no network: say so instead of a traceback
        raise ValueError(f"could not connect to W&B ({err}); use --source local") from err
