"""The lr method of a run, built from the config: its optimizer and its schedule.

Schedule-free SGD (Defazio et al. 2024) comes from the pinned ``schedulefree`` package; its
modes are the library schedule's (``autodrop.schedules.optimizer_lr.ScheduleFreeLR``,
BASELINES.md sections 3.4-3.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from schedulefree import SGDScheduleFree
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop import registry
from autodrop.checks import check_float, check_int
from autodrop.hd import SGDHD
from experiments.config import invalid_choice
from experiments.runtime import use_fused_optimizer
from experiments.schema import OPTIMIZER_OWNED_LR


def _options(node: DictConfig) -> dict[str, Any]:
    """A config node's settings as keyword arguments (without its ``name`` and ``label``)."""
    values = OmegaConf.to_container(node, resolve=True)
    return {key: value for key, value in values.items() if key not in ("name", "label")}


def _fused(params: list[nn.Parameter]) -> bool | None:
    """True for torch's fused optimizer kernels where the runner uses them
    (``use_fused_optimizer``: one launch updates every parameter), else None (torch's
    default)."""
    return True if params and use_fused_optimizer(params[0].device) else None


def _sgd(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return torch.optim.SGD(
        params,
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        fused=_fused(params),
    )


def _adam(params: list[nn.Parameter], o: DictConfig, steps_per_epoch: int) -> Optimizer:
    return torch.optim.Adam(
        params,
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=_fused(params),
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


def build_schedulefree_sgd(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    *,
    base_lr: float,
    steps_per_epoch: int,
    lr_multiplier: float = 10.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_epochs: float = 0.0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
) -> SGDScheduleFree:
    """``SGDScheduleFree`` with lr = ``base_lr * lr_multiplier`` (the README asks 10-50x the
    classical SGD lr) and a linear warmup of ``round(warmup_epochs * steps_per_epoch)`` steps.

    ``momentum`` is the interpolation beta between z and x, not an SGD momentum;
    ``weight_decay`` is coupled L2 added to the gradient at y.
    """
    base_lr = check_float("base_lr", base_lr, low=0.0, low_open=True)
    lr_multiplier = check_float("lr_multiplier", lr_multiplier, low=0.0, low_open=True)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
    warmup_epochs = check_float("warmup_epochs", warmup_epochs, low=0.0)
    return SGDScheduleFree(
        params,
        lr=base_lr * lr_multiplier,
        momentum=check_float(
            "momentum", momentum, low=0.0, high=1.0, low_open=True, high_open=True
        ),
        weight_decay=check_float("weight_decay", weight_decay, low=0.0),
        warmup_steps=round(warmup_epochs * steps_per_epoch),
        r=check_float("r", r, low=0.0),
        weight_lr_power=check_float("weight_lr_power", weight_lr_power, low=0.0),
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
        raise invalid_choice("optimizer.name", optimizer_cfg.name, _OPTIMIZER_BUILDERS)
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
