"""Slow, obviously-correct AutoDrop references written straight from shared/PAPER.md.

They take the whole parameter trajectory as a list of flat float64 vectors (the parameters after
each optimizer step) and return the lr after every step, the drop steps and, for V1, the
parameters written back at each drop. No buffers are recycled and nothing is clever.
"""

from __future__ import annotations

import math

import torch


def angle(u: torch.Tensor, v: torch.Tensor) -> float | None:
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0.0 or nv == 0.0:
        return None
    c = float(torch.dot(u, v)) / (nu * nv)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def authors_angle(u: torch.Tensor, v: torch.Tensor) -> float:
    """The 2021 code's angle (PAPER.md variant B, step 2): epsilon in the denominator, clamp."""
    c = float(torch.dot(u, v)) / (float(u.norm()) * float(v.norm()) + 1e-8)
    return math.degrees(math.acos(max(-1.0 + 1e-16, min(1.0 - 1e-16, c))))


def lowered(lr, factor, floor):
    """A drop: max(floor, factor * lr), but never above the current lr."""
    return min(lr, max(floor, factor * lr))


def reference_autodrop(trajectory, lr, window, rho, buffer_size, threshold, min_lr):
    means, steps, buffer = [], [], []
    previous_c = None
    lrs, drops, omegas = [], [], []
    window_sum = torch.zeros_like(trajectory[0])
    for t, x in enumerate(trajectory, start=1):
        window_sum = window_sum + x
        if t % window == 0:
            means.append(window_sum / window)
            window_sum = torch.zeros_like(x)
            if len(means) >= 2:
                steps.append(means[-1] - means[-2])
            c = None
            if len(steps) >= 2:
                omega = angle(steps[-1], steps[-2])
                omegas.append(omega)
                if omega is not None:
                    buffer.append(omega)
                    if len(buffer) >= buffer_size:
                        mean = sum(buffer) / len(buffer)
                        std = math.sqrt(sum((b - mean) ** 2 for b in buffer) / len(buffer))
                        sigma = min(std, buffer_size / 2)
                        if sigma == 0:
                            c = mean
                        else:
                            w = [math.exp(-((omega - b) ** 2) / (2 * sigma**2)) for b in buffer]
                            c = sum(wi * b for wi, b in zip(w, buffer, strict=True)) / sum(w)
                        buffer.pop(0)
            if c is not None and previous_c is not None and c - previous_c < threshold:
                lr = lowered(lr, rho, min_lr)
                drops.append(t)
                buffer = []
                previous_c = None
            else:
                previous_c = c
        lrs.append(lr)
    return {"lrs": lrs, "drops": drops, "omegas": omegas}


def reference_autodrop_v1(
    trajectory,
    lr,
    steps_per_epoch,
    theta,
    drop_factor,
    extra_epochs,
    auto_theta,
    max_theta,
    min_lr,
    average_weights,
):
    snapshots, history, armed_params = [], [], []
    armed = False
    lrs, drops, averages, omegas = [], [], {}, []
    for t, x in enumerate(trajectory, start=1):
        batch_index = (t - 1) % steps_per_epoch + 1
        if batch_index == 1:
            snapshots.append(x.clone())
        if batch_index == 2:
            if len(snapshots) >= 3:
                a, b, c = snapshots[-1], snapshots[-2], snapshots[-3]
                omega = authors_angle(a - b, b - c)
                omegas.append(omega)
                if omega is not None:
                    history.append(omega)
                    if len(history) >= 2:
                        diff = history[-1] - history[-2]
                        armed = armed or (-theta < diff < theta)
            if armed:
                armed_params.append(x.clone())
                if len(armed_params) == extra_epochs:
                    if auto_theta:
                        theta = theta / drop_factor
                        if max_theta > 0:
                            theta = min(theta, max_theta)
                    lr = lowered(lr, drop_factor, min_lr)
                    if average_weights:
                        total = extra_epochs * (extra_epochs + 1) / 2
                        averages[t] = sum(k * p for k, p in enumerate(armed_params, 1)) / total
                    drops.append(t)
                    armed_params = []
                    armed = False
        lrs.append(lr)
    return {"lrs": lrs, "drops": drops, "averages": averages, "omegas": omegas, "theta": theta}
