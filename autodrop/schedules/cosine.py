"""``cosine``: per-step cosine annealing over the whole budget, with optional linear warm-up."""

from __future__ import annotations

import math

from torch.optim import Optimizer

from autodrop.checks import check_float, check_int
from autodrop.schedules.per_step import PerStepSchedule, initial_lrs, per_group
from autodrop.search_space import space


class CosineSchedule(PerStepSchedule):
    """Linear warm-up from ``warmup_start_factor`` * lr to lr over ``warmup_epochs`` (rounded to
    whole steps), then cosine from lr at the end of warm-up (step 0 without warm-up) to
    ``eta_min`` at the last step of the budget; held at ``eta_min`` after it."""

    name = "cosine"
    display_name = "Cosine"
    colour = "#2ca02c"
    reads = frozenset()
    needs_budget = True  # it spans the whole budget
    search_space = space()  # the peak (initial) lr is its only knob

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        eta_min: float = 0.0,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
        epochs = check_int("epochs", epochs, low=1)
        self.total_steps = epochs * steps_per_epoch
        warmup_epochs = check_float("warmup_epochs", warmup_epochs, low=0.0, high=epochs)
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        if self.warmup_steps > 0 and self.warmup_steps >= self.total_steps - 1:
            budget = f"(epochs={epochs}, steps_per_epoch={steps_per_epoch})"
            if self.total_steps <= 2:  # warm-up steps < total_steps - 1 leaves only 0
                room = f"the {self.total_steps}-step budget {budget} has no room for a warm-up"
            else:
                room = (
                    f"warm-up steps must leave at least one step of decay, i.e. be < "
                    f"{self.total_steps - 1} {budget}"
                )
            raise ValueError(
                f"warmup_epochs={warmup_epochs!r} is invalid: it is {self.warmup_steps} steps "
                f"and {room}"
            )
        self.warmup_start_factor = check_float(
            "warmup_start_factor", warmup_start_factor, low=0.0, high=1.0
        )
        start_lrs = initial_lrs(optimizer)
        eta_min = check_float("eta_min", eta_min, low=0.0, high=start_lrs[0])
        self.eta_mins = per_group("eta_min", eta_min, start_lrs)
        super().__init__(optimizer, steps_per_epoch)

    def lrs_at(self, step: int) -> list[float]:
        step = min(step, self.total_steps - 1)
        if step < self.warmup_steps:
            start = self.warmup_start_factor
            factor = start + (1.0 - start) * step / self.warmup_steps
            return [base * factor for base in self.base_lrs]
        decay_steps = self.total_steps - 1 - self.warmup_steps
        progress = (step - self.warmup_steps) / decay_steps if decay_steps > 0 else 0.0
        weight = (1.0 + math.cos(math.pi * progress)) / 2.0
        return [
            low + (base - low) * weight
            for base, low in zip(self.base_lrs, self.eta_mins, strict=True)
        ]
