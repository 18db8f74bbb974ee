"""Remembering which dataset files were already checked against their official md5.

A stamp file in the dataset folder maps each verified file's name to its identity (size,
modification and change times, inode) and md5. A later load trusts a file without hashing it
again only when all of these still match. The change time and inode cannot be set by whoever
writes the file, so a release copied in with a forged stamp, or a file edited and given its old
modification time back, is hashed again. The stamp saves time only; it never decides alone.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAMP_NAME = ".autodrop-verified.json"
_MAX_STAMP_BYTES = 1 << 16


@dataclass(frozen=True)
class FileIdentity:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileIdentity:
        return cls(status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)


class VerificationStamp:
    """The stamp of one folder: read on creation, written by ``save`` if anything was added."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STAMP_NAME
        self.entries = self._read()
        self.changed = False

    def _read(self) -> dict[str, dict]:
        # Not following links and not blocking: a planted FIFO or link cannot stall or redirect.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return {}
                content = json.loads(handle.read(_MAX_STAMP_BYTES))
        except (OSError, ValueError):
            return {}
        return content if isinstance(content, dict) else {}

    def vouches_for(self, name: str, identity: FileIdentity, md5: str) -> bool:
        return self.entries.get(name) == {**asdict(identity), "md5": md5}

    def remember(self, name: str, identity: FileIdentity, md5: str) -> None:
        self.entries[name] = {**asdict(identity), "md5": md5}
        self.changed = True

    def save(self) -> None:
        """Write the stamp atomically (replacing, never following, whatever is at its path);
        a read-only dataset folder just means hashing again next time."""
        if not self.changed:
            return
        self.changed = False
        try:
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f"{STAMP_NAME}.")
        except OSError as error:
            log.debug("cannot write %s (%s): files are hashed again next time", self.path, error)
            return
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.entries, handle, indent=1, sort_keys=True)
            os.replace(temp, self.path)
        except OSError as error:
            Path(temp).unlink(missing_ok=True)
            log.debug("cannot write %s (%s): files are hashed again next time", self.path, error)
