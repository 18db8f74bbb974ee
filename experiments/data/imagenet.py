"""ImageNet from class folders: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``.

Train: RandomResizedCrop(crop_size) + flip under per-sample seeds, sharded by a
DistributedSampler (set_epoch). Eval: Resize(resize_size) + CenterCrop(crop_size), sharded
``rank::world_size`` without padding so every val image is counted once across ranks.
The official val/ folder is the test split; the honest protocol's validation split
(``data.val_size``) is held out of train/ (``experiments.data.validation_split``) and evaluated
like the test split.
The folders are read through ``image_folder``: confined to the root, loops and duplicates
handled, no file in both splits, each image size-checked before decoding; see that module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torchvision import transforms

from autodrop.checks import check_bool, check_choice, check_int
from experiments.data.bundle import DataBundle
from experiments.data.image_folder import (
    IMAGE_EXTENSIONS,
    CheckedImageFolder,
    FolderScan,
    Sample,
    refuse_shared_files,
    scan_split,
)
from experiments.data.imagenet_layout import (
    SPLITS,
    check_imagenet_layout,
    expected_layout,
    preview,
)
from experiments.data.loading import Loading
from experiments.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from experiments.data.staging import OnDeviceNormalize
from experiments.data.validation_split import ValidationSplit, split_validation
from experiments.data.worker_loader import (
    PerSampleSeededDataset,
    WorkerEvalLoader,
    WorkerTrainLoader,
    make_eval_dataloader,
    make_split_loaders,
    seeded_train_sampler,
)
from experiments.errors import DatasetUnavailableError

DECODERS = ("cpu", "gpu")  # PIL in the loader workers, or nvJPEG on the training GPU


@dataclass(frozen=True)
class ImageFolders:
    """An ImageNet-style dataset under ``root`` and how it is read: the crops (``crop_size``,
    and ``resize_size`` before the eval centre crop), the JPEG decoder (``decode``: "cpu" in
    the loader workers, "gpu" with nvJPEG on the training device) and how far its files are
    trusted (``follow_links``, ``skip_bad_images``, ``max_image_pixels``: see
    ``experiments.data.image_folder``). Checked on construction."""

    root: str
    crop_size: int
    resize_size: int
    follow_links: bool
    skip_bad_images: bool
    max_image_pixels: int
    decode: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root))
        for name in ("crop_size", "resize_size", "max_image_pixels"):
            check_int(name, getattr(self, name), low=1)
        if self.resize_size < self.crop_size:
            raise ValueError(
                f"resize_size={self.resize_size} is invalid: must be >= crop_size "
                f"({self.crop_size}), the eval crop is cut from the resized image"
            )
        check_bool("follow_links", self.follow_links)
        check_bool("skip_bad_images", self.skip_bad_images)
        object.__setattr__(self, "decode", check_choice("decode", str(self.decode), DECODERS))

    @property
    def path(self) -> Path:
        return Path(self.root).expanduser()

    def samples(self, val_size: int) -> ImageNetSamples:
        """The samples of a run holding out ``val_size`` training images (one directory scan,
        no image decoded)."""
        return ImageNetSamples.scan(self.path, self, val_size)


def _scan_splits(root: Path, classes: list[str], options: ImageFolders) -> dict[str, FolderScan]:
    """Both splits' samples, after checking every class has images and no file is in both."""
    scans = {}
    for split in SPLITS:
        scan = scan_split(root, root / split, classes, options.follow_links)
        counts = Counter(sample.label for sample in scan.samples)
        empty = [name for label, name in enumerate(classes) if not counts[label]]
        if empty:
            raise DatasetUnavailableError(
                f"{root / split} has class folders without image files "
                f"({', '.join(IMAGE_EXTENSIONS)}): {preview(empty)}. {expected_layout(root)}"
            )
        scans[split] = scan
    refuse_shared_files(scans["train"], scans["val"])
    return scans


def _image_folder(
    samples: list[Sample], transform: transforms.Compose | None, options: ImageFolders
) -> CheckedImageFolder:
    return CheckedImageFolder(
        samples,
        transform,
        max_pixels=options.max_image_pixels,
        skip_bad=options.skip_bad_images,
    )


@dataclass(frozen=True)
class ImageNetSamples:
    """The samples of one run: ``train`` (less the validation split), ``held_out`` (the
    validation split, drawn from train/; empty without one) and ``test`` (the val/ folder)."""

    train: list[Sample]
    held_out: list[Sample]
    test: list[Sample]
    num_classes: int
    validation: ValidationSplit | None

    def by_role(self) -> dict[str, list[Sample]]:
        """train, val (when held out) and test, in the order a fingerprint reads them."""
        val = {"val": self.held_out} if self.held_out else {}
        return {"train": self.train, **val, "test": self.test}

    @classmethod
    def scan(cls, root: Path, options: ImageFolders, val_size: int) -> ImageNetSamples:
        classes = check_imagenet_layout(root)
        scans = _scan_splits(root, classes, options)
        train, test = scans["train"].samples, scans["val"].samples
        labels = [sample.label for sample in train]
        validation = split_validation(labels, val_size, like=[sample.label for sample in test])
        if validation is None:
            return cls(train, [], test, len(classes), None)
        return cls(
            [train[i] for i in validation.train.tolist()],
            [train[i] for i in validation.val.tolist()],
            test,
            len(classes),
            validation,
        )


WORKER_OUTPUTS = ("uint8", "float32")


def imagenet_transforms(
    crop_size: int, resize_size: int, augment: bool, output: str = "uint8"
) -> tuple[transforms.Compose, transforms.Compose]:
    """(train, eval) transforms; without ``augment`` the train split gets the eval transform.

    ``output``: "uint8" crops (normalised later on the device by ``OnDeviceNormalize``) or
    "float32" (ToTensor + Normalize in the worker: 4x the bytes, same values)."""
    check_choice("output", output, WORKER_OUTPUTS)
    if output == "uint8":
        normalize: list = [transforms.PILToTensor()]
    else:
        normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    eval_tf = transforms.Compose(
        [transforms.Resize(resize_size), transforms.CenterCrop(crop_size), *normalize]
    )
    if not augment:
        return eval_tf, eval_tf
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(crop_size), transforms.RandomHorizontalFlip(), *normalize]
    )
    return train_tf, eval_tf


def build_imagenet(folders: ImageFolders, loading: Loading, *, output: str = "uint8") -> DataBundle:
    """Loaders over ``folders`` for one rank as ``loading`` describes (its ``val_size``:
    training images held out as the validation split; the val/ folder is the test split).
    ``output``: what the workers produce (see ``imagenet_transforms``). ``decode="gpu"``: the
    workers only read the JPEG bytes; decoding and crops run on the CUDA device."""
    samples = folders.samples(loading.val_size)
    if folders.decode == "gpu":
        from experiments.data.gpu_decode import build_gpu_decoded_imagenet

        return build_gpu_decoded_imagenet(
            _image_folder(samples.train, None, folders),
            _image_folder(samples.test, None, folders),
            num_classes=samples.num_classes,
            folders=folders,
            loading=loading,
            held_out=_image_folder(samples.held_out, None, folders) if samples.held_out else None,
            validation=samples.validation,
        )
    train_tf, eval_tf = imagenet_transforms(
        folders.crop_size, folders.resize_size, loading.augment, output
    )
    train_set = _image_folder(samples.train, train_tf, folders)
    test_set = _image_folder(samples.test, eval_tf, folders)
    held_out = _image_folder(samples.held_out, eval_tf, folders) if samples.held_out else None
    sampler = seeded_train_sampler(train_set, loading)
    train_loader, test_loader = make_split_loaders(
        loading, PerSampleSeededDataset(train_set), sampler, test_set
    )
    device, channels_last = loading.device, loading.channels_last
    uint8 = output == "uint8"
    normalize = OnDeviceNormalize(IMAGENET_MEAN, IMAGENET_STD, device) if uint8 else None
    folder_sets = [folder for folder in (train_set, test_set, held_out) if folder is not None]
    val = None
    if held_out is not None:
        val_loader = make_eval_dataloader(loading, held_out)
        val = WorkerEvalLoader(val_loader, device, channels_last, normalize)
    return DataBundle(
        train=WorkerTrainLoader(train_loader, sampler, device, channels_last, normalize),
        test=WorkerEvalLoader(test_loader, device, channels_last, normalize),
        num_classes=samples.num_classes,
        num_train=len(train_set),
        num_test=len(test_set),
        name="imagenet",
        skipped_images=lambda: sum(folder.skipped() for folder in folder_sets),
        val=val,
        validation=samples.validation,
    )
