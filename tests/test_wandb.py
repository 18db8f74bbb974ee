"""Weights & Biases: the mode is decided before init, failures fall back, and an offline run's
transaction log (read back below) holds the per-epoch metrics and the AutoDrop trace."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from experiments import tracking
from experiments.rundir import read_records
from tests.conftest import TINY_RUN
from tests.wandb_log import (
    config,
    history,
    offline_logs,
    read_wandb_log,
    run_header,
    step_metrics,
    summary_updates,
    uploaded_files,
)

SECRET = "sk-test-0123456789abcdef0123456789abcdef"


def test_offline_run_logs_epochs_and_trace_and_no_secret(
    train_in_process, killed_at_checkpoint, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    with caplog.at_level(logging.INFO, logger="experiments.tracking"):
        run_dir = train_in_process([*TINY_RUN, "logger=wandb", "scheduler=autodrop"])
    summary = json.loads((run_dir / "summary.json").read_text())
    tracking.stop_wandb()  # the offline log is complete only then
    (log_file,) = offline_logs(run_dir)
    records = read_wandb_log(log_file)

    run = run_header(records)
    assert run.run_id == summary["wandb_run_id"] and log_file.name == f"run-{run.run_id}.wandb"
    assert (run.project, run.run_group, run.display_name) == (
        "autodrop-bench",
        "quick/digits/digits-resnet8/autodrop,data.image_size=8,trainer.epochs=2",
        "autodrop,data.image_size=8,trainer.epochs=2-s0",
    )
    assert list(run.tags) == [
        "schedule:autodrop",
        "task:digits-resnet8",
        "experiment:quick/digits",
        "seed:0",
    ]
    (offline_line,) = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert offline_line.endswith(f"upload it with: wandb sync {log_file.parent}")

    final = summary_updates(records)
    metrics = read_records(run_dir / "metrics.jsonl")
    for key in ("test/err", "test/loss", "train/loss"):
        assert final[key] == {"min": pytest.approx(min(m[key] for m in metrics), rel=1e-12)}
    for key in ("status", "min_test_err", "min_test_err_epoch", "final_test_err", "epochs_done"):
        assert final[key] == summary[key], key
    end = wandb_internal_pb2.FilesItem.PolicyType.END
    assert {("train.log", end), ("summary.json", end)} <= uploaded_files(records)
    assert (log_file.parent / "files/summary.json").read_text() == (
        run_dir / "summary.json"
    ).read_text()
    recorded = config(records)
    assert recorded["scheduler"]["window"] == 3 and recorded["experiment_name"] == "quick/digits"

    rows = history(records)
    epochs = [row for row in rows if "epoch" in row]
    assert [row["epoch"] for row in epochs] == [1, 2]
    for row, record in zip(epochs, metrics, strict=True):
        for key in (
            "step",
            "lr",
            "train/loss",
            "train/acc",
            "test/loss",
            "test/err",
            "autodrop/drops",
            "autodrop/omega",
        ):
            assert row[key] == pytest.approx(record[key], rel=1e-12), key
    trace = [row for row in rows if "trace/step" in row]
    assert [row["trace/step"] for row in trace] == [
        r["step"] for r in read_records(run_dir / "autodrop.jsonl")
    ]
    metric_names = step_metrics(records)
    for name in ("train/loss", "lr", "autodrop/drops", "autodrop/omega"):
        assert metric_names[name] == "epoch", name
    assert metric_names["trace/*"] == "trace/step"

    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_wandb_run(
    train_in_process, killed_at_checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [*TINY_RUN, "logger=wandb", "scheduler=step"]
    killed_at_checkpoint(2, lambda: train_in_process(overrides))
    run_dir = train_in_process(overrides)
    tracking.stop_wandb()
    first, second = offline_logs(run_dir)
    run_id = json.loads((run_dir / "summary.json").read_text())["wandb_run_id"]
    assert first.name == second.name == f"run-{run_id}.wandb"
    resumed_epochs = [row["epoch"] for row in history(read_wandb_log(second)) if "epoch" in row]
    assert resumed_epochs == [2]


def test_mode_without_a_key_is_offline_with_a_sync_hint(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    mode, reason = tracking.resolve_mode(None)
    assert mode == "offline" and "make wandb-sync" in reason
    assert tracking.resolve_mode("disabled") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.resolve_mode(None) == ("offline", None)
    with pytest.raises(ValueError, match="'sometimes'.*online, offline, disabled"):
        tracking.resolve_mode("sometimes")


def test_a_key_in_the_environment_or_netrc_allows_online(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert tracking.resolve_mode(None) == ("online", None)
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    assert tracking.resolve_mode(None) == ("online", None)


class FakeRun:
    def __init__(self, run_id: str, fail_logging: bool = False) -> None:
        self.id, self.fail_logging = run_id, fail_logging
        self.summary: dict = {}
        self.logged: list[dict] = []
        self.exit_code: int | None = None
        self.step_metrics: dict[str, str | None] = {}

    def define_metric(
        self, name: str, step_metric: str | None = None, summary: str | None = None
    ) -> None:
        self.step_metrics[name] = step_metric

    def log(self, values: dict) -> None:
        if self.fail_logging:
            raise ConnectionError("network down")
        self.logged.append(values)

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


def _start(tmp_path: Path, mode: str = "online"):
    return tracking.start_wandb(
        {"mode": mode, "project": "p"},
        run_dir=tmp_path,
        group="g",
        name="n",
        config={},
        run_id="abc12345",
    )


def test_online_failure_falls_back_to_offline_then_to_nothing(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    modes = []

    def init(mode: str, options: dict, timeout: float) -> FakeRun:
        modes.append(mode)
        if mode == "online":
            raise TimeoutError("no network")
        return FakeRun(options["id"])

    monkeypatch.setattr(tracking, "_init_run", init)
    tracker = _start(tmp_path)
    assert modes == ["online", "offline"] and tracker.run_id == "abc12345"

    def always_fail(mode: str, options: dict, timeout: float) -> FakeRun:
        raise RuntimeError("broken")

    monkeypatch.setattr(tracking, "_init_run", always_fail)
    assert isinstance(_start(tmp_path), tracking.NullTracker)
    monkeypatch.setattr(tracking, "_init_run", init)
    modes.clear()
    assert isinstance(_start(tmp_path, mode="disabled"), tracking.NullTracker) and modes == []


def test_every_epoch_field_is_stepped_by_epoch_whichever_schedule_adds_it() -> None:
    run = FakeRun("x")
    tracker = tracking.WandbTracker(run)
    tracker.log_epoch({"epoch": 1, "test/err": 5.0, "lr/epoch_mean": 0.1, "autodrop/drops": 0})
    tracker.log_epoch({"epoch": 2, "test/err": 4.0, "angle/epoch": 3.0})
    assert run.logged[1] == {"epoch": 2, "test/err": 4.0, "angle/epoch": 3.0}
    for name in ("test/err", "lr/epoch_mean", "autodrop/drops", "angle/epoch"):
        assert run.step_metrics[name] == "epoch", name
    assert run.step_metrics["trace/*"] == tracking.TRACE_STEP


def test_logging_errors_never_reach_training_and_finish_is_always_called() -> None:
    run = FakeRun("x", fail_logging=True)
    tracker = tracking.WandbTracker(run)
    tracker.log_epoch({"epoch": 1, "train/loss": 1.0})
    tracker.log_measurements([{"step": 4, "omega": None, "dropped": True}])
    tracker.finish("diverged")
    assert run.exit_code == 1 and run.summary["status"] == "diverged"
    healthy = FakeRun("y")
    tracking.WandbTracker(healthy).log_measurements(
        [{"step": 4, "omega": None, "lr": 0.1, "dropped": True}]
    )
    assert healthy.logged == [{"trace/step": 4, "trace/lr": 0.1, "trace/dropped": 1.0}]


def test_without_a_key_one_line_says_why_where_and_how_to_sync(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))

    def init(mode: str, options: dict, timeout: float) -> FakeRun:
        run = FakeRun(options["id"])
        run.offline = mode == "offline"
        run.settings = type("Settings", (), {"sync_dir": str(tmp_path / "offline-run-x")})
        return run

    monkeypatch.setattr(tracking, "_init_run", init)
    with caplog.at_level(logging.INFO, logger="experiments.tracking"):
        _start(tmp_path, mode=None)
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("wandb: no W&B API key found, so this run logs offline")
    assert line.endswith(f"upload it with: wandb sync {tmp_path / 'offline-run-x'}")
