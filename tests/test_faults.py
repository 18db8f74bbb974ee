"""A fast subset of the fault-injection campaign (``python -m tests.fault_campaign``).

Fast tests exercise each defence directly (checkpoint integrity and fallback, the run lock,
refusal of unsafe pickles, wandb fallback bookkeeping); the slow ones run one trial of each
campaign scenario against the real runner CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from experiments.rundir import LaunchAction, RunDir, RunLocked
from tests import fault_campaign as faults


def _state(epoch: int) -> dict:
    return {"format": 1, "epoch": epoch, "weights": torch.full((4,), float(epoch))}


def _two_saves(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints/last.pt"
    save_checkpoint(path, _state(1))
    save_checkpoint(path, _state(2))
    return path


def test_saves_keep_last_and_previous_with_checksums(tmp_path: Path) -> None:
    path = _two_saves(tmp_path)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["last.pt", "last.pt.sha256", "prev.pt", "prev.pt.sha256"]
    verify_checkpoint(path)
    verify_checkpoint(path.with_name("prev.pt"))
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(path.with_name("prev.pt"))["epoch"] == 1


@pytest.mark.parametrize("damage", [faults._truncate, faults._flip_bytes])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog) -> None:
    path = _two_saves(tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        verify_checkpoint(path)
    chosen, state = load_latest_checkpoint(path)
    assert chosen.name == "prev.pt" and state["epoch"] == 1
    assert "not resuming from last.pt" in caplog.text


def test_no_usable_checkpoint_says_it_restarts_from_scratch(tmp_path, caplog) -> None:
    path = _two_saves(tmp_path)
    faults._damage_both(path)
    assert load_latest_checkpoint(path) is None
    assert "restarts from scratch" in caplog.text
    assert RunDir(tmp_path).launch_action() is LaunchAction.RESUME  # then decided by the job


def test_a_save_after_a_damaged_last_keeps_the_good_previous(tmp_path: Path) -> None:
    path = _two_saves(tmp_path)
    faults._truncate(path)
    save_checkpoint(path, _state(3))
    assert load_checkpoint(path)["epoch"] == 3
    verify_checkpoint(path.with_name("prev.pt"))
    assert load_checkpoint(path.with_name("prev.pt"))["epoch"] == 1


def test_a_full_disk_during_a_save_leaves_the_checkpoints_intact(tmp_path, monkeypatch) -> None:
    path = _two_saves(tmp_path)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}

    def full_disk(obj, handle, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, _state(3))
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before


@pytest.mark.parametrize("forge_checksum", [True, False])
def test_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path, forge_checksum) -> None:
    path = _two_saves(tmp_path)
    marker = tmp_path / "code-ran"
    faults.plant_malicious_checkpoint(path, marker, forge_checksum=forge_checksum)
    if forge_checksum:
        verify_checkpoint(path)
        with pytest.raises(CheckpointError, match="was refused"):
            load_checkpoint(path)
    chosen, state = load_latest_checkpoint(path)
    assert chosen.name == "prev.pt" and state["epoch"] == 1
    assert not marker.exists()


def test_a_second_lock_on_a_run_directory_is_refused_at_once(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.record_lock_owner()  # a launch that trains names itself in the lock file
        with pytest.raises(RunLocked, match=f"another process \\(pid {os.getpid()}\\)"):
            with run.lock():
                pass
    with run.lock():  # released on exit
        pass


def test_a_killed_holder_does_not_leave_a_stale_lock(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    code = (
        "import sys, time; from experiments.rundir import RunDir; "
        "run = RunDir(sys.argv[1]); lock = run.lock(); lock.__enter__(); "
        "run.record_lock_owner(); print('held', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run.root)],
        cwd=faults.REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
        with run.lock():
            pass
    holder.kill()
    holder.wait()
    with run.lock():
        pass


def test_secrets_are_found_wherever_they_are(tmp_path: Path) -> None:
    (tmp_path / "deep/dir").mkdir(parents=True)
    (tmp_path / "deep/dir/blob.bin").write_bytes(
        b"\x00" + faults.FAKE_SECRETS["FAULTS_DB_PASSWORD"].encode()
    )
    assert faults.leaked_secrets(tmp_path) == ["FAULTS_DB_PASSWORD in deep/dir/blob.bin"]


def test_the_table_lists_every_outcome() -> None:
    outcome = faults.Outcome("demo")
    outcome.record(None, "a")
    outcome.record("broken", "b")
    assert outcome.line() == "demo: trials=2 survived=1 lost=1"
    table = faults.format_table([outcome])
    assert table.splitlines()[2].split(" | ") == ["demo    ", "2     ", "1       ", "1   "]
    with pytest.raises(ValueError, match="unknown scenario"):
        faults.run_campaign(["nope"], None, Path("."))


def test_config_fuzz_refuses_invalid_values_clearly(tmp_path: Path) -> None:
    spec = {key: index for index, (_, key, _, _) in enumerate(faults.FUZZ_SPEC)}
    for key in ("scheduler.gamma", "optimizer.betas", "trainer.precision", "optimizer.momentum"):
        for value_index in range(3):
            assert faults.fuzz_example([(spec[key], False, value_index)], tmp_path) is None, key


# ---------------------------------------------------------------- one trial of each scenario
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> faults.Workspace:
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


def _assert_survived(outcome: faults.Outcome) -> None:
    assert outcome.trials > 0 and not outcome.lost, outcome.lost


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write(workspace) -> None:
    # trial 0 kills inside a (slowed) checkpoint write; the campaign alternates with random moments
    _assert_survived(faults.scenario_sigkill(workspace, 1))


@pytest.mark.slow
def test_corrupt_checkpoints(workspace) -> None:
    # one truncated last.pt end to end; the other damages are covered by the fast tests above
    _assert_survived(faults.scenario_corrupt_checkpoint(workspace, 1))


@pytest.mark.slow
def test_disk_full(workspace, monkeypatch) -> None:
    # RLIMIT_FSIZE, the variant that needs no root (the campaign prefers a real tmpfs)
    monkeypatch.setattr(faults, "small_tmpfs", _no_tmpfs)
    _assert_survived(faults.scenario_disk_full(workspace, 1))


def _no_tmpfs(path: Path, size: str):
    from contextlib import nullcontext

    path.mkdir(parents=True, exist_ok=True)
    return nullcontext(False)


@pytest.mark.slow
def test_divergence_in_a_multirun(workspace) -> None:
    _assert_survived(faults.scenario_divergence(workspace, 1))


@pytest.mark.slow
def test_wandb_without_network_falls_back_offline(workspace) -> None:
    outcome = faults.scenario_wandb(workspace, 1, init_timeout_s=5.0)
    _assert_survived(outcome)


@pytest.mark.slow
def test_config_fuzz(workspace) -> None:
    _assert_survived(faults.scenario_config_fuzz(workspace, 15))


@pytest.mark.slow
def test_concurrent_launches(workspace) -> None:
    _assert_survived(faults.scenario_lock(workspace, 1))


@pytest.mark.slow
def test_security(workspace) -> None:
    # a pickle with a forged checksum, then the secrets scan of a wandb-logged run
    _assert_survived(faults.scenario_security(workspace, 1))


@pytest.mark.slow
def test_hostile_data(workspace) -> None:
    # a code-carrying CIFAR pickle read without the md5 check, the object-array bomb under the
    # campaign's memory limit, and an ImageNet symlink loop; test_data.py and
    # test_hostile_data.py cover every hostile-data case directly
    cases = (
        "code-carrying test_batch, data.verify=false",
        "cifar object-array bomb, data.verify=false",
        "imagenet symlink loop",
    )
    for case in cases:
        assert faults.DATA_FAULTS[case](workspace) is None, case


@pytest.mark.slow
def test_planted_links(workspace) -> None:
    # a planted .lock link; test_run_dir_safety.py covers every entry and escaping name
    assert faults.planted_link(workspace, ".lock") is None
