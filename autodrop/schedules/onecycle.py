"""``onecycle``: Smith & Topin's 1cycle policy with torch ``OneCycleLR`` semantics, per step."""

from __future__ import annotations

import math

from torch.optim import Optimizer

from autodrop.checks import check_bool, check_choice, check_float, check_int
from autodrop.schedules.per_step import PerStepSchedule, initial_lrs, per_group
from autodrop.search_space import Uniform, space

ANNEAL_STRATEGIES = ("cos", "linear")


def anneal(start: float, end: float, fraction: float, strategy: str) -> float:
    """From ``start`` (fraction 0) to ``end`` (fraction 1), along a half cosine or a line."""
    if strategy == "cos":
        return end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0
    return start + (end - start) * fraction


class OneCycleSchedule(PerStepSchedule):
    """lr and momentum interpolated between knots over ``epochs * steps_per_epoch`` steps.

    Two phases: max_lr/div_factor -> max_lr (peak at step pct_start*total - 1) -> that start lr
    / final_div_factor at the last step; three_phase goes back to the start lr first. Momentum
    moves inversely between max_momentum and base_momentum. After the budget the final values
    are held (torch raises instead).
    """

    name = "onecycle"
    display_name = "One-cycle"
    colour = "#9467bd"
    reads = frozenset()
    needs_budget = True  # the cycle spans the whole budget
    # max_lr defaults to the initial lr (the peak); pct_start is where the peak falls.
    search_space = space(scheduler__pct_start=Uniform(0.1, 0.5))

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        max_lr: float | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ) -> None:
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
        self.total_steps = check_int("epochs", epochs, low=1) * steps_per_epoch
        pct_start = check_float("pct_start", pct_start, low=0.0, high=1.0, low_open=True)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
        div_factor = check_float("div_factor", div_factor, low=0.0, low_open=True)
        final_div_factor = check_float("final_div_factor", final_div_factor, low=0.0, low_open=True)
        three_phase = check_bool("three_phase", three_phase)
        self.cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
        base_momentum = check_float("base_momentum", base_momentum, low=0.0, high=1.0)
        max_momentum = check_float("max_momentum", max_momentum, low=base_momentum, high=1.0)
        start_lrs = initial_lrs(optimizer)
        if self.cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
            raise ValueError(
                f"cycle_momentum=True needs an optimizer with momentum or betas, got "
                f"{type(optimizer).__name__}; pass cycle_momentum=False"
            )

        if max_lr is not None:
            max_lr = check_float("max_lr", max_lr, low=0.0, low_open=True)
        peak = start_lrs if max_lr is None else per_group("max_lr", max_lr, start_lrs)
        low = [lr / div_factor for lr in peak]
        final = [lr / final_div_factor for lr in low]
        peak_step = pct_start * self.total_steps - 1
        if three_phase:
            self.knot_steps = [0.0, peak_step, 2 * peak_step, self.total_steps - 1.0]
            self.knot_lrs = [low, peak, low, final]
            self.knot_momenta = [max_momentum, base_momentum, max_momentum, max_momentum]
        else:
            self.knot_steps = [0.0, peak_step, self.total_steps - 1.0]
            self.knot_lrs = [low, peak, final]
            self.knot_momenta = [max_momentum, base_momentum, max_momentum]
        if any(b <= a for a, b in zip(self.knot_steps, self.knot_steps[1:], strict=False)):
            raise ValueError(
                f"pct_start={pct_start!r} is invalid for total_steps={self.total_steps}: every "
                f"phase needs at least one step (knots at steps {self.knot_steps})"
            )
        super().__init__(optimizer, steps_per_epoch)

    def _segment(self, step: int) -> tuple[int, float]:
        """Index of the knot the segment holding ``step`` ends at, and the fraction done."""
        step = min(step, self.total_steps - 1)
        end = next(
            (i for i in range(1, len(self.knot_steps)) if step <= self.knot_steps[i]),
            len(self.knot_steps) - 1,
        )
        start_step, end_step = self.knot_steps[end - 1], self.knot_steps[end]
        return end, (step - start_step) / (end_step - start_step)

    def lrs_at(self, step: int) -> list[float]:
        end, fraction = self._segment(step)
        return [
            anneal(start, stop, fraction, self.anneal_strategy)
            for start, stop in zip(self.knot_lrs[end - 1], self.knot_lrs[end], strict=True)
        ]

    def momentum_at(self, step: int) -> float:
        """The momentum (or Adam's beta1) during optimizer step ``step``."""
        end, fraction = self._segment(step)
        start, stop = self.knot_momenta[end - 1], self.knot_momenta[end]
        return anneal(start, stop, fraction, self.anneal_strategy)

    def get_lr(self) -> list[float]:
        self._write_momentum()
        return super().get_lr()

    def restore_optimizer(self) -> None:
        super().restore_optimizer()
        self._write_momentum()

    def _write_momentum(self) -> None:
        if not self.cycle_momentum:
            return
        momentum = self.momentum_at(self.last_epoch)
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
