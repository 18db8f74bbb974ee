"""Run directories never follow links for writing; bad path components write nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from experiments.rundir import RunDir, UnsafeRunDirectory, open_no_follow
from tests.conftest import TINY_RUN

RUN = "runs/quick/digits/digits-resnet8/constant,data.image_size=8,trainer.epochs=1/seed=0"
ARGS = [*TINY_RUN, "scheduler=constant", "trainer.epochs=1"]


@pytest.mark.parametrize(
    "entry",
    [".lock", "train.log", ".hydra/config.yaml", "metrics.jsonl", "checkpoints/last.pt"],
)
def test_a_planted_link_is_refused_and_its_target_left_alone(
    train_in_process, results_dir, tmp_path, entry
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not touch\n")
    link = results_dir / RUN / entry
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(UnsafeRunDirectory, match=rf"symbolic links.*{entry.split('/')[-1]}"):
        train_in_process(ARGS)
    assert target.read_text() == "do not touch\n"
    assert not (results_dir / RUN / "summary.json").exists()


def test_wandb_folder_links_are_wandbs_own_and_links_elsewhere_refused(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    logs = run.root / "wandb" / "offline-run-1" / "logs"
    logs.mkdir(parents=True)
    (run.root / "wandb" / "latest-run").symlink_to("offline-run-1")
    (logs / "debug-core.log").symlink_to(tmp_path / "cache-core.log")  # as wandb 0.31 does
    run.refuse_links()
    (run.root / "checkpoints").mkdir()
    (run.root / "checkpoints" / "prev.pt").symlink_to(tmp_path / "precious.txt")
    with pytest.raises(UnsafeRunDirectory, match="prev.pt"):
        run.refuse_links()
    (run.root / "checkpoints" / "prev.pt").unlink()
    moved = tmp_path / "elsewhere"
    (run.root / "wandb").rename(moved)
    (run.root / "wandb").symlink_to(moved)  # the folder itself linked out
    with pytest.raises(UnsafeRunDirectory, match="wandb"):
        run.refuse_links()


def test_writes_refuse_links_and_hard_links_created_after_the_check(tmp_path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("x")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    (run.root / "metrics.jsonl").symlink_to(target)
    with pytest.raises(UnsafeRunDirectory, match="symbolic link"):
        run.append_records(run.metrics_path, [{"epoch": 1}])
    os.link(target, run.root / "train.log")
    with pytest.raises(UnsafeRunDirectory, match="hard link"):
        open_no_follow(run.root / "train.log", os.O_WRONLY | os.O_APPEND)
    assert target.read_text() == "x"


def test_the_lock_file_is_written_in_place_never_truncated(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():
        assert (run.root / ".lock").read_bytes() == b""  # holding it writes nothing
        run.record_lock_owner()
        first = (run.root / ".lock").read_bytes()
    (run.root / ".lock").write_bytes(first + b"tail kept")
    with run.lock():
        run.record_lock_owner()
        assert (run.root / ".lock").read_bytes() == first + b"tail kept"
    assert first.strip() == str(os.getpid()).encode()


def _all_paths(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad",
    [
        "scheduler.label=../../../../x",
        "experiment_name=../../../../x",
        "model.name=../x",
        "data.name=../x",
    ],
)
def test_a_path_escaping_name_writes_nothing_anywhere(train_cli, results_dir, tmp_path, bad):
    before = _all_paths(tmp_path)
    for mode in ([], ["-m"]):
        result = train_cli([*mode, *ARGS, bad])
        assert result.returncode != 0
        assert "invalid" in result.stdout + result.stderr
    assert _all_paths(tmp_path) == before
