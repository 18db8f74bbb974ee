"""Model, optimizer and schedule built from the config."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop import schedules
from autodrop.hd import SGDHD
from experiments import rundir as rd
from experiments.config import OPTIMIZER_NAMES, OPTIMIZER_OWNED_LR, registry_schedule_name
from experiments.distributed import DistContext
from experiments.schedulefree_support import build_schedulefree_sgd
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


def build_optimizer(
    optimizer_cfg: DictConfig, model: nn.Module, *, steps_per_epoch: int
) -> Optimizer:
    """The optimizer of ``optimizer_cfg`` (``steps_per_epoch`` sizes schedule-free's warmup)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer_cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optimizer_cfg.lr,
            momentum=optimizer_cfg.momentum,
            nesterov=optimizer_cfg.nesterov,
            weight_decay=optimizer_cfg.weight_decay,
        )
    if optimizer_cfg.name == "adam":
        return torch.optim.Adam(
            params,
            lr=optimizer_cfg.lr,
            betas=tuple(optimizer_cfg.betas),
            eps=optimizer_cfg.eps,
            weight_decay=optimizer_cfg.weight_decay,
        )
    if optimizer_cfg.name == "sgd_hd":
        return SGDHD(
            params,
            lr=optimizer_cfg.lr,
            momentum=optimizer_cfg.momentum,
            nesterov=optimizer_cfg.nesterov,
            weight_decay=optimizer_cfg.weight_decay,
            beta=optimizer_cfg.beta,
        )
    if optimizer_cfg.name == "schedulefree_sgd":
        return build_schedulefree_sgd(
            params,
            base_lr=optimizer_cfg.lr,
            steps_per_epoch=steps_per_epoch,
            lr_multiplier=optimizer_cfg.lr_multiplier,
            momentum=optimizer_cfg.momentum,
            weight_decay=optimizer_cfg.weight_decay,
            warmup_epochs=optimizer_cfg.warmup_epochs,
        )
    raise ValueError(
        f"optimizer.name={optimizer_cfg.name!r} is invalid: allowed values are "
        f"{', '.join(OPTIMIZER_NAMES)}"
    )


def resolved_scheduler_options(scheduler_cfg: DictConfig) -> dict[str, Any]:
    """The schedule's keyword options: the scheduler node minus ``name`` and ``label``."""
    node = OmegaConf.to_container(scheduler_cfg, resolve=True)
    return {key: value for key, value in node.items() if key not in ("name", "label")}


def method_options(cfg: DictConfig) -> dict[str, Any]:
    """The lr method's settings as summary.json records them (``scheduler_options``): the
    schedule's options, or for a method whose optimizer sets the lr (hd, schedulefree) the
    optimizer's settings minus its name (so beta / lr_multiplier are recorded per run)."""
    if cfg.scheduler.name in OPTIMIZER_OWNED_LR:
        node = OmegaConf.to_container(cfg.optimizer, resolve=True)
        return {key: value for key, value in node.items() if key != "name"}
    return resolved_scheduler_options(cfg.scheduler)


def build_schedule(
    scheduler_cfg: DictConfig, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    return schedules.build(
        registry_schedule_name(scheduler_cfg.name),
        optimizer,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        **resolved_scheduler_options(scheduler_cfg),
    )


def is_autodrop(scheduler_name: str) -> bool:
    return scheduler_name in ("autodrop", "autodrop_v1")


def measurement_file(scheduler_name: str) -> str | None:
    """The run-directory file of the schedule's measurement records, if it makes any:
    AutoDrop's windows (autodrop.jsonl), TLR's lr updates (tlr.jsonl)."""
    if is_autodrop(scheduler_name):
        return rd.AUTODROP_FILE
    if scheduler_name == "tlr":
        return rd.TLR_FILE
    return None
