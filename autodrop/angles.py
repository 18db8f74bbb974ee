"""Dot products and angles on parameter lists viewed as flat vectors.

``sum_of_dots`` is the one dot-product helper of the library: a 0-d float64 tensor on the
device, with no host synchronisation (HD and TLR add it to device-side sums every step).
``dots64`` and the angles read three of its sums on the host in a single synchronisation.
``EpochAngleTracker`` measures the angular velocity of the parameters epoch by epoch (the
paper's Fig. 3; the runner's ``trainer.track_angle``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

#: Device types on which ``sum_of_dots`` takes one BLAS dot per tensor (a launch costs nothing
#: there); elsewhere it uses ``fused_dots``. ``scripts/bench_launches.py`` empties it to count
#: the accelerator path's operator calls on the CPU.
PER_TENSOR_DOT_DEVICES: tuple[str, ...] = ("cpu",)


def sum_of_dots(xs: list[Tensor], ys: list[Tensor], *, promote: bool = False) -> Tensor:
    """<xs, ys> of two tensor lists viewed as flat vectors: a 0-d float64 tensor on the device
    of ``xs[0]`` (no host synchronisation; 0 on the CPU for empty lists).

    ``promote=False``: each product is taken in the tensors' own dtype and the sum in float64.
    On an accelerator that is three kernel launches whatever the number of tensors
    (``fused_dots``); on the CPU, where a launch costs nothing, one BLAS dot per tensor, which
    needs no temporaries. ``promote=True``: every pair is promoted to float64 one at a time
    before its dot (the transient memory is one tensor, not the model) and the dots are
    accumulated in order, on any device.
    """
    if len(xs) != len(ys):
        raise ValueError(f"tensor lists differ in length: {len(xs)} != {len(ys)}")
    if not xs:
        return torch.zeros((), dtype=torch.float64)
    if promote:
        total = torch.zeros((), dtype=torch.float64, device=xs[0].device)
        for x64, y64 in _promoted_pairs(xs, ys):
            total += torch.dot(x64, y64)
        return total
    if xs[0].device.type not in PER_TENSOR_DOT_DEVICES:
        return fused_dots(xs, ys)
    dots = [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]
    return torch.stack(dots).sum(dtype=torch.float64)


def fused_dots(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    """``sum_of_dots`` in three kernels: one fused elementwise product over the lists
    (``torch._foreach_mul``), one concatenation, one float64 sum. Each product enters the
    concatenation as it lies in memory (``memory_order_flat``), so channels_last tensors are not
    copied first."""
    products = torch._foreach_mul(xs, ys)
    return torch.cat([memory_order_flat(p) for p in products]).sum(dtype=torch.float64)


def memory_order_flat(t: Tensor) -> Tensor:
    """The elements of ``t`` as a 1-D tensor in the order they lie in memory: a view when they
    fill their memory without gaps or overlaps (contiguous in any dimension order, e.g.
    channels_last), else a copy in logical order. A sum over the elements does not care which
    order; ``reshape(-1)`` would copy every channels_last tensor."""
    if t.is_contiguous():
        return t.view(-1)
    if _is_dense(t):
        return t.as_strided((t.numel(),), (1,))
    return t.reshape(-1)


def _is_dense(t: Tensor) -> bool:
    """Whether the elements of ``t`` occupy exactly ``numel`` consecutive memory slots."""
    expected = 1
    for size, stride in sorted(
        ((size, stride) for size, stride in zip(t.shape, t.stride(), strict=True) if size != 1),
        key=lambda dim: dim[1],
    ):
        if stride != expected:
            return False
        expected *= size
    return True


def _promoted_pairs(xs: list[Tensor], ys: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """Each pair of tensors flattened and promoted to float64, one pair at a time (the transient
    memory is one pair, not the model)."""
    for x, y in zip(xs, ys, strict=True):
        yield x.detach().reshape(-1).double(), y.detach().reshape(-1).double()


def dots64(a: list[Tensor], b: list[Tensor]) -> tuple[float, float, float]:
    """Return (a.b, a.a, b.b) of two tensor lists viewed as flat vectors, accumulated in float64
    as ``sum_of_dots(..., promote=True)`` does, each pair promoted once for all three sums;
    the three sums reach the host in a single synchronisation."""
    if len(a) != len(b):
        raise ValueError(f"tensor lists differ in length: {len(a)} != {len(b)}")
    if not a:
        return 0.0, 0.0, 0.0
    sums = torch.zeros(3, dtype=torch.float64, device=a[0].device)
    for x64, y64 in _promoted_pairs(a, b):
        sums[0] += torch.dot(x64, y64)
        sums[1] += torch.dot(x64, x64)
        sums[2] += torch.dot(y64, y64)
    ab, aa, bb = sums.tolist()
    return ab, aa, bb


def angle_from_dots(ab: float, aa: float, bb: float) -> float | None:
    """Angle in degrees between two vectors given their dot products; None if one is zero."""
    if aa <= 0.0 or bb <= 0.0:
        return None
    cosine = max(-1.0, min(1.0, ab / math.sqrt(aa * bb)))
    return math.degrees(math.acos(cosine))


# The 2021 code's arithmetic (its tools.calculate_angle): the denominator's epsilon pulls the
# cosine of tiny displacements towards 0, which decides when AutoDropV1 arms late in training.
AUTHORS_NORM_EPSILON = 1e-8
AUTHORS_COSINE_CLAMP = 1.0 - 1e-16


def authors_angle_from_dots(ab: float, aa: float, bb: float) -> float:
    """Angle in degrees as the authors' code computes it: acos(clamp(ab / (|a| |b| + 1e-8))),
    the cosine clamped to [-1 + 1e-16, 1 - 1e-16]. A zero vector gives 90 degrees."""
    cosine = ab / (math.sqrt(aa) * math.sqrt(bb) + AUTHORS_NORM_EPSILON)
    cosine = max(-AUTHORS_COSINE_CLAMP, min(AUTHORS_COSINE_CLAMP, cosine))
    return math.degrees(math.acos(cosine))


def angle_degrees(a: list[Tensor], b: list[Tensor]) -> float | None:
    """Angle in degrees between two tensor lists viewed as flat vectors (None if one is zero)."""
    return angle_from_dots(*dots64(a, b))


class EpochAngleTracker:
    """The angular velocity of the parameters per epoch: at the end of epoch e the parameters
    x_e are snapshotted; the angle between the displacements x_e - x_{e-1} and
    x_{e-1} - x_{e-2}, in degrees, is the epoch's. The first value exists at epoch 3. Keeps the
    last snapshot and the last displacement: two float64 copies of the parameters."""

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
