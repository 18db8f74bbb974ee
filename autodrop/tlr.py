"""TLR (reconstruction): a trainable learning rate set by a Newton line search along the steps.

Retsinas et al.'s "Trainable Learning Rate" (withdrawn ICLR 2022 submission) has no public
code; this is the reconstruction of BASELINES.md section 2.3 and must be labelled so in
results: "TLR (reconstruction; p = 0.33 ep, c = 1/4)".

It is a schedule, stepped once after every optimizer step. Let alpha be group 0's lr (other
groups keep their ratio to it), omega_t = (theta_t - theta_{t+1}) / alpha_t the real step
direction (momentum, Nesterov and weight decay included) and g_t the gradient plus the coupled
L2 term. On the line phi(s) = L(theta_{t-1} - s omega_{t-1}), consecutive gradients give

    a = <g_t, omega_{t-1}>                  = -phi'(alpha_{t-1})
    b = <g_{t-1}, omega_{t-1}> - a          = phi'(alpha_{t-1}) - phi'(0), about alpha_{t-1} phi''

Every step adds a to A, -phi'(0) to S and b / alpha_{t-1} (the curvature) to K. Every
G = max(1, round(gap_epochs * steps_per_epoch)) steps every lr is multiplied by
1 + clip(gamma * r, -bound, bound) and the sums restart, with

    r = S / (K alpha) - 1   if K > 0 (Newton: S / K is the line-search lr), else r = +-bound
                            by the sign of A (no positive curvature: keep going or back off).

While alpha is constant, S / (K alpha) - 1 = A / B with B the sum of the b's: the rule of
BASELINES.md. Dividing each b by its own alpha also keeps exact the pair that straddles the
previous update. A gap without a pair, or with non-finite sums, leaves the lr unchanged. On a
quadratic an unclipped update is an exact line search along the last step:
alpha = <g, omega> / <omega, H omega>.

A step the optimizer skipped (GradScaler on inf/NaN gradients) is not counted: the schedule
watches ``optimizer.step()`` through a step hook. The sums stay on the device, so there is one
host synchronisation per gap, not per step. Under torch.distributed every rank applies rank 0's
factor (the factors agree anyway when gradients are all-reduced, as under DDP).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.angles import sum_of_dots
from autodrop.base import ScheduleHooks, Signal
from autodrop.checks import check_float, check_int
from autodrop.distributed import broadcast_value
from autodrop.search_space import Uniform, space

#: AutoDrop's TLR settings (UAI 2024): an lr update every 0.33 epoch, bounded by c = 1/4.
PAPER_GAP_EPOCHS = 0.33
PAPER_BOUND = 0.25


def gap_steps(steps_per_epoch: int, gap_epochs: float) -> int:
    """Optimizer steps between two lr updates: max(1, round(gap_epochs * steps_per_epoch))."""
    check_int("steps_per_epoch", steps_per_epoch, low=1)
    check_float("gap_epochs", gap_epochs, low=0.0, low_open=True)
    return max(1, round(gap_epochs * steps_per_epoch))


def _on(device: torch.device, value: Tensor) -> Tensor:
    """``value`` on ``device`` (a call only when it is elsewhere: empty lists' dots are on the
    CPU)."""
    return value if value.device == device else value.to(device)


def _checked_options(bound: float, gamma: float, optimizer: Optimizer) -> tuple[float, float]:
    """``bound`` and ``gamma`` as floats, once they and the optimizer's lrs are valid."""
    bound = check_float("bound", bound, low=0.0, high=1.0, high_open=True)
    gamma = check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    lrs = [group["lr"] for group in optimizer.param_groups]
    check_float("param_groups[0]['lr']", lrs[0], low=0.0, low_open=True)
    for index, lr in enumerate(lrs[1:], start=1):
        check_float(f"param_groups[{index}]['lr']", lr, low=0.0)
    return bound, gamma


class TrainableLR(ScheduleHooks, LRScheduler):
    """TLR (reconstruction): see the module docstring. Call ``step()`` after every
    ``optimizer.step()`` (also when a GradScaler skipped it).

    Every group keeps its own lr; all are scaled by the same factor, so their ratios stay those
    of the initial lrs. ``bound`` must lie in [0, 1) so the lr stays positive; ``bound=0``
    freezes it. Memory: two parameter-sized buffers (the parameters before the step and the
    last direction).
    """

    name = "tlr"
    display_name = "TLR (reconstruction)"
    colour = "#393b79"
    reads = frozenset({Signal.GRADIENTS, Signal.PARAMETERS})
    needs_budget = False
    search_space = space(scheduler__bound=Uniform(0.05, 0.5))  # the per-update bound c
    paper_name = "TLR"
    record_stream = "tlr"
    label = display_name

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        gap_epochs: float = PAPER_GAP_EPOCHS,
        bound: float = PAPER_BOUND,
        gamma: float = 1.0,
    ) -> None:
        self.gap_steps = gap_steps(steps_per_epoch, gap_epochs)
        self.gap_epochs = float(gap_epochs)
        self.bound, self.gamma = _checked_options(bound, gamma, optimizer)
        self.groups = [[p for p in g["params"] if p.requires_grad] for g in optimizer.param_groups]
        self.params = [p for params in self.groups for p in params]
        if not self.params:
            raise ValueError("the optimizer has no parameters with requires_grad=True to watch")
        device = self.params[0].device
        self.num_steps = 0
        self.pairs = 0
        self.has_direction = False
        self.previous_lr = float(optimizer.param_groups[0]["lr"])
        self.gap_sums = torch.zeros(3, dtype=torch.float64, device=device)  # S, K, A
        self.previous_slope = torch.zeros((), dtype=torch.float64, device=device)
        self.params_before = [p.detach().clone() for p in self.params]
        self.direction = [torch.zeros_like(p) for p in self.params]
        self._optimizer_stepped = False
        self._pending: list[dict[str, Any]] = []
        # (slope_{t-1}, a_t, alpha_{t-1}) of the pairs not yet in gap_sums (see _fold_pairs).
        self._pairs: list[tuple[Tensor, Tensor, float]] = []
        super().__init__(optimizer)
        self._hook = optimizer.register_step_post_hook(self._note_optimizer_step)

    @property
    def description(self) -> str:
        """The label results tables must carry."""
        bound = Fraction(self.bound).limit_denominator(100)
        return f"{self.label[:-1]}; p = {self.gap_epochs:g} ep, c = {bound})"

    def _note_optimizer_step(self, *_: Any) -> None:
        self._optimizer_stepped = True

    def _initial_step(self) -> None:
        # torch's base class steps once at construction; that is not an optimizer step.
        self._step_count = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        if not self._optimizer_stepped:
            return
        self._optimizer_stepped = False
        self.num_steps += 1
        self.last_epoch = self.num_steps
        self._step_count += 1
        lr = float(self.optimizer.param_groups[0]["lr"])
        with_grad, grads = self._gradients()
        device = self.gap_sums.device
        a = _on(device, sum_of_dots(grads, [self.direction[i] for i in with_grad]))
        self._store_direction(lr)
        slope = _on(device, sum_of_dots(grads, [self.direction[i] for i in with_grad]))
        if self.has_direction:
            self._pairs.append((self.previous_slope, a, self.previous_lr))
            self.pairs += 1
        self.previous_slope = slope
        self.previous_lr = lr
        self.has_direction = True
        if self.num_steps % self.gap_steps == 0:
            self._end_gap()

    def _gradients(self) -> tuple[list[int], list[Tensor]]:
        """Indices of the parameters with a gradient and their g_t = grad + wd * theta_t (one
        fused ``_foreach_add`` per group with weight decay, not one kernel per parameter)."""
        with_grad: list[int] = []
        grads: list[Tensor] = []
        start = 0
        for group, params in zip(self.optimizer.param_groups, self.groups, strict=True):
            indices = [start + i for i, p in enumerate(params) if p.grad is not None]
            group_grads = [self.params[i].grad for i in indices]
            weight_decay = group.get("weight_decay", 0.0)
            if weight_decay and indices:
                before = [self.params_before[i] for i in indices]
                group_grads = torch._foreach_add(group_grads, before, alpha=weight_decay)
            with_grad += indices
            grads += group_grads
            start += len(params)
        return with_grad, grads

    def _store_direction(self, lr: float) -> None:
        """omega_t = (theta_t - theta_{t+1}) / lr; then theta_t <- theta_{t+1}."""
        torch._foreach_copy_(self.direction, self.params_before)
        torch._foreach_sub_(self.direction, self.params)
        torch._foreach_div_(self.direction, lr)
        torch._foreach_copy_(self.params_before, self.params)

    def _fold_pairs(self) -> None:
        """Add the kept pairs' (slope, curvature, a) to ``gap_sums``, one pair after the other
        (a cumulative sum runs through its rows in order): the very numbers of adding each at
        its step, without the step's four tiny kernels."""
        if not self._pairs:
            return
        slopes = torch.stack([pair[0] for pair in self._pairs])
        a = torch.stack([pair[1] for pair in self._pairs])
        lrs = [pair[2] for pair in self._pairs]
        lrs = torch.tensor(lrs, dtype=torch.float64, device=slopes.device)
        rows = torch.stack([slopes, (slopes - a) / lrs, a], dim=1)
        self.gap_sums = torch.cat([self.gap_sums[None], rows]).cumsum(dim=0)[-1]
        self._pairs = []

    def _end_gap(self) -> None:
        self._fold_pairs()
        slope, curvature, a_sum = self.gap_sums.tolist()
        line_search_lr = slope / curvature if curvature > 0 else None
        factor = broadcast_value(self._factor(slope, curvature, a_sum), self.params[0].device)
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self._pending.append(
            {
                "step": self.num_steps,
                "lr": self.lr,
                "factor": factor,
                "line_search_lr": line_search_lr,
                "pairs": self.pairs,
            }
        )
        self.gap_sums = torch.zeros_like(self.gap_sums)
        self.pairs = 0

    def _factor(self, slope: float, curvature: float, a_sum: float) -> float:
        if self.pairs == 0 or not all(map(math.isfinite, (slope, curvature, a_sum))):
            return 1.0
        if curvature > 0:
            ratio = slope / (curvature * self.lr) - 1.0
        else:
            ratio = self.bound if a_sum > 0 else -self.bound
        return 1.0 + min(self.bound, max(-self.bound, self.gamma * ratio))

    def pop_measurements(self) -> list[dict[str, Any]]:
        """One record per lr update since the last call: step, lr (after the update), factor,
        line_search_lr (S / K, None without positive curvature) and pairs."""
        records, self._pending = self._pending, []
        return records

    # ---------------------------------------------------------------------------- state
    _scalars = (
        "gap_steps",
        "gap_epochs",
        "bound",
        "gamma",
        "num_steps",
        "pairs",
        "has_direction",
        "previous_lr",
        "last_epoch",
        "_step_count",
        "_last_lr",
        "base_lrs",
    )
    _tensors = ("gap_sums", "previous_slope")
    _buffers = ("params_before", "direction")

    def state_dict(self) -> dict[str, Any]:
        self._fold_pairs()
        state: dict[str, Any] = {}
        for name in self._scalars:
            value = getattr(self, name)
            state[name] = list(value) if isinstance(value, list) else value
        for name in self._tensors:
            state[name] = getattr(self, name).clone()
        for name in self._buffers:
            state[name] = [t.clone() for t in getattr(self, name)]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in self._buffers:
            saved, mine = state_dict[name], getattr(self, name)
            if [t.shape for t in saved] != [t.shape for t in mine]:
                raise ValueError(
                    f"state_dict buffer {name!r} does not match the watched "
                    "parameters (different model or optimizer?)"
                )
            for dst, src in zip(mine, saved, strict=True):
                dst.copy_(src)
        for name in self._tensors:
            setattr(self, name, state_dict[name].to(self.params[0].device, torch.float64).clone())
        for name in self._scalars:
            value = state_dict[name]
            setattr(self, name, list(value) if isinstance(value, list) else value)
        self._pending = []
        self._pairs = []
        self._optimizer_stepped = False
