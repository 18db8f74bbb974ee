"""``Loading``: how one rank reads its data (its batches, its place in the job, the loader),
made from the run's settings by ``Loading.for_rank`` and checked once.

What a dataset itself is made of (its files, its image sizes, its decoder) is its builder's
options (``experiments.data.datasets``), not this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from autodrop.checks import check_bool, check_choice, check_int
from experiments.settings import Data, Loader, Trainer

LOADER_NAMES: tuple[str, ...] = tuple(member.value for member in Loader)
_FLAGS = ("augment", "drop_last", "channels_last")


@dataclass(frozen=True, kw_only=True)
class Loading:
    """How one rank loads its data. ``batch_size``/``eval_batch_size`` are per rank.

    ``loader``: "device" (whole split on the device; in-memory datasets) or "classic"
    (DataLoader workers; the only one for image folders). ``val_size``: training examples held
    out as the validation split (0: none; see ``experiments.data.validation_split``).
    Remainders: see ``experiments.data.sharding``. The defaults are the run settings' (a run
    passes every value, resolved for its device).

    Every value is checked on construction (a ValueError names the value and the valid range);
    what depends on the dataset is checked when it is built.
    """

    batch_size: int
    eval_batch_size: int
    device: torch.device
    seed: int
    rank: int = 0
    world_size: int = 1
    loader: str = Trainer.loader.value
    num_workers: int = 0
    augment: bool = Data.augment
    drop_last: bool = Data.drop_last
    channels_last: bool = False
    val_size: int = Data.val_size

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise in place once
        set_field(self, "device", torch.device(self.device))
        for name in ("batch_size", "eval_batch_size", "world_size"):
            check_int(name, getattr(self, name), low=1)
        check_int("rank", self.rank, low=0, high=self.world_size - 1)
        check_int("seed", self.seed, low=0)
        check_int("num_workers", self.num_workers, low=0)
        check_int("val_size", self.val_size, low=0)
        # A plain string, also from the config's enum (str(StrEnum member) is its value).
        set_field(self, "loader", check_choice("loader", str(self.loader), LOADER_NAMES))
        for name in _FLAGS:
            check_bool(name, getattr(self, name))

    @classmethod
    def for_rank(cls, settings: Any, device: torch.device, rank: int, world_size: int) -> Loading:
        """Rank ``rank`` of ``world_size`` of a run (``RunSettings`` resolved for its device):
        the global trainer batch sizes are split over the ranks, the eval batch rounded up."""
        data, trainer = settings.data, settings.trainer
        return cls(
            batch_size=trainer.batch_size // world_size,
            eval_batch_size=max(1, math.ceil(trainer.eval_batch_size / world_size)),
            device=device,
            seed=settings.seed,
            rank=rank,
            world_size=world_size,
            loader=trainer.loader,
            num_workers=trainer.num_workers,
            augment=data.augment,
            drop_last=data.drop_last,
            channels_last=bool(trainer.channels_last),
            val_size=data.val_size,
        )
