"""Argument checks of the library and the runner: a ValueError names the bad value and the range."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any


def _no_valid_value(name: str, value: object, lower: str, upper: str) -> ValueError:
    """The error when bounds taken from other arguments exclude each other (``lower`` and
    ``upper`` are the two conditions): printed as a range, they would show an empty one."""
    return ValueError(
        f"{name}={value!r} is invalid, as any value would be: the other arguments require "
        f"{lower} and {upper}, which no number satisfies"
    )


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (bools are rejected)."""
    if high is not None and high < low:
        raise _no_valid_value(name, value, f"{name} >= {low}", f"{name} <= {high}")
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
    if low is not None and high is not None:
        if high < low or (high == low and (low_open or high_open)):
            lower = f"{name} {'>' if low_open else '>='} {low}"
            upper = f"{name} {'<' if high_open else '<='} {high}"
            raise _no_valid_value(name, value, lower, upper)
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


def closest_choice(value: object, choices: Iterable[object]) -> str | None:
    """The choice ``value`` was most likely meant to be, or None: the only choice it begins,
    else the choice it is with two neighbouring letters swapped, else difflib's closest match
    above 0.7 (case ignored). The cut-off is high because a wrong suggestion misleads: 'gpu' is
    as close to 'cpu' (0.67) as 'sdg' is to 'sgd'."""
    names = {str(choice).lower(): str(choice) for choice in choices}
    text = str(value).lower()
    begun = [name for lowered, name in names.items() if text and lowered.startswith(text)]
    if len(begun) == 1:
        return begun[0]
    for i in range(len(text) - 1):
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        if swapped != text and swapped in names:
            return names[swapped]
    close = difflib.get_close_matches(text, list(names), n=1, cutoff=0.7)
    return names[close[0]] if close else None


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        close = closest_choice(value, choices)
        hint = "" if close is None else f"; did you mean {name}={close!r}?"
        raise ValueError(f"{name}={value!r} is invalid: expected one of {list(choices)}{hint}")
    return str(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: expected True or False")
    return value


def call_with_options(
    kind: str,
    name: str,
    builder: Callable[..., Any],
    context: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Any:
    """``builder(**context, **options)`` for the registered component ``name`` of ``kind``:
    the builder's keyword parameters are its options; of ``context`` (what the caller supplies:
    an optimizer, a budget, ...) it gets what it declares. An option it does not take, or one it
    needs and was not given, raises ValueError naming the valid options."""
    parameters = inspect.signature(builder).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = [
        p.name
        for p in parameters.values()
        if p.name not in context and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"unknown option(s) {unknown} for {kind} {name!r}: valid options are {accepted}"
        )
    missing = [
        p.name
        for p in parameters.values()
        if p.name in accepted and p.default is p.empty and p.name not in options
    ]
    if missing:
        raise ValueError(f"{kind} {name!r} needs option(s) {missing}: valid options are {accepted}")
    given = {key: value for key, value in context.items() if key in parameters}
    return builder(**given, **options)
