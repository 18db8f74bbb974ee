"""AutoDrop: automatic learning-rate drops from the angular velocity of the parameters.

Two published variants, both torch LR schedulers stepped after every optimizer step:
``AutoDrop`` (UAI 2024, the paper's algorithm) and ``AutoDropV1`` (the authors' 2021 code).
Baseline schedules with the same contract (``ScheduleHooks``) live in ``autodrop.schedules``;
``autodrop.registry.build`` makes every schedule by name.
"""

from autodrop.autodrop import AutoDrop
from autodrop.autodrop_v1 import AutoDropV1
from autodrop.base import ScheduleHooks

__all__ = ["AutoDrop", "AutoDropV1", "ScheduleHooks"]
__version__ = "0.1.0"
