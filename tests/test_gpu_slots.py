"""GPU slots shared by the jobs of a sweep (experiments.running.gpu_slots), tested on CPU with a
fake pool: concurrent holders never share a slot, a killed holder frees its slot, and a sweep under
hydra/launcher=gpus trains each job in a process that sees only its slot's GPUs."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from experiments.running.gpu_slots import (
    VISIBLE_DEVICES,
    SlotPool,
    _try_lock,
    claim_slot,
    recorded_gpus,
    visible_gpus,
)
from tests.conftest import TINY_RUN

HOLD_S = 0.3


def _hold_a_slot(directory: str, gpus: int, per_job: int, log: str) -> None:
    pool = SlotPool(Path(directory), gpus, per_job)
    with claim_slot(pool, poll_s=0.02) as claimed:
        start = time.monotonic()
        time.sleep(HOLD_S)
        end = time.monotonic()
    with open(log, "a") as handle:  # one short append per process: atomic
        handle.write(json.dumps({"gpus": claimed, "start": start, "end": end}) + "\n")


def test_a_pool_splits_the_gpus_into_slots(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, gpus=8, per_job=2)
    assert pool.slots == 4 and pool.gpus_of(1) == [2, 3]
    assert pool.lock_path(3).name == "gpus-6-7.lock"
    with pytest.raises(ValueError, match="cannot split 6 GPUs into slots of 4"):
        SlotPool(tmp_path, gpus=6, per_job=4)


@pytest.mark.parametrize("per_job", [1, 2])
def test_concurrent_jobs_never_share_a_gpu(tmp_path: Path, per_job: int) -> None:
    log = tmp_path / "claims.jsonl"
    context = multiprocessing.get_context("fork")
    jobs = [
        context.Process(target=_hold_a_slot, args=(str(tmp_path / "slots"), 4, per_job, str(log)))
        for _ in range(6)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=30)
        assert job.exitcode == 0
    claims = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(claims) == 6
    for gpu in range(4):
        spans = sorted((c["start"], c["end"]) for c in claims if gpu in c["gpus"])
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"GPU {gpu} held by two jobs at once"
    # 6 jobs on 4 / per_job slots: some had to wait, and every slot was used.
    assert {tuple(c["gpus"]) for c in claims} == {
        tuple(SlotPool(tmp_path, 4, per_job).gpus_of(s)) for s in range(4 // per_job)
    }


def _hold_forever(directory: str, ready: str) -> None:
    with claim_slot(SlotPool(Path(directory), 1)):
        Path(ready).touch()
        time.sleep(120)


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "slots", gpus=1)
    ready = tmp_path / "ready"
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_forever, args=(str(pool.directory), str(ready))
    )
    holder.start()
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _try_lock(pool.lock_path(0)) is None  # taken
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=10)
    start = time.monotonic()
    with claim_slot(pool, poll_s=0.02) as gpus:
        assert gpus == [0]
    assert time.monotonic() - start < 5


def test_a_claim_is_released_when_the_job_raises(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, gpus=1)
    with pytest.raises(RuntimeError), claim_slot(pool):
        raise RuntimeError("training crashed")
    with claim_slot(pool, poll_s=0.01) as gpus:
        assert gpus == [0]


def test_visible_gpus_reach_child_processes_and_are_restored(monkeypatch) -> None:
    monkeypatch.setenv(VISIBLE_DEVICES, "0,1,2,3")
    with visible_gpus([2, 3]):
        child = multiprocessing.get_context("spawn")
        queue = child.Queue()
        process = child.Process(target=_report_visible, args=(queue,))
        process.start()
        seen = queue.get(timeout=60)
        process.join()
    assert seen == "2,3"
    assert os.environ[VISIBLE_DEVICES] == "0,1,2,3"


def _report_visible(queue) -> None:
    queue.put(os.environ.get(VISIBLE_DEVICES))


def test_recorded_gpus(monkeypatch) -> None:
    monkeypatch.setenv(VISIBLE_DEVICES, "5")
    assert recorded_gpus("cuda", 1) == ["5"]
    assert recorded_gpus("cpu", 0) == []
    monkeypatch.delenv(VISIBLE_DEVICES)
    assert recorded_gpus("cuda", 2) == ["0", "1"]


@pytest.mark.slow
def test_a_sweep_under_the_gpus_launcher_trains_each_job_in_a_slot(train_cli, results_dir):
    result = train_cli(
        [
            "-m",
            "hydra/launcher=gpus",
            "trainer.gpu_slots=2",
            *TINY_RUN,
            "trainer.epochs=1",
            "scheduler=constant,step",
        ],
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = results_dir / "runs/quick/digits/digits-resnet8"
    for label in ("constant", "step"):
        run = base / f"{label},data.image_size=8,trainer.epochs=1/seed=0"  # the run identity
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["gpus"] == []  # CPU: no GPU used
    assert sorted(p.name for p in (results_dir / ".gpu_slots").iterdir()) == [
        "gpus-0-0.lock",
        "gpus-1-1.lock",
    ]
