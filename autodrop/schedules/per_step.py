"""The base of every baseline schedule: lrs as a function of the optimizer step count.

torch's ``last_epoch`` counts optimizer steps here: after n calls to ``step()`` the optimizer
holds the lrs of optimizer step n (0-based), and step n belongs to epoch
``n // steps_per_epoch``, the same epoch index torch's per-epoch schedulers see.

Options that are absolute learning rates (``max_lr``, ``eta_min``, ``min_lr``...) are the values
of param group 0; every other group gets them times its initial-lr ratio to group 0, so the
ratios between groups always stay those of their initial lrs.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.base import ScheduleHooks
from autodrop.checks import check_int


def initial_lrs(optimizer: Optimizer) -> list[float]:
    """Each group's initial lr, as ``LRScheduler`` will record it (``initial_lr`` wins)."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    lrs = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    for index, lr in enumerate(lrs):
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(
                f"param group {index} has lr={lr!r}: expected a finite learning rate >= 0"
            )
    return lrs


def per_group(name: str, value: float, group_lrs: list[float]) -> list[float]:
    """``value`` for group 0, scaled for every other group by its lr ratio to group 0."""
    if len(group_lrs) > 1 and group_lrs[0] <= 0:
        raise ValueError(
            f"{name}={value!r} cannot be scaled to the other param groups: group 0 has "
            f"lr={group_lrs[0]!r}, expected > 0"
        )
    return [value] + [value * (lr / group_lrs[0]) for lr in group_lrs[1:]]


class PerStepSchedule(ScheduleHooks, LRScheduler, ABC):
    """An ``LRScheduler`` stepped after every optimizer step; subclasses define ``lrs_at``."""

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int = 1) -> None:
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
        initial_lrs(optimizer)  # validates the groups' lrs before torch touches the optimizer
        super().__init__(optimizer)

    def epoch_at(self, step: int) -> int:
        """The 0-based epoch that optimizer step ``step`` belongs to."""
        return step // self.steps_per_epoch

    @abstractmethod
    def lrs_at(self, step: int) -> list[float]:
        """The lr of every param group during optimizer step ``step`` (0-based)."""

    def get_lr(self) -> list[float]:
        return self.lrs_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = len(self.optimizer.param_groups)
        saved = len(state_dict.get("_last_lr", ()))
        if saved != groups:
            raise ValueError(
                f"state dict holds lrs for {saved} param groups, the optimizer has {groups}"
            )
        super().load_state_dict(copy.deepcopy(state_dict))
        self.restore_optimizer()

    def restore_optimizer(self) -> None:
        """Write the loaded lrs into the optimizer, so the order of loading does not matter."""
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr
