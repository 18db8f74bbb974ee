"""Search spaces: the knobs a tuning study may turn for a schedule, declared with the schedule.

Every registered schedule carries ``search_space``, a mapping of the runner's config key (the
key a user would override: ``optimizer.lr``, ``scheduler.gamma``, ``optimizer.beta``) to a
distribution below. The distributions are plain data (no torch, no scipy): each maps a point
``u`` of the unit interval to a value, so a quasi-random sequence of points (the runner draws a
scrambled Halton sequence, as AlgoPerf draws its trials) becomes a pool of trials.

Every space searches the initial learning rate (``INITIAL_LR``, one decade either side of the
task's own lr) and the knobs the schedule's paper or documentation names; a schedule-free
optimizer's lr is its ``lr_multiplier`` times the task's lr, so that is its lr knob.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from autodrop.checks import check_float, check_int


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [low, high]. ``relative``: a factor of the value the run is configured
    with (the task preset's), not the value itself."""

    low: float
    high: float
    relative: bool = False

    def __post_init__(self) -> None:
        check_float("low", self.low, low=0.0, low_open=True)
        check_float("high", self.high, low=self.low, low_open=True)

    def value(self, u: float, base: float | None = None) -> float:
        drawn = self.low * (self.high / self.low) ** _unit(u)
        return _scaled(drawn, self.relative, base)

    def describe(self) -> str:
        return f"log-uniform({self.low:g}, {self.high:g}){' x preset' if self.relative else ''}"


@dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high] (``relative`` as for LogUniform)."""

    low: float
    high: float
    relative: bool = False

    def __post_init__(self) -> None:
        check_float("low", self.low)
        check_float("high", self.high, low=self.low, low_open=True)

    def value(self, u: float, base: float | None = None) -> float:
        return _scaled(self.low + (self.high - self.low) * _unit(u), self.relative, base)

    def describe(self) -> str:
        return f"uniform({self.low:g}, {self.high:g}){' x preset' if self.relative else ''}"


@dataclass(frozen=True)
class IntUniform:
    """Each integer of [low, high] with equal probability."""

    low: int
    high: int

    def __post_init__(self) -> None:
        check_int("low", self.low, low=0)
        check_int("high", self.high, low=self.low)

    def value(self, u: float, base: float | None = None) -> int:
        span = self.high - self.low + 1
        return self.low + min(int(_unit(u) * span), span - 1)

    def describe(self) -> str:
        return f"integer-uniform({self.low}, {self.high})"


@dataclass(frozen=True)
class Choice:
    """One of ``options`` with equal probability."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("options=() is invalid: a choice needs at least one option")

    def value(self, u: float, base: float | None = None) -> Any:
        return self.options[min(int(_unit(u) * len(self.options)), len(self.options) - 1)]

    def describe(self) -> str:
        return f"choice{self.options!r}"


Distribution = LogUniform | Uniform | IntUniform | Choice
DISTRIBUTIONS = (LogUniform, Uniform, IntUniform, Choice)

#: The config key of the run's initial learning rate.
INITIAL_LR = "optimizer.lr"
#: The initial lr every space searches: one decade either side of the task's own lr.
LR_RANGE = LogUniform(0.1, 10.0, relative=True)


def _unit(u: float) -> float:
    return check_float("u", u, low=0.0, high=1.0)


def _scaled(value: float, relative: bool, base: float | None) -> float:
    if not relative:
        return value
    if base is None or not math.isfinite(base):
        raise ValueError(
            f"base={base!r} is invalid: a relative distribution needs the "
            "configured value it scales"
        )
    return value * float(base)


def space(**knobs: Distribution) -> Mapping[str, Distribution]:
    """A read-only search space: the initial lr (``LR_RANGE``) plus ``knobs``, whose keys are
    config keys with the dot written as ``__`` (``scheduler__gamma=LogUniform(...)``)."""
    return MappingProxyType(
        {INITIAL_LR: LR_RANGE, **{key.replace("__", "."): d for key, d in knobs.items()}}
    )


def declared_search_space(cls: type) -> Mapping[str, Distribution]:
    """The ``search_space`` declaration of a schedule class; TypeError when it has none or it
    is not a non-empty mapping of dotted config keys to distributions of this module."""
    declared = getattr(cls, "search_space", None)
    valid = (
        isinstance(declared, Mapping)
        and bool(declared)
        and all(
            isinstance(key, str) and "." in key and isinstance(value, DISTRIBUTIONS)
            for key, value in declared.items()
        )
    )
    if not valid:
        raise TypeError(
            f"search_space: schedule class {cls.__qualname__} must declare `search_space`, a "
            "mapping of config keys ('optimizer.lr', 'scheduler.<option>') to "
            "autodrop.search_space distributions (LogUniform, Uniform, IntUniform, Choice); "
            "autodrop.search_space.space() gives the initial lr alone"
        )
    return declared
