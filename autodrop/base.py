"""The contract every schedule in this package shares.

All schedules are ``torch.optim.lr_scheduler.LRScheduler`` subclasses stepped once after every
optimizer step. This mixin adds what a training loop and the results scripts need beyond
torch's API, so that neither has to know a schedule by its name:

- metadata (class attributes): ``name`` (the registry name), ``display_name``, ``colour``,
  ``paper_name``, ``tuned_setting``, ``record_stream``, ``console_fields``, and three
  declarations every registered schedule makes (no defaults): ``reads``, the training signals
  the method consumes (``Signal``); ``needs_budget``, whether it must be told the run's length;
  ``search_space``, the knobs a tuning study searches (``autodrop.search_space``);
- the epoch: ``train_mode`` before every training epoch, ``eval_mode`` after it (before the
  evaluation and the routine checkpoint), ``epoch_end`` once the epoch's metric is known,
  ``pop_measurements`` and ``epoch_fields`` for the records;
- the lr: ``lr`` (a float, for records) and ``step_lr`` (the lr of the last step, without a
  host synchronisation, for per-step sums).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Any

from torch import Tensor, nn


class Signal(StrEnum):
    """What a learning-rate method may observe while training, beyond the step count.

    A method that reads none of them is a fixed function of the step (and the budget). A
    method that reads ``HELD_OUT_METRIC`` consumes data outside the training set: under the
    honest protocol that is a validation split, under the paper's the test split, and the run
    records which (``metric_source`` in summary.json).
    """

    TRAINING_LOSS = "training_loss"
    GRADIENTS = "gradients"
    PARAMETERS = "parameters"
    HELD_OUT_METRIC = "held_out_metric"


def declared_needs_budget(cls: type) -> bool:
    """The ``needs_budget`` declaration of a schedule class; TypeError when it has none or it is
    not a bool (every schedule must say whether it needs the run's length)."""
    needs = getattr(cls, "needs_budget", None)
    if not isinstance(needs, bool):
        raise TypeError(
            f"needs_budget: schedule class {cls.__qualname__} must declare `needs_budget`, a "
            "bool: True when it must be told the run's length (it takes `epochs`: milestones, "
            "cosine or one-cycle spans), False when it is anytime (its run of T epochs is the "
            "first T epochs of a longer run)"
        )
    return needs


def declared_signals(cls: type) -> frozenset[Signal]:
    """The ``reads`` declaration of a schedule class; TypeError when it has none or it is not a
    frozenset of ``Signal`` members (every schedule must say what it reads)."""
    reads = getattr(cls, "reads", None)
    if not isinstance(reads, frozenset) or not all(isinstance(s, Signal) for s in reads):
        raise TypeError(
            f"reads: schedule class {cls.__qualname__} must declare `reads`, a frozenset of "
            f"autodrop.base.Signal members (valid: {', '.join(s.name for s in Signal)}; "
            "frozenset() for a fixed function of the step)"
        )
    return reads


class ScheduleHooks:
    """Mixin: schedule metadata, epoch hooks, measurement records for loggers, current lr."""

    #: The registry name, which is also the runner's ``scheduler.name``.
    name: str
    #: How tables and figures name the schedule.
    display_name: str
    #: The schedule's colour in figures (hex).
    colour: str
    #: How the paper's own results name the schedule, when that differs from display_name.
    paper_name: str | None = None
    #: The optimizer setting a grid search tunes for this method (e.g. HD's "beta"), if any.
    tuned_setting: str | None = None
    #: The run-directory record file ``<record_stream>.jsonl`` that pop_measurements() feeds.
    record_stream: str | None = None
    #: Fields of ``epoch_fields`` a console's epoch line shows, with the name it gives them.
    console_fields: tuple[tuple[str, str], ...] = ()

    #: The signals the method consumes to set its lr (or iterates), beyond the step count: no
    #: default, every schedule declares it (``declared_signals``). ``Signal.HELD_OUT_METRIC``:
    #: the loop passes the epoch's held-out loss to ``epoch_end``.
    reads: frozenset[Signal]

    #: Whether the method must be told the run's length (the registry's ``epochs``): no default,
    #: every schedule declares it (``declared_needs_budget``) and the registry refuses a
    #: declaration its constructor contradicts (True exactly when it takes ``epochs``). False:
    #: the method is anytime, its run of T epochs is the first T epochs of its run of 2T, so the
    #: horizon study trains it once at the longest budget and reads every shorter one from it.
    needs_budget: bool

    #: The knobs a tuning study searches, config key -> distribution (``autodrop.search_space``,
    #: not imported here to keep this module at the bottom of the library): no default
    #: (``autodrop.search_space.declared_search_space``).
    search_space: Mapping[str, Any]

    @property
    def needs_metric(self) -> bool:
        """Whether ``epoch_end`` needs the epoch's held-out metric (declared in ``reads``)."""
        return Signal.HELD_OUT_METRIC in declared_signals(type(self))

    def epoch_end(self, metric: float | None = None) -> None:
        """Called once at the end of every epoch, with the epoch's held-out loss when the
        schedule reads one (``needs_metric``)."""

    def pop_measurements(self) -> list[dict[str, Any]]:
        """Records produced since the last call (AutoDrop's per-window measurements)."""
        return []

    def epoch_fields(self, records: list[dict[str, Any]], lr_mean: float) -> dict[str, Any]:
        """Extra fields of the epoch's metrics record. ``records``: every record of this
        schedule's stream so far, this epoch's included; ``lr_mean``: the mean lr of the
        epoch's steps."""
        return {}

    def train_mode(self, model: nn.Module) -> None:
        """Called before every training epoch: put the model (and optimizer) in train mode."""
        model.train()

    def eval_mode(
        self,
        model: nn.Module,
        bn_batches: Callable[[], Iterable[Any]],
        autocast: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> bool:
        """Called after every training epoch, before the evaluation and the routine checkpoint.
        Returns whether it prepared the model for evaluation itself (then the model is in eval
        mode). ``bn_batches`` makes batches for a BatchNorm pass; by default nothing happens,
        ``bn_batches`` is not called and the result is False."""
        return False

    @property
    def lr(self) -> float:
        """The learning rate of the first param group right now."""
        return float(self.optimizer.param_groups[0]["lr"])  # type: ignore[attr-defined]

    def step_lr(self) -> float | Tensor:
        """The lr the last step ended with, without a host synchronisation (a float, or a
        device tensor for an optimizer that keeps its lr on the device)."""
        return self.lr
