"""Checkpoint/resume: an interrupted run, relaunched, ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from experiments.rundir import effective_status, read_records
from tests.conftest import REPO_ROOT, TINY_RUN

RESUME_RUN = [*TINY_RUN, "scheduler=autodrop", "trainer.deterministic=true"]


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def _assert_same_run(resumed: Path, reference: Path) -> None:
    assert _without_times(read_records(resumed / "metrics.jsonl")) == _without_times(
        read_records(reference / "metrics.jsonl")
    )
    assert read_records(resumed / "autodrop.jsonl") == read_records(reference / "autodrop.jsonl")
    mine = load_checkpoint(resumed / "checkpoints/last.pt")
    theirs = load_checkpoint(reference / "checkpoints/last.pt")
    assert mine["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        assert torch.equal(mine["model"][name], tensor), name
    for name in ("window_sum", "previous_mean", "previous_step"):
        for a, b in zip(mine["schedule"][name], theirs["schedule"][name], strict=True):
            assert torch.equal(a, b), name


def test_rng_states_round_trip_through_plain_data() -> None:
    # The legacy global numpy RNG is exactly what a checkpoint must hold.
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.rand(5), np.random.rand(5), random.random()  # noqa: NPY002
    restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]


def test_interrupted_run_resumes_bit_identically(train_in_process, killed_at_checkpoint) -> None:
    reference = train_in_process([*RESUME_RUN, "trainer.epochs=4", "experiment_name=whole"])

    # Interrupt the second run after epoch 3's records are written but before its checkpoint:
    # the relaunch must drop the orphan lines and redo epoch 3 from the epoch-2 checkpoint.
    killed_at_checkpoint(
        3, lambda: train_in_process([*RESUME_RUN, "trainer.epochs=4", "experiment_name=split"])
    )
    run_dir = reference.parents[3] / "split" / reference.relative_to(reference.parents[2])
    assert len(read_records(run_dir / "metrics.jsonl")) == 3
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["epoch"] == 2
    summary = (run_dir / "summary.json").read_text()
    assert '"status": "failed"' in summary and "KeyboardInterrupt" in summary

    resumed = train_in_process([*RESUME_RUN, "trainer.epochs=4", "experiment_name=split"])
    assert resumed == run_dir
    _assert_same_run(resumed, reference)
    assert "resuming" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_sigkill_mid_run_then_relaunch_matches_uninterrupted(train_in_process, results_dir):
    epochs = ["trainer.epochs=6", "data.image_size=16"]
    reference = train_in_process([*RESUME_RUN, *epochs, "experiment_name=whole"])
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        *RESUME_RUN,
        *epochs,
        "experiment_name=killed",
        f"paths.results_dir={results_dir}",
    ]
    run_dir = results_dir / "runs/killed" / reference.relative_to(reference.parents[2])
    metrics = run_dir / "metrics.jsonl"

    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert '"status": "running"' in (run_dir / "summary.json").read_text()
    assert effective_status(run_dir) == "stale"  # nobody holds its lock any more
    assert len(read_records(metrics)) < 6

    relaunch = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    _assert_same_run(run_dir, reference)
    (resume,) = json.loads((run_dir / "summary.json").read_text())["resumes"]
    assert resume["reason"] == "stale" and resume["previous_status"] == "running"
