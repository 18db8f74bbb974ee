"""Load run directories (the runner's contract) into pandas DataFrames.

One run lives in ``<runs_dir>/<experiment>/<dataset>-<model>/<scheduler_label>/seed=<n>/`` and
holds ``summary.json``, ``metrics.jsonl`` (one record per epoch) and, for AutoDrop variants, the
record stream of AutoDrop's measurements (one record per measurement; the file names are the
records module's, :mod:`experiments.rundir`). A run's schedule and the settings its label names
come from summary.json (``scheduler_name``, ``label_settings``, ``changes``), never from the
label. Every source (local files, W&B) is first turned
into :class:`RawRun` objects and then into one :class:`RunSet` by :func:`build_run_set`, so the
tables and figures cannot tell the sources apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from autodrop.registry import schedule_class
from experiments import rundir as rd
from scripts.analysis.display import display_name, format_setting

FINISHED = rd.FINISHED
# A run that says finished but fails the records module's completeness rule, or whose files
# cannot be read: listed with the reason, never averaged.
DAMAGED = rd.DAMAGED
HOW_RUNS_ARE_MADE = (
    "runs are produced by the training runner, e.g. "
    "`python -m experiments.train experiment=quick/digits` "
    "(a sweep: `python -m experiments.train -m experiment=... scheduler=autodrop,step seed=0,1`)"
)

# Columns of RunSet.runs, in order, with their dtypes.
_RUN_DTYPES: dict[str, str] = {
    "run_id": "str",
    "experiment": "str",
    "dataset": "str",
    "model": "str",
    "task": "str",
    "scheduler": "str",
    "scheduler_name": "str",
    "base": "str",
    "setting_key": "object",
    "setting_value": "object",
    "settings": "str",
    "setup": "str",  # summary.json's run-defining values, flat, as JSON ({} when not recorded)
    "display": "str",
    "seed": "int64",
    "status": "str",
    "epochs_planned": "Int64",
    "epochs_done": "Int64",
    "min_test_err": "float64",
    "min_test_err_epoch": "Int64",
    "final_test_err": "float64",
    "min_val_err": "float64",
    "best_val_epoch": "Int64",
    "test_err_at_best_val": "float64",
    "val_size": "Int64",  # 0: no validation split (the paper's protocol)
    "val_fingerprint": "object",
    "metric_source": "object",  # the split a metric-driven schedule read: val, test (or None)
    "signals": "str",  # what the schedule reads, comma-separated (autodrop.base.Signal values)
    "time_per_iter_s": "float64",
    "train_time_s": "float64",
    "wall_time_s": "float64",
    "steps_per_epoch": "Int64",
    "batch_size": "Int64",
    "world_size": "Int64",
    "hardware": "object",
    "git_commit": "object",
    "wandb_run_id": "object",
    "message": "object",
    "options": "str",
    "optimizer_lr": "float64",
    "source": "str",
}
# The per-epoch record keys in their contract order; extra keys follow, sorted.
METRIC_KEYS = (
    "epoch",
    "step",
    "lr",
    "train/loss",
    "train/acc",
    "val/loss",
    "val/err",
    "test/loss",
    "test/err",
    "time/epoch_s",
    "time/iter_s",
    "time/train_s",
    "autodrop/drops",
    "autodrop/omega",
)
TRACE_KEYS = ("step", "omega", "smoothed", "lr", "dropped")
HYDRA_CONFIG = Path(rd.HYDRA_DIR) / "config.yaml"
# The record stream of AutoDrop's measurements: the traces frame.
TRACE_FILE = rd.records_file(schedule_class("autodrop").record_stream)


class NoRunsError(FileNotFoundError):
    """No run directories where the analysis looked."""


@dataclass
class RawRun:
    """One run as read from any source, before it becomes DataFrame rows."""

    run_id: str
    summary: dict
    metrics: list[dict]
    trace: list[dict] = field(default_factory=list)
    source: str = ""


@dataclass
class RunSet:
    """All runs of an analysis: one row per run, one row per (run, epoch), one per measurement."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    traces: pd.DataFrame

    def finished(self) -> RunSet:
        """Only runs whose status is 'finished' (the only ones any table or figure averages)."""
        keep = self.runs[self.runs["status"] == FINISHED]
        return self.subset(keep["run_id"])

    def unfinished(self) -> pd.DataFrame:
        """Rows of failed, diverged and still-running runs."""
        return self.runs[self.runs["status"] != FINISHED]

    def subset(self, run_ids: Iterable[str]) -> RunSet:
        """The runs with these ids, with their metrics and traces."""
        ids = set(run_ids)
        return RunSet(
            runs=self.runs[self.runs["run_id"].isin(ids)],
            metrics=self.metrics[self.metrics["run_id"].isin(ids)],
            traces=self.traces[self.traces["run_id"].isin(ids)],
        )


def label_setting(summary: dict) -> tuple[str, str | None, str | None, dict]:
    """(base, setting key, setting value, label settings) of a run, from its summary.json.

    The settings are ``label_settings``, what the runner records: the dotted config keys the
    label names with their values ({"scheduler.window": 32} for 'autodrop-window=32'). Older
    runs whose summary lacks ``label_settings`` have no setting ({}): their label is then their
    base unless it is just the schedule's name, so they are never pooled with the preset's runs.
    A run whose label has an identity suffix (values that differ from the preset, recorded as
    ``changes``; ``scheduler`` differs from ``scheduler_label``) or names several settings is a
    setup of its own: its base is the whole label, so it is never pooled with, tuned among or
    placed in an ablation of the preset's runs. The value is shown as labels show it ('32').
    """
    label = str(summary["scheduler"])
    name = str(summary.get("scheduler_name") or label)
    recorded = summary.get("label_settings")
    settings = dict(recorded) if isinstance(recorded, dict) else {}
    own_label = summary.get("scheduler_label")
    suffixed = own_label is not None and label != str(own_label)
    if suffixed or len(settings) > 1:
        return label, None, None, settings
    if len(settings) == 1:
        ((key, value),) = settings.items()
        return name, key, format_setting(value), settings
    return (name if label == name else label), None, None, settings


def run_id_for(experiment: str, dataset: str, model: str, scheduler: str, seed: int) -> str:
    """The run's path below the runs directory, used as its id by every source."""
    return rd.run_path(experiment, dataset, model, scheduler, seed).as_posix()


def matches_experiment(experiment: str, prefix: str | None) -> bool:
    """True when ``experiment`` is ``prefix`` or lies below it ('paper' matches 'paper/x')."""
    if prefix is None:
        return True
    prefix = prefix.strip("/")
    return experiment == prefix or experiment.startswith(prefix + "/")


def task_keys(runs: pd.DataFrame) -> pd.Series:
    """Row key of each run: '<dataset>/<model>', plus ' [<experiment>]' when runs of that task
    come from several experiments (so differently configured experiments are never pooled)."""
    experiments_per_task = runs.groupby("task")["experiment"].nunique()
    split = runs["task"].map(experiments_per_task) > 1
    keys = runs["task"].where(~split, runs["task"] + " [" + runs["experiment"] + "]")
    return keys.astype(str)


def load_runs(runs_dir: str | Path, experiment: str | None = None) -> RunSet:
    """Read every run directory below ``runs_dir`` (optionally only experiments under a prefix)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise NoRunsError(f"runs directory {root} does not exist; {HOW_RUNS_ARE_MADE}")
    raw = [_read_run_dir_or_damaged(root, run_dir) for run_dir in find_run_dirs(root)]
    if not raw:
        raise NoRunsError(
            f"no run directories (<experiment>/<dataset>-<model>/<scheduler>/seed=<n>/ holding "
            f"summary.json or metrics.jsonl) under {root}; {HOW_RUNS_ARE_MADE}"
        )
    return build_run_set(raw, experiment=experiment, where=str(root))


def build_run_set(
    raw_runs: Iterable[RawRun], experiment: str | None = None, where: str = "the source"
) -> RunSet:
    """Turn raw runs into a RunSet, keeping only experiments under the ``experiment`` prefix."""
    built = []
    for raw in raw_runs:
        metrics = _metrics_frame(raw)
        built.append((_run_row(raw, metrics), metrics, _trace_frame(raw)))
    kept = [item for item in built if matches_experiment(item[0]["experiment"], experiment)]
    if not kept:
        found = sorted({row["experiment"] for row, _, _ in built})
        raise NoRunsError(
            f"no runs of experiment {experiment!r} in {where}; experiments found: {found}; "
            f"{HOW_RUNS_ARE_MADE}"
        )
    runs = pd.DataFrame([row for row, _, _ in kept], columns=list(_RUN_DTYPES))
    runs = runs.astype(_RUN_DTYPES)
    duplicated = runs["run_id"][runs["run_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"runs {sorted(set(duplicated))} appear more than once in {where}")
    runs = runs.sort_values(["experiment", "task", "scheduler", "seed"], ignore_index=True)
    return RunSet(
        runs=runs,
        metrics=_concat_ordered([metrics for _, metrics, _ in kept], ("run_id", *METRIC_KEYS)),
        traces=_concat_ordered([trace for _, _, trace in kept], ("run_id", *TRACE_KEYS)),
    )


def find_run_dirs(root: Path) -> list[Path]:
    """The run directories below ``root``: ``seed=<n>`` folders holding summary.json or
    metrics.jsonl, at least four levels down (<experiment>/<task>/<label>/seed=<n>)."""
    found = []
    for path in sorted(root.rglob("seed=*")):
        depth = len(path.relative_to(root).parts)
        has_files = (path / rd.SUMMARY_FILE).exists() or (path / rd.METRICS_FILE).exists()
        if path.is_dir() and depth >= 4 and has_files:
            found.append(path)
    return found


def fields_from_path(root: str | Path, run_dir: Path) -> dict:
    """experiment, dataset, model, label and seed as the run's path names them."""
    return rd.run_path_fields(run_dir.relative_to(root))


def _read_run_dir_or_damaged(root: Path, run_dir: Path) -> RawRun:
    """The run, or a 'damaged' run naming what could not be read: one bad run never stops
    the analysis of the others."""
    try:
        return _read_run_dir(root, run_dir)
    except Exception as error:  # noqa: BLE001 - any unreadable run is listed, not fatal
        summary = {
            **fields_from_path(root, run_dir),
            "status": DAMAGED,
            "message": f"{run_dir}: {type(error).__name__}: {error}",
        }
        return RawRun("/".join(run_dir.relative_to(root).parts), summary, [], [], str(run_dir))


def _read_run_dir(root: Path, run_dir: Path) -> RawRun:
    from_path = fields_from_path(root, run_dir)
    summary_path = run_dir / rd.SUMMARY_FILE
    stored = rd.read_summary(summary_path)
    problem = None
    if stored is not None:
        summary = {**from_path, **stored}
    elif summary_path.exists():
        summary, problem = dict(from_path), f"{summary_path} is unreadable or not a JSON object"
    else:  # the runner writes summary.json at start; without one the run has only just begun
        summary = {**from_path, "status": rd.RUNNING}
    if summary.get("optimizer_lr") is None:
        setup = summary.get("setup") if isinstance(summary.get("setup"), dict) else {}
        summary["optimizer_lr"] = setup.get("optimizer.lr") or configured_lr(run_dir)
    metrics, trace = [], []
    try:
        metrics = rd.read_records(run_dir / rd.METRICS_FILE)
        trace = rd.read_records(run_dir / TRACE_FILE)
    except rd.DamagedRecords as error:
        problem = problem or str(error)
    if problem is None and summary.get("status") == FINISHED:
        problem = rd.completeness_problem(run_dir)
    if problem is not None:
        summary.update(status=DAMAGED, message=problem)
    else:  # "running" only while a process holds the run's lock; else it died unrecorded: stale
        summary["status"] = rd.effective_status(run_dir, summary)
    return RawRun(
        run_id="/".join(run_dir.relative_to(root).parts),
        summary=summary,
        metrics=metrics,
        trace=trace,
        source=str(run_dir),
    )


def configured_lr(run_dir: Path) -> float | None:
    """The run's initial lr, ``optimizer.lr`` of its recorded config (``.hydra/config.yaml``,
    interpolations resolved with the runner's resolvers); None when no config was recorded."""
    path = run_dir / HYDRA_CONFIG
    if not path.is_file():
        return None
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from experiments.config import register_configs

    register_configs()  # the resolvers the config's interpolations may use (e.g. ${mul:...})
    try:
        value = OmegaConf.select(OmegaConf.load(path), "optimizer.lr")
    except OmegaConfBaseException as err:
        raise ValueError(f"{path}: optimizer.lr cannot be read ({err})") from err
    return None if value is None else float(value)


def _metrics_frame(raw: RawRun) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(raw.metrics)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", *METRIC_KEYS])
    if "epoch" not in frame:
        raise ValueError(f"run {raw.run_id}: metrics records lack the 'epoch' key")
    # A run resumed from a checkpoint may repeat epochs after its last checkpoint: the later
    # record is the one the finished run continued from.
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch", ignore_index=True)
    frame = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    frame["epoch"] = frame["epoch"].astype("int64")
    frame.insert(0, "run_id", raw.run_id)
    return frame


def _trace_frame(raw: RawRun) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(raw.trace)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", *TRACE_KEYS])
    frame = frame.reindex(columns=[*TRACE_KEYS, *sorted(set(frame.columns) - set(TRACE_KEYS))])
    frame = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    frame["dropped"] = frame["dropped"].fillna(0).astype(bool)
    frame.insert(0, "run_id", raw.run_id)
    return frame


def _concat_ordered(frames: list[pd.DataFrame], leading: tuple[str, ...]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=list(leading))
    combined = pd.concat(frames, ignore_index=True)
    extra = sorted(set(combined.columns) - set(leading))
    return combined[[key for key in leading if key in combined] + extra]


def _run_row(raw: RawRun, metrics: pd.DataFrame) -> dict:
    summary = raw.summary
    label = str(summary["scheduler"])
    base, key, value, settings = label_setting(summary)
    name = str(summary.get("scheduler_name") or base)
    changes = summary.get("changes") if label != summary.get("scheduler_label") else None
    status = str(summary.get("status") or rd.RUNNING)
    row = {
        "run_id": raw.run_id,
        "experiment": str(summary["experiment"]),
        "dataset": str(summary["dataset"]),
        "model": str(summary["model"]),
        "task": f"{summary['dataset']}/{summary['model']}",
        "scheduler": label,
        "scheduler_name": name,
        "base": base,
        "setting_key": key,
        "setting_value": value,
        "settings": json.dumps(settings, sort_keys=True),
        "setup": json.dumps(_recorded_setup(summary), sort_keys=True),
        "display": _display(label, name, settings, changes),
        "seed": int(summary["seed"]),
        "status": status,
        "options": json.dumps(summary.get("scheduler_options") or {}, sort_keys=True),
        "optimizer_lr": summary.get("optimizer_lr"),
        "source": raw.source,
        **_validation_fields(summary),
    }
    for name in (
        "epochs_planned",
        "epochs_done",
        "wall_time_s",
        "time_per_iter_s",
        "steps_per_epoch",
        "batch_size",
        "world_size",
        "hardware",
        "git_commit",
        "wandb_run_id",
        "message",
        "final_test_err",
        "min_test_err",
        "min_test_err_epoch",
        "min_val_err",
        "best_val_epoch",
        "test_err_at_best_val",
        "train_time_s",
    ):
        row[name] = summary.get(name)
    row.update(_metric_derived_fields(metrics))
    if row["time_per_iter_s"] is None and "time/iter_s" in metrics:
        row["time_per_iter_s"] = float(metrics["time/iter_s"].mean())
    return row


def _metric_derived_fields(metrics: pd.DataFrame) -> dict:
    """Fields recomputed from the per-epoch records, the source of truth, when there are any
    (by the records module's rules, ``experiments.rundir.summarize_metrics``)."""
    if metrics.empty:
        return {}
    records = [
        {key: value for key, value in record.items() if pd.notna(value)}
        for record in metrics.drop(columns="run_id").to_dict("records")
    ]
    derived = rd.summarize_metrics(records)
    fields: dict = {"epochs_done": int(metrics["epoch"].max())}
    keys = ("min_test_err", "min_test_err_epoch", "final_test_err", "min_val_err")
    keys += ("best_val_epoch", "test_err_at_best_val", "train_time_s")
    fields.update({key: derived[key] for key in keys if derived[key] is not None})
    return fields


def _recorded_setup(summary: dict) -> dict:
    """The run-defining values summary.json records (``setup``), {} when it records none."""
    setup = summary.get("setup")
    return setup if isinstance(setup, dict) else {}


def _validation_fields(summary: dict) -> dict:
    """The run's validation split, the signals its schedule reads and where a metric-driven
    schedule read its metric, as summary.json records them (runs that predate them: no split,
    nothing known)."""
    validation = summary.get("validation") if isinstance(summary.get("validation"), dict) else {}
    signals = summary.get("signals") if isinstance(summary.get("signals"), list) else []
    return {
        "val_size": int(validation.get("size") or 0),
        "val_fingerprint": validation.get("fingerprint"),
        "metric_source": summary.get("metric_source"),
        "signals": ",".join(str(signal) for signal in signals),
    }


def _display(label: str, name: str, settings: dict, changes: object) -> str:
    """The run's display name: its schedule's, with its label settings and identity changes;
    an older run that records neither is shown by its label."""
    if label == name or settings or isinstance(changes, dict):
        return display_name(name, settings, changes if isinstance(changes, dict) else None)
    return label
