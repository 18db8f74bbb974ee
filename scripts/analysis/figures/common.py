"""Shared figure conventions: one colour per schedule everywhere (shades of it for several labels
of one schedule), one legend per figure below its panels with as many columns as its width
holds, integer epoch ticks, PNG + PDF output."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.textpath import TextToPath  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from scripts.analysis.display import schedule_colour  # noqa: E402

LEGEND_FONT = "small"
# A legend entry is its text plus the handle, the pad after it and the space to the next column
# (matplotlib's legend.handlelength, handletextpad and columnspacing), in font sizes.
_ENTRY_PAD = (
    plt.rcParams["legend.handlelength"]
    + plt.rcParams["legend.handletextpad"]
    + plt.rcParams["legend.columnspacing"]
)
# Several labels of one schedule: shades from this much darker to this much lighter.
SHADE_RANGE = (-0.45, 0.45)

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


def style_entry(label: str, **style) -> tuple[Line2D, str]:
    """A legend entry explaining a line style (drawn grey, so it is not read as a series)."""
    return Line2D([], [], color=style.pop("color", "grey"), **style), label


def shade(color: str, amount: float) -> str:
    """``color`` mixed with white (amount > 0) or black (amount < 0) by |amount|."""
    rgb = np.array(to_rgb(color))
    target = 1.0 if amount > 0 else 0.0
    return to_hex(rgb + (target - rgb) * abs(amount))


def label_colors(labels: Sequence[str], names: Mapping[str, str]) -> dict[str, str]:
    """Colour of each label (``names``: label -> schedule name): a schedule's one label gets the
    schedule's colour; several labels of one schedule (settings, seeds of a trace) get distinct
    shades of it, darkest first in the order given."""
    by_schedule: dict[str, list[str]] = {}
    for label in labels:
        by_schedule.setdefault(names[label], []).append(label)
    colors = {}
    for name, group in by_schedule.items():
        base = schedule_color(name)
        amounts = np.linspace(*SHADE_RANGE, len(group)) if len(group) > 1 else [0.0]
        colors.update({label: shade(base, a) for label, a in zip(group, amounts, strict=True)})
    return colors


def legend_columns(fig: plt.Figure, labels: Sequence[str], fontsize: str = LEGEND_FONT) -> int:
    """As many columns as the figure's width holds entries as wide as the widest label."""
    font = FontProperties(size=fontsize)
    size = font.get_size_in_points()
    widest = max(
        (
            TextToPath().get_text_width_height_descent(text, font, ismath=False)[0]
            for text in labels
        ),
        default=0.0,
    )
    entry = widest + _ENTRY_PAD * size
    return int(max(1, min(len(labels), fig.get_figwidth() * 72 // entry)))


def _rows(counts: Sequence[int], columns: int) -> int:
    """The fewest rows with which groups of ``counts`` entries, each starting a new column, fit
    in ``columns`` columns (all in one column when even one row each does not fit)."""
    total = sum(counts)
    for rows in range(1, total + 1):
        if sum(-(-count // rows) for count in counts) <= columns:
            return rows
    return max(total, 1)


def shared_legend(
    fig: plt.Figure,
    *,
    title: str | None = None,
    extra: Iterable[tuple[Artist, str]] = (),
    columns: int | None = None,
    series: Iterable[tuple[Artist, str]] | None = None,
) -> Legend:
    """One legend for all panels, below them (outside every axes; the figure must use the
    constrained layout): the ``series`` (handle, label) pairs, by default each label of every
    panel once; then, from a new column, the ``extra`` pairs that explain line styles and
    bands. At most ``columns`` columns, by default as many as the figure's width holds
    (:func:`legend_columns`): a legend grows by rows of that width, never by one entry a row."""
    if series is None:
        series = [
            pair for ax in fig.axes for pair in zip(*ax.get_legend_handles_labels(), strict=True)
        ]
    groups: list[dict[str, Artist]] = [{}, {}]
    for group, pairs in zip(groups, (series, extra), strict=True):
        for handle, label in pairs:
            if all(label not in seen for seen in groups):
                group[label] = handle
    groups = [group for group in groups if group]
    texts = [text for group in groups for text in group]
    most = min(columns, max(len(texts), 1)) if columns else legend_columns(fig, texts)
    rows = _rows([len(group) for group in groups], most)
    handles, labels = [], []
    for group in groups:  # each group fills whole columns (blank entries after it)
        used = -(-len(group) // rows) * rows if len(groups) > 1 and rows > 1 else len(group)
        handles += [*group.values(), *[_blank() for _ in range(used - len(group))]]
        labels += [*group, *[""] * (used - len(group))]
    return fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=max(1, -(-len(labels) // rows)),
        title=title,
        fontsize=LEGEND_FONT,
        frameon=False,
    )


def _blank() -> Line2D:
    return Line2D([], [], linestyle="none")


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
