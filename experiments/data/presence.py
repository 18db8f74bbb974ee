"""Whether a dataset is in place under its root, checked without reading it or importing the
loaders (a dry run plans a grid in seconds): the files of an official CIFAR release, ImageNet's
class folders. A dataset without a known layout (digits is embedded) counts as present."""

from __future__ import annotations

from pathlib import Path

from experiments.data.archive_download import missing_files
from experiments.data.cifar_release import CIFAR_RELEASES, expected_layout
from experiments.data.imagenet_layout import check_imagenet_layout
from experiments.errors import DatasetUnavailableError


def missing_data(dataset: str, root: str | Path) -> str | None:
    """What is missing of ``dataset`` under ``root`` (its config's ``data.root``), in one
    sentence naming the path and the expected layout; None when it is in place."""
    root = Path(root).expanduser()
    if dataset in CIFAR_RELEASES:
        release = CIFAR_RELEASES[dataset]
        folder = root / release.folder
        lacking = missing_files(folder, release.files)
        if not lacking:
            return None
        where = f"{folder} lacks {', '.join(lacking)}" if folder.exists() else f"no {folder}"
        return f"{where}: {expected_layout(release, root)} (data.download=true fetches it)"
    if dataset == "imagenet":
        try:
            check_imagenet_layout(root)
        except DatasetUnavailableError as err:
            return str(err)
    return None
