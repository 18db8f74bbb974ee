"""Rank-0-decides helpers: no-ops unless torch.distributed is initialised with several ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_multi_process() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_value(value: float | None, device: torch.device) -> float | None:
    """Every rank returns rank 0's value (None travels as NaN)."""
    if not is_multi_process():
        return value
    payload = torch.tensor([float("nan") if value is None else value], dtype=torch.float64)
    payload = payload.to(device)
    dist.broadcast(payload, src=0)
    result = payload.item()
    return None if result != result else result


def broadcast_tensors(tensors: list[Tensor]) -> None:
    """Overwrite every rank's tensors with rank 0's, in place."""
    if not is_multi_process():
        return
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)
