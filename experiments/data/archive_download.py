"""Download a dataset archive, verify it and install its folder atomically.

Everything is written to temporary names inside ``root`` and the extracted folder is moved into
place with one ``os.replace``; on any failure the temporaries are removed, so a failed or
interrupted download never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from experiments.data.errors import DatasetUnavailableError

_CHUNK = 1 << 20


def fetch_url(url: str, destination: Path, timeout_s: float = 60.0) -> None:
    """Stream ``url`` into the file ``destination``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def missing_files(folder: Path, required: Sequence[str]) -> list[str]:
    return [name for name in required if not (folder / name).is_file()]


def install_tar_archive(
    *, url: str, md5: str, root: Path, folder: str, required: Sequence[str], hint: str
) -> Path:
    """Fetch the .tar.gz at ``url``, check its ``md5``, and install its top folder ``folder``
    (which must hold every file in ``required``) as ``root/folder``. ``hint`` ends every error
    message. Returns the installed folder."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / folder
    fd, archive_name = tempfile.mkstemp(dir=root, prefix=f".{folder}.", suffix=".tar.gz.part")
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
            _extract_tar_gz(archive, staging)
        except (OSError, tarfile.TarError, EOFError) as exc:
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


def _extract_tar_gz(archive: Path, destination: Path) -> None:
    """Extract regular files and folders only, never outside ``destination``."""
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
            return
        for member in tar.getmembers():  # Python < 3.11.4 has no extraction filters
            path = Path(member.name)
            if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                raise tarfile.TarError(f"refusing to extract {member.name!r}")
        tar.extractall(destination)


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
