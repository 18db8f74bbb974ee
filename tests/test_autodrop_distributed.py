"""Two CPU processes (gloo): every rank takes rank 0's AutoDrop decisions."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autodrop import AutoDrop, AutoDropV1
from tests.trajectories import drive, make_params, noisy_quadratic

STEPS = 480


def make_scheduler(kind, opt):
    if kind == "autodrop":
        return AutoDrop(opt, window=4, buffer_size=4, threshold=0.3, rho=0.7)
    return AutoDropV1(opt, steps_per_epoch=4, extra_epochs=3, theta=3.0, max_theta=10.0)


def worker(rank, world_size, init_file, kind, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        # Each rank sees a different trajectory: only rank 0's may decide.
        trajectory = noisy_quadratic(STEPS, seed=100 + rank)
        params, opt = make_params(0.1)
        result = drive(make_scheduler(kind, opt), params, trajectory)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["autodrop", "autodrop_v1"])
def test_ranks_follow_rank_zero(tmp_path, kind):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), kind, str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    params, opt = make_params(0.1)
    alone = drive(make_scheduler(kind, opt), params, noisy_quadratic(STEPS, seed=100))
    params, opt = make_params(0.1)
    rank1_alone = drive(make_scheduler(kind, opt), params, noisy_quadratic(STEPS, seed=101))

    assert alone["drops"], "the test trajectory must make the scheduler drop"
    assert alone["drops"] != rank1_alone["drops"], "ranks must disagree when left alone"
    assert rank0["drops"] == rank1["drops"] == alone["drops"]
    assert rank0["lrs"] == rank1["lrs"] == alone["lrs"]
    if kind == "autodrop_v1":
        for step in alone["drops"]:  # the averaged weights are rank 0's on every rank
            assert torch.equal(rank0["params_after"][step], rank1["params_after"][step])
