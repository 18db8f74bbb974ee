"""Schedules compared on one task: the tables and the figure of a comparison's finished runs.

The runs are those a :class:`~scripts.analysis.compare_request.Comparison` asks for (found by
run id, the runner's own names). Per schedule (:func:`schedule_table`): the mean ± std over
seeds of the honest number (the test error at the best validation epoch, for runs with a
validation split) and of the paper's (the minimum test error); per later schedule
(:func:`paired_table`): its paired difference to the FIRST schedule with the paired statistics
of :mod:`scripts.analysis.statistics` (:func:`statistics.versus_baseline`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments import rundir as rd
from scripts.analysis import statistics, tables
from scripts.analysis import time_to_target as ttt
from scripts.analysis.compare_request import Comparison
from scripts.analysis.display import display_name
from scripts.analysis.report import write_table
from scripts.analysis.runs import RunSet

PROTOCOLS = {  # short name -> (summary.json field, what the number is)
    "honest": (tables.HONEST_VALUE, f"{tables.HONEST_PROTOCOL}: {tables.HONEST_ERR}"),
    "paper": (tables.PAPER_VALUE, tables.MIN_ERR),
}
SCHEDULES_TABLE, PAIRED_TABLE = "compare_schedules", "compare_paired"
FIGURE = "fig_task"
# Every file the comparison writes below --out; each is rewritten or removed, so none is stale.
TABLE_NAMES = (SCHEDULES_TABLE, PAIRED_TABLE, "table2", "table2_honest", "comparisons")
TABLE_FORMATS = ("csv", "md")


def requested_runs(runs: RunSet, comparison: Comparison) -> RunSet:
    """The comparison's runs among ``runs`` (by run id: the runner's own names)."""
    return runs.subset(set(comparison.run_ids()) & set(runs.runs["run_id"]))


def not_compared(runs: RunSet, comparison: Comparison) -> list[str]:
    """One line per requested run that is not finished (failed, diverged, running, damaged) or
    does not exist: what is left out of the comparison and why."""
    found = runs.runs.set_index("run_id")
    lines = []
    for run_id, (schedule, seed) in comparison.run_ids().items():
        if run_id not in found.index:
            lines.append(f"  {schedule} seed={seed}: missing (no run directory {run_id})")
        elif (status := found.at[run_id, "status"]) != rd.FINISHED:
            message = found.at[run_id, "message"]
            detail = f": {message}" if isinstance(message, str) and message else ""
            lines.append(f"  {schedule} seed={seed}: {status}{detail}")
    return lines


def _values(finished: RunSet, comparison: Comparison) -> pd.DataFrame:
    """One row per finished run: row, scheduler (label), seed and both protocols' numbers."""
    frame = finished.runs[["scheduler", "seed", *(f for f, _ in PROTOCOLS.values())]]
    return frame.assign(row=comparison.row)


def protocols_present(finished: RunSet) -> list[str]:
    """The protocols the finished runs have numbers for: honest only with a validation split."""
    return [name for name, (field, _) in PROTOCOLS.items() if finished.runs[field].notna().any()]


def _shown(comparison: Comparison) -> dict[str, str]:
    return {label: display_name(name) for name, label in comparison.label_of.items()}


def _scope(comparison: Comparison) -> str:
    changed = f", every run with {' '.join(comparison.overrides)}" if comparison.overrides else ""
    return f"{comparison.task} ({comparison.row}{changed})"


def schedule_table(finished: RunSet, comparison: Comparison) -> tables.Table:
    """Per schedule (in the order asked): the seeds that finished and, per protocol, the mean ±
    sample std over them (``tables.seed_stats``)."""
    values = _values(finished, comparison)
    shown = _shown(comparison)
    present = protocols_present(finished)
    stats = {
        name: tables.seed_stats(values, ["scheduler"], PROTOCOLS[name][0]).set_index("scheduler")
        for name in present
    }
    records, cells = [], []
    for schedule, label in comparison.label_of.items():
        seeds = int((values["scheduler"] == label).sum())
        record = {"schedule": schedule, "label": label, "seeds": seeds}
        cell = {"schedule": shown[label], "seeds finished": f"{seeds} of {len(comparison.seeds)}"}
        for name in present:
            found = stats[name].index == label
            mean, std, n = (
                stats[name].loc[found, key].iloc[0] if found.any() else default
                for key, default in (("mean", np.nan), ("std", np.nan), ("n", 0))
            )
            record |= {f"{name}_mean": mean, f"{name}_std": std, f"{name}_n": int(n)}
            cell[f"{name} (%)"] = tables.format_cell(mean, std, int(n)) or "n/a"
        records.append(record)
        cells.append(cell)
    lines = [f"{name}: {PROTOCOLS[name][1]}" for name in present]
    if "honest" not in present:
        lines.append("honest: no number (the runs hold out no validation split)")
    caption = (
        f"{_scope(comparison)}: test error (%) per schedule, {tables.SEED_STATISTIC} that "
        "finished (n in parentheses). " + "; ".join(lines) + "."
    )
    display = pd.DataFrame(cells).set_index("schedule")
    return tables.Table(SCHEDULES_TABLE, display, pd.DataFrame(records), caption=caption)


def paired_table(finished: RunSet, comparison: Comparison) -> tables.Table:
    """Each later schedule against the first, per protocol: pairs, the mean paired difference
    (schedule - first, points), its 95 % interval, p values and whether it is marked."""
    values = _values(finished, comparison)
    first, *later = comparison.labels
    shown = _shown(comparison)
    frames = [
        statistics.versus_baseline(values, first, later, PROTOCOLS[name][0]).assign(protocol=name)
        for name in protocols_present(finished)
    ]
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cells = [
        {
            "schedule": shown[r.schedule],
            "protocol": r.protocol,
            "pairs": r.n_pairs,
            "mean diff [95 % CI]": _difference(r.mean_diff, r.ci_low, r.ci_high),
            "p": _p(r.p_value),
            "p (Holm)": _p(r.p_holm),
            "marked": "yes" if r.significant else "no",
        }
        for r in records.itertuples(index=False)
    ]
    columns = ["schedule", "protocol", "pairs", "mean diff [95 % CI]", "p", "p (Holm)", "marked"]
    display = pd.DataFrame(cells, columns=columns)
    caption = (
        f"{_scope(comparison)}: paired difference of each schedule to {shown[first]} (schedule "
        f"- {shown[first]}, points of test error; negative: better than {shown[first]}), over "
        "the seeds both finished (pairs), per protocol."
    )
    note = paired_note(records, shown[first], len(later))
    return tables.Table(PAIRED_TABLE, display.set_index("schedule"), records, note, caption)


def _difference(mean: float, low: float, high: float) -> str:
    """'+2.40 [+1.71, +3.09]'; the interval n/a where there is none (one pair, no spread)."""
    if np.isnan(mean):
        return "n/a"
    interval = "n/a" if np.isnan(low) else f"{low:+.2f}, {high:+.2f}"
    return f"{mean:+.2f} [{interval}]"


def _p(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3g}"


def paired_note(records: pd.DataFrame, first: str, comparisons: int) -> str:
    """What the interval is and when a difference is marked (with >= MIN_PAIRS_TO_FLAG pairs)."""
    least = statistics.MIN_PAIRS_TO_FLAG
    most = int(records["n_pairs"].max()) if len(records) else 0
    below = f"; here at most {most}: nothing can be marked" if most < least else ""
    return (
        f"95 % CI: the {statistics.CONFIDENCE:.0%} interval of the mean paired difference and "
        f"p the two-sided test of the pair, {statistics.METHOD} (no interval with one pair, "
        "nor when every difference is equal, where p is the exact sign-flip p); p (Holm): p "
        f"Holm-adjusted over the {comparisons} comparison(s) against {first}; marked: p (Holm) "
        f"< {statistics.ALPHA:.2g}, which takes >= {least} paired seeds (below, p (Holm) is n/a"
        f"{below})"
    )


def printed(table: tables.Table) -> str:
    """The table as the comparison prints it (as its Markdown file holds it): caption, the
    cells, the note."""
    frame = table.display.reset_index()
    body = frame.to_markdown(index=False) if len(frame) else "(none)"
    return "\n".join(filter(None, [table.caption, body, table.note]))


def write_outputs(finished: RunSet, comparison: Comparison, out: str | Path) -> list[Path]:
    """Write the comparison's tables (CSV and Markdown) into ``<out>/tables`` and its per-task
    figure into ``<out>/figures``; files of an earlier comparison that this one does not write
    are removed (no stale file stays), nothing else in ``out`` is touched."""
    table_dir, figure_dir = Path(out) / "tables", Path(out) / "figures"
    own = [table_dir / f"{n}.{f}" for n in TABLE_NAMES for f in TABLE_FORMATS]
    own += [table_dir / "runs.csv", *(figure_dir / f"{FIGURE}.{f}" for f in ("png", "pdf"))]
    for path in own:
        path.unlink(missing_ok=True)
    built = [schedule_table(finished, comparison), paired_table(finished, comparison)]
    if finished.runs["setting_key"].isna().any():  # plain labels: the standard tables too
        built += [tables.table2(finished), tables.table2_honest(finished)]
        built.append(tables.comparisons(finished))
    written: list[Path] = []
    for table in filter(None, built):
        written += write_table(table, table_dir, TABLE_FORMATS)
    finished.runs.to_csv(table_dir / "runs.csv", index=False)
    written.append(table_dir / "runs.csv")
    return written + _figure(finished, comparison, figure_dir)


def _figure(finished: RunSet, comparison: Comparison, figure_dir: Path) -> list[Path]:
    from scripts.analysis.figures.common import save_figure
    from scripts.analysis.figures.curves import task_figure

    if finished.metrics.empty:
        return []
    target = ttt.matching_target(finished.runs.iloc[0], ttt.load_targets())
    fig = task_figure(
        finished,
        title=f"{comparison.task}: {comparison.row}",
        target=None if target is None else target.val_err,
    )
    return save_figure(fig, figure_dir, FIGURE)
