"""Grid status and cost (scripts.status, scripts.analysis.status and .grid) on a synthetic run
tree with every state, and `make reproduce DRY_RUN=1` launching nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments import rundir as rd
from experiments.config import compose_with_choices
from experiments.rundir import LOCK_FILE, RunDir
from scripts import status as status_command
from scripts.analysis import grid, status
from scripts.analysis.grid import PlannedRun, launch_runs, parse_sweep, planned_runs
from tests.fake_runs import write_fake_run

ROOT = Path(__file__).resolve().parents[1]
EXP = "quick/digits"
DIGITS = {"experiment": EXP, "dataset": "digits", "model": "resnet8"}
SCHEDULES = ("autodrop", "step", "cosine", "onecycle")
EPOCHS = 30


def planned(seeds=(0, 1)) -> list[PlannedRun]:
    return [
        PlannedRun(EXP, "digits", "resnet8", label, seed, EPOCHS)
        for label in SCHEDULES
        for seed in seeds
    ]


def add(root: Path, scheduler: str, seed: int, done: int, **kwargs) -> Path:
    """A run with ``done`` epochs of 23 steps at 50 ms per step (1.15 s per epoch)."""
    return write_fake_run(
        root, scheduler=scheduler, seed=seed, test_errs=[5.0] * done, epochs_planned=EPOCHS,
        steps_per_epoch=23, time_per_iter_s=0.05, **DIGITS, **kwargs,
    )  # fmt: skip


@pytest.fixture()
def tree(tmp_path) -> Path:
    """autodrop: finished x2; step: running (lock held by the test) and stale (no holder);
    cosine: failed and diverged; onecycle: 'interrupted' (a status this code does not know)
    and missing. One run outside the grid."""
    root = tmp_path / "runs"
    add(root, "autodrop", 0, EPOCHS)
    add(root, "autodrop", 1, EPOCHS)
    add(root, "step", 0, 10, status="running")
    stale = add(root, "step", 1, 20, status="running")
    (stale / LOCK_FILE).write_text("12345\n")  # left by a killed process: nobody holds it
    add(root, "cosine", 0, 5, status="failed")
    add(root, "cosine", 1, 7, status="diverged")
    add(root, "onecycle", 0, 12, status="interrupted")
    add(root, "exp", 0, EPOCHS)  # not in the grid
    return root


def test_status_counts_every_state_with_a_real_lock_held(tree):
    running = RunDir(tree / EXP / "digits-resnet8" / "step" / "seed=0")
    with running.lock():
        runs = status.scan_runs(tree)
        counts = status.count_table(status.grid_status(planned(), runs))
    states = ["finished", "running", "stale", "failed", "diverged", "interrupted", "missing"]
    assert list(counts.columns[3:-1]) == states  # unknown statuses get their own column
    by_schedule = {row["schedule"]: row for row in counts.records()}
    expected = {
        "autodrop": [2, 0, 0, 0, 0, 0, 0],
        "step": [0, 1, 1, 0, 0, 0, 0],
        "cosine": [0, 0, 0, 1, 1, 0, 0],
        "onecycle": [0, 0, 0, 0, 0, 1, 1],
    }
    for label, row in expected.items():
        assert [by_schedule[label][state] for state in states] == row, label
    # compute left: epochs left x 23 steps x 0.05 s, measured on the finished runs of the task
    epochs_left = {"autodrop": 0, "step": 20 + 10, "cosine": 25 + 23, "onecycle": 18 + 30}
    for label, epochs in epochs_left.items():
        assert by_schedule[label]["remaining_h"] == pytest.approx(
            round(epochs * 23 * 0.05 / 3600, 2)
        )


def test_without_the_lock_held_a_running_summary_is_stale(tree):
    runs = {(run["scheduler"], run["seed"]): run for run in status.scan_runs(tree)}
    assert runs[("step", 0)]["state"] == "stale"
    assert runs[("step", 1)]["state"] == "stale"


def test_the_lock_test_creates_no_lock_file(tree):
    run_dir = tree / EXP / "digits-resnet8" / "cosine" / "seed=0"
    assert not rd.lock_is_held(run_dir)
    assert not (run_dir / LOCK_FILE).exists()


def test_estimate_from_finished_runs_else_the_table_else_unknown(tree, tmp_path):
    runs = status.scan_runs(tree)
    seconds, source = status.epoch_seconds(runs)["digits/resnet8"]
    assert seconds == pytest.approx(23 * 0.05) and source == "measured (3 runs)"
    fresh = status.scan_runs(tmp_path / "nothing")  # no finished run: the per-task table
    assert status.epoch_seconds(fresh)["cifar10/resnet18"][0] == pytest.approx(18.0)
    odd = [PlannedRun("x", "cifar10", "vgg", "step", 0, 10)]
    lines = status.summary_lines(status.grid_status(odd, fresh), gpus=2)
    assert any("unknown" in line and "cifar10/vgg" in line for line in lines)


def test_wall_time_divides_the_compute_by_the_gpus(tree):
    grid = status.grid_status(planned(), status.scan_runs(tree))
    hours = sum(row["remaining_s"] for row in grid) / 3600
    (line,) = [line for line in status.summary_lines(grid, gpus=4) if "wall" in line]
    assert f"{hours:.2f} device-hours" in line and f"{hours / 4:.2f} h" in line


def test_dry_run_lists_what_a_launch_would_train(tree):
    lines = status.dry_run_lines(status.grid_status(planned(), status.scan_runs(tree)))
    assert len(lines) == 6  # everything but the two finished autodrop runs
    assert "would start (30 epochs): quick/digits/digits-resnet8/onecycle/seed=1" in lines
    assert any(line.startswith("would relaunch (failed, epoch 5/30)") for line in lines)


def test_summary_fields_not_directory_names_identify_a_run(tmp_path):
    run_dir = add(tmp_path, "step", 0, EPOCHS)
    renamed = run_dir.parent.with_name("step-some_suffix=1")
    run_dir.parent.rename(renamed)  # a naming rule this code does not know
    runs = status.scan_runs(tmp_path)
    assert [run["scheduler"] for run in runs] == ["step"]
    grid = status.grid_status([PlannedRun(EXP, "digits", "resnet8", "step", 0, EPOCHS)], runs)
    assert [row["state"] for row in grid] == ["finished"]


def test_grid_composes_each_run_like_the_runner():
    runs = planned_runs("ablation/lr_sensitivity", "scheduler=step", seeds="0")
    assert sorted(run.scheduler for run in runs) == sorted(
        f"step-lrx={m}" for m in ("0.25", "0.5", "1", "2", "4")
    )
    assert {(run.experiment, run.task, run.epochs) for run in runs} == {
        ("ablation/lr_sensitivity", "digits/resnet8", 30)
    }


def test_the_grid_composes_each_choice_of_groups_once_into_the_configs_hydra_composes(
    monkeypatch,
):
    cells = [
        ["experiment=paper/resnet18_cifar10", "scheduler=hd", "optimizer.beta=1e-3"],
        ["experiment=quick/digits", "scheduler=cosine", "data.image_size=8", "trainer.epochs=2"],
        ["experiment=ablation/lr_sensitivity", "scheduler=step", "lr_sweep.multiplier=0.25"],
    ]
    compose = grid.Composer()
    for overrides in cells:
        with compose.applied(overrides) as cfg:
            expected, expected_choices = compose_with_choices(overrides)
            assert compose.choices(overrides) == expected_choices
            assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(
                expected, resolve=True
            )
    composed = []
    real = grid.compose_config
    monkeypatch.setattr(
        grid, "compose_config", lambda o, **kw: composed.append(tuple(o)) or real(o, **kw)
    )
    runs = grid.planned_runs(
        "paper/resnet18_cifar10", "scheduler=hd optimizer.beta=1e-3,1e-4,1e-5", seeds="0,1"
    )
    assert sorted({run.scheduler for run in runs}) == [
        "hd-beta=0.0001",
        "hd-beta=0.001",
        "hd-beta=1e-05",
    ]
    # One composition: the preset's sweep is read from the grid's first cell, which reuses it.
    assert len(runs) == 6 and composed == [("experiment=paper/resnet18_cifar10", "scheduler=hd")]


def test_a_cell_is_lent_on_one_copy_per_composition_and_set_back_after_it():
    base = ["experiment=quick/digits", "scheduler=hd"]
    cells = [
        [*base, "optimizer.beta=1e-3", "trainer.epochs=3"],
        [*base, "tuning.trial=2", "scheduler.label=${scheduler.name}-x"],  # an interpolation
        [*base, "+extra=1"],  # adds a key: its own copy, nothing set back
        [*base, "optimizer.beta=1e-5"],
    ]
    compose = grid.Composer()
    plain = OmegaConf.to_container(compose(base), resolve=True)
    lent = []
    for overrides in cells:
        with compose.applied(overrides) as cfg:
            lent.append(cfg)
            expected = compose_with_choices(overrides)[0]
            assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(
                expected, resolve=True
            )
        if cfg is lent[0]:
            assert OmegaConf.to_container(cfg, resolve=True) == plain  # set back
    assert lent[0] is lent[1] is lent[3] and lent[2] is not lent[0]
    with (
        pytest.raises(Exception, match="trainer.epochs"),
        compose.applied([*base, "optimizer.beta=1e-4", "trainer.epochs=three"]),
    ):
        pass
    assert OmegaConf.to_container(lent[0], resolve=True) == plain  # a refused cell too


def test_a_launch_planned_a_composition_at_a_time_keeps_its_order(monkeypatch):
    launch = "experiment=quick/digits scheduler=step,cosine model=resnet8,resnet20 seed=0,1"
    whole = launch_runs(launch)
    assert grid._shares(grid.launch_arguments(launch)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for cpus in (1, 2):  # in this process, and in two forked workers
        monkeypatch.setattr(grid, "_cpus", lambda cpus=cpus: cpus)
        assert grid.plan([], [], None, [launch]) == whole
    assert [(run.model, run.scheduler, run.seed) for run in whole[:3]] == [
        ("resnet8", "step", 0), ("resnet8", "step", 1), ("resnet20", "step", 0),
    ]  # fmt: skip


def test_bad_grid_entries_and_presets_are_named():
    with pytest.raises(ValueError, match="'scheduler' .* not key=value"):
        parse_sweep("scheduler")
    with pytest.raises(ValueError, match="only comma-separated"):
        parse_sweep("seed=range(0,4)")
    assert status_command.main(["--experiments", "paper/nope"]) == 2


def test_a_launch_is_refused_in_one_line_as_the_runner_refuses_it(tmp_path, capsys):
    refused = {
        "+data.bogus=1": "unknown key data.bogus",  # Hydra would add it; the runner refuses it
        "scheduler=step,cosin": "scheduler=cosin is invalid: allowed values are ",
        "trainer.precision=bf61": "did you mean trainer.precision=bf16?",
        "optimizer.beta=1e-3": "unknown key optimizer.beta for optimizer=sgd",  # the preset's
    }
    for override, message in refused.items():
        launch = f"experiment=quick/digits {override} seed=0"
        assert status_command.main(["--runs", str(tmp_path), "--launch", launch]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_status_command_prints_the_table_and_totals(tree, capsys):
    args = ["--runs", str(tree), "--experiments", EXP, "--grid", "scheduler=autodrop,step"]
    assert status_command.main([*args, "--seeds", "0,1", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 runs in the grid: 2 finished" in out
    assert "wall time on 2 device(s)" in out


def test_runs_outside_the_grid_are_counted_by_experiment_and_task(tree, capsys):
    write_fake_run(
        tree, experiment="adhoc", dataset="digits", model="resnet8",
        scheduler="step,optimizer.lr=0.1", seed=0, test_errs=[5.0, 4.0],
    )  # fmt: skip
    write_fake_run(
        tree, experiment="adhoc", dataset="digits", model="resnet8",
        scheduler="cosine", seed=3, test_errs=[5.0], status="failed",
    )  # fmt: skip
    table = status.outside_grid(planned(), status.scan_runs(tree))
    others = {row["experiment"]: row for row in table.records()}
    assert [others["adhoc"][key] for key in ("task", "finished", "failed", "runs")] == [
        "digits/resnet8", 1, 1, 2,
    ]  # fmt: skip
    assert [others[EXP][key] for key in ("finished", "runs")] == [1, 1]  # exp, not in the grid
    args = ["--runs", str(tree), "--experiments", EXP, "--grid", "scheduler=" + ",".join(SCHEDULES)]
    assert status_command.main([*args, "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "3 runs outside this grid, by experiment:" in out
    assert any(line.split()[:2] == ["adhoc", "digits/resnet8"] for line in out.splitlines())
    assert status.outside_grid(planned(), status.scan_runs(tree / "none")).empty


def test_a_launch_is_planned_from_its_own_overrides():
    runs = launch_runs("experiment=quick/digits scheduler=step,cosine seed=0,1 trainer.epochs=2")
    assert sorted((run.scheduler, run.seed, run.epochs) for run in runs) == [
        (label, seed, 2)
        for label in ("cosine,trainer.epochs=2", "step,trainer.epochs=2")
        for seed in (0, 1)
    ]
    fixed_lr = launch_runs("experiment=quick/fixed_lr")  # the preset's own sweep and seed
    assert len(fixed_lr) == 5 and {run.seed for run in fixed_lr} == {0}
    with pytest.raises(ValueError, match="must name one experiment=<preset>"):
        launch_runs("scheduler=step")


def test_make_reproduce_dry_run_launches_nothing(tmp_path):
    stamp = tmp_path / "installed"  # stands in for .venv's stamp: no install is attempted
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))
    trained = tmp_path / "trained"
    results = tmp_path / "results"
    make = [
        "make", "--no-print-directory", "reproduce", "DRY_RUN=1", f"PY={sys.executable}",
        f"STAMP={stamp}", f"RESULTS={results}", f"TRAIN=touch {trained}",
        "PAPER_TASKS=resnet18_cifar10", 'PAPER_GRIDS="scheduler=step,autodrop"', "SEEDS=0,1",
        "GPUS=4",
    ]  # fmt: skip
    done = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("would start")]
    assert len(lines) == 4
    assert "would start (200 epochs): paper/resnet18_cifar10/cifar10-resnet18/step/seed=1" in lines
    assert "wall time on 4 device(s)" in done.stdout
    assert not trained.exists() and not results.exists()


def test_unreadable_or_incomplete_runs_are_listed_as_damaged_never_a_crash(tmp_path):
    good = add(tmp_path, "step", 0, EPOCHS)
    garbage = add(tmp_path, "step", 1, EPOCHS)
    (garbage / "summary.json").write_bytes(b"\x89PNG\x00")
    truncated = add(tmp_path, "step", 2, EPOCHS)
    text = (truncated / "metrics.jsonl").read_text()
    (truncated / "metrics.jsonl").write_text(text[:-30])
    runs = {run["seed"]: run for run in status.scan_runs(tmp_path)}
    assert runs[0]["state"] == "finished"
    assert runs[1]["state"] == "damaged" and runs[1]["scheduler"] == "step"
    assert runs[2]["state"] == "damaged"
    assert good.is_dir()


def test_the_dry_run_names_the_data_a_launch_would_not_find(tmp_path, capsys):
    data = tmp_path / "data"
    argv = ["--runs", str(tmp_path / "runs"), "--seeds", "0", "--dry-run", "--data-dir", str(data)]
    cifar = ["--experiments", "paper/resnet18_cifar10", "--grid", "scheduler=step,cosine"]
    assert status_command.main([*argv, *cifar]) == 0
    printed = capsys.readouterr().out
    assert (
        f"data missing for 2 runs of cifar10: no {data}/cifar-10-batches-py: CIFAR-10 is "
        f"expected as {data}/cifar-10-batches-py/{{data_batch_1, " in printed
    )
    release = data / "cifar-10-batches-py"
    release.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch"):
        (release / name).touch()
    assert status_command.main([*argv, *cifar]) == 0
    assert f"{release} lacks data_batch_5, batches.meta" in capsys.readouterr().out
    for name in ("data_batch_5", "batches.meta"):
        (release / name).touch()
    assert status_command.main([*argv, *cifar]) == 0
    assert "data missing" not in capsys.readouterr().out  # in place: checked by name only
    imagenet = ["--experiments", "paper/resnet18_imagenet", "--grid", "scheduler=step"]
    assert status_command.main([*argv, *imagenet]) == 0
    assert f"of imagenet: {data}/imagenet/train does not exist." in capsys.readouterr().out
    assert status_command.main([*argv, "--launch", "experiment=quick/digits seed=0"]) == 0
    assert "data missing" not in capsys.readouterr().out  # digits is embedded


def test_ctrl_c_while_planning_is_one_line_and_leaves_no_worker(tmp_path):
    grid = "scheduler=autodrop,autodrop_v1,step,cosine,onecycle,clr,exp,tlr"
    experiments = ["paper/resnet18_cifar10", "paper/wrn28_10_cifar10", "paper/resnet34_cifar100"]
    command = [sys.executable, "-m", "scripts.status", "--runs", str(tmp_path), "--grid", grid]
    planning = subprocess.Popen(
        [*command, "--experiments", *experiments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    children = Path(f"/proc/{planning.pid}/task/{planning.pid}/children")
    deadline = time.monotonic() + 120
    while not children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the workers compose
    os.killpg(planning.pid, signal.SIGINT)
    out, err = planning.communicate(timeout=60)
    assert planning.returncode == 130 and err == "interrupted: nothing was planned\n"
    assert out == ""
    with pytest.raises(ProcessLookupError):
        os.killpg(planning.pid, 0)  # no worker of the group is left
