"""AutoDrop as in the authors' 2021 code (arXiv v1; variant B in PAPER.md)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from autodrop.angles import authors_angle_from_dots, dots64
from autodrop.base import Signal
from autodrop.checks import check_bool, check_float, check_int
from autodrop.distributed import broadcast_tensors, broadcast_value
from autodrop.drop_scheduler import DropScheduler
from autodrop.search_space import LogUniform, space


class AutoDropV1(DropScheduler):
    """Per-epoch angles, a sticky arm on a flat angle, ``extra_epochs`` more, then drop.

    Call ``step()`` once after every ``optimizer.step()``; epochs are runs of
    ``steps_per_epoch`` steps. After the 1st step of each epoch the parameters are snapshotted;
    after the 2nd, the angle between the last two snapshot displacements (degrees) joins a
    never-reset history, and the scheduler arms (sticky) once two consecutive angles differ by
    less than ``theta``. While armed it counts epochs and, with ``average_weights``, adds
    ``counter * parameters`` to a running sum. After ``extra_epochs`` armed epochs every group's
    lr becomes ``max(min_lr, drop_factor * lr)`` unless that would raise it (a group at or below
    ``min_lr``, e.g. frozen at 0, keeps its lr), theta grows to ``theta / drop_factor``
    (``auto_theta``), capped at ``max_theta`` when ``max_theta > 0`` (``max_theta <= 0``: no
    cap, as the authors' ``if upper_theta > 0``), and the parameters become the linearly
    weighted average.

    The angle is the authors' arithmetic exactly: ``acos(clamp(<p1, p2> / (|p1| |p2| + 1e-8),
    -1 + 1e-16, 1 - 1e-16))`` in degrees, so a zero displacement gives 90 degrees and enters the
    history, and tiny late-training displacements read closer to 90 degrees than their raw angle.

    Memory: three parameter-sized buffers (last snapshot, last displacement, weighted sum).
    Momentum buffers and BatchNorm statistics are left alone, as in the authors' code; every
    param group is scaled (the authors' code scaled group 0 only).
    """

    name = "autodrop_v1"
    display_name = "AutoDrop (2021 code)"
    colour = "#ff7f0e"
    reads = frozenset({Signal.PARAMETERS})
    needs_budget = False  # extra_epochs is a fixed number of epochs
    search_space = space(scheduler__theta=LogUniform(1e-3, 1e-1))  # the flatness threshold

    _scalar_fields = (
        "steps_per_epoch",
        "theta",
        "drop_factor",
        "extra_epochs",
        "auto_theta",
        "max_theta",
        "min_lr",
        "average_weights",
        "history",
        "pending_omega",
        "armed",
        "counter",
        "snapshots_taken",
    )
    _buffer_fields = ("snapshot", "displacement", "weighted_sum")

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        theta: float = 0.01,
        drop_factor: float = 0.2,
        extra_epochs: int = 20,
        auto_theta: bool = True,
        max_theta: float = 1.0,
        min_lr: float = 1e-4,
        average_weights: bool = True,
    ) -> None:
        # Two steps at least: the snapshots are taken after an epoch's first and second step.
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=2)
        extra_epochs = check_int("extra_epochs", extra_epochs, low=1)
        check_float("drop_factor", drop_factor, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("theta", theta, low=0.0)
        check_float("max_theta", max_theta)  # <= 0: no cap
        check_float("min_lr", min_lr, low=0.0)
        self.steps_per_epoch, self.extra_epochs = steps_per_epoch, extra_epochs
        self.theta, self.drop_factor, self.max_theta = (
            float(theta),
            float(drop_factor),
            float(max_theta),
        )
        self.auto_theta = check_bool("auto_theta", auto_theta)
        self.average_weights = check_bool("average_weights", average_weights)
        self.min_lr = float(min_lr)
        self.history: list[float] = []
        self.pending_omega: float | None = None
        self.armed = False
        self.counter = 0
        self.snapshots_taken = 0
        super().__init__(optimizer)
        self.snapshot = self._new_buffer()
        self.displacement = self._new_buffer()
        self.weighted_sum = self._new_buffer()

    @property
    def epoch(self) -> int:
        """0-based index of the epoch the last step belonged to."""
        return (self.num_steps - 1) // self.steps_per_epoch

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        self.num_steps += 1
        self.last_epoch = self.num_steps
        self._step_count += 1
        position = (self.num_steps - 1) % self.steps_per_epoch + 1
        if position == 1:
            self._take_snapshot()
        elif position == 2:
            self._end_measurement()

    def _take_snapshot(self) -> None:
        # With three snapshots x_e, x_{e-1}, x_{e-2}, omega_e = angle(x_e - x_{e-1},
        # x_{e-1} - x_{e-2}); only the last snapshot and displacement need keeping.
        self.pending_omega = None
        if self.snapshots_taken >= 1:
            new_displacement = self.snapshot
            torch._foreach_sub_(new_displacement, self.params)
            torch._foreach_neg_(new_displacement)
            if self.snapshots_taken >= 2:
                self.pending_omega = authors_angle_from_dots(
                    *dots64(new_displacement, self.displacement)
                )
            self.snapshot, self.displacement = self.displacement, new_displacement
        torch._foreach_copy_(self.snapshot, self.params)
        self.snapshots_taken += 1

    def _end_measurement(self) -> None:
        omega = broadcast_value(self.pending_omega, self.params[0].device)
        diff = None
        if omega is not None:
            self.history.append(omega)
            if len(self.history) >= 2:
                diff = self.history[-1] - self.history[-2]
                self.armed = self.armed or -self.theta < diff < self.theta
        dropped = False
        if self.armed:
            self.counter += 1
            if self.average_weights:
                torch._foreach_add_(self.weighted_sum, self.params, alpha=float(self.counter))
            if self.counter == self.extra_epochs:
                self._drop()
                dropped = True
        self._record(
            {
                "step": self.num_steps,
                "epoch": self.epoch + 1,
                "omega": omega,
                "smoothed": diff,
                "theta": self.theta,
                "armed": self.armed,
                "counter": self.counter,
                "lr": self.lr,
                "dropped": dropped,
            }
        )

    def _drop(self) -> None:
        if self.auto_theta:
            self.theta = self.theta / self.drop_factor
            if self.max_theta > 0:  # the authors' `if upper_theta > 0`: <= 0 means no cap
                self.theta = min(self.theta, self.max_theta)
        self._scale_lrs(self.drop_factor, self.min_lr)
        if self.average_weights:
            total = self.extra_epochs * (self.extra_epochs + 1) / 2
            torch._foreach_div_(self.weighted_sum, total)
            torch._foreach_copy_(self.params, self.weighted_sum)
            broadcast_tensors(self.params)
            torch._foreach_zero_(self.weighted_sum)
        self.armed = False
        self.counter = 0
