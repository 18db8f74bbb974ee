"""One epoch of training and one evaluation pass.

Losses and counts accumulate on the device and are read once at the end (plus, optionally,
every ``nan_check_every`` steps and when the progress bar refreshes), so the GPU is not
synchronised every step. Totals are summed over ranks, so metrics are exact under DDP.
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
from experiments.distributed import DistContext, all_reduce_sum


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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


def _totals(sums: Tensor, ctx: DistContext) -> Totals:
    all_reduce_sum(sums, ctx)
    loss_sum, correct, count = sums.tolist()
    return Totals(loss_sum, correct, count)


def _accumulate(sums: Tensor, loss_sum: Tensor, logits: Tensor, labels: Tensor) -> None:
    sums[0] += loss_sum.detach().double()
    sums[1] += (logits.detach().argmax(dim=1) == labels).sum()
    sums[2] += labels.shape[0]


def _check_finite_everywhere(loss_sum: Tensor, ctx: DistContext, where: str) -> None:
    # Collective, so every rank stops together instead of leaving the others in an all_reduce.
    bad = (~torch.isfinite(loss_sum)).double().reshape(1)
    if all_reduce_sum(bad, ctx).item() > 0:
        raise TrainingDiverged(f"the training loss became non-finite {where}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    sums = torch.tensor(resume.sums, dtype=torch.float64, device=device)
    steps = resume.batch
    lr_sum = resume.lr_sum
    start = time.perf_counter() - resume.seconds
    for images, labels in batches:
        if stop is not None and stop(steps):
            _sync(device)
            partial = PartialEpoch(steps, sums.tolist(), float(lr_sum), time.perf_counter() - start)
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
        _accumulate(sums, loss * labels.shape[0], logits, labels)
        lr_sum = lr_sum + schedule.step_lr()  # an lr on the device stays there (no sync)
        steps += 1
        progress.advance()
        if nan_check_every and steps % nan_check_every == 0:
            _check_finite_everywhere(sums[0], ctx, f"at step {first_step + steps}")
        if progress.wants_refresh:
            loss_sum, correct, count = sums.tolist()
            elapsed = time.perf_counter() - start
            progress.refresh(
                loss_sum / count,
                100.0 * correct / count,
                schedule.lr,
                count * ctx.world_size / elapsed,
            )
    _sync(device)
    seconds = time.perf_counter() - start
    return TrainResult(_totals(sums, ctx), steps, seconds, float(lr_sum) / max(steps, 1))


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
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for images, labels in batches:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        _accumulate(sums, F.cross_entropy(logits.float(), labels, reduction="sum"), logits, labels)
    return _totals(sums, ctx)
