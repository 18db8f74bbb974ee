"""make wandb-upload (scripts.wandb_upload): finished runs logged to W&B from their records, read
back from the offline run's ``.wandb`` transaction log; never twice; nothing written on a dry run
or a failure."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from experiments import rundir as rd
from experiments import tracking
from scripts import wandb_upload
from scripts.analysis.runs import load_runs
from tests.conftest import REPO_ROOT, TINY_RUN
from tests.fake_runs import write_fake_run
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

TINY_LABEL = "autodrop,data.image_size=8,trainer.epochs=2"
DIGITS = {"experiment": "quick/digits", "dataset": "digits", "model": "resnet8"}
END = wandb_internal_pb2.FilesItem.PolicyType.END


def upload(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = wandb_upload.main(list(args))
    return code, capsys.readouterr().out


def without_wandb_keys(row: dict) -> dict:
    return {key: value for key, value in row.items() if not key.startswith("_")}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_finished_run_is_logged_offline_from_its_records_and_only_once(
    train_in_process, results_dir: Path, capsys
) -> None:
    run_dir = train_in_process([*TINY_RUN, "scheduler=autodrop"])
    runs = results_dir / "runs"
    unfinished = write_fake_run(
        runs, **DIGITS, scheduler="step", seed=1, test_errs=[40.0], epochs_planned=2,
        status=rd.RUNNING,
    )  # fmt: skip
    before = rd.read_summary(run_dir / rd.SUMMARY_FILE)
    assert before["wandb_run_id"] is None

    code, out = upload(capsys, "--runs", str(runs), "--mode", "offline")
    assert code == 0, out
    (log_file,) = offline_logs(run_dir)
    assert out.splitlines()[-1] == (
        f"upload the offline runs with: wandb sync {shlex.quote(str(log_file.parent))}"
    )
    assert (
        f"{unfinished.relative_to(runs).as_posix()}: skip: not finished: "
        f"{unfinished / rd.SUMMARY_FILE}: status is 'running', not 'finished'"
    ) in out.splitlines()
    assert "1 logged, 0 failed, 1 skipped" in out

    records = read_wandb_log(log_file)
    run = run_header(records)
    after = rd.read_summary(run_dir / rd.SUMMARY_FILE)
    assert after == {**before, "wandb_run_id": run.run_id}
    assert (run.project, run.run_group, run.display_name, run.job_type) == (
        "autodrop-bench",
        f"quick/digits/digits-resnet8/{TINY_LABEL}",
        f"{TINY_LABEL}-s0",
        "train",
    )
    assert list(run.tags) == [
        "schedule:autodrop",
        "task:digits-resnet8",
        "experiment:quick/digits",
        "seed:0",
    ]
    recorded_config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra/config.yaml"))
    assert without_wandb_keys(config(records)) == recorded_config

    rows = [without_wandb_keys(row) for row in history(records)]
    metrics = rd.read_records(run_dir / rd.METRICS_FILE)
    assert [row for row in rows if "epoch" in row] == [
        {key: value for key, value in record.items() if value is not None} for record in metrics
    ]
    stream = rd.read_records(run_dir / "autodrop.jsonl")
    assert len(stream) > 2
    assert [row for row in rows if "trace/step" in row] == [
        {
            "trace/step": record["step"],
            **{
                f"trace/{key}": float(value) if isinstance(value, bool) else value
                for key, value in record.items()
                if key != "step" and value is not None
            },
        }
        for record in stream
    ]
    assert step_metrics(records)["autodrop/omega"] == "epoch"

    final = summary_updates(records)
    for key, value in after.items():
        assert final[key] == value, key
    assert final["test/err"] == {"min": after["min_test_err"]}
    assert {("train.log", END), ("summary.json", END)} <= uploaded_files(records)
    sent = log_file.parent / "files"
    assert (sent / "summary.json").read_bytes() == (run_dir / rd.SUMMARY_FILE).read_bytes()
    assert (sent / "train.log").read_bytes() == (run_dir / rd.LOG_FILE).read_bytes()

    # The runner and the analysis see the same finished run, now with its wandb run id.
    assert rd.completeness_problem(run_dir) is None
    assert rd.RunDir(run_dir).launch_action() is rd.LaunchAction.SKIP
    listed = load_runs(runs).runs.set_index("seed")
    assert listed.loc[0, "status"] == rd.FINISHED
    assert listed.loc[0, "wandb_run_id"] == run.run_id

    untouched = files_of(run_dir)
    code, out = upload(capsys, "--runs", str(runs), "--mode", "offline")
    assert code == 0
    assert (
        f"skip: wandb run {run.run_id} is in an offline log not synced yet: "
        f"wandb sync {shlex.quote(str(log_file.parent))}"
    ) in out
    assert "0 logged, 0 failed, 2 skipped" in out
    assert files_of(run_dir) == untouched

    log_file.with_suffix(".wandb.synced").touch()  # what `wandb sync` leaves once uploaded
    code, out = upload(capsys, "--runs", str(runs), "--mode", "offline")
    assert f"skip: already in W&B as run {run.run_id}" in out and offline_logs(run_dir) == [
        log_file
    ]


def test_an_upload_logs_what_the_live_run_logged(
    train_in_process, results_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    live_dir = train_in_process([*TINY_RUN, "logger=wandb", "scheduler=autodrop"])
    replay_runs = tmp_path / "replay"
    replay_dir = replay_runs / live_dir.relative_to(results_dir / "runs")
    shutil.copytree(live_dir, replay_dir, ignore=shutil.ignore_patterns(rd.WANDB_DIR))
    summary = rd.read_summary(replay_dir / rd.SUMMARY_FILE)
    rd.RunDir(replay_dir).write_summary({**summary, "wandb_run_id": None})

    code, out = upload(capsys, "--runs", str(replay_runs))
    assert code == 0, out
    (live_log,) = offline_logs(live_dir)
    (replay_log,) = offline_logs(replay_dir)
    live, replay = read_wandb_log(live_log), read_wandb_log(replay_log)

    fields = ("project", "entity", "run_group", "display_name", "job_type", "tags")
    assert [getattr(run_header(replay), f) for f in fields] == [
        getattr(run_header(live), f) for f in fields
    ]
    # The launch resolves the device-dependent settings once and records them, so the live
    # run's config and the recorded one (which an upload replays) are the same.
    assert config(replay) == config(live)
    assert [without_wandb_keys(r) for r in history(replay)] == [
        without_wandb_keys(r) for r in history(live)
    ]
    assert [row["_step"] for row in history(replay)] == [row["_step"] for row in history(live)]
    assert step_metrics(replay) == step_metrics(live)
    assert uploaded_files(replay) == uploaded_files(live)
    live_summary, replay_summary = summary_updates(live), summary_updates(replay)
    assert replay_summary["wandb_run_id"] == run_header(replay).run_id
    ids_and_times = ("wandb_run_id", "_runtime", "_timestamp", "_wandb/runtime")
    for key in ids_and_times:
        del live_summary[key], replay_summary[key]
    assert replay_summary == live_summary


def test_make_dry_run_lists_what_it_would_log_and_writes_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs"
    ready = write_fake_run(
        runs, **DIGITS, scheduler="step", seed=0, test_errs=[50.0, 40.0],
        config={"experiment_name": "quick/digits", "logger": {"name": "none"}},
    )  # fmt: skip
    failed = write_fake_run(
        runs, **DIGITS, scheduler="step", seed=1, test_errs=[50.0], epochs_planned=2,
        status=rd.FAILED,
    )  # fmt: skip
    logged = write_fake_run(
        runs, **DIGITS, scheduler="step", seed=2, test_errs=[50.0, 40.0], wandb_run_id="abc12345"
    )
    no_config = write_fake_run(runs, **DIGITS, scheduler="cosine", seed=0, test_errs=[50.0])
    elsewhere = write_fake_run(
        runs, experiment="ablation/x", dataset="digits", model="resnet8", scheduler="step",
        seed=0, test_errs=[50.0], config={},
    )  # fmt: skip
    before = files_of(tmp_path)
    stamp = tmp_path / "installed"  # stands in for .venv's stamp: no install is attempted
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))
    make = [
        "make", "--no-print-directory", "wandb-upload", "DRY_RUN=1", "EXPERIMENT=quick",
        f"PY={sys.executable}", f"STAMP={stamp}", f"RESULTS={tmp_path / 'results'}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        make, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = {line.partition(": ")[0]: line.partition(": ")[2] for line in done.stdout.splitlines()}

    def line(run_dir: Path) -> str:
        return lines[run_dir.relative_to(runs).as_posix()]

    assert line(ready) == "would log as quick/digits/digits-resnet8/step / step-s0"
    assert line(failed) == (
        f"skip: not finished: {failed / rd.SUMMARY_FILE}: status is 'failed', not 'finished'"
    )
    assert line(logged) == "skip: already in W&B as run abc12345 (logged live or uploaded before)"
    assert line(no_config) == (
        f"skip: {no_config / '.hydra/config.yaml'} is missing: the run's config is unknown"
    )
    assert elsewhere.relative_to(runs).as_posix() not in lines
    assert "1 would be logged, 3 skipped" in done.stdout
    assert files_of(tmp_path) == {**before, "installed": b""}


class BrokenRun:
    """A wandb run whose logging fails (a network drop), offline in ``sync_dir``."""

    offline = True

    def __init__(self, run_id: str, sync_dir: Path) -> None:
        self.id, self.dir = run_id, str(sync_dir / "files")
        self.settings = type("Settings", (), {"sync_dir": str(sync_dir)})
        self.summary: dict = {}
        self.exit_codes: list[int] = []
        Path(self.dir).mkdir(parents=True)

    def define_metric(self, name: str, **options: str) -> None:
        pass

    def log(self, values: dict) -> None:
        raise ConnectionError("network down")

    def save(self, path: str, **options: str) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        self.exit_codes.append(exit_code)


def test_a_failed_upload_leaves_the_run_as_it_was(tmp_path: Path, monkeypatch, capsys) -> None:
    runs = tmp_path / "runs"
    run_dir = write_fake_run(
        runs, **DIGITS, scheduler="step", seed=0, test_errs=[50.0, 40.0],
        config={"experiment_name": "quick/digits"},
    )  # fmt: skip
    before = files_of(run_dir)
    started: list[BrokenRun] = []

    def init(mode: str, options: dict, timeout: float) -> BrokenRun:
        started.append(BrokenRun(options["id"], Path(options["dir"]) / "wandb/offline-run-x"))
        return started[-1]

    monkeypatch.setattr(tracking, "_init_run", init)
    code, out = upload(capsys, "--runs", str(runs), "--mode", "offline")
    assert code == 1
    assert "FAILED: wandb log: ConnectionError: network down" in out
    assert "0 logged, 1 failed, 0 skipped" in out and "wandb sync" not in out
    (run,) = started
    assert run.exit_codes[-1] == 1 and not Path(run.settings.sync_dir).exists()
    assert {k: v for k, v in files_of(run_dir).items() if k != rd.LOCK_FILE} == before


def test_bad_input_and_the_mode_rule(tmp_path: Path, monkeypatch, capsys) -> None:
    assert wandb_upload.main(["--runs", str(tmp_path / "none")]) == 2
    assert "runs directory" in capsys.readouterr().err
    # conftest sets WANDB_MODE=disabled: nothing would be uploaded, so the command says so
    assert wandb_upload.main(["--runs", str(tmp_path)]) == 2
    assert "wandb mode is disabled (WANDB_MODE=disabled)" in capsys.readouterr().err
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    code, out = upload(capsys, "--runs", str(tmp_path), "--mode", "online", "--dry-run")
    assert code == 0
    assert out.startswith("0 run directories under")
    assert "wandb mode offline (no W&B API key found" in out


def test_each_epoch_is_logged_with_the_measurements_of_its_steps() -> None:
    metrics = [{"epoch": 1, "step": 10}, {"epoch": 2, "step": 20}, {"epoch": 3, "step": 30}]
    stream = [{"step": s} for s in (4, 8, 10, 12, 24, 28, 31)]
    batches = list(wandb_upload.epochs_with_measurements(metrics, stream))
    assert [[m["step"] for m in measured] for _, measured in batches] == [
        [4, 8, 10],
        [12],
        [24, 28, 31],
    ]
    assert [record["epoch"] for record, _ in batches] == [1, 2, 3]
