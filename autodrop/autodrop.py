"""AutoDrop, the UAI 2024 algorithm (Algorithm 1 of the paper; variant A in PAPER.md)."""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from autodrop.angles import angle_degrees
from autodrop.base import Signal
from autodrop.checks import check_float, check_int
from autodrop.distributed import broadcast_value
from autodrop.drop_scheduler import DropScheduler
from autodrop.search_space import Uniform, space


def gaussian_smoothed(buffer: list[float], sigma_cap: float) -> float:
    """Value-domain Gaussian filter of ``buffer`` centred on its newest element.

    sigma = min(population std of the buffer, sigma_cap); weights
    exp(-(newest - b)^2 / (2 sigma^2)); the plain mean when sigma is 0.
    """
    mean = sum(buffer) / len(buffer)
    sigma = min(math.sqrt(sum((b - mean) ** 2 for b in buffer) / len(buffer)), sigma_cap)
    if sigma == 0.0:
        return mean
    centre = buffer[-1]
    weights = [math.exp(-((centre - b) ** 2) / (2.0 * sigma * sigma)) for b in buffer]
    return sum(w * b for w, b in zip(weights, buffer, strict=True)) / sum(weights)


class AutoDrop(DropScheduler):
    """Drop the lr by ``rho`` whenever the smoothed angular velocity stops growing.

    Call ``step()`` once after every ``optimizer.step()``. Every ``window`` steps the mean of
    the window's parameter vectors is formed; the angle (degrees) between consecutive steps of
    these means is the angular velocity omega. Omegas fill a buffer of ``buffer_size``; once it
    is full, a Gaussian-smoothed value C is formed each window and the oldest omega leaves. When
    C grew by less than ``threshold`` since the previous window, every group's lr becomes
    ``max(min_lr, rho * lr)`` (never higher than it was: a group at or below ``min_lr``, e.g.
    frozen at 0, keeps its lr) and the buffer starts afresh (the trajectory is kept).

    Memory: three parameter-sized buffers (window sum, previous mean, previous step).
    Under torch.distributed, every rank uses rank 0's omega, so all ranks drop together.
    """

    name = "autodrop"
    display_name = "AutoDrop"
    colour = "#d62728"
    reads = frozenset({Signal.PARAMETERS})
    needs_budget = False
    # The paper's ablations vary rho, window and buffer; the window is scaled per task (a
    # fraction of an epoch), so rho, the drop factor, is the knob searched with the lr.
    search_space = space(scheduler__rho=Uniform(0.5, 0.99))

    _scalar_fields = (
        "window",
        "rho",
        "buffer_size",
        "threshold",
        "min_lr",
        "omegas",
        "previous_smoothed",
        "has_previous_mean",
        "has_previous_step",
    )
    _buffer_fields = ("window_sum", "previous_mean", "previous_step")

    def __init__(
        self,
        optimizer: Optimizer,
        window: int = 64,
        rho: float = 0.95,
        buffer_size: int = 10,
        threshold: float = 0.1,
        min_lr: float = 0.0,
    ) -> None:
        window = check_int("window", window, low=1)  # optimizer steps per measurement
        check_float("rho", rho, low=0.0, high=1.0, low_open=True, high_open=True)
        buffer_size = check_int("buffer_size", buffer_size, low=1)
        check_float("threshold", threshold, low=0.0)
        check_float("min_lr", min_lr, low=0.0)
        self.window, self.rho, self.buffer_size = window, float(rho), buffer_size
        self.threshold, self.min_lr = float(threshold), float(min_lr)
        self.omegas: list[float] = []
        self.previous_smoothed: float | None = None
        self.has_previous_mean = False
        self.has_previous_step = False
        super().__init__(optimizer)
        self.window_sum = self._new_buffer()
        self.previous_mean = self._new_buffer()
        self.previous_step = self._new_buffer()

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        self.num_steps += 1
        self.last_epoch = self.num_steps
        self._step_count += 1
        torch._foreach_add_(self.window_sum, self.params)
        if self.num_steps % self.window == 0:
            self._end_window()

    def _end_window(self) -> None:
        mean, previous_mean = self.window_sum, self.previous_mean
        torch._foreach_div_(mean, float(self.window))
        omega = None
        if self.has_previous_mean:
            # previous_mean <- mean - previous_mean: this window's step s_i.
            torch._foreach_sub_(previous_mean, mean)
            torch._foreach_neg_(previous_mean)
            if self.has_previous_step:
                omega = angle_degrees(previous_mean, self.previous_step)
            # The step just formed becomes the previous step; the old step buffer is recycled.
            self.previous_mean, self.previous_step = self.previous_step, previous_mean
            self.has_previous_step = True
        omega = broadcast_value(omega, self.params[0].device)
        torch._foreach_copy_(self.previous_mean, mean)
        torch._foreach_zero_(mean)
        self.has_previous_mean = True
        smoothed, dropped = self._update_buffer(omega)
        self._record(
            {
                "step": self.num_steps,
                "omega": omega,
                "smoothed": smoothed,
                "lr": self.lr,
                "dropped": dropped,
            }
        )

    def _update_buffer(self, omega: float | None) -> tuple[float | None, bool]:
        smoothed = None
        if omega is not None:
            self.omegas.append(omega)
            if len(self.omegas) >= self.buffer_size:
                smoothed = gaussian_smoothed(self.omegas, self.buffer_size / 2)
                self.omegas.pop(0)
        previous, self.previous_smoothed = self.previous_smoothed, smoothed
        if smoothed is None or previous is None or smoothed - previous >= self.threshold:
            return smoothed, False
        self._scale_lrs(self.rho, self.min_lr)
        self.omegas = []
        self.previous_smoothed = None
        return smoothed, True
