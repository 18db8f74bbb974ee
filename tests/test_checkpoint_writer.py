"""How checkpoints are written and read back on a GPU machine, tested on CPU: hashed while
written, the previous digest kept in memory, written from a background thread off a host copy,
safe against a kill mid-write; RNG states restored from host tensors whatever map_location;
the checkpoint schedule; run-directory locks on filesystems without flock."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from experiments import checkpoint as ckpt
from experiments.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointSchedule,
    CheckpointWriter,
    capture_rng_state,
    file_sha256,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from experiments.rundir import RunDir
from tests.conftest import TINY_RUN

REPO_ROOT = Path(__file__).resolve().parents[1]


def _state(epoch: int, size: int = 1000) -> dict:
    g = torch.Generator().manual_seed(epoch)
    return {"format": 1, "epoch": epoch, "weights": torch.randn(size, generator=g), "log": [epoch]}


def test_the_digest_is_computed_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    digest = save_checkpoint(path, _state(1))
    assert digest == file_sha256(path) == (tmp_path / "last.pt.sha256").read_text().strip()


def test_a_writer_never_rereads_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    writer = CheckpointWriter(path, background=False)
    writer.save(_state(1))
    reads: list[Path] = []
    monkeypatch.setattr(ckpt, "file_sha256", lambda p: reads.append(p) or "x")
    writer.save(_state(2))
    writer.save(_state(3))
    assert reads == []
    monkeypatch.undo()
    verify_checkpoint(path)
    verify_checkpoint(tmp_path / "prev.pt")
    assert load_checkpoint(tmp_path / "prev.pt")["epoch"] == 2


def test_background_writes_use_a_host_copy_and_run_one_at_a_time(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    release, active, overlaps = threading.Event(), [], []
    real_save = ckpt.save_checkpoint

    def slow_save(*args, **kwargs):
        overlaps.append(len(active))
        active.append(1)
        release.wait(10)
        try:
            return real_save(*args, **kwargs)
        finally:
            active.pop()

    monkeypatch.setattr(ckpt, "save_checkpoint", slow_save)
    writer = CheckpointWriter(path)
    state = _state(1)
    writer.save(state)
    assert writer.busy  # save() returned while the file is still being written
    state["weights"].zero_()  # training goes on changing the live tensors
    state["log"].append("later")
    release.set()
    writer.save(_state(2))  # waits for the first write before starting the second
    writer.wait()
    assert overlaps == [0, 0]
    previous = load_checkpoint(tmp_path / "prev.pt")
    assert torch.equal(previous["weights"], _state(1)["weights"]) and previous["log"] == [1]
    assert load_checkpoint(path)["epoch"] == 2


def test_a_background_error_is_raised_by_the_next_wait(tmp_path, monkeypatch) -> None:
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_checkpoint", full_disk)
    writer = CheckpointWriter(tmp_path / "last.pt")
    writer.save(_state(1))
    with pytest.raises(OSError, match="No space") as raised:
        writer.wait()
    assert raised.value.errno == errno.ENOSPC
    writer.wait()  # reported once


class _FillsUp:
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return len(data)

    def flush(self) -> None:
        pass


def test_a_full_disk_mid_serialisation_stays_an_oserror(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ckpt, "write_atomically", lambda path, write, binary: write(_FillsUp(4096)))
    with pytest.raises(OSError, match="No space") as raised:
        save_checkpoint(tmp_path / "last.pt", _state(1, size=100_000))
    assert raised.value.errno == errno.ENOSPC


KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from pathlib import Path
    from experiments import checkpoint as ckpt
    path = Path(sys.argv[1])
    writer = ckpt.CheckpointWriter(path)
    writer.save({"format": 1, "epoch": 1, "w": torch.zeros(1 << 18)})
    writer.wait()
    written = [0]
    real_write = ckpt._HashingFile.write
    def write_then_die(self, data):
        written[0] += len(data)
        if written[0] > (1 << 19):  # half way through the second checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(self, data)
    ckpt._HashingFile.write = write_then_die
    writer.save({"format": 1, "epoch": 2, "w": torch.ones(1 << 18)})
    writer.wait()
    """
)


def test_a_kill_during_a_background_write_keeps_a_verified_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    result = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, str(path)], cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == -9  # killed mid-write
    chosen, state = load_latest_checkpoint(path)
    assert chosen == path and state["epoch"] == 1
    verify_checkpoint(path)


def test_checkpoint_schedule(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(ckpt.time, "monotonic", lambda: clock[0])
    when = CheckpointSchedule(every_epochs=3, every_minutes=0, last_epoch=7)
    assert [e for e in range(1, 8) if when.due(e)] == [3, 6, 7]
    timed = CheckpointSchedule(every_epochs=100, every_minutes=10, last_epoch=50)
    clock[0] = 9 * 60
    assert not timed.due(1)
    clock[0] = 10 * 60
    assert timed.due(2)
    timed.saved()
    assert not timed.due(3)


# ---------------------------------------------------------------------------------- RNG states
def test_rng_states_loaded_to_meta_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": 1, "rng": [capture_rng_state()]})
    state = load_checkpoint(path, map_location="meta")
    with pytest.raises(CheckpointError, match="map_location='cpu'"):
        restore_rng_state(state["rng"][0])


def test_rng_restore_accepts_tensors_of_any_layout(tmp_path: Path) -> None:
    saved = capture_rng_state()
    expected = torch.rand(3)
    mangled = dict(saved, torch=saved["torch"].clone().share_memory_())
    restore_rng_state(mangled)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_resume_loads_to_the_cpu_whatever_the_device(
    train_in_process, results_dir, monkeypatch
) -> None:
    """The GPU resume crash: a checkpoint mapped to the training device put the RNG states
    there, and restoring them failed. Here the device is "meta" (no values at all), so anything
    mapped to it cannot be restored: the resume works only if the file is read to the CPU."""
    from experiments import job as job_module
    from experiments.config import compose_with_choices
    from experiments.run_identity import identify_run
    from experiments.running.processes import DistContext
    from experiments.settings import RunSettings

    overrides = [*TINY_RUN, "trainer.epochs=1", "experiment_name=meta_resume"]
    run_root = train_in_process(overrides)
    cfg, choices = compose_with_choices([*overrides, f"paths.results_dir={results_dir}"])
    identity = identify_run(cfg, choices)[1]
    settings = RunSettings.from_config(cfg)
    job = job_module.TrainingJob(
        settings, RunDir(run_root), DistContext(), torch.device("cpu"), identity
    )
    job.device = torch.device("meta")  # what a CUDA job looks like to the loading code
    restored: list[dict] = []
    real_restore = job_module.restore_rng_state
    monkeypatch.setattr(
        job_module, "restore_rng_state", lambda s: restored.append(s) or real_restore(s)
    )
    assert job.resume_if_possible()
    assert job.state.epoch == 1
    tensors = ckpt._tensors(restored)
    assert tensors and all(t.device.type == "cpu" for t in tensors)


# --------------------------------------------------------------------------- locks without flock
@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_flock_trains_unlocked_with_one_warning(
    tmp_path, monkeypatch, caplog, code
) -> None:
    def no_flock(fd, operation):
        raise OSError(code, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunDir(tmp_path / "run").lock():
        pass
    warnings = [r for r in caplog.records if "does not support file locks" in r.getMessage()]
    assert len(warnings) == 1


def test_other_flock_errors_still_raise(tmp_path, monkeypatch) -> None:
    def broken(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(OSError, match="Bad file"), RunDir(tmp_path / "run").lock():
        pass


def test_a_checkpoint_with_the_legacy_records_key_loads_its_stream(tmp_path):
    path = tmp_path / "old.pt"
    records = [{"step": 4, "omega": 0.5}]
    torch.save({"format": CHECKPOINT_FORMAT, "autodrop_records": records}, path)
    state = load_checkpoint(path)
    assert state["stream_records"] == records and "autodrop_records" not in state
