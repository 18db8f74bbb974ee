"""The run directory contract: file names, summary.json, the per-epoch and per-measurement record
files, and the decision a launch takes (skip a finished run, resume, or start afresh).

One run = ``<results_dir>/runs/<experiment>/<dataset>-<model>/<scheduler_label>/seed=<n>/``.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
AUTODROP_FILE = "autodrop.jsonl"
TLR_FILE = "tlr.jsonl"  # TLR's lr updates (step, lr, factor, line_search_lr, pairs)
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoints/last.pt"
PREVIOUS_CHECKPOINT = "prev.pt"  # the fallback kept beside last.pt (experiments.checkpoint)
LOG_FILE = "train.log"
LOCK_FILE = ".lock"

RUNNING, FINISHED, FAILED, DIVERGED = "running", "finished", "failed", "diverged"
# Stopped on a signal after a checkpoint (experiments.preemption); requeued: and the scheduler
# (submitit) put the job back in its queue. Both resume on relaunch.
INTERRUPTED, REQUEUED = "interrupted", "requeued"
# Never written: what ``effective_status`` reports for a "running" run nobody holds the lock of.
STALE = "stale"
STATUSES = (RUNNING, FINISHED, FAILED, DIVERGED, INTERRUPTED, REQUEUED, STALE)
LOCK_ATTEMPTS, LOCK_RETRY_S = 5, 0.02


class RunLocked(RuntimeError):
    """Another live process is training this run directory."""


class LaunchAction(enum.Enum):
    SKIP = "skip"  # summary.json says finished
    RESUME = "resume"  # checkpoints/last.pt (or its fallback prev.pt) exists
    FRESH = "fresh"


def run_dir_relative(
    experiment: str, dataset: str, model: str, scheduler_label: str, seed: int
) -> Path:
    """The run's path below ``<results_dir>/runs``."""
    return Path(experiment) / f"{dataset}-{model}" / scheduler_label / f"seed={seed}"


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

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def autodrop_path(self) -> Path:
        return self.root / AUTODROP_FILE

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
        """The summary, or None when there is none (or it is unreadable)."""
        try:
            return json.loads(self.summary_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        text = json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
        write_atomically(self.summary_path, lambda f: f.write(text))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the run directory, or raise RunLocked at once.

        The OS releases the lock when its holder exits or is killed, so no stale lock remains.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_exclusive_flock(fd):
                holder = path.read_text().strip() or "unknown"
                raise RunLocked(
                    f"{self.root} is being trained by another process (pid {holder}): this "
                    "launch exits without touching it; relaunch once that process has ended"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def launch_action(self) -> LaunchAction:
        summary = self.read_summary()
        if summary is not None and summary.get("status") == FINISHED:
            return LaunchAction.SKIP
        checkpoints = (self.checkpoint_path, self.checkpoint_path.with_name(PREVIOUS_CHECKPOINT))
        if any(path.is_file() for path in checkpoints):
            return LaunchAction.RESUME
        return LaunchAction.FRESH

    def append_records(self, path: Path, records: Iterable[Mapping[str, Any]]) -> None:
        text = _jsonl(records)
        if text:
            with path.open("a") as handle:
                handle.write(text)
                handle.flush()

    def rewrite_records(self, path: Path, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``path`` by exactly ``records`` (used on resume: no duplicate, no gap)."""
        text = _jsonl(records)
        write_atomically(path, lambda f: f.write(text))

    def remove_stale_outputs(self) -> None:
        """A fresh start: drop record files left by an earlier attempt without a checkpoint."""
        for path in (self.metrics_path, self.autodrop_path, self.root / TLR_FILE):
            path.unlink(missing_ok=True)


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
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
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
    """The JSON records of a .jsonl file (empty when the file does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize_metrics(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary fields derived from the per-epoch records."""
    errors = [(r["test/err"], r["epoch"]) for r in records if r.get("test/err") is not None]
    iter_times = [r["time/iter_s"] for r in records if r.get("time/iter_s") is not None]
    best = min(errors, key=lambda pair: pair[0]) if errors else (None, None)
    return {
        "epochs_done": len(records),
        "final_test_err": records[-1].get("test/err") if records else None,
        "min_test_err": best[0],
        "min_test_err_epoch": best[1],
        "time_per_iter_s": sum(iter_times) / len(iter_times) if iter_times else None,
    }
