"""``DataSettings``: everything the data pipelines need to know about one rank's run, checked once.

The builders (``build_data``, ``build_array_bundle``, ``build_imagenet``) take one of these
instead of a long keyword list; ``DataSettings.for_rank`` makes it from the composed config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from autodrop.checks import check_bool, check_choice, check_int
from experiments.schema import Decoder, Loader

LOADER_NAMES: tuple[str, ...] = tuple(member.value for member in Loader)
DECODERS: tuple[str, ...] = tuple(member.value for member in Decoder)
_FLAGS = (
    "download",
    "verify",
    "augment",
    "drop_last",
    "channels_last",
    "follow_links",
    "skip_bad_images",
)


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """How one rank loads its data. ``batch_size``/``eval_batch_size`` are per rank.

    ``loader``: "device" (whole split on the device, cifar/digits) or "classic" (DataLoader
    workers; the only one for imagenet). ``download`` and ``verify`` (check the official md5s)
    apply to cifar, ``image_size`` to digits (cifar must be 32; imagenet ignores it),
    ``crop_size``/``resize_size``, ``decode`` and the folder safety options (``follow_links``,
    ``skip_bad_images``, ``max_image_pixels``; see ``experiments.data.image_folder``) to
    imagenet. ``val_size``: training examples held out as the validation split (0: none; see
    ``experiments.data.validation_split``). Remainders: see ``experiments.data.sharding``.

    Every value is checked on construction (a ValueError names the value and the valid range);
    what depends on the dataset is checked by ``build_data``.
    """

    batch_size: int
    eval_batch_size: int
    device: torch.device
    seed: int
    root: str = "data"
    rank: int = 0
    world_size: int = 1
    loader: str = "device"
    num_workers: int = 4
    download: bool = False
    verify: bool = True
    image_size: int = 32
    augment: bool = True
    drop_last: bool = False
    channels_last: bool = False
    crop_size: int = 224
    resize_size: int = 256
    follow_links: bool = False
    skip_bad_images: bool = False
    max_image_pixels: int = 40_000_000
    decode: str = "cpu"
    val_size: int = 0

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise in place once
        set_field(self, "root", str(self.root))
        set_field(self, "device", torch.device(self.device))
        for name in ("batch_size", "eval_batch_size", "world_size"):
            check_int(name, getattr(self, name), low=1)
        check_int("rank", self.rank, low=0, high=self.world_size - 1)
        check_int("seed", self.seed, low=0)
        check_int("num_workers", self.num_workers, low=0)
        check_int("image_size", self.image_size, low=1)
        check_int("crop_size", self.crop_size, low=1)
        check_int("resize_size", self.resize_size, low=1)
        check_int("max_image_pixels", self.max_image_pixels, low=1)
        check_int("val_size", self.val_size, low=0)
        if self.resize_size < self.crop_size:
            raise ValueError(
                f"resize_size must be >= crop_size ({self.crop_size}), got {self.resize_size}"
            )
        # Plain strings, also from the config's enums (str(StrEnum member) is its value).
        set_field(self, "loader", check_choice("loader", self.loader, LOADER_NAMES))
        set_field(self, "decode", check_choice("decode", self.decode, DECODERS))
        for name in _FLAGS:
            check_bool(name, getattr(self, name))

    @classmethod
    def for_rank(cls, cfg: Any, device: torch.device, rank: int, world_size: int) -> DataSettings:
        """The settings of rank ``rank`` of ``world_size`` from the composed config (with the
        device defaults resolved): the global trainer batch sizes are split over the ranks,
        the eval batch rounded up."""
        data, trainer = cfg.data, cfg.trainer
        return cls(
            root=str(data.root),
            batch_size=trainer.batch_size // world_size,
            eval_batch_size=max(1, math.ceil(trainer.eval_batch_size / world_size)),
            device=device,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            loader=trainer.loader,
            num_workers=trainer.num_workers,
            download=data.download,
            verify=data.verify,
            image_size=data.image_size,
            augment=data.augment,
            drop_last=data.drop_last,
            channels_last=trainer.channels_last,
            crop_size=data.crop_size,
            resize_size=data.resize_size,
            follow_links=data.follow_links,
            skip_bad_images=data.skip_bad_images,
            max_image_pixels=data.max_image_pixels,
            decode=data.decode,
            val_size=data.val_size,
        )
