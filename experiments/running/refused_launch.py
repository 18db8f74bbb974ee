"""A launch refused before it trains leaves nothing behind.

The run directory is made and locked before the data is read and the real model, optimizer and
schedule are built, so a refusal found there (missing or corrupt data, a value only the real
build rejects) comes after the directory exists. The launch then removes what it made: the run
directory, if it holds nothing but the launch's own scaffolding (lock, ``.hydra/``, train.log),
and the parents it created for it that are still empty. A corrected relaunch starts clean and
listings show no half-made run. A directory that existed before the launch is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from experiments import rundir as rd

log = logging.getLogger(__name__)

# What a launch writes into a new run directory before training starts.
SCAFFOLDING = frozenset({rd.LOCK_FILE, rd.HYDRA_DIR, rd.LOG_FILE})


def directories_to_make(root: Path) -> list[Path]:
    """``root`` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    path = Path(os.path.abspath(root))
    while not os.path.lexists(path) and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


@contextlib.contextmanager
def removed_if_refused(
    made: Sequence[Path], refusals: tuple[type[BaseException], ...]
) -> Iterator[None]:
    """On one of ``refusals``, remove the directories in ``made`` (``directories_to_make`` of
    the run directory, taken before the launch made it) again, then re-raise."""
    try:
        yield
    except refusals:
        remove_made_directories(made)
        raise


def remove_made_directories(made: Sequence[Path]) -> None:
    """Remove ``made[0]`` (a run directory holding only scaffolding), then each further entry
    while it is empty. Never raises: the refusal is what the user must see."""
    if not made:
        return
    root = made[0]
    try:
        if any(entry.name not in SCAFFOLDING for entry in root.iterdir()):
            return  # something was computed: keep it
        shutil.rmtree(root)
        for parent in made[1:]:
            parent.rmdir()  # OSError when another launch put something there: keep it
    except OSError as error:
        log.debug("left %s in place: %s", error.filename, error)
