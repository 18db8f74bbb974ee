"""Per-epoch angular velocity of the parameters (``trainer.track_angle``; Fig. 3 of the paper).

At the end of epoch e the parameters x_e are snapshotted; the angle between the displacements
x_e - x_{e-1} and x_{e-1} - x_{e-2}, in degrees, is the epoch's angular velocity. The first value
exists at epoch 3. Snapshots and displacements are kept in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autodrop.angles import angle_degrees


class EpochAngleTracker:
    """Keeps the last snapshot and the last displacement: two float64 copies of the parameters."""

    def __init__(self, params: list[Tensor]) -> None:
        if not params:
            raise ValueError("EpochAngleTracker needs at least one parameter tensor")
        self.params = params
        self.snapshots_taken = 0
        self.snapshot = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        self.displacement = [torch.zeros_like(p, dtype=torch.float64) for p in params]

    @torch.no_grad()
    def end_epoch(self) -> float | None:
        """Snapshot the parameters; return the angle in degrees (None for the first two epochs)."""
        angle = None
        if self.snapshots_taken >= 1:
            new_displacement = [
                p.double() - s for p, s in zip(self.params, self.snapshot, strict=True)
            ]
            if self.snapshots_taken >= 2:
                angle = angle_degrees(new_displacement, self.displacement)
            self.displacement = new_displacement
        for snap, param in zip(self.snapshot, self.params, strict=True):
            snap.copy_(param)
        self.snapshots_taken += 1
        return angle

    def state_dict(self) -> dict[str, Any]:
        return {
            "snapshots_taken": self.snapshots_taken,
            "snapshot": [t.clone() for t in self.snapshot],
            "displacement": [t.clone() for t in self.displacement],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shapes = [tuple(t.shape) for t in state["snapshot"]]
        if shapes != [tuple(p.shape) for p in self.params]:
            raise ValueError("angle-tracker state does not match the model's parameters")
        self.snapshots_taken = int(state["snapshots_taken"])
        for name in ("snapshot", "displacement"):
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                dst.copy_(src)
