"""One epoch of training and one evaluation pass.

Losses and counts accumulate on the device (``RunningSums``) and are read once at the end (plus,
optionally, every ``nan_check_every`` steps and when the progress bar refreshes), so the GPU is
not synchronised every step, and most steps launch no kernel for them at all. Totals are summed
over ranks, so metrics are exact under DDP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from experiments.console import EpochProgress
from experiments.device_seam import synchronize
from experiments.errors import TrainingDiverged
from experiments.running.processes import DistContext, all_reduce_sum


@dataclass(frozen=True)
class Totals:
    """Summed over every rank: loss (sum over samples), correct predictions, samples."""

    loss_sum: float
    correct: float
    count: float

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count

    @property
    def accuracy(self) -> float:
        """Percent."""
        return 100.0 * self.correct / self.count


class RunningSums:
    """An epoch's running totals on the device: the loss summed over samples, the correct
    predictions, the samples (counted on the host: an exact integer) and the sum of the steps'
    lrs, without a kernel of their own on most steps.

    ``add`` only keeps references to the step's loss, logits and labels (the loaders never
    overwrite a batch they handed out); every ``FOLD_EVERY`` steps, when the batch shape
    changes, and before the totals are read, the kept steps are folded in by a few batched ops.
    The fold computes exactly what adding step by step computed: each step's float32
    ``loss * scale`` in float64, accumulated in order (a cumulative sum that starts from the
    running total), and exact integer counts. An lr that is a float is added on the host; an
    lr on the device (HD) is folded like the losses.
    """

    FOLD_EVERY = 64

    def __init__(self, start: PartialEpoch, device: torch.device) -> None:
        loss_sum, correct, count = start.sums
        self.loss_total = torch.tensor([loss_sum], dtype=torch.float64, device=device)
        self.correct_total = torch.tensor([correct], dtype=torch.float64, device=device)
        self.count = float(count)
        self.lr_total: float | Tensor = start.lr_sum
        self._losses: list[Tensor] = []
        self._logits: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._scale = 1
        self._lrs: list[Tensor] = []

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor, scale: int = 1) -> None:
        """One step: ``loss * scale`` is the step's loss summed over its samples."""
        if self._logits and (scale != self._scale or logits.shape != self._logits[0].shape):
            self.fold()
        self._losses.append(loss)
        self._logits.append(logits)
        self._labels.append(labels)
        self._scale = scale
        self.count += labels.shape[0]
        if len(self._logits) >= self.FOLD_EVERY:
            self.fold()

    def add_lr(self, lr: float | Tensor) -> None:
        if isinstance(lr, Tensor):
            self._lrs.append(lr)
            return
        if self._lrs:
            self.fold()
        self.lr_total = self.lr_total + lr

    @torch.no_grad()
    def fold(self) -> None:
        if self._logits:
            predictions = torch.stack(self._logits).argmax(dim=-1)
            correct = (predictions == torch.stack(self._labels)).sum()
            self.correct_total = self.correct_total + correct
            step_sums = (torch.stack(self._losses) * self._scale).double()
            self.loss_total = _in_order(self.loss_total, step_sums)
            self._losses, self._logits, self._labels = [], [], []
        if self._lrs:
            start = self.lr_total
            if not isinstance(start, Tensor):
                start = torch.tensor([start], dtype=torch.float64, device=self._lrs[0].device)
            self.lr_total = _in_order(start.reshape(1), torch.stack(self._lrs).double())
            self._lrs = []

    def loss_sum(self) -> Tensor:
        self.fold()
        return self.loss_total[0]

    def values(self) -> tuple[list[float], float]:
        """([loss sum, correct, count], lr sum) of this rank, on the host (a synchronisation)."""
        self.fold()
        sums = torch.cat([self.loss_total, self.correct_total]).tolist()
        return [*sums, self.count], float(self.lr_total)

    def totals(self, ctx: DistContext) -> Totals:
        """The totals summed over every rank (a collective under several processes)."""
        self.fold()
        count = torch.tensor([self.count], dtype=torch.float64, device=self.loss_total.device)
        return _totals(torch.cat([self.loss_total, self.correct_total, count]), ctx)


def _in_order(total: Tensor, values: Tensor) -> Tensor:
    """``total`` [1] + values[0] + values[1] + ..., added one after the other (a cumulative
    sum runs through its input in order), as a [1] tensor."""
    return torch.cat([total, values]).cumsum(0)[-1:]


def _totals(sums: Tensor, ctx: DistContext) -> Totals:
    all_reduce_sum(sums, ctx)
    loss_sum, correct, count = sums.tolist()
    return Totals(loss_sum, correct, count)


def _check_finite_everywhere(loss_sum: Tensor, ctx: DistContext, where: str) -> None:
    # Collective, so every rank stops together instead of leaving the others in an all_reduce.
    bad = (~torch.isfinite(loss_sum)).double().reshape(1)
    if all_reduce_sum(bad, ctx).item() > 0:
        raise TrainingDiverged(f"the training loss became non-finite {where}")


@dataclass(frozen=True)
class PartialEpoch:
    """This rank's place in an epoch that was stopped between two optimizer steps: the batches
    already trained and the running sums the rest of the epoch adds to (this rank's own, not
    yet summed over ranks), so a resumed epoch ends with the very same numbers."""

    batch: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, correct, count
    lr_sum: float = 0.0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, object]) -> PartialEpoch:
        return cls(
            batch=int(state["batch"]),
            sums=[float(v) for v in state["sums"]],
            lr_sum=float(state["lr_sum"]),
            seconds=float(state["seconds"]),
        )


@dataclass(frozen=True)
class TrainResult:
    totals: Totals | None  # None when the epoch was stopped (see ``stopped``)
    steps: int
    seconds: float
    lr_mean: float  # the mean over the epoch's steps of the lr each step ended with
    stopped: PartialEpoch | None = None  # where a stop request ended the epoch early


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: Optimizer,
    schedule: LRScheduler,
    *,
    autocast: Callable[[], AbstractContextManager[object]],
    device: torch.device,
    ctx: DistContext,
    progress: EpochProgress,
    channels_last: bool = False,
    nan_check_every: int = 0,
    first_step: int = 0,
    resume: PartialEpoch | None = None,
    stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Forward, backward, ``optimizer.step()`` and ``schedule.step()`` for every batch.

    Starts with ``schedule.train_mode(model)`` (a schedule may move the parameters there).
    ``resume``: the epoch was stopped there; ``batches`` must start at ``resume.batch`` (the
    loader skips what was trained). ``stop(batch)`` is asked before every batch; when it says
    yes the epoch ends at once and ``TrainResult.stopped`` holds where (a collective under
    several processes: it must be called at the same batches on every rank).
    """
    schedule.train_mode(model)
    resume = resume or PartialEpoch()
    sums = RunningSums(resume, device)
    steps = resume.batch
    start = time.perf_counter() - resume.seconds
    for images, labels in batches:
        if stop is not None and stop(steps):
            synchronize(device)
            values, lr_sum = sums.values()
            partial = PartialEpoch(steps, values, lr_sum, time.perf_counter() - start)
            return TrainResult(
                None, steps, partial.seconds, partial.lr_sum / max(steps, 1), partial
            )
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        sums.add(loss, logits, labels, scale=labels.shape[0])
        sums.add_lr(schedule.step_lr())  # an lr on the device stays there (no sync)
        steps += 1
        progress.advance()
        if nan_check_every and steps % nan_check_every == 0:
            _check_finite_everywhere(sums.loss_sum(), ctx, f"at step {first_step + steps}")
        if progress.wants_refresh:
            (loss_sum, correct, count), _ = sums.values()
            elapsed = time.perf_counter() - start
            progress.refresh(
                loss_sum / count,
                100.0 * correct / count,
                schedule.lr,
                count * ctx.world_size / elapsed,
            )
    synchronize(device)
    seconds = time.perf_counter() - start
    totals = sums.totals(ctx)
    return TrainResult(totals, steps, seconds, float(sums.lr_total) / max(steps, 1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    autocast: Callable[[], AbstractContextManager[object]],
    device: torch.device,
    ctx: DistContext,
    channels_last: bool = False,
) -> Totals:
    """Loss and accuracy over this rank's shard, summed over every rank (each sample once)."""
    model.eval()
    sums = RunningSums(PartialEpoch(), device)
    for images, labels in batches:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        sums.add(F.cross_entropy(logits.float(), labels, reduction="sum"), logits, labels)
    return sums.totals(ctx)
