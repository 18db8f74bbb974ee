"""``constant``: the lr never changes."""

from __future__ import annotations

from torch.optim import Optimizer

from autodrop.schedules.per_step import PerStepSchedule
from autodrop.search_space import space


class ConstantSchedule(PerStepSchedule):
    """Every group keeps its initial lr for the whole run."""

    name = "constant"
    display_name = "Constant"
    colour = "#bcbd22"
    reads = frozenset()
    needs_budget = False
    search_space = space()  # the lr is its only knob

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list[float]:
        return list(self.base_lrs)
