"""``autodrop-train``: the benchmark runner (``python -m experiments.train``) as a command.

A thin launcher, installed beside the library but no part of it (``autodrop`` imports nothing
above itself). The runner (``experiments``, ``models``, ``conf``) is not installed: it runs in a
checkout of this repository. The command finds the checkout (the current directory or one above
it, else the checkout an editable install points at), puts it first on ``sys.path`` and calls
``experiments.train.main``. Being a command, it gets Hydra's tab completion:
``eval "$(autodrop-train -sc install=bash)"``. Only the standard library is imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

RUNNER = Path("experiments") / "train.py"


def find_checkout(start: Path) -> Path | None:
    """The first of ``start``, its parents and this package's parent that holds the runner."""
    candidates = [start, *start.parents, Path(__file__).resolve().parents[1]]
    return next((folder for folder in candidates if (folder / RUNNER).is_file()), None)


def main() -> None:
    checkout = find_checkout(Path.cwd().resolve())
    if checkout is None:
        print(
            f"error: autodrop-train runs from a checkout of the AutoDrop benchmark suite: no "
            f"{RUNNER} in {Path.cwd()} or above it",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.path.insert(0, str(checkout))
    from experiments.train import main as train

    train()
