"""One rank of a run: its process set up, the data, model, optimizer and schedule built, a
checkpoint resumed, the epochs trained (``experiments.loop``), the records written by rank 0
(``experiments.run_records``).

The running concerns are hooks this module calls: stop signals and mid-epoch stops
(``running.preemption``, ``running.stopped_epoch``), process groups and their collectives
(``running.processes``), BatchNorm over all ranks (``running.sync_batchnorm``).
"""

from __future__ import annotations

import errno
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autodrop.angles import EpochAngleTracker
from experiments import rundir as rd
from experiments.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointSchedule,
    CheckpointWriter,
    capture_rng_state,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
)
from experiments.console import (
    EpochProgress,
    configure_logging,
    detach_log_file,
    use_progress_bar,
)
from experiments.data import Loading, load_data
from experiments.data.bundle import reserved_epoch_batches
from experiments.data.validation_split import ValidationSplitError
from experiments.device_seam import synchronize
from experiments.errors import USER_ERRORS, ConfigError, TrainingDiverged, TrainingInterrupted
from experiments.loop import PartialEpoch, Totals, evaluate, train_epoch
from experiments.optimizers import build_optimizer, build_schedule
from experiments.run_identity import RunIdentity, check_resumed_setup
from experiments.run_records import RunFacts, RunRecords, RunState
from experiments.running import preemption, processes, stopped_epoch, sync_batchnorm
from experiments.running.processes import DistContext, LaunchPlan, broadcast_object
from experiments.runtime import (
    autocast_factory,
    configure_cpu_threads,
    configure_determinism,
    processes_per_node,
    seed_everything,
    select_device,
    with_device_defaults,
)
from experiments.settings import RunSettings
from models import build_model

log = logging.getLogger(__name__)

# What a write to a full disk (or past a file-size or quota limit) fails with.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def train_rank(
    plan: LaunchPlan,
    rank: int,
    local_rank: int,
    settings: RunSettings,
    run_root: str,
    identity: RunIdentity,
) -> None:
    """One rank of the run (this process, or a spawned one): device, process group, training;
    what ended it is logged once (rank 0) and raised for the entry to report."""
    run_dir = rd.RunDir(run_root)
    configure_logging(run_dir.log_path, rank)
    trainer = settings.trainer
    try:
        configure_determinism(trainer.deterministic, trainer.cudnn_benchmark)
        device = select_device(trainer.accelerator, local_rank)
        configure_cpu_threads(trainer.cpu_threads, plan.world_size)
        ctx = processes.init_process_group(plan, rank, local_rank, device.type)
        try:
            run_training(settings, run_dir, ctx, device, identity)
        finally:
            processes.destroy_process_group(plan)
    except TrainingInterrupted:
        if plan.kind == "spawn":
            return  # the parent reports it: it holds the lock and any scheduler's handler
        raise
    except (SystemExit, *USER_ERRORS):  # a requeue after our checkpoint; the user's mistakes
        raise
    except BaseException as error:
        if rank == 0:
            log.log(logging.ERROR, *_ended_by(error), exc_info=_unexpected(error))
        raise
    finally:
        detach_log_file(run_dir.log_path)


def _unexpected(error: BaseException) -> bool:
    return not isinstance(error, TrainingDiverged | KeyboardInterrupt)


def _ended_by(error: BaseException) -> tuple[str, ...]:
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C twice: the run is marked failed
        return ("stopped at once by a second Ctrl-C: the run is marked failed",)
    if isinstance(error, TrainingDiverged):
        return ("training diverged: %s", str(error))
    return ("training failed",)


def metric_source(schedule: Any, data: Any) -> str | None:
    """Which split a schedule that reads a held-out metric (``Signal.HELD_OUT_METRIC``) reads:
    the validation split when the run has one, else the test split (the paper's protocol,
    ReduceLROnPlateau on the test loss); None for a schedule that reads no held-out metric."""
    if not schedule.needs_metric:
        return None
    return rd.VAL_SPLIT if data.val is not None else rd.TEST_SPLIT


class TrainingJob:
    """Everything one rank holds for a run."""

    def __init__(
        self,
        settings: RunSettings,
        run_dir: rd.RunDir,
        ctx: DistContext,
        device: torch.device,
        identity: RunIdentity,
        signals: preemption.StopSignals | None = None,
    ) -> None:
        trainer = settings.trainer
        sharing = processes_per_node(ctx.world_size, trainer.gpu_slots // trainer.devices)
        # Resolved by the launch already (experiments.train); a no-op unless run directly.
        self.settings = settings = with_device_defaults(settings, device, sharing)
        trainer = settings.trainer
        self.run_dir, self.ctx, self.device, self.identity = run_dir, ctx, device, identity
        self.stop = preemption.StopPoll(
            signals or preemption.StopSignals(), ctx, device, trainer.stop_check_every
        )
        self.interruption: dict[str, Any] | None = None
        seed_everything(settings.seed)
        self.data = self._load_data()
        self.steps_per_epoch = len(self.data.train)
        self.model = self._build_model(self.data.num_classes)
        self.optimizer = build_optimizer(
            settings.optimizer, self.model, steps_per_epoch=self.steps_per_epoch
        )
        self.schedule = build_schedule(
            settings.scheduler,
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
        self.records = RunRecords(settings, run_dir, identity, facts, self.schedule)
        self.started = time.perf_counter()
        # Written in a background thread from a host copy; see experiments.checkpoint.
        self.checkpoint_writer = CheckpointWriter(run_dir.checkpoint_path)

    def _load_data(self) -> Any:
        """This rank's loaders. With ``data.download`` under several processes, rank 0 fetches
        while the others wait, then they read the files it wrote."""
        data, ctx = self.settings.data, self.ctx
        loading = Loading.for_rank(self.settings, self.device, ctx.rank, ctx.world_size)

        def load() -> Any:
            try:
                return load_data(
                    data.name, loading, root=data.root, image_size=data.image_size, **data.options
                )
            except ValidationSplitError as error:  # a value that only the data can refuse
                raise ConfigError(str(error)) from None

        if not (data.options.get("download") and ctx.is_distributed):
            return load()
        bundle = load() if ctx.is_main else None
        processes.barrier(ctx)
        return bundle if ctx.is_main else load()

    def _build_model(self, num_classes: int) -> nn.Module:
        """The bare model on the device (BatchNorm over all ranks if asked); checkpoints hold
        it, training runs its wrapped form (``train``)."""
        model_settings, trainer = self.settings.model, self.settings.trainer
        model = build_model(model_settings.name, num_classes, **model_settings.options)
        if trainer.sync_bn and self.ctx.is_distributed:
            # Statistics over the global batch, so 1 and N processes train the same model.
            model = sync_batchnorm.over_all_ranks(model, self.device)
        model = model.to(self.device)
        if trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

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
        self.numerics_change = check_resumed_setup(
            self.run_dir, state, self.identity, self.settings.trainer.allow_numerics_change
        )
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
        self.state = RunState.from_checkpoint(state)
        self.state.stopped = stopped_epoch.restore(state.get("stopped_epoch"), self.ctx)
        return True

    def save_checkpoint(self) -> None:
        rng_states = processes.gather_objects(capture_rng_state(), self.ctx)
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

    def summary(self, status: str, message: str | None = None) -> dict[str, Any]:
        return self.records.summary(
            self.state, status, message, elapsed_s=self.elapsed_s(), interruption=self.interruption
        )

    # ------------------------------------------------------------------------------ epochs
    def run_epoch(
        self, epoch: int, train_model: nn.Module, eval_model: nn.Module
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Train and evaluate one epoch: its metrics record and the schedule's new measurements
        (its record stream)."""
        trainer, ctx, p = self.settings.trainer, self.ctx, self.state
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
        processes.sync_buffers_from_rank0(self.model, ctx)
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
        synchronize(self.device)
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
            channels_last=self.settings.trainer.channels_last,
        )

    def stop_mid_epoch(
        self, epoch: int, position: PartialEpoch, resumed: stopped_epoch.StoppedEpoch | None
    ) -> None:
        """Save a checkpoint at ``position`` of ``epoch`` and raise TrainingInterrupted."""
        earlier = resumed.measurements if resumed else []
        self.state.stopped = stopped_epoch.StoppedEpoch(
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
        """The epoch's records; after its checkpoint the summary follows them (atomically)."""
        self.state.metrics.append(record)
        if self.ctx.is_main:
            self.records.append_epoch(self.state, record, measurements)
            self.run_dir.write_summary(self.summary(rd.RUNNING))

    def train(self) -> None:
        trainer = self.settings.trainer
        train_model = processes.data_parallel(self.model, self.device, self.ctx)
        if trainer.compile:
            train_model = compile_model(train_model)
        eval_model = compile_model(self.model) if trainer.compile else self.model
        when = CheckpointSchedule(
            trainer.checkpoint_every_epochs, trainer.checkpoint_every_minutes, trainer.epochs
        )
        try:
            for epoch in range(self.state.epoch + 1, trainer.epochs + 1):
                record, measurements = self.run_epoch(epoch, train_model, eval_model)
                self.write_epoch(record, measurements)
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


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with static shapes: one graph per batch shape, compiled once and then
    reused every epoch (a short last batch or eval batch gets its own graph instead of turning
    the model into a slower dynamic-shape graph)."""
    return torch.compile(model, dynamic=False, backend=backend)


def run_training(
    settings: RunSettings,
    run_dir: rd.RunDir,
    ctx: DistContext,
    device: torch.device,
    identity: RunIdentity,
) -> dict[str, Any] | None:
    """Train (or resume) the run of ``settings`` in ``run_dir``; rank 0 returns the summary.

    Raises TrainingDiverged on a non-finite loss (summary status "diverged"), and re-raises any
    other error after marking the summary "failed". A stop signal (``running.preemption``) ends
    training between two steps with a checkpoint and status "interrupted", then goes to the
    handler installed before ours: SystemExit when that one requeued the job (status
    "requeued"), else TrainingInterrupted.
    """
    with preemption.StopSignals() as signals:
        identity = broadcast_object(identity, ctx)  # torchrun/SLURM: rank 0 read the data
        job = TrainingJob(settings, run_dir, ctx, device, identity, signals)
        resumed = job.resume_if_possible()
        if ctx.is_main:
            job.records.open(job.state, resumed, job.numerics_change)
            run_dir.write_summary(job.summary(rd.RUNNING))
        status, message, summary = rd.FAILED, None, None
        try:
            job.train()
            status = rd.FINISHED
        except TrainingInterrupted as stop:
            job.interruption = stop.record()
            status, message, raised = preemption.hand_over(signals, stop)
            if ctx.is_main:
                log.warning("%s: %s", status, message)
            if raised is stop:
                raise
            raise raised from stop
        except TrainingDiverged as error:
            status, message = rd.DIVERGED, str(error)
            raise
        except BaseException as error:
            message = _failure_message(error, job.state.epoch)
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
                # Under srun --kill-on-bad-exit the first rank to exit non-zero ends the others:
                # none exits before rank 0 has written the summary.
                processes.barrier(ctx)
    return summary


def _failure_message(error: BaseException, epoch: int) -> str:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        message = (
            f"the disk is full ({error}): training stopped at epoch {epoch}; the records and "
            "the last good checkpoint are kept, so free some space and relaunch the same "
            "command to resume"
        )
        log.error(message)
        return message
    return f"{type(error).__name__}: {error}"
