"""AutoDrop: automatic learning-rate drops from the angular velocity of the parameters.

Two published variants, both torch LR schedulers stepped after every optimizer step:
``AutoDrop`` (UAI 2024, the paper's algorithm) and ``AutoDropV1`` (the authors' 2021 code).
Baseline schedules with the same contract (``ScheduleHooks``) live in ``autodrop.schedules``;
``autodrop.registry.build`` makes every schedule by name.

The names below are imported on first use, so that importing a torch-free module of the
package (``autodrop.checks``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autodrop.autodrop import AutoDrop
    from autodrop.autodrop_v1 import AutoDropV1
    from autodrop.base import ScheduleHooks

__all__ = ["AutoDrop", "AutoDropV1", "ScheduleHooks"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "AutoDrop":
        from autodrop.autodrop import AutoDrop as value
    elif name == "AutoDropV1":
        from autodrop.autodrop_v1 import AutoDropV1 as value
    elif name == "ScheduleHooks":
        from autodrop.base import ScheduleHooks as value
    else:
        raise AttributeError(f"module 'autodrop' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
