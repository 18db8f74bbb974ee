"""Argument checks of the library and the runner: a ValueError names the bad value and the range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (bools are rejected)."""
    valid = isinstance(value, Integral) and not isinstance(value, bool)
    if not valid or value < low or (high is not None and value > high):
        upper = f" <= {high}" if high is not None else ""
        raise ValueError(
            f"{name}={value!r} is invalid: expected an int with {low} <= {name}{upper}"
        )
    return int(value)


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval given by low/high (open ends if asked)."""
    valid = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if valid:
        number = float(value)
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        valid = not (too_low or too_high)
    if not valid:
        lower = "" if low is None else f"{low} {'<' if low_open else '<='} "
        upper = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(
            f"{name}={value!r} is invalid: expected a finite number with {lower}{name}{upper}"
        )
    return number


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid: expected one of {list(choices)}")
    return str(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: expected True or False")
    return value
