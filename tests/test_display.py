"""Display names: one per schedule, shared by tables and figures."""

from __future__ import annotations

import pytest

from autodrop.schedules import SCHEDULE_NAMES
from experiments.config import OPTIMIZER_OWNED_LR
from scripts.display import DISPLAY_NAMES, display_name, paper_display_name


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("autodrop", "AutoDrop"),
        ("autodrop_v1", "AutoDrop (2021 code)"),
        ("onecycle", "One-cycle"),
        ("exp", "ExpLR"),
        ("hd-beta=1e-4", "HD (beta=1e-4)"),
        ("autodrop-window=32", "AutoDrop (window=32)"),
        ("tlr", "TLR (reconstruction)"),
        ("tlr-gap=1", "TLR (reconstruction, gap=1)"),
        ("mystery-x=1", "mystery (x=1)"),
    ],
)
def test_labels_are_shown_by_their_display_name(label: str, shown: str) -> None:
    assert display_name(label) == shown


def test_every_method_has_a_distinct_display_name() -> None:
    methods = [n for n in SCHEDULE_NAMES if n != "optimizer"] + list(OPTIMIZER_OWNED_LR)
    assert sorted(DISPLAY_NAMES) == sorted(methods)
    assert len(set(DISPLAY_NAMES.values())) == len(DISPLAY_NAMES)
    assert paper_display_name("tlr") == "TLR" and paper_display_name("hd") == "HD"
