"""The contract every schedule in this package shares.

All schedules are ``torch.optim.lr_scheduler.LRScheduler`` subclasses stepped once after every
optimizer step. This mixin adds the three things a training loop needs beyond torch's API.
"""

from __future__ import annotations


class ScheduleHooks:
    """Mixin: epoch-end metric hook, measurement records for loggers, current lr."""

    #: True for schedules driven by a metric (plateau): the loop must pass it to epoch_end().
    needs_metric: bool = False

    def epoch_end(self, metric: float | None = None) -> None:
        """Called once at the end of every epoch, with the epoch's metric when needs_metric."""

    def pop_measurements(self) -> list[dict]:
        """Records produced since the last call (AutoDrop's per-window measurements)."""
        return []

    @property
    def lr(self) -> float:
        """The learning rate of the first param group right now."""
        return float(self.optimizer.param_groups[0]["lr"])
