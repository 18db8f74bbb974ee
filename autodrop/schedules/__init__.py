"""The schedule registry: every schedule of the benchmark behind one ``build`` call.

Every schedule is a ``torch.optim.lr_scheduler.LRScheduler`` with the ``ScheduleHooks`` mixin,
stepped once after every optimizer step. The budget (``steps_per_epoch``, ``epochs``) is passed
to the constructors that take it; everything else comes from ``options``.

``"optimizer"`` is the schedule of an optimizer that sets its own learning rate (``SGDHD``,
schedule-free SGD): it leaves every group's lr as the optimizer set it. ``"tlr"`` is the
reconstructed trainable learning rate, labelled "TLR (reconstruction)" in results.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.autodrop import AutoDrop
from autodrop.autodrop_v1 import AutoDropV1
from autodrop.checks import check_int
from autodrop.hd import FollowOptimizerLR
from autodrop.schedules.constant import ConstantSchedule
from autodrop.schedules.cosine import CosineSchedule
from autodrop.schedules.cyclic import CyclicSchedule
from autodrop.schedules.exponential import ExponentialSchedule
from autodrop.schedules.multistep import MultiStepSchedule
from autodrop.schedules.onecycle import OneCycleSchedule
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.schedules.plateau import PlateauSchedule
from autodrop.tlr import TrainableLR

BUDGET_ARGUMENTS = ("steps_per_epoch", "epochs")


_SCHEDULES: dict[str, type] = {
    "step": MultiStepSchedule,
    "cosine": CosineSchedule,
    "onecycle": OneCycleSchedule,
    "clr": CyclicSchedule,
    "exp": ExponentialSchedule,
    "plateau": PlateauSchedule,
    "constant": ConstantSchedule,
    "autodrop": AutoDrop,
    "autodrop_v1": AutoDropV1,
    "tlr": TrainableLR,
    "optimizer": FollowOptimizerLR,
}

SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def schedule_class(name: str) -> type:
    """The class behind ``name``."""
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {list(SCHEDULE_NAMES)}")
    return _SCHEDULES[name]


def schedule_options(name: str) -> tuple[str, ...]:
    """The options ``build(name, ...)`` accepts (constructor arguments minus the optimizer and
    the budget)."""
    parameters = inspect.signature(schedule_class(name)).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.name not in ("optimizer", *BUDGET_ARGUMENTS)
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def build(
    name: str, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int, **options: Any
) -> LRScheduler:
    """The schedule ``name`` on ``optimizer`` for a budget of ``epochs`` * ``steps_per_epoch``
    optimizer steps; ``options`` are the schedule's own keyword arguments."""
    cls = schedule_class(name)
    check_int("steps_per_epoch", steps_per_epoch, low=1)
    check_int("epochs", epochs, low=1)
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = schedule_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"unknown option(s) {unknown} for schedule {name!r}: accepted options are "
            f"{list(accepted)}"
        )
    budget = {"steps_per_epoch": steps_per_epoch, "epochs": epochs}
    budget = {key: value for key, value in budget.items() if key in parameters}
    return cls(optimizer, **budget, **options)


__all__ = [
    "SCHEDULE_NAMES",
    "ConstantSchedule",
    "CosineSchedule",
    "CyclicSchedule",
    "ExponentialSchedule",
    "FollowOptimizerLR",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "PerStepSchedule",
    "PlateauSchedule",
    "TrainableLR",
    "build",
    "schedule_class",
    "schedule_options",
]
