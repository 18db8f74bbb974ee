"""The lr method of a run, built from the config: its optimizer and its schedule."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop import registry
from autodrop.hd import SGDHD
from experiments.schedulefree_support import build_schedulefree_sgd
from experiments.schema import OPTIMIZER_OWNED_LR


def _options(node: DictConfig) -> dict[str, Any]:
    """A config node's settings as keyword arguments (without its ``name`` and ``label``)."""
    values = OmegaConf.to_container(node, resolve=True)
    return {key: value for key, value in values.items() if key not in ("name", "label")}


def _sgd(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return torch.optim.SGD(
        params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )


def _adam(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return torch.optim.Adam(
        params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )


def _sgd_hd(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return SGDHD(
        params,
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        beta=o.beta,
    )


def _schedulefree_sgd(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return build_schedulefree_sgd(
        params,
        base_lr=o.lr,
        steps_per_epoch=steps_per_epoch,
        lr_multiplier=o.lr_multiplier,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        warmup_epochs=o.warmup_epochs,
    )


_OPTIMIZER_BUILDERS = {
    "sgd": _sgd,
    "adam": _adam,
    "sgd_hd": _sgd_hd,
    "schedulefree_sgd": _schedulefree_sgd,
}


def build_optimizer(
    optimizer_cfg: DictConfig, model: nn.Module, *, steps_per_epoch: int
) -> Optimizer:
    """The optimizer of ``optimizer_cfg`` (``steps_per_epoch`` sizes schedule-free's warmup)."""
    builder = _OPTIMIZER_BUILDERS.get(optimizer_cfg.name)
    if builder is None:
        raise ValueError(
            f"optimizer.name={optimizer_cfg.name!r} is invalid: allowed values are "
            f"{', '.join(_OPTIMIZER_BUILDERS)}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    return builder(params, optimizer_cfg, steps_per_epoch)


def build_schedule(
    scheduler_cfg: DictConfig, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """The registry schedule of ``scheduler_cfg`` for a budget of ``epochs`` epochs."""
    return registry.build(
        scheduler_cfg.name,
        optimizer,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        **_options(scheduler_cfg),
    )


def method_options(cfg: DictConfig) -> dict[str, Any]:
    """The lr method's settings as summary.json records them (``scheduler_options``): the
    schedule's options, or for a method whose optimizer sets the lr (hd, schedulefree) the
    optimizer's settings minus its name (so beta / lr_multiplier are recorded per run)."""
    if cfg.scheduler.name in OPTIMIZER_OWNED_LR:
        return _options(cfg.optimizer)
    return _options(cfg.scheduler)
