"""Schedules of optimizers that set their own learning rate: HD and schedule-free SGD.

``OptimizerSetsLR`` leaves every group's lr exactly as the optimizer set it; a training loop
that steps a schedule after every optimizer step can use it unchanged. Its two registered
subclasses check the optimizer and carry what the loop must do for it:

- ``HypergradientLR`` (``hd``): ``autodrop.hd.SGDHD`` moves one lr every step, kept on the
  device; ``step_lr()`` hands it out without a host synchronisation and the epoch's record
  gets the mean lr of its steps (``lr/epoch_mean``).
- ``ScheduleFreeLR`` (``schedulefree``): schedule-free SGD (Defazio et al. 2024) keeps z
  (plain SGD iterates), trains at y and evaluates at x, the average of the z's
  (BASELINES.md sections 3.4-3.5). ``train_mode`` moves the parameters to y before every
  training epoch (``step()`` in eval mode raises); ``eval_mode`` moves them to x, recomputes
  the BatchNorm statistics at x and puts the model in eval mode, before every evaluation and
  before the routine checkpoint, so the checkpoint holds x and a resumed run toggles modes
  exactly where the uninterrupted run does (each toggle is a floating-point lerp). The mode
  flag travels in the optimizer's state_dict. ``group['lr']`` never changes; ``lr`` is the
  warmup-scaled lr of the last step (``scheduled_lr``).

The optimizer is recognised by duck typing (callable ``train`` and ``train_mode`` in every
param group): the library does not import the ``schedulefree`` package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop.base import ScheduleHooks, Signal
from autodrop.batchnorm import BN_PASS_BATCHES, recompute_batchnorm
from autodrop.hd import BETA_GRID, SGDHD
from autodrop.search_space import LogUniform, space


class OptimizerSetsLR(ScheduleHooks, LRScheduler):
    """The schedule slot of an optimizer that sets its own learning rate (not registered).

    ``step()`` counts the step and leaves every group's lr as the optimizer set it (no copy
    onto itself, no host synchronisation). ``lr`` reads the optimizer's current rate.
    """

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        self._step_count += 1
        self.last_epoch += 1
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class HypergradientLR(OptimizerSetsLR):
    """HD: the lr is ``SGDHD``'s, adapted by the hypergradient every step."""

    name = "hd"
    display_name = "HD"
    colour = "#17becf"
    reads = frozenset({Signal.GRADIENTS})  # SGDHD's hypergradient
    tuned_setting = "beta"
    needs_budget = False
    # The initial alpha and the hypergradient lr over the span of AutoDrop's paper grid.
    search_space = space(optimizer__beta=LogUniform(min(BETA_GRID), max(BETA_GRID)))

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, SGDHD):
            raise ValueError(
                f"schedule 'hd' needs the optimizer autodrop.hd.SGDHD (it sets the lr by "
                f"hypergradient descent), got {type(optimizer).__module__}."
                f"{type(optimizer).__qualname__}"
            )
        super().__init__(optimizer)

    def epoch_fields(self, records: list[dict[str, Any]], lr_mean: float) -> dict[str, Any]:
        """HD moves the lr every step: the record gets the epoch's mean lr."""
        return {"lr/epoch_mean": lr_mean}

    def step_lr(self) -> float | Tensor:
        """SGDHD's lr: a 0-d device tensor outside autograd, read without a host
        synchronisation (SGDHD makes it without grad; no detach call per step)."""
        lr = self.optimizer.param_groups[0]["lr"]
        if not isinstance(lr, Tensor):
            return float(lr)
        return lr.detach() if lr.requires_grad else lr


def is_schedule_free(optimizer: Optimizer) -> bool:
    """True for the schedulefree optimizers that have train and eval modes."""
    return callable(getattr(optimizer, "train", None)) and all(
        "train_mode" in group for group in optimizer.param_groups
    )


def in_train_mode(optimizer: Optimizer) -> bool:
    """Whether the parameters hold y (train mode); always True for other optimizers."""
    return not is_schedule_free(optimizer) or bool(optimizer.param_groups[0]["train_mode"])


def require_eval_mode(optimizer: Optimizer, purpose: str = "exported weights") -> None:
    """ValueError unless the parameters hold x (always fine for other optimizers)."""
    if is_schedule_free(optimizer) and optimizer.param_groups[0]["train_mode"]:
        raise ValueError(
            f"{purpose} must be schedule-free's averaged weights x, but the optimizer is in "
            "train mode (parameters = y): call eval_mode() first"
        )


class ScheduleFreeLR(OptimizerSetsLR):
    """Schedule-free SGD: the optimizer's train/eval modes around every epoch (module
    docstring). ``bn_pass_batches``: batches of the BatchNorm pass at x."""

    name = "schedulefree"
    display_name = "Schedule-free"
    colour = "#637939"
    reads = frozenset({Signal.GRADIENTS})  # its optimizer replaces the schedule
    tuned_setting = "lr_multiplier"
    needs_budget = False  # its warmup is a fixed number of epochs
    # Its lr is the task's lr times lr_multiplier, so the multiplier is its lr knob (the task's lr
    # is not searched as well): one decade either side of its default 10, as every other space
    # searches the lr (the package's README asks 10-50x the SGD lr).
    search_space = MappingProxyType({"optimizer.lr_multiplier": LogUniform(1.0, 100.0)})

    def __init__(self, optimizer: Optimizer) -> None:
        if not is_schedule_free(optimizer):
            raise ValueError(
                f"schedule 'schedulefree' needs a schedule-free optimizer (a callable train() "
                f"and 'train_mode' in every param group, e.g. schedulefree.SGDScheduleFree), "
                f"got {type(optimizer).__module__}.{type(optimizer).__qualname__}"
            )
        self.bn_pass_batches = BN_PASS_BATCHES
        super().__init__(optimizer)

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()`` and ``optimizer.train()`` (parameters <- y)."""
        model.train()
        self.optimizer.train()  # type: ignore[attr-defined]

    def eval_mode(
        self,
        model: nn.Module,
        bn_batches: Callable[[], Iterable[Any]],
        autocast: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> bool:
        """Parameters <- x, BatchNorm statistics recomputed at x over ``bn_batches()`` (the
        first 50 batches; they must not come from the training stream), ``model.eval()``.
        Pass the bare model, not a DDP wrapper. Returns True."""
        self.optimizer.eval()  # type: ignore[attr-defined]
        recompute_batchnorm(
            model, bn_batches(), num_batches=self.bn_pass_batches, autocast=autocast
        )
        model.eval()
        return True

    @property
    def lr(self) -> float:
        """The warmup-scaled lr of the last step (0 before the first); ``group['lr']`` is the
        constant peak lr."""
        return float(self.optimizer.param_groups[0].get("scheduled_lr", 0.0))
