"""What both AutoDrop variants share: watching the parameters, scaling lrs, reporting."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.base import ScheduleHooks


class DropScheduler(ScheduleHooks, LRScheduler):
    """A scheduler that decides lr drops by watching the parameter trajectory.

    Stepped once after every optimizer step. The watched parameters are those of
    ``optimizer.param_groups`` with ``requires_grad``, in group order. Its measurement records
    go to the run directory's ``autodrop.jsonl``; the epoch's metrics record gets the number
    of drops so far and the last measured angular velocity.
    """

    record_stream = "autodrop"
    console_fields = (("autodrop/drops", "drops"), ("autodrop/omega", "omega"))

    def __init__(self, optimizer: Optimizer) -> None:
        self.params: list[Tensor] = [
            p for group in optimizer.param_groups for p in group["params"] if p.requires_grad
        ]
        if not self.params:
            raise ValueError("the optimizer has no parameters with requires_grad=True to watch")
        self.num_steps = 0
        self.drop_steps: list[int] = []
        self.last_measurement: dict[str, Any] | None = None
        self._pending: list[dict[str, Any]] = []
        super().__init__(optimizer)

    def _initial_step(self) -> None:
        # torch's base class performs one step() at construction; a drop scheduler must not
        # count that as an optimizer step, so it only records the starting lrs.
        self._step_count = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _new_buffer(self) -> list[Tensor]:
        return [
            torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32))
            for p in self.params
        ]

    def _scale_lrs(self, factor: float, floor: float) -> None:
        """Every group's lr <- max(floor, factor * lr), only where that lowers it: a drop never
        raises an lr (a group held at 0 stays at 0), as torch's ReduceLROnPlateau."""
        for group in self.optimizer.param_groups:
            group["lr"] = min(group["lr"], max(floor, factor * group["lr"]))
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _record(self, measurement: dict[str, Any]) -> None:
        self.last_measurement = measurement
        self._pending.append(measurement)
        if measurement["dropped"]:
            self.drop_steps.append(measurement["step"])

    def pop_measurements(self) -> list[dict[str, Any]]:
        records, self._pending = self._pending, []
        return records

    def epoch_fields(self, records: list[dict[str, Any]], lr_mean: float) -> dict[str, Any]:
        """``autodrop/drops``: the drops so far; ``autodrop/omega``: the last measured omega of
        ``records`` (every record of the run so far), None before the first."""
        omega = next((r["omega"] for r in reversed(records) if r.get("omega") is not None), None)
        return {"autodrop/drops": len(self.drop_steps), "autodrop/omega": omega}

    # State: every subclass lists its scalar fields and buffer fields; buffers are lists of
    # tensors shaped like the watched parameters.
    _scalar_fields: tuple[str, ...] = ()
    _buffer_fields: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        state = {name: _copied(getattr(self, name)) for name in self._scalar_fields}
        state.update(
            num_steps=self.num_steps,
            drop_steps=list(self.drop_steps),
            last_epoch=self.last_epoch,
            _step_count=self._step_count,
            _last_lr=list(self._last_lr),
            base_lrs=list(self.base_lrs),
        )
        for name in self._buffer_fields:
            state[name] = [t.clone() for t in getattr(self, name)]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in self._buffer_fields:
            saved = state_dict[name]
            mine = getattr(self, name)
            if [t.shape for t in saved] != [t.shape for t in mine]:
                raise ValueError(
                    f"state_dict buffer {name!r} does not match the watched "
                    "parameters (different model or optimizer?)"
                )
            for dst, src in zip(mine, saved, strict=True):
                dst.copy_(src)
        for name, value in state_dict.items():
            if name not in self._buffer_fields:
                setattr(self, name, _copied(value))
        self._pending = []


def _copied(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
