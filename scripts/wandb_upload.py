"""Log finished runs to Weights & Biases from their records, as if they had been logged live.

    python -m scripts.wandb_upload --runs results/runs [--experiment quick] \
        [--mode online|offline] [--project P] [--entity E] [--dry-run]

For runs trained with ``logger=none`` (or with wandb disabled, or wandb failing to start). Each
finished, complete run (``experiments.rundir.completeness_problem``) becomes one wandb run through
the live run's own code (``experiments.tracking``): the same name, group and tags
(``run_identity`` of the summary's experiment, task, label, schedule and seed); every epoch
record against ``epoch``, each followed by the schedule's stream records of that epoch against
``trace/step`` (the live order, so even wandb's ``_step`` matches); summary.json's fields in the
run summary; train.log and summary.json as files; and the recorded config
(``.hydra/config.yaml``, verbatim: its ``logger`` is the one the run was trained with, and the
settings the job resolves for its device at start, ``trainer.channels_last: null`` and
``trainer.num_workers: -1``, stay as requested where a live run shows what they became).
Project, entity and tags: the run's recorded ``logger`` settings when it was trained with
``logger=wandb``, else the wandb logger's defaults; ``--project``/``--entity`` override.

The rule that makes a second invocation a no-op: a run is uploaded only while its summary.json
has no ``wandb_run_id``. The upload records the new run's id there (before the files are sent,
so the uploaded summary.json is the local one, as a live run's is); a failed upload puts the
summary back and discards its offline directory. So a run already in W&B, whether logged live
or uploaded before, is never logged twice:

- a ``wandb_run_id`` with an unsynced offline log under ``<run>/wandb/`` (a live run without an
  API key, or an offline upload): skipped, with the ``wandb sync`` command that uploads it (that
  log is the live run itself, so it is synced, not replayed);
- a ``wandb_run_id`` and no unsynced offline log (logged online, or synced): skipped.

To log such a run again, set its ``wandb_run_id`` to null (also after a process killed in the
middle of an upload, which leaves the new id recorded). Each upload holds the run directory's
lock, so it never races a launch that repairs the run.

The mode is the live runs' rule (``tracking.resolve_mode``): ``--mode``, else WANDB_MODE, else
online; no API key means offline, and an online start that fails falls back to offline within
the logger's ``init_timeout_s``. Offline uploads end with the exact ``wandb sync`` command.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from autodrop.registry import schedule_class
from experiments import rundir as rd
from experiments import tracking
from experiments.settings import Wandb
from scripts.analysis.runs import HYDRA_CONFIG, find_run_dirs, matches_experiment

# What the summary must name for the run's wandb identity (tracking.run_identity).
IDENTITY_FIELDS = ("experiment", "dataset", "model", "scheduler", "scheduler_name", "seed")
MODES = ("online", "offline")
LOGGED, WOULD_LOG, SKIPPED, FAILED = "logged", "would be logged", "skipped", "failed"


class UploadFailed(RuntimeError):
    """wandb did not take the whole run (the reasons, one line)."""


@dataclass(frozen=True)
class Upload:
    """A run to upload, read from its run directory."""

    root: Path
    summary: dict[str, Any]
    summary_bytes: bytes  # put back as they were when the upload fails
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    stream: list[dict[str, Any]]

    @property
    def identity(self) -> dict[str, Any]:
        """The wandb group, name and tags its live run gets."""
        summary = self.summary
        return tracking.run_identity(
            experiment=summary["experiment"],
            dataset=summary["dataset"],
            model=summary["model"],
            label=summary["scheduler"],
            schedule=summary["scheduler_name"],
            seed=summary["seed"],
        )


def unsynced_offline_dirs(root: Path, run_id: str) -> list[Path]:
    """The offline directories of wandb run ``run_id`` under the run directory that `wandb sync`
    has not uploaded yet (it leaves ``run-<id>.wandb.synced`` beside a log it uploaded)."""
    logs = sorted((root / rd.WANDB_DIR).glob(f"offline-run-*/run-{run_id}.wandb"))
    return [log.parent for log in logs if not log.with_suffix(".wandb.synced").exists()]


def sync_command(offline_dirs: Sequence[Path]) -> str:
    return "wandb sync " + " ".join(shlex.quote(str(path)) for path in offline_dirs)


def read_upload(root: Path) -> Upload | str:
    """The run in ``root`` ready to upload, or why it is not (one line)."""
    problem = rd.completeness_problem(root)
    if problem is not None:
        return f"not finished: {problem}"
    summary_path = root / rd.SUMMARY_FILE
    summary_bytes = summary_path.read_bytes()
    summary = rd.read_summary(summary_path) or {}
    run_id = summary.get("wandb_run_id")
    if run_id:
        pending = unsynced_offline_dirs(root, str(run_id))
        if pending:
            return (
                f"wandb run {run_id} is in an offline log not synced yet: {sync_command(pending)}"
            )
        return f"already in W&B as run {run_id} (logged live or uploaded before)"
    missing = [key for key in IDENTITY_FIELDS if summary.get(key) is None]
    if missing:
        return f"{summary_path} lacks {missing}: its wandb name and group are unknown"
    config_path = root / HYDRA_CONFIG
    if not config_path.is_file():
        return f"{config_path} is missing: the run's config is unknown"
    try:
        # Written resolved by the runner: kept as it is, so a literal "${...}" stays a string.
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
        stream = schedule_class(str(summary["scheduler_name"])).record_stream
        metrics = rd.read_records(root / rd.METRICS_FILE)
        records = rd.read_records(root / rd.records_file(stream)) if stream else []
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as error:
        return f"{type(error).__name__}: {error}"
    return Upload(root, summary, summary_bytes, config, metrics, records)


def epochs_with_measurements(
    metrics: Sequence[Mapping[str, Any]], stream: Sequence[Mapping[str, Any]]
) -> Iterator[tuple[Mapping[str, Any], list[Mapping[str, Any]]]]:
    """Each epoch record with the stream records measured in that epoch (steps after the previous
    epoch's last step, up to its own), as a live run logs them at the end of the epoch."""
    remaining = list(stream)
    for index, record in enumerate(metrics):
        count = len(remaining)
        if index < len(metrics) - 1:
            count = next((i for i, m in enumerate(remaining) if m["step"] > record["step"]), count)
        yield record, remaining[:count]
        remaining = remaining[count:]


def logger_settings(config: Mapping[str, Any], mode: str, project: str | None, entity: str | None):
    """The logger config a live run of this run would have used, in the upload's mode."""
    recorded = config.get("logger") or {}
    settings = dict(recorded) if recorded.get("name") == "wandb" else dataclasses.asdict(Wandb())
    settings["mode"] = mode
    if project:
        settings["project"] = project
    if entity:
        settings["entity"] = entity
    return settings


def upload(run: Upload, settings: Mapping[str, Any]) -> tracking.WandbTracker:
    """Log ``run`` to wandb as its live run would have been; raise UploadFailed (with the run
    directory as it was) when wandb did not take all of it."""
    run_dir = rd.RunDir(run.root)
    tracker = tracking.start_wandb(
        settings,
        run_dir=run_dir.root,
        **run.identity,
        config=run.config,
        run_id=None,
    )
    if not isinstance(tracker, tracking.WandbTracker):
        raise UploadFailed("wandb did not start (the warning above says why)")
    summary = {**run.summary, "wandb_run_id": tracker.run_id}
    try:
        run_dir.write_summary(summary)
        for record, measurements in epochs_with_measurements(run.metrics, run.stream):
            tracker.log_epoch(record)
            tracker.log_measurements(measurements)
        tracker.finish(str(summary["status"]), summary)
        if tracker.failures:
            raise UploadFailed("; ".join(tracker.failures))
    except BaseException:
        rd.write_atomically(run_dir.summary_path, lambda f: f.write(run.summary_bytes), binary=True)
        _discard(tracker)
        raise
    return tracker


def _discard(tracker: tracking.WandbTracker) -> None:
    """Close a failed upload's wandb run and delete its offline directory, so neither this
    command nor `wandb sync` uploads a partial run."""
    try:
        tracker.run.finish(exit_code=1)
    except Exception as error:  # noqa: BLE001 - already failing; the offline dir goes anyway
        logging.getLogger(__name__).warning("closing the failed wandb run raised %r", error)
    tracking.stop_wandb()  # wandb writes the log until then
    offline_dir = tracker.offline_dir
    if offline_dir is not None and offline_dir.is_dir():
        shutil.rmtree(offline_dir)


def upload_locked(root: Path, args: argparse.Namespace, mode: str) -> tracking.WandbTracker | str:
    """Upload the run in ``root`` holding its lock (so no launch repairs it meanwhile); its
    state is read again under the lock. A string: why it was skipped."""
    try:
        with rd.RunDir(root).lock():
            run = read_upload(root)
            if isinstance(run, str):
                return run
            return upload(run, logger_settings(run.config, mode, args.project, args.entity))
    except (rd.RunLocked, rd.UnsafeRunDirectory) as error:
        return str(error)


def handle_run(root: Path, args: argparse.Namespace, mode: str) -> tuple[str, str, Path | None]:
    """(outcome, what happened to the run in one line, the offline directory it went to)."""
    if args.dry_run:
        run = read_upload(root)
        if isinstance(run, str):
            return SKIPPED, f"skip: {run}", None
        identity = run.identity
        return WOULD_LOG, f"would log as {identity['group']} / {identity['name']}", None
    try:
        outcome = upload_locked(root, args, mode)
    except UploadFailed as error:
        return FAILED, f"FAILED: {error}", None
    if isinstance(outcome, str):
        return SKIPPED, f"skip: {outcome}", None
    where = outcome.offline_dir
    if where is None:
        return LOGGED, f"uploaded as W&B run {outcome.run_id}", None
    return LOGGED, f"logged offline as wandb run {outcome.run_id} in {where}", where


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="runs directory")
    parser.add_argument("--experiment", default=None, help="only experiments under this prefix")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="default: WANDB_MODE, else online (offline without an API key)",
    )
    parser.add_argument("--project", default=None, help="W&B project (default: autodrop-bench)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.runs.is_dir():
        print(f"error: runs directory {args.runs} does not exist (--runs)", file=sys.stderr)
        return 2
    try:
        mode, reason = tracking.resolve_mode(args.mode)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if mode == "disabled":
        print(
            "error: wandb mode is disabled (WANDB_MODE=disabled): nothing would be uploaded; "
            f"pass --mode with one of {', '.join(MODES)}",
            file=sys.stderr,
        )
        return 2
    roots = [
        root
        for root in find_run_dirs(args.runs)
        if matches_experiment(
            rd.run_path_fields(root.relative_to(args.runs))["experiment"], args.experiment
        )
    ]
    print(
        f"{len(roots)} run directories under {args.runs}; wandb mode {mode}"
        + (f" ({reason})" if reason else "")
    )

    counts = dict.fromkeys((WOULD_LOG,) if args.dry_run else (LOGGED, FAILED), 0)
    counts[SKIPPED] = 0
    offline: list[Path] = []
    for root in roots:
        outcome, line, offline_dir = handle_run(root, args, mode)
        print(f"{root.relative_to(args.runs).as_posix()}: {line}")
        counts[outcome] += 1
        if offline_dir is not None:
            offline.append(offline_dir)
            if mode == "online":
                # The online start failed (the warning says why): every further run would wait
                # init_timeout_s for the same fallback.
                mode = "offline"
                print("the online start failed: the remaining runs are logged offline")
    if counts.get(LOGGED):
        tracking.stop_wandb()  # the offline logs are complete once this returns
    print(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    if offline:
        print(f"upload the offline runs with: {sync_command(offline)}")
    return 1 if counts.get(FAILED) else 0


if __name__ == "__main__":
    sys.exit(main())
