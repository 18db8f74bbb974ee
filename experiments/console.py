"""What a run prints: a tqdm bar on a terminal, one plain line per epoch otherwise, and
train.log (written by rank 0 through ``logging``)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments.rundir import open_no_follow

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


class _NoFollowFileHandler(logging.FileHandler):
    """A log file handler that never appends through a link planted at the log's path."""

    def _open(self):  # type: ignore[override]
        fd = open_no_follow(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def configure_logging(log_file: Path | None, rank: int) -> None:
    """Console logging on every rank (warnings only off rank 0) and ``log_file`` on rank 0.

    Idempotent: handlers already attached (by Hydra, or an earlier call) are kept, not doubled.
    """
    root = logging.getLogger()
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(console)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if log_file is None or rank != 0:
        return
    target = str(log_file.absolute())
    if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = _NoFollowFileHandler(target, mode="a")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)


def detach_log_file(log_file: Path) -> None:
    """Close and remove the handler writing ``log_file`` (several runs share one process)."""
    root = logging.getLogger()
    target = str(log_file.absolute())
    for handler in list(root.handlers):
        if getattr(handler, "baseFilename", None) == target:
            root.removeHandler(handler)
            handler.close()


def use_progress_bar(mode: str, is_main: bool) -> bool:
    """``bar``/``plain`` force the choice; ``auto`` shows a bar when stderr is a terminal."""
    if not is_main:
        return False
    if mode == "auto":
        return sys.stderr.isatty()
    return mode == "bar"


def run_eta_s(
    epochs_after: int, past_epoch_s: Sequence[float], elapsed_s: float, done: int, total: int
) -> float | None:
    """Seconds until the run ends: the rest of this epoch at its pace so far, then
    ``epochs_after`` epochs at the mean epoch time (this epoch's projected time while no epoch
    has finished). None before the first step of the epoch."""
    if done <= 0 or total <= 0:
        return None
    this_epoch = elapsed_s * total / done
    mean = sum(past_epoch_s) / len(past_epoch_s) if past_epoch_s else this_epoch
    return max(this_epoch - elapsed_s, 0.0) + epochs_after * mean


def format_epoch_line(
    record: dict[str, Any],
    epochs: int,
    eta_s: float | None = None,
    shown: Sequence[tuple[str, str]] = (),
) -> str:
    """The one-line summary of a finished epoch (with the run's ETA when given). ``shown``:
    the schedule's fields of the record and how the line names them (``console_fields`` of
    the schedule contract: AutoDrop's drops and omega); a missing value shows as '-'."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"step {record['step']}",
        f"lr {record['lr']:.4g}",
        f"train loss {record['train/loss']:.4f}",
        f"train acc {record['train/acc']:.2f}%",
    ]
    if "val/err" in record:
        parts += [f"val loss {record['val/loss']:.4f}", f"val err {record['val/err']:.2f}%"]
    parts += [
        f"test loss {record['test/loss']:.4f}",
        f"test err {record['test/err']:.2f}%",
        f"{record['time/epoch_s']:.1f}s",
    ]
    for field, name in shown:
        if field in record:
            parts.append(f"{name} {_shown_value(record[field])}")
    if record.get("angle/epoch") is not None:
        parts.append(f"angle {record['angle/epoch']:.2f}")
    if eta_s is not None and record["epoch"] < epochs:
        parts.append(f"run ETA {tqdm.format_interval(eta_s)}")
    return " | ".join(parts)


def _shown_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class EpochProgress:
    """A per-epoch tqdm bar (or nothing). ``refresh`` reads device values, so the loop calls it
    only every few steps: it forces a host synchronisation."""

    REFRESH_EVERY_S = 0.5

    def __init__(
        self,
        enabled: bool,
        total: int,
        epoch: int,
        epochs: int,
        past_epoch_s: Sequence[float] = (),
    ) -> None:
        self.bar = (
            tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)
            if enabled
            else None
        )
        self._epochs_after = epochs - epoch
        self._past_epoch_s = list(past_epoch_s)
        self._started = time.perf_counter()
        self._last_refresh = 0.0

    @property
    def wants_refresh(self) -> bool:
        return self.bar is not None and time.perf_counter() - self._last_refresh > (
            self.REFRESH_EVERY_S
        )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def refresh(self, loss: float, acc: float, lr: float, samples_per_s: float) -> None:
        if self.bar is None:
            return
        self._last_refresh = time.perf_counter()
        eta = run_eta_s(
            self._epochs_after,
            self._past_epoch_s,
            self._last_refresh - self._started,
            self.bar.n,
            self.bar.total,
        )
        self.bar.set_postfix(
            loss=f"{loss:.4f}",
            acc=f"{acc:.1f}%",
            lr=f"{lr:.3g}",
            img_s=f"{samples_per_s:.0f}",
            run_eta="?" if eta is None else tqdm.format_interval(eta),
            refresh=False,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
