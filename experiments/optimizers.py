"""The optimizers a run can train with, and the run's lr method (its optimizer and schedule)
built from its settings.

An optimizer is a builder function listed in ``OPTIMIZERS``: its name is the optimizer's
(``optimizer=<name>``, ``conf/optimizer/<name>.yaml``), its keyword parameters after the
runner's (``params``, ``steps_per_epoch``) are its options with their defaults, and it checks
them itself: a value the suite refuses raises ValueError naming it (the launch reports it as
``optimizer.<option>=...`` before anything is written).

Schedule-free SGD (Defazio et al. 2024) comes from the pinned ``schedulefree`` package; its
modes are the library schedule's (``autodrop.schedules.optimizer_lr.ScheduleFreeLR``,
BASELINES.md sections 3.4-3.5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from schedulefree import SGDScheduleFree
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop import registry
from autodrop.checks import call_with_options, check_bool, check_choice, check_float, check_int
from autodrop.hd import SGDHD
from experiments.runtime import use_fused_optimizer
from experiments.settings import Component, Schedule


def _fused(params: list[nn.Parameter]) -> bool | None:
    """True for torch's fused optimizer kernels where the runner uses them
    (``use_fused_optimizer``: one launch updates every parameter), else None (torch's
    default)."""
    return True if params and use_fused_optimizer(params[0].device) else None


def _sgd_values(lr: float, momentum: float, nesterov: bool, weight_decay: float) -> None:
    """What torch's SGD accepts but the suite refuses."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
    check_float("weight_decay", weight_decay, low=0.0)
    if check_bool("nesterov", nesterov) and not momentum > 0:
        raise ValueError(f"nesterov=True is invalid: needs momentum > 0 (momentum={momentum!r})")


def sgd(
    params: list[nn.Parameter],
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
) -> Optimizer:
    """torch's SGD with momentum (fused kernels on CUDA)."""
    _sgd_values(lr, momentum, nesterov, weight_decay)
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        fused=_fused(params),
    )


def adam(
    params: list[nn.Parameter],
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """torch's Adam (fused kernels on CUDA)."""
    check_float("lr", lr, low=0.0, low_open=True)
    if len(betas) != 2:
        raise ValueError(f"betas={list(betas)!r} is invalid: expected two numbers in [0, 1)")
    for index, beta in enumerate(betas):
        check_float(f"betas[{index}]", beta, low=0.0, high=1.0, high_open=True)
    check_float("eps", eps, low=0.0)
    check_float("weight_decay", weight_decay, low=0.0)
    return torch.optim.Adam(
        params,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        fused=_fused(params),
    )


def sgd_hd(
    params: list[nn.Parameter],
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    beta: float = 1e-4,
) -> Optimizer:
    """SGD with hypergradient descent on the lr (``autodrop.hd.SGDHD``): the task's SGD
    settings, lr as the initial alpha, plus the hypergradient lr ``beta``."""
    _sgd_values(lr, momentum, nesterov, weight_decay)
    check_float("beta", beta, low=0.0)
    return SGDHD(
        params,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        beta=beta,
    )


def schedulefree_sgd(
    params: list[nn.Parameter],
    steps_per_epoch: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    lr_multiplier: float = 10.0,
    warmup_epochs: float = 5.0,
) -> Optimizer:
    """Schedule-free SGD: lr is the task's SGD lr times ``lr_multiplier``; momentum is the
    interpolation between z and x (the task's SGD momentum carries over); ``nesterov`` is not
    used (schedule-free SGD has no momentum buffer) and exists so the task presets' SGD settings
    compose; a linear warmup of ``warmup_epochs`` (BASELINES.md section 3.6 proposal)."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_bool("nesterov", nesterov)
    return build_schedulefree_sgd(
        params,
        base_lr=lr,
        steps_per_epoch=steps_per_epoch,
        lr_multiplier=lr_multiplier,
        momentum=momentum,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
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


#: Every optimizer, in the order --help lists them.
OPTIMIZERS = (
    sgd,
    adam,
    sgd_hd,
    schedulefree_sgd,
)
#: Optimizers that set the learning rate themselves, each with the schedule (the method) it
#: belongs to: conf/scheduler/<method>.yaml selects it, and they go only together.
SETS_ITS_OWN_LR = {"sgd_hd": "hd", "schedulefree_sgd": "schedulefree"}

_BUILDERS = {builder.__name__: builder for builder in OPTIMIZERS}


def build_optimizer(optimizer: Component, model: nn.Module, *, steps_per_epoch: int) -> Optimizer:
    """The optimizer of the settings ``optimizer`` over ``model``'s trainable parameters
    (``steps_per_epoch`` sizes schedule-free's warmup)."""
    builder = _BUILDERS[check_choice("optimizer", optimizer.name, tuple(_BUILDERS))]
    params = [p for p in model.parameters() if p.requires_grad]
    context = {"params": params, "steps_per_epoch": steps_per_epoch}
    return call_with_options("optimizer", optimizer.name, builder, context, optimizer.options)


def build_schedule(
    scheduler: Schedule, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """The registry schedule of the settings ``scheduler`` for ``epochs`` epochs."""
    return registry.build(
        scheduler.name,
        optimizer,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        **scheduler.options,
    )


def method_options(scheduler: Schedule, optimizer: Component) -> dict[str, Any]:
    """The lr method's settings as summary.json records them (``scheduler_options``): the
    schedule's options, or for a method whose optimizer sets the lr (hd, schedulefree) the
    optimizer's options (so beta / lr_multiplier are recorded per run)."""
    if optimizer.name in SETS_ITS_OWN_LR:
        return dict(optimizer.options)
    return dict(scheduler.options)
