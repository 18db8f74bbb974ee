"""A launch refused before training (here: CIFAR missing) leaves nothing behind: neither its run
directory nor the empty parents it made, and never anything that existed before it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments import rundir as rd
from experiments.running.refused_launch import directories_to_make, remove_made_directories
from tests.conftest import REPO_ROOT
from tests.fake_runs import write_fake_run

CIFAR_RUN = ("experiment=paper/resnet18_cifar10", "logger=none", "trainer.epochs=1")
TASK = Path("runs/paper/resnet18_cifar10/cifar10-resnet18")


def _launch(results: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "experiments.train", *CIFAR_RUN, *extra]
    command += [f"paths.data_dir={data}", f"paths.results_dir={results}"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def _assert_refused_for_missing_cifar(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: CIFAR-10 is expected as"), lines


def test_missing_data_leaves_no_run_directory_and_no_parent_it_made(tmp_path: Path) -> None:
    results = tmp_path / "made" / "results"
    _assert_refused_for_missing_cifar(_launch(results, tmp_path / "nowhere"))
    assert list(tmp_path.iterdir()) == []  # neither results/ nor made/ is left

    # Beside a run of the same task, only what this launch made goes again.
    other = write_fake_run(
        results / "runs", experiment="paper/resnet18_cifar10", dataset="cifar10",
        model="resnet18", scheduler="step", seed=0, test_errs=[50.0],
    )  # fmt: skip
    _assert_refused_for_missing_cifar(_launch(results, tmp_path / "nowhere"))
    assert sorted(p.name for p in (results / TASK).iterdir()) == ["step"]
    assert rd.completeness_problem(other) is None


@pytest.mark.slow
def test_a_refusal_in_spawned_workers_is_a_user_error_and_leaves_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    spawned = ("trainer.devices=2", "trainer.accelerator=cpu", "trainer.batch_size=128")
    result = _launch(results, tmp_path / "nowhere", *spawned)
    _assert_refused_for_missing_cifar(result)
    assert "details in" not in result.stderr  # no train.log to point to: it is gone
    assert not results.exists()


def test_only_scaffolding_is_removed_and_only_empty_parents(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "run"
    made = directories_to_make(root)
    assert made == [root, root.parent, root.parent.parent]
    root.mkdir(parents=True)
    (root / rd.LOCK_FILE).touch()
    (root / rd.HYDRA_DIR).mkdir()
    (root / rd.METRICS_FILE).write_text("{}\n")  # something was computed: keep everything
    remove_made_directories(made)
    assert (root / rd.METRICS_FILE).exists()

    (root / rd.METRICS_FILE).unlink()
    (tmp_path / "a" / "other launch").mkdir()  # appeared meanwhile: keep a/
    remove_made_directories(made)
    assert not root.parent.exists() and (tmp_path / "a" / "other launch").is_dir()
