"""The run records module: the run directory contract shared by the runner and the analysis.

File names, statuses, JSON-lines reading and writing, the summary fields derived from the
records, the completeness rule (when a run counts as finished), symlink-safe writing, and the
decision a launch takes (skip a finished run, resume, or start afresh).

One run = ``<results_dir>/runs/<experiment>/<dataset>-<model>/<label><suffix>/seed=<n>/``
(``experiments.run_identity`` names it).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

RECORDS_SUFFIX = ".jsonl"
METRICS_FILE = "metrics" + RECORDS_SUFFIX
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoints/last.pt"
PREVIOUS_CHECKPOINT = "prev.pt"  # the fallback kept beside last.pt (experiments.checkpoint)
LOG_FILE = "train.log"
LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"
SEED_PREFIX = "seed="  # a run's folder below its label: seed=<n>
WANDB_DIR = "wandb"  # written by wandb itself (offline runs, logs), never by the runner
# What flock fails with on filesystems that do not support it (some Lustre/GPFS/NFS mounts).
NO_FLOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP)

log = logging.getLogger(__name__)

RUNNING, FINISHED, FAILED, DIVERGED = "running", "finished", "failed", "diverged"
# Stopped on a signal after a checkpoint (experiments.running.preemption); requeued: and the
# scheduler (submitit) put the job back in its queue. Both resume on relaunch.
INTERRUPTED, REQUEUED = "interrupted", "requeued"
# Never written: what ``effective_status`` reports for a "running" run nobody holds the lock of.
STALE = "stale"
# Never written: what the analysis reports for a run whose files cannot be read, or that says
# finished without complete records (``completeness_problem``).
DAMAGED = "damaged"
STATUSES = (RUNNING, FINISHED, FAILED, DIVERGED, INTERRUPTED, REQUEUED, STALE)
# The held-out splits a run evaluates, as its records prefix them (val/err, test/err) and as
# summary.json's metric_source names the one a metric-driven schedule read.
VAL_SPLIT, TEST_SPLIT = "val", "test"
LOCK_ATTEMPTS, LOCK_RETRY_S = 5, 0.02


class RunLocked(RuntimeError):
    """Another live process is training this run directory."""


class UnsafeRunDirectory(RuntimeError):
    """A run directory holds links (or is one): nothing is written through them."""


class LaunchAction(enum.Enum):
    SKIP = "skip"  # summary.json says finished
    RESUME = "resume"  # checkpoints/last.pt (or its fallback prev.pt) exists
    FRESH = "fresh"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, write: Any, *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    Readers and a process killed at any moment see either the old or the new file, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_file_mode())  # mkstemp creates 0600 files
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in records)


class RunDir:
    """Paths and file operations of one run directory (only rank 0 writes)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self._lock_fd: int | None = None

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    def stream_path(self, stream: str) -> Path:
        """The file of a schedule's record stream (``ScheduleHooks.record_stream``)."""
        return self.root / records_file(stream)

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or None when there is none or it is unreadable or malformed."""
        return read_summary(self.summary_path)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        text = json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
        write_atomically(self.summary_path, lambda f: f.write(text))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the run directory, or raise RunLocked at once.

        The OS releases the lock when its holder exits or is killed, so no stale lock remains.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        path = self.root / LOCK_FILE
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            try:
                locked = _try_exclusive_flock(fd)
            except OSError as error:
                if error.errno not in NO_FLOCK_ERRNOS:
                    raise
                # Lustre/GPFS/NFS mounts without flock: train unlocked rather than not at all.
                log.warning(
                    "%s: this filesystem does not support file locks (%s): training without "
                    "the run-directory lock, so do not launch this run twice at once",
                    self.root,
                    errno.errorcode.get(error.errno, error.errno),
                )
                locked = True
            if not locked:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise RunLocked(
                    f"{self.root} is being trained by another process (pid {holder}): this "
                    "launch exits without touching it; relaunch once that process has ended"
                )
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    def record_lock_owner(self) -> None:
        """Write this process's pid into the held lock file (only a launch that trains does, so
        a skipped or refused launch leaves every byte of the run as it was). Fixed width and in
        place: the lock file is never truncated."""
        if self._lock_fd is not None:
            os.pwrite(self._lock_fd, f"{os.getpid():>12}\n".encode(), 0)

    def refuse_links(self) -> None:
        """Raise UnsafeRunDirectory if the run directory is a link or holds any link outside
        wandb's own folder (wandb links its logs there, also to its cache in the home folder;
        the runner never writes into that folder)."""
        links = [self.root] if self.root.is_symlink() else []
        for folder, dirs, files in os.walk(self.root):
            links += [Path(folder) / n for n in (*dirs, *files) if (Path(folder) / n).is_symlink()]
            if Path(folder) == self.root and WANDB_DIR in dirs:
                dirs.remove(WANDB_DIR)  # its contents are wandb's; the folder itself is checked
        if links:
            names = ", ".join(str(p) for p in sorted(links))
            raise UnsafeRunDirectory(
                f"run directory {self.root} holds symbolic links ({names}): the runner never "
                "writes through links; remove them (or the run directory) and relaunch"
            )

    def has_checkpoint(self) -> bool:
        checkpoints = (self.checkpoint_path, self.checkpoint_path.with_name(PREVIOUS_CHECKPOINT))
        return any(path.is_file() for path in checkpoints)

    def launch_action(self) -> LaunchAction:
        """SKIP a complete finished run; RESUME from a checkpoint (which also repairs a finished
        run whose records are damaged); else start FRESH."""
        if self.read_summary() is not None and completeness_problem(self.root) is None:
            return LaunchAction.SKIP
        if self.has_checkpoint():
            return LaunchAction.RESUME
        return LaunchAction.FRESH

    def append_records(self, path: Path, records: Iterable[Mapping[str, Any]]) -> None:
        text = _jsonl(records)
        if text:
            fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            with os.fdopen(fd, "a") as handle:
                handle.write(text)
                handle.flush()

    def rewrite_records(self, path: Path, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``path`` by exactly ``records`` (used on resume: no duplicate, no gap)."""
        text = _jsonl(records)
        write_atomically(path, lambda f: f.write(text))

    def remove_stale_outputs(self) -> None:
        """A fresh start: drop record files left by an earlier attempt without a checkpoint."""
        for path in self.root.glob(f"*{RECORDS_SUFFIX}"):
            path.unlink(missing_ok=True)


def run_path(experiment: str, dataset: str, model: str, label: str, seed: int) -> Path:
    """Where a run lives below the runs directory:
    ``<experiment>/<dataset>-<model>/<label>/seed=<n>`` (``label`` with its identity suffix)."""
    return Path(experiment) / f"{dataset}-{model}" / label / f"{SEED_PREFIX}{seed}"


def run_path_fields(relative: Path) -> dict[str, Any]:
    """experiment, dataset, model, scheduler (the label) and seed as a ``run_path`` names them
    (seed -1 where the last part is not ``seed=<n>``)."""
    parts = relative.parts
    dataset, _, model = parts[-3].partition("-")
    seed_text = parts[-1].removeprefix(SEED_PREFIX)
    return {
        "experiment": "/".join(parts[:-3]),
        "dataset": dataset,
        "model": model,
        "scheduler": parts[-2],
        "seed": int(seed_text) if seed_text.isdigit() else -1,
    }


def records_file(stream: str) -> str:
    """The run-directory file name of a schedule's record stream: ``<stream>.jsonl`` (AutoDrop's
    measurement windows in autodrop.jsonl, TLR's lr updates in tlr.jsonl)."""
    if not stream.isidentifier():
        raise ValueError(f"record stream {stream!r} is invalid: must be a plain name")
    return stream + RECORDS_SUFFIX


def open_no_follow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link or a hard-linked file at ``path``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, _default_file_mode())
    except OSError as error:
        if path.is_symlink():
            raise UnsafeRunDirectory(
                f"{path} is a symbolic link: the runner never writes through links"
            ) from error
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UnsafeRunDirectory(
            f"{path} is not a plain file of its own (a hard link or special file): the runner "
            "never writes into it"
        )
    return fd


class DamagedRecords(ValueError):
    """A record file holds a line that is not a JSON object."""


def _try_exclusive_flock(fd: int) -> bool:
    # A few quick attempts: ``lock_is_held`` probes hold the lock for microseconds.
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < LOCK_ATTEMPTS:
                time.sleep(LOCK_RETRY_S)
    return False


def lock_is_held(run_root: Path | str) -> bool:
    """Whether a live process holds the run directory's lock (a non-blocking probe).

    The OS drops a flock when its holder dies, so a run whose process was killed shows False.
    """
    path = Path(run_root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # missing, or a planted link (which no runner holds)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def effective_status(run_root: Path | str, summary: Mapping[str, Any] | None = None) -> str:
    """The run's status as listings must show it: summary.json's, except that a run that says
    (or, with no summary yet, seems) ``running`` while no process holds its lock is ``stale``:
    its last process died without recording why. A relaunch resumes it.

    ``summary``: the run's summary when the caller has read it already.
    """
    if summary is None:
        summary = RunDir(run_root).read_summary()
    status = str((summary or {}).get("status") or RUNNING)
    if status == RUNNING and not lock_is_held(run_root):
        return STALE
    return status


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a .jsonl file (empty when the file does not exist).

    Raises DamagedRecords naming the file and line when a line is not a JSON object.
    """
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise DamagedRecords(f"{path}: not UTF-8 text ({error})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DamagedRecords(f"{path}:{number}: not a JSON record ({error})") from None
        if not isinstance(record, dict):
            raise DamagedRecords(f"{path}:{number}: not a JSON object")
        records.append(record)
    return records


def read_summary(path: Path) -> dict[str, Any] | None:
    """summary.json as a dict, or None when it is missing, unreadable or not a JSON object."""
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


# Summary fields the analysis reads that copy a value of the recorded setup (summary.json's
# "setup"): each must equal it. (Fields derived from the records are in summarize_metrics.)
SUMMARY_FROM_SETUP = {
    "epochs_planned": "trainer.epochs",
    "seed": "seed",
    "experiment": "experiment_name",
    "dataset": "data.name",
    "model": "model.name",
    "scheduler_name": "scheduler.name",
    "batch_size": "trainer.batch_size",
}


def completeness_problem(root: Path) -> str | None:
    """Why the run in ``root`` does not count as finished (None: it does).

    Finished means: summary.json says finished, metrics.jsonl holds exactly one parseable record
    per planned epoch (1..N in order), and every summary field the analysis reads agrees with
    what it comes from: the fields derived from the records (``summarize_metrics``, the time
    per iteration included) with the records, the copies of setup values
    (``SUMMARY_FROM_SETUP``, ``scheduler_options``, ``label_settings``, ``optimizer_lr``)
    with the recorded setup, and the run's name with its schedule. (Not with the run's path:
    a directory renamed by other naming rules stays the run its summary says.)
    """
    summary_path = root / SUMMARY_FILE
    summary = read_summary(summary_path)
    if summary is None:
        return f"{summary_path} is missing, unreadable or not a JSON object"
    if summary.get("status") != FINISHED:
        return f"{summary_path}: status is {summary.get('status')!r}, not {FINISHED!r}"
    try:
        metrics = read_records(root / METRICS_FILE)
    except DamagedRecords as error:
        return str(error)
    problem = _setup_problem(summary) or _label_problem(summary)
    if problem is not None:
        return f"{summary_path}: {problem}"
    planned = summary.get("epochs_planned")
    epochs = [record.get("epoch") for record in metrics]
    if not isinstance(planned, int) or epochs != list(range(1, planned + 1)):
        return (
            f"{root / METRICS_FILE} holds epochs {_span(epochs)}, the summary plans "
            f"{planned!r}: the records are incomplete"
        )
    derived = summarize_metrics(metrics)
    for key, value in derived.items():
        if summary.get(key) != value:
            return (
                f"{summary_path}: {key}={summary.get(key)!r} disagrees with "
                f"{METRICS_FILE} ({value!r})"
            )
    return None


def _setup_problem(summary: Mapping[str, Any]) -> str | None:
    """Where a summary field that copies the recorded setup disagrees with it."""
    setup = summary.get("setup")
    if not isinstance(setup, dict):
        return "no recorded setup to check the summary against"
    expected = dict(SUMMARY_FROM_SETUP)
    # A schedule's options, or (hd, schedulefree) those of the optimizer that sets the lr.
    for option in _keys(summary.get("scheduler_options")):
        owner = "scheduler" if f"scheduler.{option}" in setup else "optimizer"
        expected[f"scheduler_options.{option}"] = f"{owner}.{option}"
    expected.update({f"label_settings.{k}": k for k in _keys(summary.get("label_settings"))})
    if "optimizer_lr" in summary:
        expected["optimizer_lr"] = "optimizer.lr"
    for field, key in expected.items():
        head, _, sub = field.partition(".")
        value = summary.get(head) if not sub else summary[head].get(sub)
        if key not in setup or value != setup[key]:
            return f"{field}={value!r} disagrees with the recorded setup's {key}={setup.get(key)!r}"
    return None


def _keys(value: Any) -> list[str]:
    return list(value) if isinstance(value, dict) else []


def _label_problem(summary: Mapping[str, Any]) -> str | None:
    """Where the run's name disagrees with its schedule (checked against the setup): the label
    is the schedule's name, optionally followed by '-<setting>', and the run's name is the label
    followed by its identity suffix (the rules ``experiments.validation`` enforces)."""
    name, label = summary.get("scheduler_name"), summary.get("scheduler_label")
    shown = summary.get("scheduler")
    if not (isinstance(name, str) and isinstance(label, str) and isinstance(shown, str)):
        return "scheduler, scheduler_label or scheduler_name is missing"
    if not (label == name or label.startswith(f"{name}-")) or not shown.startswith(label):
        return (
            f"scheduler={shown!r} (label {label!r}) does not name schedule {name!r}, the "
            "recorded setup's"
        )
    return None


def _span(epochs: list[Any]) -> str:
    if not epochs:
        return "none"
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} records)"


def best_validation(records: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The record of the epoch the honest protocol picks: the lowest validation error, ties
    broken by the lower validation loss, then the earlier epoch (None without validation)."""
    scored = [r for r in records if _is_number(r.get("val/err"))]
    if not scored:
        return None
    loss = [r.get("val/loss") if _is_number(r.get("val/loss")) else math.inf for r in scored]
    best = min(range(len(scored)), key=lambda i: (scored[i]["val/err"], loss[i], i))
    return scored[best]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def summarize_metrics(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary fields derived from the per-epoch records.

    Both protocols: ``min_test_err`` (and its epoch) is the paper's number, the epoch chosen on
    the test set; ``test_err_at_best_val`` is the honest one, the test error at
    ``best_val_epoch`` (:func:`best_validation`), None without a validation split.
    ``train_time_s`` sums the epochs' training seconds (``time/train_s``; evaluation excluded).
    """
    errors = [(r["test/err"], r["epoch"]) for r in records if r.get("test/err") is not None]
    iter_times = [r["time/iter_s"] for r in records if r.get("time/iter_s") is not None]
    train_times = [r["time/train_s"] for r in records if r.get("time/train_s") is not None]
    best = min(errors, key=lambda pair: pair[0]) if errors else (None, None)
    chosen = best_validation(records)
    return {
        "epochs_done": len(records),
        "final_test_err": records[-1].get("test/err") if records else None,
        "min_test_err": best[0],
        "min_test_err_epoch": best[1],
        "min_val_err": chosen["val/err"] if chosen else None,
        "best_val_epoch": chosen["epoch"] if chosen else None,
        "test_err_at_best_val": chosen.get("test/err") if chosen else None,
        "time_per_iter_s": sum(iter_times) / len(iter_times) if iter_times else None,
        "train_time_s": sum(train_times) if records and len(train_times) == len(records) else None,
    }
