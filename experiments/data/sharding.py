"""Which samples a rank visits in an epoch, in which order, with which crop and flip.

Everything is a pure function of (seed, epoch, rank, world_size), drawn on the CPU so the order is
the same on every device. Train sharding follows ``DistributedSampler``: the epoch permutation is
padded (``drop_last=False``: its first few entries repeat, so fewer than ``world_size`` samples are
seen twice) or trimmed (``drop_last=True``: fewer than ``world_size`` samples are skipped, a
different few each epoch) to a multiple of ``world_size``, then rank r takes positions
r, r + W, r + 2W, ... Every rank therefore gets the same number of samples and steps, and with
``N % world_size == 0`` every sample is seen exactly once per epoch. Because the shard is strided,
the global batch of step i is the same set of samples for any world size.
Eval sharding is the plain stride ``rank::world_size`` with no padding: an exact partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_TRAIN_PLAN_STREAM = 1
_SAMPLE_SEED_STREAM = 2
SEED_MASK = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (``numpy.random.SeedSequence``)."""
    if min(parts) < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {parts}")
    low, high = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return (int(low) | (int(high) << 32)) & SEED_MASK


def epoch_sample_seed_base(seed: int, epoch: int) -> int:
    """Base of the per-sample seeds of an epoch; sample ``i`` uses ``base + i`` (mod 2**63)."""
    return derive_seed(seed, epoch, _SAMPLE_SEED_STREAM)


def check_start_batch(start_batch: int, batches: int) -> int:
    """``start_batch`` if an epoch of ``batches`` batches can start there (0..batches)."""
    if not 0 <= start_batch <= batches:
        raise ValueError(f"start_batch must be in 0..{batches}, got {start_batch}")
    return start_batch


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def rank_sample_count(num_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples every rank visits per epoch (after padding or trimming to a multiple of W)."""
    if drop_last:
        return num_samples // world_size
    return ceil_div(num_samples, world_size)


def train_steps_per_epoch(
    num_samples: int, batch_size: int, world_size: int, drop_last: bool
) -> int:
    """Optimizer steps per epoch on each rank; ``drop_last`` also drops the last partial batch."""
    per_rank = rank_sample_count(num_samples, world_size, drop_last)
    return per_rank // batch_size if drop_last else ceil_div(per_rank, batch_size)


@dataclass(frozen=True)
class EpochPlan:
    """A rank's epoch: dataset ``indices`` [n] in visiting order, crop ``offsets`` [n, 2]
    (top, left) inside the padded image, horizontal ``flips`` [n] (bool). All CPU tensors."""

    indices: torch.Tensor
    offsets: torch.Tensor
    flips: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def plan_epoch(
    num_samples: int,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
    max_offset: int,
) -> EpochPlan:
    """Shuffle, crop offsets in ``0..max_offset`` and flips (p=0.5) for one rank's epoch.

    Crops and flips are drawn per position of the global permutation, so a sample's augmentation
    does not depend on the world size either.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, _TRAIN_PLAN_STREAM))
    order = torch.randperm(num_samples, generator=generator)
    offsets = torch.randint(0, max_offset + 1, (num_samples, 2), generator=generator)
    flips = torch.randint(0, 2, (num_samples,), generator=generator).bool()
    total = rank_sample_count(num_samples, world_size, drop_last) * world_size
    positions = torch.arange(total)[rank::world_size] % max(num_samples, 1)
    return EpochPlan(order[positions], offsets[positions], flips[positions])


@dataclass(frozen=True)
class EpochPlanner:
    """``plan_epoch`` with everything but the epoch fixed: one rank's view of a train split."""

    num_samples: int
    seed: int
    rank: int
    world_size: int
    drop_last: bool
    max_offset: int

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(
            self.num_samples,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            max_offset=self.max_offset,
        )

    def samples_per_rank(self) -> int:
        return rank_sample_count(self.num_samples, self.world_size, self.drop_last)

    def steps(self, batch_size: int) -> int:
        return train_steps_per_epoch(self.num_samples, batch_size, self.world_size, self.drop_last)


def eval_shard(num_samples: int, rank: int, world_size: int) -> torch.Tensor:
    """Indices evaluated by ``rank``: ``rank::world_size``, disjoint and covering every sample."""
    return torch.arange(rank, num_samples, world_size)
