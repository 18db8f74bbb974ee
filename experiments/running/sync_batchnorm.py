"""Synchronised BatchNorm that also works on CPU (gloo), for ``trainer.sync_bn``.

torch's ``nn.SyncBatchNorm`` needs a GPU. This module normalises with the statistics of the
global batch on any device: per-channel sums and squared sums are all-reduced (differentiably),
so a run on W processes computes what one process computes on the whole batch. Under a single
process it is plain batch norm through the same arithmetic, which is what makes a 1-process and
a W-process run comparable number for number. The statistics use E[x^2] - E[x]^2, so they are
computed in float64: in float32 the cancellation costs about 1e-4 relative accuracy in the
gradients, enough to make two summation orders visibly disagree after a few steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the gradient of a sum over ranks is summed too."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the batch of all ranks; eval mode uses the running statistics."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training:
            return super().forward(input)
        channels = input.shape[1]
        dims = [d for d in range(input.dim()) if d != 1]
        x = input.double()
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            stats = _SumOverRanks.apply(stats)
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                self.num_batches_tracked.add_(1)
                unbiased = var * total / (total - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a GlobalBatchNorm with the same state."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        replacement = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=module.weight.device if module.affine else None,
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module


def over_all_ranks(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with BatchNorm over the batch of every rank: torch's SyncBatchNorm on CUDA,
    ours elsewhere (torch's refuses CPU tensors: ValueError "expected input tensor to be on
    GPU", torch 2.14; tests/test_sync_batchnorm_cpu.py), which gloo runs need."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_to_global_batchnorm(model)
