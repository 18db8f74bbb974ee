"""The command line's answers kept on disk: what ``--help``, a tab completion and a grid's planning
compute from the source tree alone (Hydra composing the config costs about 0.1 s a time, and a
grid composes once per preset and schedule), so asking again costs a file read.

An answer is kept under ``.cache/answers/tree-<stamp>/`` beside ``conf/``, where the stamp digests
the path, size and modification time of every source and config file of the suite
(``SOURCE_FOLDERS``) and the versions of Python, Hydra and OmegaConf: any edit, checkout, added
or removed file gives a new stamp, and the answers of the old one are removed the first time the
new one stores. Each answer's own key holds everything else it depends on (the command line, the
environment variables a launch reads). ``AUTODROP_ANSWER_CACHE=off`` turns it off and
``AUTODROP_ANSWER_CACHE=<folder>`` keeps the answers there instead; a folder that cannot be
written, or a file that cannot be read, only means computing the answer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("autodrop", "models", "experiments", "conf", "scripts", "autodrop_train")
SOURCE_SUFFIXES = (".py", ".yaml")
DEFAULT_DIR = REPO / ".cache" / "answers"
CACHE_ENV = "AUTODROP_ANSWER_CACHE"  # off, or the folder to keep the answers in

T = TypeVar("T")
MISSING: Any = object()  # what recall returns when no answer is stored
_STAMP_PREFIX = "tree-"
_STAMP_FOLDER = re.compile(rf"{_STAMP_PREFIX}[0-9a-f]{{24}}")


def cache_dir() -> Path | None:
    """Where the answers are kept; None when the cache is off."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    return Path(setting) if setting else DEFAULT_DIR


@functools.cache
def source_stamp(repo: Path = REPO) -> str:
    """A digest of the source tree as it stands (once per process): every source and config
    file's path, size and modification time, the versions of what composes the config and the
    Hydra plugins installed (their launchers are config groups)."""
    import hydra
    import hydra_plugins
    import omegaconf

    entries = [platform.python_version(), hydra.__version__, omegaconf.__version__]
    entries += sorted(name for path in hydra_plugins.__path__ for name in os.listdir(path))
    for folder in SOURCE_FOLDERS:
        for root, dirs, files in os.walk(repo / folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    path = Path(root) / name
                    stat = path.stat()
                    entries.append(f"{path.relative_to(repo)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:24]


def _path(folder: Path, kind: str, key: Any) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / f"{_STAMP_PREFIX}{source_stamp()}" / kind / f"{digest}.json"


def recall(kind: str, key: Any) -> Any:
    """The answer stored for ``kind`` and ``key`` (plain JSON data) with the source tree as it
    stands, or ``MISSING``."""
    folder = cache_dir()
    if folder is None:
        return MISSING
    try:
        stored = json.loads(_path(folder, kind, key).read_text())
        if stored["key"] == json.loads(json.dumps(key)):
            return stored["answer"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not stored yet, or unreadable: the caller computes it
    return MISSING


def store(kind: str, key: Any, answer: Any) -> None:
    """Keep ``answer`` (plain JSON data) for ``kind`` and ``key``; nothing when the cache is off
    or cannot be written (a read-only checkout computes its answers each time)."""
    folder = cache_dir()
    if folder is None:
        return
    path = _path(folder, kind, key)
    try:
        if not path.parent.exists():
            _remove_other_stamps(folder)
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            json.dump({"key": key, "answer": answer}, handle)
        os.replace(name, path)
    except OSError:
        pass


def remembered(
    kind: str,
    key: Any,
    compute: Callable[[], T],
    *,
    keep: Callable[[T], bool] = lambda answer: True,
) -> T:
    """The stored answer for ``kind`` and ``key``, else ``compute()`` (plain JSON data), stored
    when ``keep`` accepts it (an answer that read something outside the source tree and the key
    must not be kept)."""
    answer = recall(kind, key)
    if answer is MISSING:
        answer = compute()
        if keep(answer):
            store(kind, key, answer)
    return answer


def _remove_other_stamps(folder: Path) -> None:
    """Remove the answers kept for other source trees (only folders this module names)."""
    if folder.is_dir():
        mine = f"{_STAMP_PREFIX}{source_stamp()}"
        for other in folder.iterdir():
            if other.name != mine and _STAMP_FOLDER.fullmatch(other.name) and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
