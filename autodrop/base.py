"""The contract every schedule in this package shares.

All schedules are ``torch.optim.lr_scheduler.LRScheduler`` subclasses stepped once after every
optimizer step. This mixin adds what a training loop and the results scripts need beyond
torch's API, so that neither has to know a schedule by its name:

- metadata (class attributes): ``name`` (the registry name), ``display_name``, ``colour``,
  ``paper_name``, ``tuned_setting``, ``record_stream``;
- the epoch: ``train_mode`` before every training epoch, ``eval_mode`` after it (before the
  evaluation and the routine checkpoint), ``epoch_end`` once the epoch's metric is known,
  ``pop_measurements`` and ``epoch_fields`` for the records;
- the lr: ``lr`` (a float, for records) and ``step_lr`` (the lr of the last step, without a
  host synchronisation, for per-step sums).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from torch import Tensor, nn


class ScheduleHooks:
    """Mixin: schedule metadata, epoch hooks, measurement records for loggers, current lr."""

    #: The registry name, which is also the runner's ``scheduler.name``.
    name: str
    #: How tables and figures name the schedule.
    display_name: str
    #: The schedule's colour in figures (hex).
    colour: str
    #: How the paper's own results name the schedule, when that differs from display_name.
    paper_name: str | None = None
    #: The optimizer setting a grid search tunes for this method (e.g. HD's "beta"), if any.
    tuned_setting: str | None = None
    #: The run-directory record file ``<record_stream>.jsonl`` that pop_measurements() feeds.
    record_stream: str | None = None

    #: True for schedules driven by a metric (plateau): the loop must pass it to epoch_end().
    needs_metric: bool = False

    def epoch_end(self, metric: float | None = None) -> None:
        """Called once at the end of every epoch, with the epoch's metric when needs_metric."""

    def pop_measurements(self) -> list[dict[str, Any]]:
        """Records produced since the last call (AutoDrop's per-window measurements)."""
        return []

    def epoch_fields(self, records: list[dict[str, Any]], lr_mean: float) -> dict[str, Any]:
        """Extra fields of the epoch's metrics record. ``records``: every record of this
        schedule's stream so far, this epoch's included; ``lr_mean``: the mean lr of the
        epoch's steps."""
        return {}

    def train_mode(self, model: nn.Module) -> None:
        """Called before every training epoch: put the model (and optimizer) in train mode."""
        model.train()

    def eval_mode(
        self,
        model: nn.Module,
        bn_batches: Callable[[], Iterable[Any]],
        autocast: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> bool:
        """Called after every training epoch, before the evaluation and the routine checkpoint.
        Returns whether it prepared the model for evaluation itself (then the model is in eval
        mode). ``bn_batches`` makes batches for a BatchNorm pass; by default nothing happens,
        ``bn_batches`` is not called and the result is False."""
        return False

    @property
    def lr(self) -> float:
        """The learning rate of the first param group right now."""
        return float(self.optimizer.param_groups[0]["lr"])  # type: ignore[attr-defined]

    def step_lr(self) -> float | Tensor:
        """The lr the last step ended with, without a host synchronisation (a float, or a
        device tensor for an optimizer that keeps its lr on the device)."""
        return self.lr
