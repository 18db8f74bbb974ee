"""The training runner end to end: run-directory files, skip/launch logic, divergence, the
per-epoch angle tracker and the building blocks behind them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autodrop.angles import EpochAngleTracker
from autodrop.registry import schedule_class
from experiments.config import ConfigError
from experiments.console import format_epoch_line
from experiments.loop import TrainingDiverged
from experiments.rundir import (
    LaunchAction,
    RunDir,
    json_safe,
    read_records,
    summarize_metrics,
    write_atomically,
)
from tests.conftest import TINY_RUN

METRIC_KEYS = [
    "epoch",
    "step",
    "lr",
    "train/loss",
    "train/acc",
    "val/loss",  # quick/digits holds out a validation split (protocol=honest)
    "val/err",
    "test/loss",
    "test/err",
    "time/epoch_s",
    "time/iter_s",
    "time/train_s",
]
SUMMARY_KEYS = [
    "status",
    "experiment",
    "dataset",
    "model",
    "scheduler",
    "scheduler_label",
    "scheduler_name",
    "scheduler_options",
    "label_settings",
    "seed",
    "epochs_planned",
    "epochs_done",
    "final_test_err",
    "min_test_err",
    "min_test_err_epoch",
    "min_val_err",
    "best_val_epoch",
    "test_err_at_best_val",
    "validation",
    "signals",
    "metric_source",
    "wall_time_s",
    "train_time_s",
    "time_per_iter_s",
    "steps_per_epoch",
    "batch_size",
    "hardware",
    "world_size",
    "gpus",
    "versions",
    "git_commit",
    "code_version",
    "code_change_allowed_from",
    "changes",
    "setup",
    "numerics",
    "wandb_run_id",
    "message",
    "checkpoint_cadence",  # the resolved cadence (auto: every epoch on the CPU, 10 min on CUDA)
    "data_verify",
    "data_skipped_images",
    "interruption",  # the signal, step, epoch and batch a stop happened at (else None)
    "resumes",  # one entry per resume: step, epoch, batch, reason, host, world size
]
STEPS_PER_EPOCH = 17  # 1,437 - 360 validation digits = 1,077 at batch 64


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_autodrop_run_writes_every_file_of_the_contract(train_in_process, results_dir) -> None:
    run_dir = train_in_process(
        [*TINY_RUN, "scheduler=autodrop", "trainer.epochs=3", "trainer.track_angle=true", "seed=5"]
    )
    # The label carries every run-defining value that differs from the quick/digits preset.
    suffix = ",data.image_size=8,trainer.epochs=3"
    assert run_dir == results_dir / f"runs/quick/digits/digits-resnet8/autodrop{suffix}/seed=5"
    metrics = read_records(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["step"] for m in metrics] == [17, 34, 51]
    for record in metrics:
        assert list(record) == [*METRIC_KEYS, "autodrop/drops", "autodrop/omega", "angle/epoch"]
        assert 0.0 <= record["train/acc"] <= 100.0 and 0.0 <= record["test/err"] <= 100.0
        assert record["val/err"] * 360 / 100 == pytest.approx(round(record["val/err"] * 3.6))
        assert record["time/iter_s"] > 0 and record["time/epoch_s"] > record["time/train_s"]
        assert record["time/train_s"] >= record["time/iter_s"] * STEPS_PER_EPOCH
    assert [m["angle/epoch"] is None for m in metrics] == [True, True, False]
    assert 0.0 < metrics[2]["angle/epoch"] < 180.0

    trace = read_records(run_dir / "autodrop.jsonl")
    assert [r["step"] for r in trace] == list(range(3, 52, 3))  # window 3, 51 steps
    assert all(list(r) == ["step", "omega", "smoothed", "lr", "dropped"] for r in trace)
    assert metrics[-1]["autodrop/drops"] == sum(r["dropped"] for r in trace)
    assert metrics[-1]["autodrop/omega"] == next(
        r["omega"] for r in reversed(trace) if r["omega"] is not None
    )
    assert metrics[-1]["lr"] == trace[-1]["lr"]

    summary = _summary(run_dir)
    assert list(summary) == SUMMARY_KEYS
    assert summary["status"] == "finished" and summary["message"] is None
    assert summary["data_verify"] is True and summary["data_skipped_images"] == 0
    assert summary["interruption"] is None and summary["resumes"] == []
    cadence = summary["checkpoint_cadence"]
    assert (cadence["every_epochs"], cadence["every_minutes"]) == (1, 0.0)
    assert (summary["experiment"], summary["dataset"], summary["model"]) == (
        "quick/digits",
        "digits",
        "resnet8",
    )
    assert (summary["scheduler"], summary["scheduler_name"], summary["seed"]) == (
        f"autodrop{suffix}",
        "autodrop",
        5,
    )
    assert summary["changes"] == {"data.image_size": 8, "trainer.epochs": 3}
    assert summary["scheduler_options"]["window"] == 3
    assert (summary["epochs_planned"], summary["epochs_done"]) == (3, 3)
    assert summary["final_test_err"] == metrics[-1]["test/err"]
    best = min(metrics, key=lambda m: m["test/err"])
    assert (summary["min_test_err"], summary["min_test_err_epoch"]) == (
        best["test/err"],
        best["epoch"],
    )
    # The honest protocol: the epoch of the lowest validation error, the test error there.
    chosen = min(metrics, key=lambda m: (m["val/err"], m["val/loss"], m["epoch"]))
    assert (summary["min_val_err"], summary["best_val_epoch"]) == (
        chosen["val/err"],
        chosen["epoch"],
    )
    recorded = metrics[summary["best_val_epoch"] - 1]
    assert summary["test_err_at_best_val"] == recorded["test/err"]
    assert summary["validation"]["size"] == 360 and len(summary["validation"]["fingerprint"]) == 16
    assert summary["signals"] == ["parameters"] and summary["metric_source"] is None
    assert summary["train_time_s"] == pytest.approx(sum(m["time/train_s"] for m in metrics))
    assert summary["steps_per_epoch"] == STEPS_PER_EPOCH and summary["batch_size"] == 64
    assert summary["world_size"] == 1 and summary["hardware"].startswith("cpu")
    assert summary["versions"]["torch"] == torch.__version__.split("+")[0]
    assert summary["wall_time_s"] > 0

    checkpoint = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (3, 51)
    assert checkpoint["metrics"] == metrics and checkpoint["stream_records"] == trace
    log_text = (run_dir / "train.log").read_text()
    assert "epoch 3/3" in log_text and "run finished" in log_text


def test_a_finished_run_is_skipped(train_in_process) -> None:
    # (also drives the tqdm bar, which a terminal would show)
    run_dir = train_in_process(
        [*TINY_RUN, "scheduler=constant", "trainer.epochs=1", "trainer.progress=bar"]
    )
    before = (run_dir / "metrics.jsonl").read_text(), (run_dir / "checkpoints/last.pt").stat()
    assert RunDir(run_dir).launch_action() is LaunchAction.SKIP
    train_in_process([*TINY_RUN, "scheduler=constant", "trainer.epochs=1"])
    after = (run_dir / "metrics.jsonl").read_text(), (run_dir / "checkpoints/last.pt").stat()
    assert before[0] == after[0] and before[1].st_mtime_ns == after[1].st_mtime_ns


def test_plateau_gets_the_test_loss_and_lr_is_the_end_of_epoch_value(train_in_process) -> None:
    run_dir = train_in_process(
        [
            *TINY_RUN,
            "scheduler=plateau",
            "scheduler.patience=0",
            "scheduler.threshold=10.0",
            "trainer.epochs=2",
        ]
    )
    metrics = read_records(run_dir / "metrics.jsonl")
    # A relative threshold of 10 makes every epoch "no improvement" (torch semantics), so with
    # patience 0 the lr drops at the end of each epoch, and each record shows the dropped lr.
    assert [m["lr"] for m in metrics] == pytest.approx([0.005, 0.0005])
    assert "autodrop/drops" not in metrics[0]
    assert not (run_dir / "autodrop.jsonl").exists()


def test_divergence_is_reported_and_files_are_kept(train_in_process, results_dir) -> None:
    overrides = [*TINY_RUN, "scheduler=constant", "optimizer.lr=1e8", "trainer.nan_check_every=5"]
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_in_process(overrides)
    run_dir = results_dir / "runs/quick/digits/digits-resnet8"
    run_dir = run_dir / "constant,data.image_size=8,optimizer.lr=1e+08,trainer.epochs=2/seed=0"
    summary = _summary(run_dir)
    assert summary["status"] == "diverged"
    assert "non-finite" in summary["message"] and summary["epochs_done"] == 0
    assert (run_dir / "train.log").is_file()


def test_an_invalid_config_fails_before_anything_is_written(train_in_process, results_dir):
    with pytest.raises(ConfigError, match="trainer.precision='fp8' is invalid"):
        train_in_process([*TINY_RUN, "trainer.precision=fp8"])
    assert not results_dir.exists()


def test_launch_action_follows_summary_then_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.launch_action() is LaunchAction.FRESH
    run.checkpoint_path.parent.mkdir(parents=True)
    run.checkpoint_path.write_bytes(b"x")
    assert run.launch_action() is LaunchAction.RESUME
    run.write_summary({"status": "failed"})
    assert run.launch_action() is LaunchAction.RESUME
    # "finished" with no records is not complete: the checkpoint repairs it.
    run.write_summary({"status": "finished", "epochs_planned": 1})
    assert run.launch_action() is LaunchAction.RESUME


def test_atomic_writes_leave_no_partial_or_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    write_atomically(target, lambda f: f.write("old"))

    def crash(handle) -> None:
        handle.write("half of the new con")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomically(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
    assert target.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_records_and_summary_are_strict_json() -> None:
    assert json_safe({"a": [1.0, math.nan], "b": math.inf, "c": None}) == {
        "a": [1.0, None],
        "b": None,
        "c": None,
    }
    records = [
        {"epoch": 1, "test/err": 9.0, "time/iter_s": 0.1},
        {"epoch": 2, "test/err": 7.0, "time/iter_s": 0.3},
        {"epoch": 3, "test/err": 8.0, "time/iter_s": 0.2},
    ]
    assert summarize_metrics(records) == {
        "epochs_done": 3,
        "final_test_err": 8.0,
        "min_test_err": 7.0,
        "min_test_err_epoch": 2,
        "min_val_err": None,  # no validation split: the paper's protocol
        "best_val_epoch": None,
        "test_err_at_best_val": None,
        "time_per_iter_s": pytest.approx(0.2),
        "train_time_s": None,  # records without time/train_s
    }
    assert summarize_metrics([])["final_test_err"] is None


def test_epoch_line_shows_the_record() -> None:
    line = format_epoch_line(
        {
            "epoch": 2,
            "step": 46,
            "lr": 0.05,
            "train/loss": 1.0,
            "train/acc": 60.0,
            "test/loss": 1.2,
            "test/err": 40.0,
            "time/epoch_s": 1.5,
            "time/iter_s": 0.05,
            "autodrop/drops": 1,
            "autodrop/omega": None,
        },
        epochs=30,
        shown=schedule_class("autodrop").console_fields,
    )
    assert line.startswith("epoch 2/30 | step 46 | lr 0.05")
    assert "test err 40.00%" in line and "drops 1" in line and "omega -" in line


def test_angle_tracker_matches_a_direct_float64_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    params = [torch.zeros(3, 4), torch.zeros(5)]
    snapshots = []
    angles = []
    tracker = EpochAngleTracker(params)
    for _ in range(5):
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator))
        snapshots.append(np.concatenate([p.double().flatten().numpy() for p in params]))
        angles.append(tracker.end_epoch())
    assert angles[:2] == [None, None]
    for e in range(2, 5):
        a, b = snapshots[e] - snapshots[e - 1], snapshots[e - 1] - snapshots[e - 2]
        expected = np.degrees(np.arccos(np.clip(a @ b / np.sqrt((a @ a) * (b @ b)), -1, 1)))
        assert angles[e] == pytest.approx(expected, abs=1e-9)
    restored = EpochAngleTracker(params)
    restored.load_state_dict(tracker.state_dict())
    for p in params:
        p.add_(1.0)
    assert restored.end_epoch() == pytest.approx(tracker.end_epoch(), abs=1e-12)


@pytest.mark.slow
def test_cli_run_then_relaunch_skips(train_cli, results_dir) -> None:
    args = [*TINY_RUN, "scheduler=autodrop", "seed=1", "trainer.epochs=1"]
    first = train_cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = results_dir / "runs/quick/digits/digits-resnet8"
    run_dir = run_dir / "autodrop,data.image_size=8,trainer.epochs=1/seed=1"
    for name in (
        "metrics.jsonl",
        "autodrop.jsonl",
        "summary.json",
        "train.log",
        "checkpoints/last.pt",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ):
        assert (run_dir / name).is_file(), name
    assert _summary(run_dir)["status"] == "finished"
    second = train_cli(args)
    assert second.returncode == 0
    assert "already finished" in second.stdout + second.stderr
    assert len(read_records(run_dir / "metrics.jsonl")) == 1


@pytest.mark.slow
def test_a_diverging_job_does_not_stop_the_sweep_but_fails_it(train_cli, results_dir) -> None:
    result = train_cli(
        [
            "-m",
            *TINY_RUN,
            "trainer.epochs=1",
            "scheduler=constant",
            "scheduler.label='constant-lr=${optimizer.lr}'",
            "optimizer.lr=1e8,0.05",
        ]
    )
    assert result.returncode != 0
    base = results_dir / "runs/quick/digits/digits-resnet8"
    suffix = ",data.image_size=8,trainer.epochs=1/seed=0"
    assert _summary(base / f"constant-lr=100000000.0{suffix}")["status"] == "diverged"
    assert _summary(base / f"constant-lr=0.05{suffix}")["status"] == "finished"


@pytest.mark.slow
def test_cli_multirun_writes_one_directory_per_job(train_cli, results_dir) -> None:
    result = train_cli(
        ["-m", *TINY_RUN, "trainer.epochs=1", "scheduler=autodrop,step", "seed=0,1"], timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = results_dir / "runs/quick/digits/digits-resnet8"
    for label in ("autodrop", "step"):
        for seed in (0, 1):
            run = base / f"{label},data.image_size=8,trainer.epochs=1/seed={seed}"
            assert _summary(run)["status"] == "finished"
    assert (results_dir / "runs/quick/digits/multirun.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle", "clr", "exp", "autodrop_v1"])
def test_every_schedule_trains(train_in_process, schedule: str) -> None:
    run_dir = train_in_process([*TINY_RUN, f"scheduler={schedule}"])
    assert _summary(run_dir)["status"] == "finished"
    assert len(read_records(run_dir / "metrics.jsonl")) == 2
