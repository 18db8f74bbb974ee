"""Preemption: a signal stops training between two steps with a mid-epoch checkpoint, the relaunch
continues bit-identically, statuses never claim a dead run is running, resumes are recorded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.checkpoint import load_checkpoint
from experiments.errors import TrainingInterrupted
from experiments.loop import PartialEpoch
from experiments.rundir import RunDir, effective_status, lock_is_held
from experiments.running import stopped_epoch
from experiments.running.preemption import StopPoll, StopSignals
from experiments.running.processes import DistContext, port_from_job_id
from tests.conftest import REPO_ROOT, TINY_RUN, data_bundle, expected_run_dir
from tests.signal_injection import ENV, Injection, inject
from tests.test_resume import _assert_same_run

STEPS_PER_EPOCH = 17  # TINY_RUN: 1,437 - 360 held-out digits = 1,077 / batch 64 -> 17 steps
WHOLE_TRAIN_STEPS = 23  # without a validation split: 1,437 digits / batch 64
EPOCHS = 3
TRIAL_RUN = [
    *TINY_RUN,
    "scheduler=autodrop",
    "trainer.deterministic=true",
    f"trainer.epochs={EPOCHS}",
]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _saved_step(run_dir: Path) -> int:
    """The step a checkpoint continues from: completed epochs' steps + the stopped epoch's."""
    state = load_checkpoint(run_dir / "checkpoints/last.pt")
    stopped = state.get("stopped_epoch")
    return state["step"] + (stopped["ranks"][0]["batch"] if stopped else 0)


def _assert_same_optimizer(resumed: Path, reference: Path) -> None:
    mine = load_checkpoint(resumed / "checkpoints/last.pt")["optimizer"]["state"]
    theirs = load_checkpoint(reference / "checkpoints/last.pt")["optimizer"]["state"]
    assert mine.keys() == theirs.keys()
    for key, entry in theirs.items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(mine[key][name]), torch.as_tensor(value)), name


# ------------------------------------------------------------------------ signals and polling
def test_stop_signals_set_a_flag_and_restore_the_previous_handlers() -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals() as signals:
            assert not signals.requested
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)  # the first one received wins
            assert signals.signal_name == "SIGUSR1"
            assert seen == []  # ours, not the previous handler, caught it
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at once; never reached


def test_hand_over_passes_the_signal_to_the_previous_handler_once_saved() -> None:
    def requeue(signum: int, frame: object) -> None:
        raise SystemExit(-1)  # what submitit does after `scontrol requeue`

    def refuse(signum: int, frame: object) -> None:
        raise RuntimeError("timed-out too many times")

    before = signal.getsignal(signal.SIGUSR2)
    try:
        for handler, requeued, error in (
            (requeue, True, SystemExit),
            (refuse, False, RuntimeError),
            (signal.SIG_DFL, False, None),
        ):
            signal.signal(signal.SIGUSR2, handler)
            signals = StopSignals().install()
            os.kill(os.getpid(), signal.SIGUSR2)
            outcome = signals.hand_over()
            assert outcome.requeued is requeued
            assert type(outcome.error) is error if error else outcome.error is None
            assert signal.getsignal(signal.SIGUSR2) is handler  # restored
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_one_process_polls_every_step_and_names_the_signal() -> None:
    with StopSignals() as signals:
        poll = StopPoll(signals, DistContext(), torch.device("cpu"), every=10)
        assert not poll(3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert poll(7) and poll.at_epoch_end()
        assert poll.signal_name == "SIGTERM"
    error = TrainingInterrupted("SIGTERM", 30, 2, 7, 23)
    assert error.exit_code == 128 + signal.SIGTERM
    assert "step 30 (epoch 2, batch 7 of 23)" in str(error)


def test_stop_poll_rejects_a_check_interval_below_one() -> None:
    with pytest.raises(ValueError, match="stop_check_every"):
        StopPoll(StopSignals(), DistContext(), torch.device("cpu"), every=0)


# ------------------------------------------------------------------ mid-epoch checkpoint data
def test_stopped_epoch_round_trips_and_survives_another_world_size() -> None:
    saved = {
        "epoch": 2,
        "ranks": [
            PartialEpoch(7, [10.5, 3.0, 32.0], 0.35, 1.5).state_dict(),
            PartialEpoch(7, [11.25, 4.0, 32.0], 0.35, 1.5).state_dict(),
        ],
        "measurements": [{"step": 28, "omega": 40.0}],
    }
    rank1 = stopped_epoch.restore(saved, DistContext(rank=1, local_rank=1, world_size=2))
    assert rank1.epoch == 2 and rank1.position == PartialEpoch(7, [11.25, 4.0, 32.0], 0.35, 1.5)
    alone = stopped_epoch.restore(saved, DistContext())
    assert alone.position.sums == [21.75, 7.0, 64.0] and alone.position.batch == 7
    assert alone.measurements == saved["measurements"]
    entry = stopped_epoch.checkpoint_entry(alone, DistContext())
    assert entry["ranks"] == [alone.position.state_dict()] and entry["epoch"] == 2
    assert stopped_epoch.restore(None, DistContext()) is None


@pytest.mark.parametrize(
    ("previous", "reason"),
    [
        ({"status": "interrupted", "interruption": {"signal": "SIGTERM"}}, "SIGTERM"),
        ({"status": "requeued", "interruption": {"signal": "SIGUSR2"}}, "SIGUSR2"),
        ({"status": "running"}, "stale"),
        ({"status": "failed"}, "failed"),
        ({}, "unknown"),
    ],
)
def test_resume_reason_names_the_signal_or_the_previous_status(previous, reason) -> None:
    entry = stopped_epoch.resume_record(
        previous, epochs_done=1, step=23, stopped=None, world_size=2
    )
    assert entry["reason"] == reason
    assert (entry["step"], entry["epoch"], entry["batch"], entry["world_size"]) == (23, 2, 0, 2)


# ---------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("loader", ["device", "classic"])
def test_train_loader_starts_an_epoch_at_a_batch(loader: str) -> None:
    data = data_bundle(
        "digits",
        batch_size=64,
        eval_batch_size=256,
        device="cpu",
        seed=3,
        loader=loader,
        num_workers=0,
        image_size=8,
    )
    data.train.set_epoch(2)
    whole = list(data.train)
    data.train.set_epoch(2, start_batch=17)
    tail = list(data.train)
    assert len(data.train) == len(whole) == WHOLE_TRAIN_STEPS
    assert len(tail) == WHOLE_TRAIN_STEPS - 17
    for (images, labels), (expected_images, expected_labels) in zip(tail, whole[17:], strict=True):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    with pytest.raises(ValueError, match="start_batch must be in 0..23"):
        data.train.set_epoch(2, start_batch=24)


# ------------------------------------------------------------------------- status and ports
def test_status_is_running_only_while_a_process_holds_the_lock(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    assert effective_status(run_dir.root) == "stale"  # no summary, nobody training it
    run_dir.write_summary({"status": "running"})
    with run_dir.lock():
        assert lock_is_held(run_dir.root) and effective_status(run_dir.root) == "running"
    assert effective_status(run_dir.root) == "stale"
    for status in ("finished", "interrupted", "failed"):
        run_dir.write_summary({"status": status})
        assert effective_status(run_dir.root) == status


def test_a_killed_lock_holder_leaves_a_stale_run(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from experiments.rundir import RunDir\n"
            "run = RunDir(sys.argv[1])\n"
            "with run.lock():\n"
            "    run.write_summary({'status': 'running'}); print('locked', flush=True)\n"
            "    time.sleep(120)",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert effective_status(tmp_path) == "running"
    finally:
        holder.kill()
        holder.wait()
    assert effective_status(tmp_path) == "stale"


def test_rendezvous_port_is_stable_per_job_and_outside_the_ephemeral_range() -> None:
    ports = {port_from_job_id(str(job)) for job in range(1000, 3000)}
    assert all(20000 <= port < 32000 for port in ports)  # Linux ephemeral: 32768-60999
    assert len(ports) > 1800  # spread, so two jobs rarely share one
    assert port_from_job_id("4242_7") == port_from_job_id("4242_7")
    assert port_from_job_id("4242_7") != port_from_job_id("42427")


# -------------------------------------------------------------------------- end to end
def _run_dir(results_dir: Path, args: list[str]) -> Path:
    """Where ``python -m experiments.train <args>`` writes its run."""
    return expected_run_dir(results_dir, args)


def _interrupt_then_relaunch(
    train_in_process, results_dir: Path, name: str, injection: Injection
) -> Path:
    """Run with ``injection`` armed (it must interrupt), then relaunch; return the run dir."""
    args = [*TRIAL_RUN, f"experiment_name={name}"]
    with inject(injection), pytest.raises(TrainingInterrupted) as stopped:
        train_in_process(args)
    run_dir = _run_dir(results_dir, args)
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted", injection
    assert summary["interruption"]["signal"] == injection.signal_name
    saved = _saved_step(run_dir)
    assert stopped.value.step == saved == summary["interruption"]["step"]
    assert "stopped by" in (run_dir / "train.log").read_text()

    train_in_process(args)
    summary = _summary(run_dir)
    assert summary["status"] == "finished", injection
    (resume,) = summary["resumes"]
    assert resume["step"] == saved, injection  # the relaunch starts at the saved step
    assert (resume["reason"], resume["world_size"]) == (injection.signal_name, 1)
    return run_dir


def _expected_stop_step(injection: Injection) -> int:
    if injection.point == "step":  # stops before the next batch
        return injection.count
    return injection.count * STEPS_PER_EPOCH  # at the end of the epoch being evaluated/saved


def test_sigterm_mid_epoch_then_relaunch_matches_uninterrupted(
    train_in_process, results_dir
) -> None:
    reference = train_in_process([*TRIAL_RUN, "experiment_name=whole"])
    injection = Injection("SIGTERM", "step", 30)
    run_dir = _interrupt_then_relaunch(train_in_process, results_dir, "sigterm", injection)
    assert _summary(run_dir)["resumes"][0]["batch"] == 30 - STEPS_PER_EPOCH
    _assert_same_run(run_dir, reference)
    _assert_same_optimizer(run_dir, reference)


def _trials(rng: random.Random) -> list[Injection]:
    last_step = EPOCHS * STEPS_PER_EPOCH - 1
    trials = [
        Injection(name, "step", rng.randint(1, last_step))
        for name in ("SIGTERM", "SIGUSR2") * 4 + ("SIGINT", "SIGUSR1")
    ]
    trials += [
        Injection(name, "eval", rng.randint(1, EPOCHS - 1)) for name in ("SIGTERM", "SIGUSR2")
    ]
    trials += [
        Injection(name, "checkpoint", rng.randint(1, EPOCHS - 1)) for name in ("SIGTERM", "SIGUSR2")
    ]
    return trials


@pytest.mark.slow
def test_signals_at_random_moments_each_resume_bit_identically(
    train_in_process, results_dir
) -> None:
    reference = train_in_process([*TRIAL_RUN, "experiment_name=whole"])
    trials = _trials(random.Random(13))
    assert len(trials) >= 10
    for number, injection in enumerate(trials):
        run_dir = _interrupt_then_relaunch(
            train_in_process, results_dir, f"trial{number}", injection
        )
        assert _summary(run_dir)["resumes"][0]["step"] == _expected_stop_step(injection)
        _assert_same_run(run_dir, reference)
        _assert_same_optimizer(run_dir, reference)


# ------------------------------------------------------------------- two gloo processes
TWO_PROCESSES = [*TRIAL_RUN, "trainer.devices=2", "trainer.stop_check_every=4"]


def _launch_with_signal(
    results_dir: Path, name: str, injection: Injection | None
) -> subprocess.CompletedProcess[str]:
    """``python -m tests.signal_injection`` (one run, workers spawned) with ``injection``."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop(ENV, None)
    if injection is not None:
        env[ENV] = str(injection)
    command = [
        sys.executable,
        "-m",
        "tests.signal_injection",
        *TWO_PROCESSES,
        f"experiment_name={name}",
        f"paths.results_dir={results_dir}",
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_two_gloo_processes_stop_together_and_resume_bit_identically(
    train_in_process, results_dir
) -> None:
    # One run interrupted three times, each relaunch resuming it: SIGUSR2 to rank 1 alone (rank
    # 0 learns it through the all-reduce), SIGTERM to the parent of the workers during an
    # evaluation (it passes the signal on), SIGTERM to rank 0 during a checkpoint write.
    reference = train_in_process([*TWO_PROCESSES, "experiment_name=whole"])
    run_dir = _run_dir(results_dir, [*TWO_PROCESSES, "experiment_name=split"])
    first = random.Random(5).randint(5, 20)
    injections = [
        Injection("SIGUSR2", "step", first, "1"),
        Injection("SIGTERM", "eval", 1, "parent"),
        Injection("SIGTERM", "checkpoint", 1, "0"),
    ]
    saved_steps = []
    for injection in injections:
        result = _launch_with_signal(results_dir, "split", injection)
        expected_code = 128 + signal.Signals[injection.signal_name]
        assert result.returncode == expected_code, (injection, result.stderr[-3000:])
        assert _summary(run_dir)["status"] == "interrupted", injection
        saved_steps.append(_saved_step(run_dir))
    result = _launch_with_signal(results_dir, "split", None)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(run_dir)
    assert summary["status"] == "finished" and summary["world_size"] == 2
    assert [r["step"] for r in summary["resumes"]] == saved_steps
    assert [r["reason"] for r in summary["resumes"]] == ["SIGUSR2", "SIGTERM", "SIGTERM"]
    # The ranks agree every 4 steps: rank 1's signal after step n (epoch 1) stops both at the
    # next multiple of 4; the evaluation and the checkpoint write at the end of their epochs.
    assert saved_steps == [-(-first // 4) * 4, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    _assert_same_run(run_dir, reference)
    _assert_same_optimizer(run_dir, reference)


@pytest.mark.slow
def test_a_killed_worker_never_leaves_the_run_running(results_dir) -> None:
    # Rank 1 dies without a word (SIGKILL) in epoch 1: the parent, which holds the run's lock,
    # makes sure the summary does not keep saying "running".
    result = _launch_with_signal(results_dir, "killed", Injection("SIGKILL", "step", 5, "1"))
    assert result.returncode != 0
    run_dir = _run_dir(results_dir, [*TWO_PROCESSES, "experiment_name=killed"])
    assert _summary(run_dir)["status"] == "failed", _summary(run_dir)
    assert effective_status(run_dir) == "failed"


@pytest.mark.slow
def test_ctrl_c_twice_says_one_line_marks_the_run_failed_and_resumes_exactly(
    train_in_process, results_dir
) -> None:
    reference = train_in_process([*TRIAL_RUN, "experiment_name=whole"])
    args = [*TRIAL_RUN, "experiment_name=twice", f"paths.results_dir={results_dir}"]
    # The second Ctrl-C comes while the first one's checkpoint is being written.
    env = {**os.environ, "WANDB_MODE": "disabled", ENV: "SIGINT:step:30,SIGINT:checkpoint:2"}
    code = (
        "import runpy, tests.signal_injection; "
        "runpy.run_module('experiments.train', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: stopped at once by Ctrl-C") and "relaunch" in line
    run_dir = _run_dir(results_dir, args)
    assert _summary(run_dir)["status"] == "failed"
    train_in_process(args)
    assert _summary(run_dir)["status"] == "finished"
    _assert_same_run(run_dir, reference)
