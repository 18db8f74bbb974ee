"""Display names: one per schedule, from the registry, shared by tables and figures."""

from __future__ import annotations

import pytest

from autodrop.registry import SCHEDULE_NAMES, schedule_class
from scripts.analysis.display import display_name, paper_display_name


@pytest.mark.parametrize(
    ("name", "settings", "changes", "shown"),
    [
        ("autodrop", None, None, "AutoDrop"),
        ("autodrop_v1", None, None, "AutoDrop (2021 code)"),
        ("onecycle", None, None, "One-cycle"),
        ("exp", None, None, "ExpLR"),
        ("hd", {"optimizer.beta": 1e-4}, None, "HD (beta=0.0001)"),
        ("autodrop", {"scheduler.window": 32}, None, "AutoDrop (window=32)"),
        ("tlr", None, None, "TLR (reconstruction)"),
        ("tlr", {"scheduler.gap": 1}, None, "TLR (reconstruction, gap=1)"),
        ("step", None, {"optimizer.lr": 0.1}, "Step (optimizer.lr=0.1)"),
        ("mystery", {"x": 1}, None, "mystery (x=1)"),
    ],
)
def test_runs_are_shown_by_their_display_name(name, settings, changes, shown) -> None:
    assert display_name(name, settings, changes) == shown


def test_every_schedule_has_a_distinct_display_name() -> None:
    names = [schedule_class(name).display_name for name in SCHEDULE_NAMES]
    assert all(names) and len(set(names)) == len(names)
    assert {"hd", "schedulefree"} <= set(SCHEDULE_NAMES)
    assert paper_display_name("tlr") == "TLR" and paper_display_name("hd") == "HD"
