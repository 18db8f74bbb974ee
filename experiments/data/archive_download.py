"""Download a dataset archive, verify it and install its folder atomically.

Everything is written to temporary names inside ``root`` and the extracted folder is moved into
place with one ``os.replace``; on any failure the temporaries are removed, so a failed or
interrupted download never leaves a half-written dataset behind.

Only the standard library is used (a dry run that checks the data imports this module, and
must not pay torch's import). What torchvision's helpers lack is done here:

* ``fetch_url`` has a timeout (torchvision's ``download_url`` hangs on a stalled server) and
  never retries a failed https download over plain http.
* ``check_tar_members`` checks every member before anything is extracted: no absolute paths,
  ``..`` components, links, devices or setuid bits (torchvision extracts without a filter).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from experiments.errors import DatasetUnavailableError

_CHUNK = 1 << 20
_SPECIAL_MODE_BITS = stat.S_ISUID | stat.S_ISGID


def fetch_url(url: str, destination: Path, timeout_s: float = 60.0) -> None:
    """Stream ``url`` into the file ``destination`` (no retries, no change of scheme)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def missing_files(folder: Path, required: Sequence[str]) -> list[str]:
    return [name for name in required if not (folder / name).is_file()]


def check_tar_members(archive: Path) -> None:
    """Raise ``tarfile.TarError`` unless every member of ``archive`` is a regular file or a
    folder with a relative path that stays inside the extraction folder and no setuid/setgid
    bit (so links, devices and FIFOs are refused too)."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            escapes = path.is_absolute() or ".." in path.parts
            plain = member.isfile() or member.isdir()
            if escapes or not plain or member.mode & _SPECIAL_MODE_BITS:
                raise tarfile.TarError(f"refusing to extract {member.name!r}")


def extract_tar(archive: Path, destination: Path) -> None:
    """Extract the checked members of ``archive`` (a .tar.gz, .tgz, .tar, ...) into
    ``destination``."""
    check_tar_members(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")


def install_tar_archive(
    *, url: str, md5: str, root: Path, folder: str, required: Sequence[str], hint: str
) -> Path:
    """Fetch the .tar.gz at ``url``, check its ``md5``, and install its top folder ``folder``
    (which must hold every file in ``required``) as ``root/folder``. ``hint`` ends every error
    message. Returns the installed folder."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / folder
    fd, archive_name = tempfile.mkstemp(dir=root, prefix=f".{folder}.", suffix=".part.tar.gz")
    os.close(fd)
    archive = Path(archive_name)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}.extract."))
    try:
        try:
            fetch_url(url, archive)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DatasetUnavailableError(f"Downloading {url} failed ({exc}). {hint}") from exc
        actual_md5 = file_md5(archive)
        if actual_md5 != md5:
            raise DatasetUnavailableError(
                f"The file downloaded from {url} is corrupt: md5 {actual_md5}, expected {md5}. "
                f"{hint}"
            )
        try:
            extract_tar(archive, staging)
        except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
            raise DatasetUnavailableError(f"Extracting {url} failed ({exc}). {hint}") from exc
        extracted = staging / folder
        lacking = missing_files(extracted, required)
        if lacking:
            raise DatasetUnavailableError(
                f"The archive {url} has no {folder}/{{{', '.join(lacking)}}}. {hint}"
            )
        _move_into_place(extracted, target, required, hint)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(extracted: Path, target: Path, required: Sequence[str], hint: str) -> None:
    try:
        os.replace(extracted, target)
    except OSError as exc:
        # Another process (e.g. a second rank) may have installed the same folder first.
        if target.is_dir() and not missing_files(target, required):
            return
        raise DatasetUnavailableError(
            f"Could not move the data to {target} ({exc}). {hint}"
        ) from exc
