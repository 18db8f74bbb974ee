"""The paper's tables as files: every table of a RunSet built (:func:`build_tables`) and written
as CSV, Markdown (caption and note) and LaTeX, with runs.csv and the list of failed runs
(:func:`aggregate`); failed, diverged and still-running runs are listed and never averaged."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from scripts.analysis import tables
from scripts.analysis import time_to_target as ttt
from scripts.analysis.runs import RunSet


def build_tables(
    runs: RunSet,
    paper_table: Path = tables.PAPER_TABLE2,
    targets: list[ttt.Target] | None = None,
) -> list[tables.Table]:
    """Every table of finished runs, in the order they are written. ``targets``: the validation
    targets of time to target (default: the committed ``ttt.TARGETS_FILE``)."""
    finished = runs.finished()
    if finished.runs.empty:
        return []
    targets = ttt.load_targets() if targets is None else targets
    built: list[tables.Table | None] = []
    if finished.runs["setting_key"].isna().any():  # runs with plain schedule labels
        table2 = tables.table2(finished)
        built += [
            table2,
            tables.table2_honest(finished),
            tables.time_to_target(finished, targets),
            tables.table2_vs_paper(table2, tables.load_paper_table2(paper_table)),
            tables.table16(finished),
            tables.table3(finished),
            tables.comparisons(finished),
            tables.iqm_table(finished),
        ]
    built += tables.ablation_tables(finished)
    built.append(tables.lr_sensitivity(finished))
    return [table for table in built if table is not None]


def write_table(table: tables.Table, out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``table.display`` as ``<name>.<fmt>`` for fmt in csv / md / tex."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = table.display.reset_index()
    paths = []
    for fmt in formats:
        path = out_dir / f"{table.name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "md":
            text = frame.to_markdown(index=False) if not frame.empty else "(none)"
            caption = f"Table: {table.caption}\n\n" if table.caption else ""
            path.write_text(caption + text + (f"\n\n{table.note}\n" if table.note else "\n"))
        elif fmt == "tex":
            path.write_text(latex_table(table, frame))
        else:
            raise ValueError(f"table format {fmt!r} is not one of csv, md, tex")
        paths.append(path)
    return paths


def latex_escape(text: str) -> str:
    """Plain text for a LaTeX caption (%, &, _, # escaped; ± as $\\pm$)."""
    for char in "%&_#":
        text = text.replace(char, "\\" + char)
    return text.replace("±", r"$\pm$")


def latex_table(table: tables.Table, frame: pd.DataFrame) -> str:
    """A LaTeX table environment: the caption (with the note) above the tabular."""
    caption = " ".join(filter(None, [table.caption, f"{table.note}." if table.note else ""]))
    latex = frame.to_latex(
        index=False,
        escape=True,
        caption=latex_escape(caption) if caption else None,
        label=f"tab:{table.name}",
        position="t",
    )
    return latex.replace("±", r"$\pm$").replace("†", r"$\dagger$")


def warn_unfinished(runs: RunSet, stream: TextIO | None = None) -> None:
    """One warning line (on stderr by default) per failed, diverged or still-running run."""
    for run in runs.unfinished().itertuples(index=False):
        detail = f": {run.message}" if isinstance(run.message, str) and run.message else ""
        done, planned = (_or_unknown(value) for value in (run.epochs_done, run.epochs_planned))
        print(
            f"warning: run {run.run_id} is {run.status} (epoch {done}/{planned}); "
            f"left out of every table{detail}",
            file=stream or sys.stderr,
        )


def _or_unknown(value: object) -> str:
    return "?" if pd.isna(value) else str(value)


def aggregate(
    runs: RunSet, out_dir: str | Path, targets: list[ttt.Target] | None = None
) -> list[Path]:
    """Write runs.csv, failed_runs and every table into ``<out_dir>/tables``; return the paths."""
    table_dir = Path(out_dir) / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    runs_csv = table_dir / "runs.csv"
    runs.runs.to_csv(runs_csv, index=False)
    warn_unfinished(runs)
    written = [runs_csv, *write_table(tables.failed_runs(runs), table_dir, ("csv", "md"))]
    for table in build_tables(runs, targets=targets):
        written += write_table(table, table_dir, ("csv", "md", "tex"))
    return written
