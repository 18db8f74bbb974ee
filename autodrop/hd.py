"""HD: SGD with hypergradient descent on one global learning rate (Baydin et al., ICLR 2018).

Every ``step()`` first moves the learning rate by the hypergradient, then steps the parameters
with the new rate:

    alpha_t = alpha_{t-1} + beta * <g_t, d_{t-1}>      theta_{t+1} = theta_t - alpha_t * d_t

g_t is the gradient plus the coupled L2 term ``weight_decay * theta_t``; d_t is the direction the
base rule steps along: g_t (SGD-HD), the momentum buffer v_t (heavy-ball SGDM-HD) or
g_t + momentum * v_t (Nesterov SGDN-HD). Momentum follows ``torch.optim.SGD`` (v_1 = g_1,
dampening from step 2 on), so ``beta=0`` is exactly ``torch.optim.SGD``.

Under DistributedDataParallel the gradients are already all-reduced, so every rank holds the
same g_t and d_{t-1} and computes the same alpha: no extra communication is needed.

The optimizer only; its schedule slot (registry name ``hd``) is
``autodrop.schedules.optimizer_lr.HypergradientLR``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from autodrop.angles import sum_of_dots
from autodrop.checks import check_bool, check_float

#: The hypergradient learning rates AutoDrop's paper searches (Table 2).
BETA_GRID: tuple[float, ...] = (1e-3, 1e-4, 1e-5)

_SHARED_OPTIONS = ("lr", "beta")


def _lr_tensor(value: float | Tensor, device: torch.device) -> Tensor:
    """alpha as a 0-d float64 tensor on ``device`` (where the parameters are)."""
    if isinstance(value, Tensor):
        return value.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64, device=device)


class _GroupWork(NamedTuple):
    """One group's share of a step: parameters with a gradient, their g_t, and the
    (g_t, d_{t-1}) pairs that enter the hypergradient."""

    params: list[Tensor]
    grads: list[Tensor]
    h_grads: list[Tensor]
    h_directions: list[Tensor]


class SGDHD(Optimizer):
    """SGD-HD, SGDN-HD (``nesterov=True``) or heavy-ball SGDM-HD (``momentum > 0``).

    One learning rate alpha is shared by every param group; it lives as a 0-d float64 tensor on
    the parameters' device in each group's ``lr`` and is adapted by ``beta`` (the hypergradient
    learning rate) every step without a host synchronisation (``.lr`` reads it as a float, a
    synchronisation, when asked). The other options may differ per group. alpha may become
    negative (the paper's fidelity mode: no clipping). ``.grad`` is never modified; parameters
    without a gradient are skipped, and a parameter skipped at step t-1 contributes nothing to
    the hypergradient at step t.
    """

    label = "HD"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        beta: float = 1e-4,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            beta=beta,
            hd_step=0,
        )
        super().__init__(params, defaults)
        self._move_lr_to_device()

    def _device(self) -> torch.device:
        for group in self.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _move_lr_to_device(self) -> None:
        alpha = _lr_tensor(self.param_groups[0]["lr"], self._device())
        for group in self.param_groups:
            group["lr"] = alpha

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint loaded to the CPU (or one from before alpha was a tensor) brings alpha
        # back to the parameters' device.
        super().load_state_dict(state_dict)
        self._move_lr_to_device()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        first = self.param_groups[0] if self.param_groups else None
        if first is not None and "lr" not in param_group:
            param_group = {**param_group, "lr": first["lr"]}
        super().add_param_group(param_group)
        try:
            _validate_group(self.param_groups[-1], first, len(self.param_groups) - 1)
        except ValueError:
            self.param_groups.pop()
            raise
        if first is not None:
            self.param_groups[-1]["lr"] = first["lr"]

    @property
    def lr(self) -> float:
        """The current learning rate alpha (shared by every group)."""
        return float(self.param_groups[0]["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        step = self.param_groups[0]["hd_step"] + 1
        work = [self._gather(group, step) for group in self.param_groups]
        alpha = self.param_groups[0]["lr"]
        beta = float(self.param_groups[0]["beta"])
        if beta != 0.0:
            grads = [g for batch in work for g in batch.h_grads]
            directions = [d for batch in work for d in batch.h_directions]
            if grads:
                # A new tensor (not in place): lrs recorded from earlier steps keep their value.
                alpha = alpha + beta * sum_of_dots(grads, directions).to(alpha.device)
        step_size = _step_size(alpha, [p for batch in work for p in batch.params])
        for group, batch in zip(self.param_groups, work, strict=True):
            group["lr"] = alpha
            group["hd_step"] = step
            self._update(group, batch, step_size, step)
        return loss

    def _gather(self, group: dict[str, Any], step: int) -> _GroupWork:
        """This group's parameters with a gradient, g_t, and the (g, d_{t-1}) pairs of h."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                raise ValueError("SGDHD does not support sparse gradients: use dense gradients")
        grads = [p.grad for p in params]
        weight_decay = group["weight_decay"]
        if weight_decay != 0 and params:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        h_grads, h_directions = [], []
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            if state.get("last_step") == step - 1:
                h_grads.append(g)
                h_directions.append(_direction_buffer(state, group))
        return _GroupWork(params, grads, h_grads, h_directions)

    def _update(
        self, group: dict[str, Any], batch: _GroupWork, step_size: Tensor, step: int
    ) -> None:
        if not batch.params:
            return
        states = [self.state[p] for p in batch.params]
        momentum = group["momentum"]
        if momentum == 0:
            directions = _stored_directions(states, batch.grads)
        else:
            buffers = _momentum_buffers(states, batch.grads, momentum, group["dampening"])
            if group["nesterov"]:
                directions = _stored_directions(states, batch.grads)
                torch._foreach_add_(directions, buffers, alpha=momentum)
            else:
                directions = buffers
        # theta += (-alpha) * d with alpha on the device (torch.optim.SGD's tensor-lr arithmetic).
        torch._foreach_add_(batch.params, torch._foreach_mul(directions, step_size))
        for state in states:
            state["last_step"] = step


def _step_size(alpha: Tensor, params: list[Tensor]) -> Tensor:
    """-alpha in the parameters' dtype, cast once per step: a foreach product with a scalar
    tensor of another dtype falls back to one kernel per parameter. The products are taken in
    that dtype either way (a 0-d tensor does not promote its partner), so the numbers are the
    same; parameters of several dtypes keep the float64 alpha."""
    dtypes = {p.dtype for p in params}
    return -alpha.to(dtypes.pop()) if len(dtypes) == 1 else -alpha


def _validate_group(group: dict[str, Any], first: dict[str, Any] | None, index: int) -> None:
    """Check a new group's options; lr and beta are set by group 0 and shared by the others."""
    check_float("beta", group["beta"], low=0.0)
    check_float("momentum", group["momentum"], low=0.0, high=1.0, high_open=True)
    check_float("dampening", group["dampening"], low=0.0, high=1.0)
    check_float("weight_decay", group["weight_decay"], low=0.0)
    check_bool("nesterov", group["nesterov"])
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError(
            f"nesterov=True needs momentum > 0 and dampening == 0, got "
            f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
        )
    if first is None:
        lr = group["lr"]
        group["lr"] = check_float("lr", float(lr) if isinstance(lr, Tensor) else lr, low=0.0)
        return
    for key in _SHARED_OPTIONS:
        mine, shared = (_plain(group[key]), _plain(first[key]))
        if mine != shared:
            raise ValueError(
                f"param group {index} has {key}={mine!r}: HD adapts one {key} shared by "
                f"every group, expected {shared!r} (the value of group 0)"
            )
    group["hd_step"] = first["hd_step"]


def _plain(value: float | Tensor) -> float:
    return float(value) if isinstance(value, Tensor) else value


def _direction_buffer(state: dict[str, Any], group: dict[str, Any]) -> Tensor:
    """d_{t-1} of one parameter: heavy-ball reuses its momentum buffer."""
    if group["momentum"] != 0 and not group["nesterov"]:
        return state["momentum_buffer"]
    return state["direction"]


def _momentum_buffers(
    states: list[dict[str, Any]], grads: list[Tensor], momentum: float, dampening: float
) -> list[Tensor]:
    """v_t = momentum * v_{t-1} + (1 - dampening) * g_t, with v_1 = g_1 (torch's SGD rule)."""
    existing = [
        (s["momentum_buffer"], g)
        for s, g in zip(states, grads, strict=True)
        if "momentum_buffer" in s
    ]
    if existing:
        olds, news = map(list, zip(*existing, strict=True))
        torch._foreach_mul_(olds, momentum)
        torch._foreach_add_(olds, news, alpha=1.0 - dampening)
    for state, g in zip(states, grads, strict=True):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.clone(g).detach()
    return [s["momentum_buffer"] for s in states]


def _stored_directions(states: list[dict[str, Any]], grads: list[Tensor]) -> list[Tensor]:
    """Each parameter's ``direction`` buffer, overwritten with g_t."""
    for state, g in zip(states, grads, strict=True):
        if "direction" not in state:
            state["direction"] = torch.empty_like(g, memory_format=torch.preserve_format)
    directions = [s["direction"] for s in states]
    torch._foreach_copy_(directions, grads)
    return directions
