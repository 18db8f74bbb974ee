"""ImageNet's folder layout, ``root/{train,val}/<class>/<image>``, and its check. Torch-free,
so a dry run can check that the dataset is in place without importing the loaders."""

from __future__ import annotations

from pathlib import Path

from experiments.errors import DatasetUnavailableError

SPLITS = ("train", "val")


def expected_layout(root: Path) -> str:
    return (
        f"ImageNet is expected as {root}/train/<class>/<image> and {root}/val/<class>/<image>, "
        "with the same class folders (e.g. n01440764) in both. The official validation archive "
        "is flat: sort its images into class folders first (e.g. with the widely used "
        "valprep.sh script)."
    )


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


def check_imagenet_layout(root: str | Path) -> list[str]:
    """The class folder names, after checking both splits exist and share the same classes."""
    root = Path(root).expanduser()
    layout = expected_layout(root)
    classes = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetUnavailableError(f"{split_dir} does not exist. {layout}")
        classes[split] = _class_folders(split_dir)
        if not classes[split]:
            found = "files but " if any(split_dir.iterdir()) else ""
            raise DatasetUnavailableError(f"{split_dir} holds {found}no class folders. {layout}")
    only_train = sorted(set(classes["train"]) - set(classes["val"]))
    only_val = sorted(set(classes["val"]) - set(classes["train"]))
    if only_train or only_val:
        raise DatasetUnavailableError(
            f"train/ and val/ under {root} have different class folders (only in train: "
            f"{preview(only_train)}; only in val: {preview(only_val)}). {layout}"
        )
    return classes["train"]


def preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown
