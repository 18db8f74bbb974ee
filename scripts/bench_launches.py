"""Launch overhead, counted on the CPU: the operator calls a training step makes outside the
forward pass (model and loss), the backward pass and the optimizer's update, per schedule.

On a GPU each such call that launches work is a kernel launch of a few microseconds on the host
while the step's real kernels take milliseconds (a CIFAR ResNet-18 step takes about 4-5 ms on
an H200, *estimate*), so these counts are a proxy for what the runner and the schedule add to
every step. The runner's own epoch loop (``experiments.loop.train_epoch``) runs the quick/digits
preset (8x8 digits, ResNet-8, batch 64) set up as on CUDA: channels_last, torch's fused SGD,
HD/TLR dot products by ``fused_dots`` (``autodrop.angles.PER_TENSOR_DOT_DEVICES`` emptied),
batches already on the device (the loaders' own work is ``scripts/bench_data.py``'s). It runs
a short unprofiled epoch (the optimizer's state is made), then profiles one epoch of ``--steps``
steps with ``torch.profiler``.

A step runs from the start of its forward pass to the start of the next one; the epoch's end
(totals, synchronisation) is not in a step. Counted: top-level ATen calls (not the ones nested
inside another, e.g. a foreach op's per-tensor loop on the CPU) outside the forward, backward
and update. Views (``aten::view``, ``as_strided``, ``detach``, ...) launch no kernel and are
listed apart. Measurement steps are those after which the schedule has a new record
(``pop_measurements``: AutoDrop's window ends, TLR's gap ends); they do the schedule's periodic
work and are reported apart. The other steps include the loop's periodic bookkeeping (the
running sums folded every 64 steps, the NaN check every 200), averaged over them: the target is
at most 2 calls per non-measurement step for every schedule.

    python -m scripts.bench_launches [--steps 256] [--schedules step autodrop hd tlr schedulefree]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.profiler import record_function

import autodrop.angles
from experiments import optimizers
from experiments.config import compose_config
from experiments.console import EpochProgress
from experiments.data import Loading, build_data, make_dataset
from experiments.loop import train_epoch
from experiments.optimizers import build_optimizer, build_schedule
from experiments.running.processes import DistContext
from experiments.settings import RunSettings
from models import build_model

SCHEDULES = ("step", "autodrop", "hd", "tlr", "schedulefree")
TARGET_CALLS = 2
WARMUP_STEPS = 8
PHASES = ("forward", "backward", "update")
LOSS_CALLS = ("aten::cross_entropy_loss",)  # the loss is part of the forward pass
VIEW_CALLS = frozenset(
    f"aten::{name}"
    for name in (
        "view",
        "as_strided",
        "detach",
        "alias",
        "select",
        "slice",
        "expand",
        "reshape",
        "unsqueeze",
        "squeeze",
        "t",
        "permute",
        "_reshape_alias",
        "unbind",
    )
)


@dataclass(frozen=True)
class StepCalls:
    """The calls of one step outside forward, backward and update: kernel-launching and view."""

    launching: list[str]
    views: list[str]


@dataclass(frozen=True)
class ScheduleCounts:
    schedule: str
    plain: list[StepCalls]  # non-measurement steps
    measurement: list[StepCalls]

    @property
    def mean_plain(self) -> float:
        return statistics.fmean(len(s.launching) for s in self.plain) if self.plain else 0.0

    @property
    def passes(self) -> bool:
        return self.mean_plain <= TARGET_CALLS


@contextlib.contextmanager
def as_on_cuda() -> Iterator[None]:
    """The runner's CUDA choices on CPU tensors: fused optimizers, fused dot products."""
    fused, dots = optimizers.use_fused_optimizer, autodrop.angles.PER_TENSOR_DOT_DEVICES
    optimizers.use_fused_optimizer = lambda device: True
    autodrop.angles.PER_TENSOR_DOT_DEVICES = ()
    try:
        yield
    finally:
        optimizers.use_fused_optimizer = fused
        autodrop.angles.PER_TENSOR_DOT_DEVICES = dots


@contextlib.contextmanager
def labelled_backward() -> Iterator[None]:
    """Every ``Tensor.backward`` inside a ``backward`` profiler range."""
    original = torch.Tensor.backward

    def backward(self: torch.Tensor, *args, **kwargs) -> None:
        with record_function("backward"):
            original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.Tensor.backward = original


class LabelledModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with record_function("forward"):
            return self.model(images)


class LabelledOptimizer:
    """What the loop calls of the optimizer, with ``step`` inside an ``update`` range."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        with record_function("update"):
            self.optimizer.step()


class MeasurementWatch:
    """Wraps ``schedule.step``: notes the steps after which the schedule has a new record."""

    def __init__(self, schedule) -> None:
        self.schedule, self.step_of_schedule = schedule, schedule.step
        self.steps: set[int] = set()
        self.count = 0

    def __call__(self) -> None:
        self.step_of_schedule()
        if self.schedule.pop_measurements():
            self.steps.add(self.count)
        self.count += 1


def staged_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` full batches of the quick/digits data at 8x8, channels_last, on the CPU."""
    data = build_data(
        make_dataset("digits", image_size=8),
        Loading(batch_size=64, eval_batch_size=64, device="cpu", seed=0),
        name="digits",
    )
    data.train.set_epoch(0)
    full = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in data.train][:-1]
    return [full[i % len(full)] for i in range(steps)]


def _phase(event) -> str | None:
    node = event.cpu_parent
    while node is not None:
        if node.name in PHASES:
            return node.name
        node = node.cpu_parent
    return None


def _is_top_level_call(event) -> bool:
    if not event.name.startswith("aten::"):
        return False
    node = event.cpu_parent
    while node is not None:
        if node.name.startswith("aten::"):
            return False
        node = node.cpu_parent
    return True


def calls_per_step(events) -> list[StepCalls]:
    """The profiled epoch's steps (each from its forward's start to the next forward's)."""
    starts = sorted(e.time_range.start for e in events if e.name == "forward")
    steps = [StepCalls([], []) for _ in starts[:-1]]
    for event in events:
        if not _is_top_level_call(event) or _phase(event) is not None:
            continue
        if event.name in LOSS_CALLS:
            continue
        start = event.time_range.start
        index = sum(1 for s in starts if s <= start) - 1
        if 0 <= index < len(steps):
            kind = steps[index].views if event.name in VIEW_CALLS else steps[index].launching
            kind.append(event.name)
    return steps


def count_schedule(schedule_name: str, batches: list) -> ScheduleCounts:
    cfg = RunSettings.from_config(
        compose_config(["experiment=quick/digits", f"scheduler={schedule_name}"])
    )
    torch.manual_seed(0)
    model = build_model(cfg.model.name, 10).to(memory_format=torch.channels_last)
    steps = len(batches)
    with as_on_cuda():
        optimizer = build_optimizer(cfg.optimizer, model, steps_per_epoch=steps)
    schedule = build_schedule(cfg.scheduler, optimizer, steps_per_epoch=steps, epochs=10)
    watch = MeasurementWatch(schedule)
    schedule.step = watch

    def epoch(number: int, epoch_batches: list) -> None:
        train_epoch(
            LabelledModel(model),
            epoch_batches,
            LabelledOptimizer(optimizer),
            schedule,
            autocast=contextlib.nullcontext,
            device=torch.device("cpu"),
            ctx=DistContext(),
            progress=EpochProgress(False, len(epoch_batches), number, 10),
            channels_last=True,
            nan_check_every=cfg.trainer.nan_check_every,
        )

    with as_on_cuda(), labelled_backward():
        epoch(1, batches[:WARMUP_STEPS])  # first steps make the optimizer's state
        watch.steps.clear()
        watch.count = 0
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            epoch(2, batches)
    per_step = calls_per_step(prof.events())
    plain = [s for i, s in enumerate(per_step) if i not in watch.steps]
    measured = [s for i, s in enumerate(per_step) if i in watch.steps]
    return ScheduleCounts(schedule_name, plain, measured)


def _typical(steps: list[StepCalls]) -> str:
    if not steps:
        return "-"
    counts: dict[tuple[str, ...], int] = {}
    for step in steps:
        key = tuple(sorted(step.launching))
        counts[key] = counts.get(key, 0) + 1
    most = max(counts, key=counts.get)
    return ", ".join(name.removeprefix("aten::") for name in most) or "none"


def report(results: list[ScheduleCounts]) -> list[str]:
    lines = [
        f"operator calls per training step outside forward, backward and update "
        f"(target: <= {TARGET_CALLS} per non-measurement step, mean)",
        f"{'schedule':<13} {'steps':>5} {'mean':>6} {'max':>4} {'views':>6} "
        f"{'meas. steps':>11} {'meas. mean':>10}  result  typical step",
    ]
    for r in results:
        plain_max = max((len(s.launching) for s in r.plain), default=0)
        views = statistics.fmean(len(s.views) for s in r.plain) if r.plain else 0.0
        measured = statistics.fmean(len(s.launching) for s in r.measurement) if r.measurement else 0
        lines.append(
            f"{r.schedule:<13} {len(r.plain):>5} {r.mean_plain:>6.2f} {plain_max:>4} "
            f"{views:>6.2f} {len(r.measurement):>11} {measured:>10.1f}  "
            f"{'pass' if r.passes else 'FAIL':<6}  {_typical(r.plain)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256, help="steps of the profiled epoch")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = staged_batches(args.steps)
    results = [count_schedule(name, batches) for name in args.schedules]
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
