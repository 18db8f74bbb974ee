"""One training run on one rank: build, resume, run the epochs (rank 0 records them through
experiments.run_records).

Every rank computes; rank 0 alone writes files and talks to wandb.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from experiments import rundir as rd
from experiments import stopped_epoch
from experiments.angle_tracker import EpochAngleTracker
from experiments.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointSchedule,
    CheckpointWriter,
    capture_rng_state,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
)
from experiments.components import build_network, compile_model, wrap_for_training
from experiments.config import ConfigError
from experiments.console import EpochProgress, use_progress_bar
from experiments.data.bundle import reserved_epoch_batches
from experiments.distributed import DistContext, broadcast_object, gather_objects
from experiments.identity import rounding_differences, setup_differences
from experiments.launch import RunIdentity, numerics_remedy
from experiments.loop import PartialEpoch, Totals, TrainingDiverged, _sync, evaluate, train_epoch
from experiments.lr_method import build_optimizer, build_schedule
from experiments.preemption import StopPoll, StopSignals, TrainingInterrupted
from experiments.run_records import RunFacts, RunRecords, RunState
from experiments.runtime import (
    autocast_factory,
    processes_per_node,
    seed_everything,
    with_device_defaults,
)
from experiments.stopped_epoch import StoppedEpoch

log = logging.getLogger(__name__)

# What a write to a full disk (or past a file-size or quota limit) fails with.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _build_data(cfg: DictConfig, device: torch.device, ctx: DistContext) -> Any:
    from experiments.data import DataSettings
    from experiments.data.validation_split import ValidationSplitError

    settings = DataSettings.for_rank(cfg, device, ctx.rank, ctx.world_size)
    try:
        return _load_data(cfg, settings, ctx)
    except ValidationSplitError as error:  # a config value that only the data can refuse
        raise ConfigError(str(error)) from None


def _load_data(cfg: DictConfig, settings: Any, ctx: DistContext) -> Any:
    from experiments.data import build_data

    if not (cfg.data.download and ctx.is_distributed):
        return build_data(cfg.data.name, settings)
    # One download: rank 0 fetches while the others wait, then they read the files it wrote.
    bundle = build_data(cfg.data.name, settings) if ctx.is_main else None
    dist.barrier()
    return bundle if ctx.is_main else build_data(cfg.data.name, settings)


def metric_source(schedule: Any, data: Any) -> str | None:
    """Which split a schedule that reads a held-out metric (``Signal.HELD_OUT_METRIC``) reads:
    the validation split when the run has one, else the test split (the paper's protocol,
    ReduceLROnPlateau on the test loss); None for a schedule that reads no held-out metric."""
    if not schedule.needs_metric:
        return None
    return rd.VAL_SPLIT if data.val is not None else rd.TEST_SPLIT


def _sync_buffers_from_rank0(model: nn.Module, ctx: DistContext) -> None:
    # Under DDP each rank's BatchNorm statistics drift within a forward pass; evaluate and
    # checkpoint rank 0's, so the metrics describe the model that is saved.
    if ctx.is_distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class TrainingJob:
    """Everything one rank holds for a run."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: rd.RunDir,
        ctx: DistContext,
        device: torch.device,
        identity: RunIdentity,
        signals: StopSignals | None = None,
    ) -> None:
        sharing = processes_per_node(ctx.world_size, cfg.trainer.gpu_slots // cfg.trainer.devices)
        # Resolved by the launch already (experiments.train); a no-op unless run directly.
        cfg = with_device_defaults(cfg, device, sharing)
        self.cfg, self.run_dir, self.ctx, self.device = cfg, run_dir, ctx, device
        self.identity = identity
        self.stop = StopPoll(signals or StopSignals(), ctx, device, cfg.trainer.stop_check_every)
        self.interruption: dict[str, Any] | None = None
        trainer = cfg.trainer
        seed_everything(cfg.seed)
        self.data = _build_data(cfg, device, ctx)
        self.steps_per_epoch = len(self.data.train)
        self.model = build_network(cfg.model, trainer, self.data.num_classes, device, ctx)
        self.optimizer = build_optimizer(
            cfg.optimizer, self.model, steps_per_epoch=self.steps_per_epoch
        )
        self.schedule = build_schedule(
            cfg.scheduler,
            self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            epochs=trainer.epochs,
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.angle_tracker = (
            EpochAngleTracker(params) if trainer.track_angle and ctx.is_main else None
        )
        self.autocast = autocast_factory(trainer.precision, device)
        self.metric_source = metric_source(self.schedule, self.data)
        self.state = RunState()
        self.numerics_change: list[str] = []  # allowed differences from the resumed segment
        facts = RunFacts(
            self.steps_per_epoch,
            device,
            ctx.world_size,
            self.data.skipped_images,
            validation=self.data.validation.record() if self.data.validation else None,
            signals=sorted(signal.value for signal in self.schedule.reads),
            metric_source=self.metric_source,
        )
        self.records = RunRecords(cfg, run_dir, identity, facts, self.schedule.record_stream)
        self.started = time.perf_counter()
        # Written in a background thread from a host copy; see experiments.checkpoint.
        self.checkpoint_writer = CheckpointWriter(run_dir.checkpoint_path)

    # ----------------------------------------------------------------- checkpoint / resume
    def resume_if_possible(self) -> bool:
        # Rank 0 picks the newest checkpoint that passes the integrity check; the others read it.
        found = (
            # To the CPU: load_state_dict moves model/optimizer/schedule state to the device,
            # and RNG states must be host tensors.
            load_latest_checkpoint(self.run_dir.checkpoint_path, map_location="cpu")
            if self.ctx.is_main
            else None
        )
        chosen = broadcast_object(None if found is None else str(found[0]), self.ctx)
        if chosen is None:
            return False
        state = found[1] if found else load_checkpoint(Path(chosen), map_location="cpu")
        if Path(chosen) != self.run_dir.checkpoint_path and self.ctx.is_main:
            log.warning("resuming from the fallback checkpoint %s", chosen)
        differences = setup_differences(state.get("setup") or {}, self.identity.setup)
        if differences:
            raise ConfigError(
                f"{self.run_dir.root} holds a run with different settings "
                f"({'; '.join(differences)}): give this run another scheduler.label or "
                "experiment_name, or delete the old run"
            )
        self.numerics_change = self._check_numerics(state.get("numerics"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        rng_states = state["rng"]
        if len(rng_states) == self.ctx.world_size:
            restore_rng_state(rng_states[self.ctx.rank])
        else:
            log.warning(
                "checkpoint has RNG states of %d ranks, this job has %d: not restored",
                len(rng_states),
                self.ctx.world_size,
            )
        if self.angle_tracker is not None and state["angle_tracker"] is not None:
            self.angle_tracker.load_state_dict(state["angle_tracker"])
        self.state = RunState(
            epoch=state["epoch"],
            step=state["step"],
            metrics=list(state["metrics"]),
            stream_records=list(state["stream_records"]),
            wandb_run_id=state["wandb_run_id"],
            elapsed_s=state["elapsed_s"],
            numerics=state.get("numerics"),
        )
        self.state.stopped = stopped_epoch.restore(state.get("stopped_epoch"), self.ctx)
        return True

    def _check_numerics(self, saved: dict[str, Any] | None) -> list[str]:
        """The rounding values that differ from those of the segment that wrote the checkpoint
        (every rank reads the same one); refused unless trainer.allow_numerics_change=true. A
        repair trains nothing, so it needs no check."""
        if self.identity.repair:
            return []
        differences = rounding_differences([saved] if saved else [], self.identity.numerics)
        if differences and not self.cfg.trainer.allow_numerics_change:
            raise ConfigError(
                f"{self.run_dir.root} holds a checkpoint written with other rounding values "
                f"({'; '.join(differences)}): this launch trains nothing; {numerics_remedy()}"
            )
        return differences

    def save_checkpoint(self) -> None:
        rng_states = gather_objects(capture_rng_state(), self.ctx)
        stopped = stopped_epoch.checkpoint_entry(self.state.stopped, self.ctx)
        if not self.ctx.is_main:
            return
        p = self.state
        self.checkpoint_writer.save(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": p.epoch,
                "step": p.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": rng_states,
                "angle_tracker": self.angle_tracker.state_dict() if self.angle_tracker else None,
                "metrics": p.metrics,
                "stream_records": p.stream_records,
                "wandb_run_id": p.wandb_run_id,
                "elapsed_s": self.elapsed_s(),
                "setup": self.identity.setup,
                "code_version": self.identity.code_version,
                "numerics": self.identity.numerics,
                "stopped_epoch": stopped,
            },
        )

    def elapsed_s(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    # ----------------------------------------------------------------------- run directory
    def summary(self, status: str, message: str | None = None) -> dict[str, Any]:
        return self.records.summary(
            self.state,
            status,
            message,
            elapsed_s=self.elapsed_s(),
            interruption=self.interruption,
        )

    def open_run_directory(self, resumed: bool) -> None:
        """Rank 0: make the record files match the checkpoint, start wandb, mark running."""
        self.records.open(self.state, resumed, self.numerics_change)
        self.run_dir.write_summary(self.summary(rd.RUNNING))

    # ------------------------------------------------------------------------------ epochs
    def run_epoch(
        self, epoch: int, train_model: nn.Module, eval_model: nn.Module
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Train and evaluate one epoch: its metrics record and the schedule's new measurements
        (its record stream)."""
        trainer, ctx, p = self.cfg.trainer, self.ctx, self.state
        resumed = p.stopped if p.stopped is not None and p.stopped.epoch == epoch else None
        start = time.perf_counter() - (resumed.position.seconds if resumed else 0.0)
        self.data.train.set_epoch(epoch - 1, start_batch=resumed.position.batch if resumed else 0)
        progress = EpochProgress(
            use_progress_bar(trainer.progress, ctx.is_main),
            self.steps_per_epoch,
            epoch,
            trainer.epochs,
            past_epoch_s=[m["time/epoch_s"] for m in p.metrics],
        )
        try:
            result = train_epoch(
                train_model,
                self.data.train,
                self.optimizer,
                self.schedule,
                autocast=self.autocast,
                device=self.device,
                ctx=ctx,
                progress=progress,
                channels_last=trainer.channels_last,
                nan_check_every=trainer.nan_check_every,
                first_step=p.step,
                resume=resumed.position if resumed else None,
                stop=self.stop,
            )
        finally:
            progress.close()
        if result.stopped is not None:
            self.stop_mid_epoch(epoch, result.stopped, resumed)
        _sync_buffers_from_rank0(self.model, ctx)
        # The schedule's evaluation weights (a no-op unless it keeps its own, e.g. an average
        # with BatchNorm recomputed on batches training never reaches). They stay until the next
        # epoch's train_mode, so the checkpoint below holds them (BASELINES.md section 3.5).
        # Its time counts as training time (AlgoPerf's clock counts the preparation for an
        # evaluation, not the evaluation itself).
        preparing = time.perf_counter()
        self.schedule.eval_mode(
            self.model,
            lambda: reserved_epoch_batches(self.data.train, restore_epoch=epoch - 1),
            autocast=self.autocast,
        )
        _sync(self.device)
        train_s = result.seconds + time.perf_counter() - preparing
        val = None if self.data.val is None else self._evaluate(eval_model, self.data.val)
        test = self._evaluate(eval_model, self.data.test)
        train_loss = result.totals.mean_loss
        losses = {"train/loss": train_loss, "test/loss": test.mean_loss}
        if val is not None:
            losses["val/loss"] = val.mean_loss
        if not all(math.isfinite(loss) for loss in losses.values()):
            shown = ", ".join(f"{key}={loss}" for key, loss in losses.items())
            raise TrainingDiverged(f"non-finite loss at epoch {epoch} ({shown})")
        if self.metric_source is not None:
            self.schedule.epoch_end((val if self.metric_source == rd.VAL_SPLIT else test).mean_loss)
        else:
            self.schedule.epoch_end()
        p.epoch, p.step = epoch, p.step + result.steps
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": p.step,
            "lr": self.schedule.lr,
            "train/loss": train_loss,
            "train/acc": result.totals.accuracy,
        }
        if val is not None:
            record.update({"val/loss": val.mean_loss, "val/err": 100.0 - val.accuracy})
        record.update(
            {
                "test/loss": test.mean_loss,
                "test/err": 100.0 - test.accuracy,
                "time/epoch_s": time.perf_counter() - start,
                "time/iter_s": result.seconds / max(result.steps, 1),
                "time/train_s": train_s,
            }
        )
        earlier = resumed.measurements if resumed else []
        measurements = [*earlier, *self.schedule.pop_measurements()]
        p.stopped = None
        if self.records.stream_path is not None:
            p.stream_records.extend(measurements)
        record.update(self.schedule.epoch_fields(p.stream_records, result.lr_mean))
        if self.angle_tracker is not None:
            record["angle/epoch"] = self.angle_tracker.end_epoch()
        return record, measurements

    def _evaluate(self, eval_model: nn.Module, batches: Any) -> Totals:
        return evaluate(
            eval_model,
            batches,
            autocast=self.autocast,
            device=self.device,
            ctx=self.ctx,
            channels_last=self.cfg.trainer.channels_last,
        )

    def stop_mid_epoch(
        self, epoch: int, position: PartialEpoch, resumed: StoppedEpoch | None
    ) -> None:
        """Save a checkpoint at ``position`` of ``epoch`` and raise TrainingInterrupted."""
        earlier = resumed.measurements if resumed else []
        self.state.stopped = StoppedEpoch(
            epoch, position, [*earlier, *self.schedule.pop_measurements()]
        )
        self.save_checkpoint()
        raise TrainingInterrupted(
            self.stop.signal_name,
            self.state.step + position.batch,
            epoch,
            position.batch,
            self.steps_per_epoch,
        )

    def write_epoch(self, record: dict[str, Any], measurements: list[dict[str, Any]]) -> None:
        self.state.metrics.append(record)
        if self.ctx.is_main:
            self.records.append_epoch(self.state, record, measurements)

    def write_running_summary(self) -> None:
        """After each epoch's checkpoint: the summary follows the records (atomically)."""
        if self.ctx.is_main:
            self.run_dir.write_summary(self.summary(rd.RUNNING))

    def train(self) -> None:
        trainer = self.cfg.trainer
        train_model = wrap_for_training(self.model, trainer, self.device, self.ctx)
        eval_model = compile_model(self.model) if trainer.compile else self.model
        when = CheckpointSchedule(
            trainer.checkpoint_every_epochs, trainer.checkpoint_every_minutes, trainer.epochs
        )
        try:
            for epoch in range(self.state.epoch + 1, trainer.epochs + 1):
                record, measurements = self.run_epoch(epoch, train_model, eval_model)
                self.write_epoch(record, measurements)
                self.write_running_summary()
                # A signal that came during evaluation stops here, with a checkpoint.
                stop = epoch < trainer.epochs and self.stop.at_epoch_end()
                # Rank 0's clock decides, so every rank joins the same collectives.
                if broadcast_object(when.due(epoch), self.ctx) or stop:
                    self.save_checkpoint()
                    when.saved()
                if stop:
                    raise TrainingInterrupted(
                        self.stop.signal_name, self.state.step, epoch + 1, 0, self.steps_per_epoch
                    )
        except BaseException:
            try:  # a checkpoint write in flight still completes (it is the run's last good one)
                self.checkpoint_writer.wait()
            except OSError as error:
                log.error("the last checkpoint write failed too: %s", error)
            raise
        self.checkpoint_writer.wait()  # the run is finished only once its checkpoint is on disk


def run_training(
    cfg: DictConfig,
    run_dir: rd.RunDir,
    ctx: DistContext,
    device: torch.device,
    identity: RunIdentity,
) -> dict[str, Any] | None:
    """Train (or resume) the run of ``cfg`` in ``run_dir``; rank 0 returns the final summary.

    Raises TrainingDiverged on a non-finite loss (summary status "diverged"), and re-raises any
    other error after marking the summary "failed". A stop signal (experiments.preemption) ends
    training between two steps with a checkpoint and status "interrupted", then goes to the
    handler installed before ours: SystemExit when that one requeued the job (status
    "requeued"), else TrainingInterrupted.
    """
    signals = StopSignals().install()
    try:
        return _train_and_record(cfg, run_dir, ctx, device, identity, signals)
    finally:
        signals.restore()


def _hand_over(
    signals: StopSignals, stop: TrainingInterrupted, ctx: DistContext
) -> tuple[str, str, BaseException]:
    """(status, message, exception to raise) once the checkpoint of ``stop`` is saved."""
    outcome = signals.hand_over()
    if outcome.requeued:
        return rd.REQUEUED, f"{stop}; the scheduler requeued the job", outcome.error or stop
    if outcome.error is not None:
        return rd.INTERRUPTED, f"{stop}; not requeued: {outcome.error}", outcome.error
    return rd.INTERRUPTED, str(stop), stop


def _leave_together(ctx: DistContext) -> None:
    # After a stop, no rank exits before rank 0 has written the summary: under
    # srun --kill-on-bad-exit the first rank to exit non-zero ends the others.
    if ctx.is_distributed:
        dist.barrier()


def _train_and_record(
    cfg: DictConfig,
    run_dir: rd.RunDir,
    ctx: DistContext,
    device: torch.device,
    identity: RunIdentity,
    signals: StopSignals,
) -> dict[str, Any] | None:
    identity = broadcast_object(identity, ctx)  # torchrun/SLURM: rank 0 read the data
    job = TrainingJob(cfg, run_dir, ctx, device, identity, signals)
    resumed = job.resume_if_possible()
    if ctx.is_main:
        job.open_run_directory(resumed)
    status, message, summary = rd.FAILED, None, None
    try:
        job.train()
        status = rd.FINISHED
    except TrainingInterrupted as stop:
        job.interruption = stop.record()
        status, message, raised = _hand_over(signals, stop, ctx)
        if ctx.is_main:
            log.warning("%s: %s", status, message)
        if raised is stop:
            raise
        raise raised from stop
    except TrainingDiverged as error:
        status, message = rd.DIVERGED, str(error)
        raise
    except OSError as error:
        message = f"{type(error).__name__}: {error}"
        if error.errno in DISK_FULL_ERRNOS:
            message = (
                f"the disk is full ({error}): training stopped at epoch {job.state.epoch}; "
                "the records and the last good checkpoint are kept, so free some space and "
                "relaunch the same command to resume"
            )
            log.error(message)
        raise
    except BaseException as error:
        message = f"{type(error).__name__}: {error}"
        raise
    finally:
        if ctx.is_main:
            summary = job.summary(status, message)
            try:
                run_dir.write_summary(summary)
            except OSError as error:  # e.g. the disk is full: keep the original error
                log.error("could not write %s: %s", run_dir.summary_path, error)
            job.records.tracker.finish(status, summary)
            log.info("run %s: %s", status, run_dir.root)
        if status in (rd.INTERRUPTED, rd.REQUEUED):
            _leave_together(ctx)
    return summary
