"""The baseline schedules: lrs as a function of the optimizer step (``PerStepSchedule``) and the
schedule slots of optimizers that set their own lr (``optimizer_lr``).

Every schedule is a ``torch.optim.lr_scheduler.LRScheduler`` with the ``ScheduleHooks`` contract,
stepped once after every optimizer step. Build them by name with ``autodrop.registry.build``.
"""

from autodrop.schedules.constant import ConstantSchedule
from autodrop.schedules.cosine import CosineSchedule
from autodrop.schedules.cyclic import CyclicSchedule
from autodrop.schedules.exponential import ExponentialSchedule
from autodrop.schedules.multistep import MultiStepSchedule
from autodrop.schedules.onecycle import OneCycleSchedule
from autodrop.schedules.optimizer_lr import HypergradientLR, OptimizerSetsLR, ScheduleFreeLR
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.schedules.plateau import PlateauSchedule

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "CyclicSchedule",
    "ExponentialSchedule",
    "HypergradientLR",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "OptimizerSetsLR",
    "PerStepSchedule",
    "PlateauSchedule",
    "ScheduleFreeLR",
]
