"""The Makefile's grid and output targets: with DRY_RUN=1 none of them trains or writes anything,
and in a clone the quick targets and `make tables` / `figures` / `lr-sensitivity` leave `git
status` clean (their outputs are git-ignored), while the *-update targets rewrite the committed
results/quick/ with nothing stale left beside the new files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.fake_runs import write_fake_run

# Targets that neither launch runs nor write results; every other rule must honour DRY_RUN=1.
NOT_GRID_OR_OUTPUT = {
    "help", "install", "test", "test-fast", "lint", "format", "bench", "faults", "gpu-check",
    "status", "clean",
}  # fmt: skip
RULE = re.compile(r"^([a-z][\w-]*):(?!=)", re.MULTILINE)
# The smallest grids: AutoDrop alone (its trace figure is drawn) and one seed, 8x8 digits for
# 2 epochs, one run after the other in the make process (no worker processes to start).
TINY_GRIDS = (
    "QUICK_SCHEDULES=autodrop",
    "QUICK_SEEDS=0",
    "QUICK_OVERRIDES=data.image_size=8 trainer.epochs=2 trainer.cpu_threads=1 "
    "trainer.progress=plain",
    "QUICK_PARALLEL=",
    "SEEDS=0",
    "PAPER_TASKS=resnet18_cifar10",
    'PAPER_GRIDS="scheduler=step"',
    "ABLATIONS=rho",
    # The studies: one schedule that needs the budget and one that does not, one seed, two
    # tuning trials and the defaults; on digits a standard budget of 4 epochs.
    "STUDY_QUICK_AWARE=step",
    "STUDY_QUICK_FREE=autodrop",
    "STUDY_QUICK_SEEDS=0",
    "STUDY_QUICK_TRIALS=null,0,1",
    "STUDY_QUICK_T=4",
    "STUDY_QUICK_OVERRIDES=data.image_size=8 trainer.cpu_threads=1 trainer.progress=plain",
    "STUDY_TASKS=resnet18_cifar10",
    "STUDY_AWARE=step",
    "STUDY_FREE=autodrop",
    "STUDY_SEEDS=0",
    "STUDY_TRIALS=null,0",
    "TASK=quick/digits",
    "SCHEDULES=autodrop,step",
)


def _stamp(tmp_path: Path) -> Path:
    """Stands in for .venv's install stamp (newer than pyproject.toml: no install is tried)."""
    stamp = tmp_path / "installed"
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))
    return stamp


def _make(cwd: Path, stamp: Path, *args: str, wandb_mode: str = "disabled") -> str:
    command = ["make", "--no-print-directory", f"PY={sys.executable}", f"STAMP={stamp}", *args]
    env = {**os.environ, "WANDB_MODE": wandb_mode}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def _names(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_every_makefile_rule_is_listed_by_the_dry_run_test_or_exempt():
    rules = set(RULE.findall((REPO_ROOT / "Makefile").read_text()))
    assert NOT_GRID_OR_OUTPUT < rules  # the exemptions name real rules
    assert {"quick", "reproduce", "lr-sensitivity", "tables", "figures"} < rules


@pytest.mark.slow
def test_dry_run_trains_and_writes_nothing_in_any_target(tmp_path):
    rules = sorted(set(RULE.findall((REPO_ROOT / "Makefile").read_text())) - NOT_GRID_OR_OUTPUT)
    results = tmp_path / "results"
    write_fake_run(
        results / "runs", experiment="quick/digits", dataset="digits", model="resnet8",
        scheduler="step", seed=0, test_errs=[5.0, 4.0],
    )  # fmt: skip
    stamp = _stamp(tmp_path)
    before = _files(tmp_path)
    trained = tmp_path / "trained"
    out = _make(
        REPO_ROOT, stamp, *rules, "DRY_RUN=1", f"RESULTS={results}",
        f"TRAIN=touch {trained}", f"VENV={tmp_path / 'no-venv'}", *TINY_GRIDS,
        wandb_mode="offline",  # wandb-upload refuses to list what it would not upload
    )  # fmt: skip
    assert not trained.exists()
    assert _files(tmp_path) == before  # nothing written, nothing removed
    assert "would start (2 epochs): quick/digits/digits-resnet8/autodrop,data.image_size=8," in out
    assert "would start (200 epochs): ablation/rho/cifar10-resnet18/autodrop-rho=0.5/seed=0" in out
    assert f"would rewrite {results}/quick/lr_sensitivity/" in out
    assert f"would rewrite {results}/quick/tables/" in out
    assert f"would write the tables of the quick runs in {results}/runs to {results}/local/" in out
    study = "study/horizons/digits/digits-resnet8/{}-budget={},data.image_size=8,"
    assert f"would start (1 epochs): {study.format('step', '0.25')}" in out
    assert f"would start (8 epochs): {study.format('autodrop', '2')}" in out
    assert "would start (4 epochs): study/tuning/digits/digits-resnet8/cosine" not in out
    assert "study/tuning/digits/digits-resnet8/autodrop-trial=1,data.image_size=8," in out
    assert "study/horizons/digits: 1 runs of schedules that need no budget are read at 3" in out
    paper = "study/horizons/resnet18_cifar10/cifar10-resnet18/autodrop-budget=2/seed=0"
    assert f"would start (400 epochs): {paper}" in out  # make studies, and reproduce's totals:
    assert "study/horizons/resnet18_cifar10: 1 runs of schedules that need no budget" in out
    assert f"would rewrite {results}/quick/studies/" in out
    # make compare: the fake step run of seed 0 is finished, AutoDrop's is to train
    assert "would start (30 epochs): quick/digits/digits-resnet8/autodrop/seed=0" in out
    assert "would start (30 epochs): quick/digits/digits-resnet8/step/seed=0" not in out
    assert f"would write the comparison's tables and figure to {results}/local/compare/" in out


def _clone_of_the_working_tree(clone: Path) -> None:
    """A git repository holding the working tree's files as git sees them (tracked and new,
    ignored ones left out), committed: what a clone of this branch would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run([*git, *command], cwd=clone, check=True, capture_output=True)


def _git_status(clone: Path) -> list[str]:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=clone, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


@pytest.mark.slow
def test_quick_targets_leave_a_clone_clean_and_updates_rewrite_the_committed_results(tmp_path):
    clone = tmp_path / "clone"
    _clone_of_the_working_tree(clone)
    stamp = _stamp(tmp_path)
    assert _git_status(clone) == []

    for targets in (["quick"], ["tables", "figures", "PRESET=quick"], ["lr-sensitivity"]):
        _make(clone, stamp, *targets, *TINY_GRIDS)
    assert _git_status(clone) == []
    local = clone / "results" / "local" / "quick"
    assert (local / "tables" / "table2.md").is_file()
    assert list((local / "figures").glob("fig_autodrop_trace_digits-resnet8*.png"))
    assert (local / "lr_sensitivity" / "tables" / "runs.csv").is_file()

    committed = clone / "results" / "quick"
    stale = [committed / "tables" / "old_table.md", committed / "lr_sensitivity" / "old.csv"]
    for path in stale:
        path.write_text("left by an earlier version\n")
    _make(clone, stamp, "quick-update", "lr-sensitivity-update", *TINY_GRIDS)
    assert not any(path.exists() for path in stale)
    for folder in ("tables", "figures", "lr_sensitivity"):
        assert _names(committed / folder) == _names(local / folder), folder
    changes = _git_status(clone)  # new outputs, changed ones, and those no longer drawn
    assert changes and all(line[3:].startswith("results/quick/") for line in changes), changes


@pytest.mark.slow
def test_study_quick_leaves_a_clone_clean_and_its_update_rewrites_the_committed_studies(tmp_path):
    clone = tmp_path / "clone"
    _clone_of_the_working_tree(clone)
    stamp = _stamp(tmp_path)
    _make(clone, stamp, "study-quick", *TINY_GRIDS)
    assert _git_status(clone) == []
    local = clone / "results" / "local" / "quick" / "studies"
    for name in ("horizons.md", "horizons_time_to_target.md", "horizons_runs.md", "tuning.md"):
        assert (local / "tables" / name).is_file(), name
    assert list((local / "figures").glob("fig_horizons_digits-resnet8.png"))
    assert list((local / "figures").glob("fig_tuning_digits-resnet8.png"))
    readme = (local / "README.md").read_text()
    assert "## Horizon study" in readme and "## Tuning study" in readme

    committed = clone / "results" / "quick" / "studies"
    committed.mkdir(parents=True, exist_ok=True)
    stale = committed / "old_table.md"
    stale.write_text("left by an earlier version\n")
    _make(clone, stamp, "study-quick-update", *TINY_GRIDS)
    assert not stale.exists()
    assert _names(committed) == _names(local)
    changes = _git_status(clone)
    assert changes and all(line[3:].startswith("results/quick/studies/") for line in changes)
