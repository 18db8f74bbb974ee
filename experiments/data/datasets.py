"""The datasets a run can train on: one builder function each, listed in ``DATASETS``.

A builder's name is the dataset's (``data=<name>``, ``conf/data/<name>.yaml``); its keyword
parameters are the dataset's options (``data.<option>=...``) with their defaults, except
``root`` and ``image_size``, which every dataset's config has (``data.root``,
``data.image_size``: a preset that shrinks the digits composes with any dataset) and the
runner passes to the builders that declare them. A builder
checks its options and returns the dataset: ``ArraySplits`` (the images of each split in
memory, which every loader serves) or ``ImageFolders`` (read from disk by loader workers).
The runner holds out the validation split, shards, batches and augments (``experiments.data
.build``). Adding a dataset is its builder, its line here and its YAML
(docs/adding-a-dataset.md).
"""

from __future__ import annotations

from typing import Literal

from autodrop.checks import check_bool, check_int
from experiments.data.arrays import ArraySplits
from experiments.data.cifar import CIFAR_SIDE, load_cifar
from experiments.data.digits import DIGITS_SIDE, load_digits_splits
from experiments.data.imagenet import ImageFolders


def _native_cifar_size(name: str, image_size: int) -> None:
    if image_size != CIFAR_SIDE:
        raise ValueError(
            f"image_size={image_size!r} is invalid: {name} images are {CIFAR_SIDE}x{CIFAR_SIDE}"
            f" (set data.image_size={CIFAR_SIDE}; quick presets shrink it for digits)"
        )


def cifar10(root: str, image_size: int, download: bool = False, verify: bool = True) -> ArraySplits:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (the official python release), fetched
    when missing with ``download``; ``verify`` checks every file against the official md5s
    (false for a deliberately modified copy). Its images are 32x32 (``image_size``)."""
    _native_cifar_size("cifar10", image_size)
    return load_cifar(
        root, "cifar10", check_bool("download", download), check_bool("verify", verify)
    )


def cifar100(
    root: str, image_size: int, download: bool = False, verify: bool = True
) -> ArraySplits:
    """CIFAR-100 from ``<root>/cifar-100-python``; options as ``cifar10``'s."""
    _native_cifar_size("cifar100", image_size)
    return load_cifar(
        root, "cifar100", check_bool("download", download), check_bool("verify", verify)
    )


def imagenet(
    root: str,
    crop_size: int = 224,
    resize_size: int = 256,
    follow_links: bool = False,
    skip_bad_images: bool = False,
    max_image_pixels: int = 40_000_000,
    decode: Literal["cpu", "gpu"] = "cpu",
) -> ImageFolders:
    """ImageNet class folders ``<root>/train/<wnid>/`` and ``<root>/val/<wnid>/``: train crop
    and eval centre crop ``crop_size`` (after a resize to ``resize_size``); links leaving the
    root are refused unless ``follow_links``; an unreadable image, or one larger than
    ``max_image_pixels``, fails the run naming it unless ``skip_bad_images`` (then it is
    replaced by the next good image and counted in summary.json); ``decode``: JPEGs decoded by
    PIL in the loader workers ("cpu") or by nvJPEG on the GPU ("gpu")."""
    return ImageFolders(
        root, crop_size, resize_size, follow_links, skip_bad_images, max_image_pixels, decode
    )


def digits(image_size: int) -> ArraySplits:
    """scikit-learn's 1,797 bundled 8x8 handwritten digits (no download), resized to
    ``image_size`` (at least 8) and replicated to 3 channels."""
    return load_digits_splits(check_int("image_size", image_size, low=DIGITS_SIDE))


#: Every dataset, in the order --help lists them.
DATASETS = (
    cifar10,
    cifar100,
    imagenet,
    digits,
)
