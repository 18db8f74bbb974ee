"""Shared figure conventions: one colour per schedule everywhere, one legend per figure below
its panels, integer epoch ticks, PNG + PDF output."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from scripts.analysis.display import schedule_colour  # noqa: E402

LEGEND_COLUMNS = 6

# No creation date in the files: the same figure is the same file (PNG carries none).
FILE_METADATA = {".png": None, ".pdf": {"CreationDate": None}}
_FALLBACK = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def schedule_color(name: str) -> str:
    """Colour of schedule ``name`` (a registry name: the registry's colour, the same in every
    figure of every preset; a run's label settings keep its schedule's colour); an unknown name
    gets a fixed colour of matplotlib's cycle."""
    return schedule_colour(name) or _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def integer_ticks(axes: Iterable[Axes]) -> None:
    """Major x ticks on whole numbers only (epochs: no 1.5 on a short run)."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def shared_legend(
    fig: plt.Figure,
    *,
    title: str | None = None,
    extra: Iterable[tuple[Artist, str]] = (),
    columns: int = LEGEND_COLUMNS,
) -> Legend:
    """One legend for all panels, below them (outside every axes; the figure must use the
    constrained layout): each label of every panel once, then ``extra`` (handle, label) pairs
    that explain line styles and bands."""
    entries: dict[str, Artist] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    for handle, label in extra:
        entries.setdefault(label, handle)
    return fig.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center",
        ncols=min(columns, max(len(entries), 1)),
        title=title,
        fontsize="small",
        frameon=False,
    )


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
