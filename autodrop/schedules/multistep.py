"""``step``: multiply the lr by gamma at each milestone epoch (the paper's baseline)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import pairwise
from numbers import Integral

from torch.optim import Optimizer

from autodrop.checks import check_float, check_int
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.search_space import LogUniform, space

#: Default milestones as fractions of the epoch budget: the paper's 60/120/160 of 200.
MILESTONE_FRACTIONS = (0.3, 0.6, 0.8)


def default_milestones(epochs: int) -> list[int]:
    """round(0.3 E), round(0.6 E), round(0.8 E), without duplicates or no-op milestones."""
    rounded = {round(fraction * epochs) for fraction in MILESTONE_FRACTIONS}
    return sorted(m for m in rounded if 1 <= m < epochs)


def check_milestones(milestones: object, epochs: int) -> list[int]:
    """Strictly increasing ints in [1, epochs - 1]. A milestone past the budget is rejected, not
    ignored: it could never act, so it is almost always a preset not scaled to the budget."""
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Iterable):
        values: object = milestones
        valid = False
    else:
        values = list(milestones)
        in_range = all(
            isinstance(m, Integral) and not isinstance(m, bool) and 1 <= m < epochs for m in values
        )
        valid = in_range and all(a < b for a, b in pairwise(values))
    if not valid:
        budget = f"milestones must lie within the {epochs}-epoch budget"
        if epochs < 2:  # no epoch boundary inside the budget: [1, epochs - 1] is empty
            budget += ", which has no epoch boundary to drop at: use [] or more epochs"
        else:
            budget += f": expected strictly increasing ints in [1, {epochs - 1}]"
        raise ValueError(f"milestones={values!r} is invalid: {budget}")
    return [int(m) for m in values]


class MultiStepSchedule(PerStepSchedule):
    """lr = initial lr * gamma ** (number of milestones <= current epoch).

    Matches ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch.
    """

    name = "step"
    display_name = "Step"
    colour = "#1f77b4"
    reads = frozenset()
    needs_budget = True  # milestones are fractions of the budget by default
    search_space = space(scheduler__gamma=LogUniform(0.05, 0.5))  # the drop factor

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        milestones: Iterable[int] | None = None,
        gamma: float = 0.2,
    ) -> None:
        epochs = check_int("epochs", epochs, low=1)
        self.milestones = (
            default_milestones(epochs)
            if milestones is None
            else check_milestones(milestones, epochs)
        )
        self.gamma = check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        super().__init__(optimizer, steps_per_epoch)

    def lrs_at(self, step: int) -> list[float]:
        drops = bisect_right(self.milestones, self.epoch_at(step))
        return [base * self.gamma**drops for base in self.base_lrs]
