"""Angle maths on parameter lists: float64 dot products over lists of tensors, one host sync."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dots64(a: list[Tensor], b: list[Tensor]) -> tuple[float, float, float]:
    """Return (a.b, a.a, b.b) of two tensor lists viewed as flat vectors, accumulated in float64.

    Each tensor is promoted to float64 one at a time, so the transient memory is one tensor, not
    the whole model; the three sums reach the host in a single synchronisation.
    """
    if len(a) != len(b):
        raise ValueError(f"tensor lists differ in length: {len(a)} != {len(b)}")
    if not a:
        return 0.0, 0.0, 0.0
    sums = torch.zeros(3, dtype=torch.float64, device=a[0].device)
    for x, y in zip(a, b, strict=True):
        x64 = x.detach().reshape(-1).double()
        y64 = y.detach().reshape(-1).double()
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
