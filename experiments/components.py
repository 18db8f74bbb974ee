"""The network built from the config, and wrapped for training (DDP, torch.compile)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from experiments.distributed import DistContext
from experiments.sync_batchnorm import convert_to_global_batchnorm
from models import build_model


def build_network(
    model_cfg: DictConfig,
    trainer_cfg: DictConfig,
    num_classes: int,
    device: torch.device,
    ctx: DistContext,
) -> nn.Module:
    """The bare model on ``device`` (BatchNorm synchronised across ranks if asked)."""
    options = OmegaConf.to_container(model_cfg.options, resolve=True)
    model = build_model(model_cfg.name, num_classes, **options)
    if trainer_cfg.sync_bn and ctx.is_distributed:
        # Statistics over the global batch, so 1 and N processes train the same model.
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            # torch's SyncBatchNorm refuses CPU tensors (ValueError "expected input tensor to
            # be on GPU", torch 2.14; tests/test_sync_batchnorm_cpu.py): gloo runs need ours.
            model = convert_to_global_batchnorm(model)
    model = model.to(device)
    if trainer_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_for_training(
    model: nn.Module, trainer_cfg: DictConfig, device: torch.device, ctx: DistContext
) -> nn.Module:
    """DDP across ranks, then torch.compile if asked. Checkpoints use the bare ``model``."""
    wrapped: nn.Module = model
    if ctx.is_distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    if trainer_cfg.compile:
        wrapped = compile_model(wrapped)
    return wrapped


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with static shapes: one graph per batch shape, compiled once and then
    reused every epoch (a short last batch or eval batch gets its own graph instead of turning
    the model into a slower dynamic-shape graph)."""
    return torch.compile(model, dynamic=False, backend=backend)
