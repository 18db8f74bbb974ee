"""``plateau``: cut the lr when the epoch's metric stops improving (``ReduceLROnPlateau``)."""

from __future__ import annotations

import math

from torch.optim import Optimizer

from autodrop.base import Signal
from autodrop.checks import check_choice, check_float, check_int
from autodrop.schedules.per_step import PerStepSchedule, initial_lrs, per_group
from autodrop.search_space import IntUniform, LogUniform, space


class PlateauSchedule(PerStepSchedule):
    """``ReduceLROnPlateau`` semantics on the metric passed to ``epoch_end`` once per epoch.

    ``step()`` (after every optimizer step) only counts steps; all decisions are per epoch.
    """

    name = "plateau"
    display_name = "Plateau"
    colour = "#7f7f7f"
    reads = frozenset({Signal.HELD_OUT_METRIC})
    needs_budget = False
    search_space = space(
        scheduler__factor=LogUniform(0.05, 0.5), scheduler__patience=IntUniform(1, 10)
    )

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.factor = check_float(
            "factor", factor, low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.patience = check_int("patience", patience, low=0)
        self.threshold = check_float("threshold", threshold, low=0.0)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int("cooldown", cooldown, low=0)
        self.min_lrs = per_group(
            "min_lr", check_float("min_lr", min_lr, low=0.0), initial_lrs(optimizer)
        )
        self.eps = check_float("eps", eps, low=0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0
        super().__init__(optimizer)

    def lrs_at(self, step: int) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def epoch_end(self, metric: float | None = None) -> None:
        if metric is None:
            raise ValueError("metric=None is invalid: plateau needs the epoch's metric (a number)")
        value = float(metric)
        if self._improves(value):
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self._reduce()
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0
        self._last_lr = self.lrs_at(self.last_epoch)

    def _improves(self, value: float) -> bool:
        relative = self.threshold_mode == "rel"
        if self.mode == "min":
            bound = self.best * (1.0 - self.threshold) if relative else self.best - self.threshold
            return value < bound
        bound = self.best * (1.0 + self.threshold) if relative else self.best + self.threshold
        return value > bound

    def _reduce(self) -> None:
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            # Like torch: a cut smaller than eps is not worth applying.
            if old - new > self.eps:
                group["lr"] = new
