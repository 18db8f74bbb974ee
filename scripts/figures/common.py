"""Shared figure conventions: one colour per schedule everywhere, PNG + PDF output."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Fixed colours so a schedule looks the same in every figure of every preset.
SCHEDULE_COLORS = {
    "autodrop": "#d62728",
    "autodrop_v1": "#ff7f0e",
    "step": "#1f77b4",
    "cosine": "#2ca02c",
    "onecycle": "#9467bd",
    "clr": "#8c564b",
    "exp": "#e377c2",
    "plateau": "#7f7f7f",
    "constant": "#bcbd22",
    "hd": "#17becf",
    "tlr": "#393b79",
    "schedulefree": "#637939",
}
# No creation date in the files: the same figure is the same file (PNG carries none).
FILE_METADATA = {".png": None, ".pdf": {"CreationDate": None}}
_FALLBACK = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def schedule_color(name: str) -> str:
    """Colour for a schedule label; ablation labels like 'autodrop-window=32' use their base."""
    base = name.split("-")[0]
    if base in SCHEDULE_COLORS:
        return SCHEDULE_COLORS[base]
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.pdf into out_dir and close the figure; drawing the same
    figure again gives byte-identical files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=FILE_METADATA[path.suffix])
    plt.close(fig)
    return paths
