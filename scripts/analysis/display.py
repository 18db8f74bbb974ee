"""How results name and colour a schedule: the registry's display name (one per schedule, used
by every table and figure) and colour, with a run's label settings and identity changes in
parentheses: HD with ``{"optimizer.beta": 0.0001}`` -> 'HD (beta=0.0001)', AutoDrop with
``{"scheduler.window": 32}`` -> 'AutoDrop (window=32)', TLR with a setting ->
'TLR (reconstruction, gap=1)', Step with the change ``optimizer.lr=0.1`` ->
'Step (optimizer.lr=0.1)'. Names come from the runs' summary.json fields, never from labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autodrop import registry
from experiments.config import compact_number
from experiments.run_identity import format_value


def _schedule(name: str):
    return registry.schedule_class(name) if name in registry.SCHEDULE_NAMES else None


def short_key(key: str) -> str:
    """How tables name a dotted setting: its last part ('scheduler.window' -> 'window')."""
    return key.rpartition(".")[2]


def format_setting(value: Any) -> str:
    """A setting's value as labels show it (10.0 -> '10', 0.0001 -> '0.0001')."""
    return compact_number(value)


def display_name(
    name: str,
    settings: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> str:
    """The registry display name of schedule ``name`` (an unknown name is shown as it is), with
    the label's ``settings`` (short keys) and the identity ``changes`` (values that differ from
    the preset, full keys) in parentheses."""
    schedule = _schedule(name)
    shown = schedule.display_name if schedule is not None else name
    parts = [f"{short_key(k)}={format_setting(v)}" for k, v in (settings or {}).items()]
    parts += [f"{k}={format_value(v)}" for k, v in sorted((changes or {}).items())]
    if not parts:
        return shown
    if shown.endswith(")"):
        return f"{shown[:-1]}, {', '.join(parts)})"
    return f"{shown} ({', '.join(parts)})"


def paper_display_name(name: str) -> str:
    """How a column of the paper's numbers names a schedule (the registry's ``paper_name``:
    'tlr' -> 'TLR', our TLR being a reconstruction of the paper's)."""
    schedule = _schedule(name)
    if schedule is not None and schedule.paper_name:
        return schedule.paper_name
    return display_name(name)


def schedule_colour(name: str) -> str | None:
    """The registry colour (hex) of schedule ``name``; None for an unknown name."""
    schedule = _schedule(name)
    return schedule.colour if schedule is not None else None


def schedule_rank(name: str) -> int:
    """The schedule's place in tables (the registry order); unknown names come last."""
    names = registry.SCHEDULE_NAMES
    return names.index(name) if name in names else len(names)
