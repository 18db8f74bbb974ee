"""``clr``: cyclical lr, Smith 2017 "triangular2" (torch ``CyclicLR`` mode="triangular2")."""

from __future__ import annotations

from torch.optim import Optimizer

from autodrop.checks import check_float, check_int
from autodrop.schedules.per_step import PerStepSchedule, initial_lrs, per_group
from autodrop.search_space import Uniform, space

#: Default half-cycle length: Smith recommends 2-10 epochs; the low end gives more cycles.
DEFAULT_STEP_SIZE_EPOCHS = 2.0
#: Default base_lr as a fraction of max_lr.
DEFAULT_BASE_FRACTION = 0.1


class CyclicSchedule(PerStepSchedule):
    """Triangle waves from base_lr up to max_lr and back, each cycle half as high as the last.

    max_lr defaults to the initial lr, base_lr to max_lr / 10. The half cycle is
    ``step_size_epochs`` epochs rounded to whole steps (at least one), or ``step_size_up``
    optimizer steps when that is given. The lr starts at base_lr; momentum is not cycled.
    """

    name = "clr"
    display_name = "CLR"
    colour = "#8c564b"
    reads = frozenset()
    needs_budget = False  # its cycles are a fixed number of epochs long
    # max_lr defaults to the initial lr; Smith recommends half cycles of 2-10 epochs.
    search_space = space(scheduler__step_size_epochs=Uniform(1.0, 8.0))

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        base_lr: float | None = None,
        max_lr: float | None = None,
        step_size_epochs: float = DEFAULT_STEP_SIZE_EPOCHS,
        step_size_up: int | None = None,
    ) -> None:
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
        if step_size_up is not None:
            self.step_size = check_int("step_size_up", step_size_up, low=1)
        else:
            epochs = check_float("step_size_epochs", step_size_epochs, low=0.0, low_open=True)
            self.step_size = max(1, round(epochs * steps_per_epoch))

        start_lrs = initial_lrs(optimizer)
        if max_lr is None:
            self.high_lrs = start_lrs
        else:
            max_lr = check_float("max_lr", max_lr, low=0.0, low_open=True)
            self.high_lrs = per_group("max_lr", max_lr, start_lrs)
        if base_lr is None:
            self.low_lrs = [lr * DEFAULT_BASE_FRACTION for lr in self.high_lrs]
        else:
            base_lr = check_float("base_lr", base_lr, low=0.0, high=self.high_lrs[0])
            self.low_lrs = per_group("base_lr", base_lr, start_lrs)
        super().__init__(optimizer, steps_per_epoch)

    def lrs_at(self, step: int) -> list[float]:
        cycle, position = divmod(step, 2 * self.step_size)
        height = 1.0 - abs(position - self.step_size) / self.step_size
        scale = height * 0.5**cycle
        return [
            low + (high - low) * scale
            for low, high in zip(self.low_lrs, self.high_lrs, strict=True)
        ]
