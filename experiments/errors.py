"""The errors the runner reports in one line: refusals of the user's input (a ConfigError
names the key, the bad value and what is allowed, with a did-you-mean when one choice is close;
missing data), and runs that ended early (diverged, stopped by a signal, a worker failed).
Nothing here imports torch: the command line reports them before a run starts."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

from autodrop.checks import closest_choice


class ConfigError(ValueError):
    """A config value is outside what the runner accepts."""


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    """The error for ``key=value``: names the key, the value and what is allowed."""
    return ConfigError(f"{key}={value!r} is invalid: {allowed}")


def did_you_mean(key: str, value: Any, choices: Iterable[Any]) -> str:
    """'; did you mean trainer.precision=bf16?' naming the choice ``value`` likely meant, or ''."""
    close = closest_choice(value, choices)
    return "" if close is None else f"; did you mean {key}={close}?"


def invalid_choice(key: str, value: Any, choices: Iterable[Any]) -> ConfigError:
    """The error for ``key=value`` outside a fixed set: names the set and the likely choice."""
    choices = [str(choice) for choice in choices]
    allowed = f"allowed values are {', '.join(choices)}{did_you_mean(key, value, choices)}"
    return invalid(key, value, allowed)


def at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise invalid(key, value, f"must be >= {low}")


def check_relative_path(key: str, value: str) -> str:
    """``value`` if it is a safe relative path (a run directory is built from it)."""
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise invalid(
            key, value, "must be a non-empty relative path without '.', '..' or empty parts"
        )
    return value


def in_section(section: str, error: Exception) -> ConfigError:
    """A builder's own refusal (``name=value is invalid: ...``) as the config key's:
    ``scheduler.name=value is invalid: ...``."""
    return ConfigError(f"{section}.{error}")


class DatasetUnavailableError(FileNotFoundError):
    """Dataset files are missing, corrupt, laid out wrongly or could not be downloaded.

    The message always says which files are expected where and how to obtain them.
    """


#: The user's mistakes, reported in one line (exit 2) wherever they are found.
USER_ERRORS = (ConfigError, DatasetUnavailableError)


def error_message(error: BaseException) -> str:
    """The error's message on one line. A message quoting a traceback (a worker process's
    error, as torch.multiprocessing reports it) is cut to the exception line it ends with."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        lines = text.partition("Traceback (most recent call last)")[2].splitlines()
        starts = [i for i, line in enumerate(lines) if line and not line[0].isspace()]
        if starts:  # the exception line, then what the message adds after the traceback
            name, sep, message = lines[starts[-1]].partition(": ")
            after = " ".join(lines[starts[-1] + 1 :])
            text = f"{name.rsplit('.', 1)[-1]}{sep}{message} {after}"
    return " ".join(text.split())


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingFailed(RuntimeError):
    """A worker process of a multi-process run failed (its traceback is in train.log)."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after its checkpoint was saved; relaunching resumes it."""

    def __init__(self, signal_name: str, step: int, epoch: int, batch: int, batches: int) -> None:
        self.signal_name, self.step, self.epoch = signal_name, step, epoch
        self.batch, self.batches = batch, batches
        where = (
            f"epoch {epoch}, batch {batch} of {batches}" if batch else f"the start of epoch {epoch}"
        )
        super().__init__(
            f"stopped by {signal_name} at step {step} ({where}); the checkpoint holds this "
            "point: relaunch the same command to resume"
        )

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + int(signal.Signals[self.signal_name])

    def record(self) -> dict[str, Any]:
        """The summary's ``interruption`` field."""
        return {
            "signal": self.signal_name,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], batches: int) -> TrainingInterrupted:
        return cls(record["signal"], record["step"], record["epoch"], record["batch"], batches)
