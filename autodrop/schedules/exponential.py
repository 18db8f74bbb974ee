"""``exp``: lr = initial lr * gamma ** epoch (paper grid gamma in {0.8, 0.9, 0.95, 0.99, 0.999})."""

from __future__ import annotations

from torch.optim import Optimizer

from autodrop.checks import check_float
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.search_space import Uniform, space


class ExponentialSchedule(PerStepSchedule):
    """Per-epoch exponential decay; matches ``ExponentialLR`` stepped once per epoch."""

    name = "exp"
    display_name = "ExpLR"
    colour = "#e377c2"
    reads = frozenset()
    needs_budget = False
    search_space = space(scheduler__gamma=Uniform(0.8, 0.999))  # the paper's grid's span

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, gamma: float = 0.95) -> None:
        self.gamma = check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        super().__init__(optimizer, steps_per_epoch)

    def lrs_at(self, step: int) -> list[float]:
        decay = self.gamma ** self.epoch_at(step)
        return [base * decay for base in self.base_lrs]
