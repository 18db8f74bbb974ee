"""Rank 0's side of a run: its record files, summary.json and wandb run.

The job computes on every rank; what it has recorded so far is a ``RunState`` (restored from
checkpoints), and rank 0 turns it into the run directory through ``RunRecords``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from experiments import rundir as rd
from experiments.console import format_epoch_line
from experiments.optimizers import method_options
from experiments.provenance import hardware_description, package_versions
from experiments.run_identity import RunIdentity
from experiments.running import stopped_epoch
from experiments.running.gpu_slots import recorded_gpus
from experiments.running.stopped_epoch import StoppedEpoch
from experiments.settings import RunSettings
from experiments.tracking import NullTracker, run_identity, start_wandb

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What a checkpoint restores besides the model, optimizer and schedule."""

    epoch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    # The schedule's record stream so far (ScheduleHooks.record_stream).
    stream_records: list[dict[str, Any]] = field(default_factory=list)
    wandb_run_id: str | None = None
    elapsed_s: float = 0.0
    stopped: StoppedEpoch | None = None  # set by a mid-epoch checkpoint, cleared when done
    resumes: list[dict[str, Any]] = field(default_factory=list)  # rank 0: summary's provenance
    # Rank 0: the rounding values of the first training segment (each resume records its own).
    numerics: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> RunState:
        """What a checkpoint restores (its mid-epoch stop is restored per rank, apart)."""
        return cls(
            epoch=state["epoch"],
            step=state["step"],
            metrics=list(state["metrics"]),
            stream_records=list(state["stream_records"]),
            wandb_run_id=state["wandb_run_id"],
            elapsed_s=state["elapsed_s"],
            numerics=state.get("numerics"),
        )


@dataclass(frozen=True)
class RunFacts:
    """What the summary says of a run besides its state: fixed once the job is built."""

    steps_per_epoch: int
    device: torch.device
    world_size: int
    skipped_images: Callable[[], int]  # distinct bad image files replaced so far
    # The validation split (size, fingerprint, split seed), None under the paper's protocol.
    validation: dict[str, Any] | None = None
    signals: list[str] = field(default_factory=list)  # what the schedule reads (its ``reads``)
    metric_source: str | None = None  # the split a metric-driven schedule reads: val | test


class RunRecords:
    """The run directory's record files (metrics, the schedule's stream), its summary and the
    wandb run, written by rank 0 alone."""

    def __init__(
        self,
        settings: RunSettings,
        run_dir: rd.RunDir,
        identity: RunIdentity,
        facts: RunFacts,
        schedule: Any,
    ) -> None:
        self.settings, self.run_dir, self.identity, self.facts = settings, run_dir, identity, facts
        stream = schedule.record_stream
        self.stream_path = run_dir.stream_path(stream) if stream else None
        # What the epoch line shows of the schedule's fields (ScheduleHooks.console_fields).
        self.console_fields = schedule.console_fields
        self.tracker: Any = NullTracker()

    def summary(
        self,
        state: RunState,
        status: str,
        message: str | None,
        *,
        elapsed_s: float,
        interruption: dict[str, Any] | None,
    ) -> dict[str, Any]:
        settings, identity, facts = self.settings, self.identity, self.facts
        trainer = settings.trainer
        derived = rd.summarize_metrics(state.metrics)
        return {
            "status": status,
            "experiment": settings.experiment_name,
            "dataset": settings.data.name,
            "model": settings.model.name,
            "scheduler": identity.label,
            "scheduler_label": settings.scheduler.label,
            "scheduler_name": settings.scheduler.name,
            "scheduler_options": method_options(settings.scheduler, settings.optimizer),
            "label_settings": identity.label_settings,
            "seed": settings.seed,
            "epochs_planned": trainer.epochs,
            "epochs_done": derived["epochs_done"],
            "final_test_err": derived["final_test_err"],
            "min_test_err": derived["min_test_err"],
            "min_test_err_epoch": derived["min_test_err_epoch"],
            "min_val_err": derived["min_val_err"],
            "best_val_epoch": derived["best_val_epoch"],
            "test_err_at_best_val": derived["test_err_at_best_val"],
            "validation": facts.validation,
            "signals": facts.signals,
            "metric_source": facts.metric_source,
            "wall_time_s": elapsed_s,
            "train_time_s": derived["train_time_s"],
            "time_per_iter_s": derived["time_per_iter_s"],
            "steps_per_epoch": facts.steps_per_epoch,
            "batch_size": trainer.batch_size,
            "hardware": hardware_description(facts.device, facts.world_size),
            "world_size": facts.world_size,
            "gpus": recorded_gpus(facts.device.type, torch.cuda.device_count()),
            "versions": package_versions(),
            "git_commit": identity.code_version.get("commit"),
            "code_version": identity.code_version,
            "code_change_allowed_from": identity.code_change_from,
            "changes": identity.changes,
            "setup": identity.setup,
            "numerics": state.numerics,
            "wandb_run_id": state.wandb_run_id,
            "message": message,
            "checkpoint_cadence": {
                "every_epochs": trainer.checkpoint_every_epochs,
                "every_minutes": trainer.checkpoint_every_minutes,
                "also": "after the last epoch and on a stop signal",
            },
            "data_verify": settings.data.options.get("verify", True),
            "data_skipped_images": facts.skipped_images(),
            "interruption": interruption,
            "resumes": state.resumes,
        }

    def open(self, state: RunState, resumed: bool, numerics_change: list[str]) -> None:
        """Make the record files match the checkpoint (or start them afresh) and start wandb;
        the caller then writes the running summary. ``numerics_change``: the rounding values a
        resume changes (allowed by trainer.allow_numerics_change), recorded with it."""
        run_dir = self.run_dir
        if resumed:
            # The first segment's values, as the previous summary recorded them (when it is
            # unreadable: those of the checkpoint, restored into ``state``).
            first = (run_dir.read_summary() or {}).get("numerics")
            state.numerics = first if isinstance(first, dict) else state.numerics
            run_dir.rewrite_records(run_dir.metrics_path, state.metrics)
            if self.stream_path is not None:
                run_dir.rewrite_records(self.stream_path, state.stream_records)
            if self.identity.repair:
                log.warning(
                    "repaired %s from its checkpoint (%s): records of %d epochs rewritten",
                    run_dir.root,
                    self.identity.repair,
                    state.epoch,
                )
            else:
                log.info("resuming %s after epoch %d", run_dir.root, state.epoch)
                self._record_resume(state, numerics_change)
        else:
            state.numerics = self.identity.numerics
            run_dir.remove_stale_outputs()
            log.info("starting %s", run_dir.root)
        if self.settings.logger.name == "wandb":
            self._start_wandb(state)

    def _start_wandb(self, state: RunState) -> None:
        settings = self.settings
        config = settings.as_dict()
        self.tracker = start_wandb(
            config["logger"],
            run_dir=self.run_dir.root,
            **run_identity(
                experiment=settings.experiment_name,
                dataset=settings.data.name,
                model=settings.model.name,
                label=self.identity.label,
                schedule=settings.scheduler.name,
                seed=settings.seed,
            ),
            config=config,
            run_id=state.wandb_run_id,
        )
        state.wandb_run_id = self.tracker.run_id or state.wandb_run_id

    def _record_resume(self, state: RunState, numerics_change: list[str]) -> None:
        """Append this launch, with its rounding values, to the ``resumes`` of the previous
        summary (whose first segment's values stay the summary's ``numerics``)."""
        previous = self.run_dir.read_summary()
        resumes = (previous or {}).get("resumes")
        entry = stopped_epoch.resume_record(
            previous,
            epochs_done=state.epoch,
            step=state.step,
            stopped=state.stopped,
            world_size=self.facts.world_size,
        )
        entry["numerics"] = self.identity.numerics
        if numerics_change:
            entry["numerics_change_allowed"] = numerics_change
            log.warning(
                "resuming with other rounding values (%s): allowed by "
                "trainer.allow_numerics_change",
                "; ".join(numerics_change),
            )
        state.resumes = [*(resumes if isinstance(resumes, list) else []), entry]
        if entry["batch"]:
            log.info(
                "continuing epoch %d at batch %d of %d (step %d; previous process: %s)",
                entry["epoch"],
                entry["batch"],
                self.facts.steps_per_epoch,
                entry["step"],
                entry["reason"],
            )

    def append_epoch(
        self, state: RunState, record: dict[str, Any], measurements: list[dict[str, Any]]
    ) -> None:
        """The epoch's record (already in ``state.metrics``) and stream records, to the files
        and wandb, and its line to the log."""
        run_dir = self.run_dir
        run_dir.append_records(run_dir.metrics_path, [record])
        if self.stream_path is not None:
            run_dir.append_records(self.stream_path, measurements)
        self.tracker.log_epoch(record)
        self.tracker.log_measurements(measurements)
        epochs = self.settings.trainer.epochs
        epoch_s = [m["time/epoch_s"] for m in state.metrics]
        eta_s = (epochs - record["epoch"]) * sum(epoch_s) / len(epoch_s)
        log.info(format_epoch_line(record, epochs, eta_s, self.console_fields))
