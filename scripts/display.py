"""How results name a schedule: one display name per schedule, used by every table and figure.

A label with a varied setting keeps it in parentheses: 'hd-beta=1e-4' -> 'HD (beta=1e-4)',
'autodrop-window=32' -> 'AutoDrop (window=32)', 'tlr-gap=1' -> 'TLR (reconstruction, gap=1)'.
"""

from __future__ import annotations

DISPLAY_NAMES = {
    "autodrop": "AutoDrop",
    "autodrop_v1": "AutoDrop (2021 code)",
    "step": "Step",
    "cosine": "Cosine",
    "onecycle": "One-cycle",
    "clr": "CLR",
    "exp": "ExpLR",
    "hd": "HD",
    "tlr": "TLR (reconstruction)",
    "schedulefree": "Schedule-free",
    "plateau": "Plateau",
    "constant": "Constant",
}


# The paper's own results name its methods; our TLR is a reconstruction of the paper's TLR.
PAPER_DISPLAY_NAMES = {"tlr": "TLR"}


def display_name(label: str) -> str:
    """The display name of a schedule label (unknown names are shown as they are). A run label's
    identity suffix ('step,optimizer.lr=0.1') follows the name: 'Step (optimizer.lr=0.1)'."""
    head, _, suffix = label.partition(",")
    base, _, setting = head.partition("-")
    name = DISPLAY_NAMES.get(base, base)
    settings = ", ".join(filter(None, [setting, suffix.replace(",", ", ")]))
    if not settings:
        return name
    if name.endswith(")"):
        return f"{name[:-1]}, {settings})"
    return f"{name} ({settings})"


def paper_display_name(schedule: str) -> str:
    """How a column of the paper's numbers names a schedule ('tlr' -> 'TLR')."""
    return PAPER_DISPLAY_NAMES.get(schedule, display_name(schedule))
