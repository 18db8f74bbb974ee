"""The runner on a real SLURM (slurmctld + slurmd on this machine, scripts/slurm_local.sh) through
Hydra's submitit launcher: a 2-task job, ``scontrol requeue`` mid-run, a job past its time limit,
``scancel`` then a relaunch. Skipped where SLURM cannot be started (not root, no apt-get); in CI
(``CI=true``) they must run, so a SLURM that cannot be started fails them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from experiments.rundir import read_records
from tests.conftest import REPO_ROOT, TINY_RUN, expected_run_dir
from tests.test_preemption import _assert_same_optimizer
from tests.test_resume import _assert_same_run

pytestmark = pytest.mark.slow

SETUP_SCRIPT = REPO_ROOT / "scripts/slurm_local.sh"
JOB_TIMEOUT_S = 420
SLURM_RUN = [
    "hydra/launcher=slurm_cpu",
    *TINY_RUN,
    "scheduler=autodrop",
    "trainer.deterministic=true",
]
LONG_RUN = [*SLURM_RUN, "trainer.epochs=4"]
# slurmctld checks time limits every 30 s and sends the warning signal up to 30 s early: with
# --signal=USR2@10 a 1-minute job gets it 20-50 s in, and is killed 60-90 s in.
SIGNAL_DELAY_S = 10
SIGUSR2_BIT = 1 << (signal.SIGUSR2 - 1)


def _cluster_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    state = subprocess.run(
        ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, check=False
    )
    return state.returncode == 0 and any(
        line.strip() in ("idle", "mix", "alloc") for line in state.stdout.splitlines()
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the SLURM tests, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm() -> None:
    """A one-node SLURM: the running one, else started with scripts/slurm_local.sh (once)."""
    if _cluster_is_up():
        return
    if os.geteuid() != 0:
        _unavailable("SLURM is not running and starting it needs root: sudo scripts/slurm_local.sh")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _unavailable("SLURM is not running and there is no apt-get to install it")
    result = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0 or not _cluster_is_up():
        _unavailable(f"{SETUP_SCRIPT.name} failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")


def _run_dir(results_dir: Path, args: list[str]) -> Path:
    """Where ``python -m experiments.train <args>`` writes its run."""
    return expected_run_dir(results_dir, args)


def _summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class SlurmLaunch:
    """``python -m experiments.train -m hydra/launcher=slurm_cpu ...`` in the background: the
    Hydra launcher submits one job named ``name`` and waits for its result."""

    def __init__(self, results_dir: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.args = [*args, f"experiment_name={name}", f"hydra.launcher.name={name}"]
        self.run_dir = _run_dir(results_dir, self.args)
        self.log = results_dir / f"{name}.launcher.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            *self.args,
            f"paths.results_dir={results_dir}",
        ]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WANDB_MODE": "disabled"},
            )

    def job_id(self) -> str:
        ids = subprocess.run(
            ["squeue", "--noheader", f"--name={self.name}", "--format=%i"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(ids) == 1, f"expected one job named {self.name}, squeue lists {ids}"
        return ids[0]

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline or self.process.poll() not in (None, 0):
                raise AssertionError(f"{self.name}: no {what}\n{self.diagnostics()}")
            time.sleep(0.2)

    def wait_for_epochs(self, epochs: int) -> None:
        metrics = self.run_dir / "metrics.jsonl"
        self.wait_for(lambda: len(read_records(metrics)) >= epochs, f"{epochs} epoch records")

    def training_pid(self) -> int:
        """The rank-0 process: it holds the run's lock and wrote its pid into it."""
        lock = self.run_dir / ".lock"
        self.wait_for(lambda: lock.is_file() and lock.read_text().strip(), "lock holder")
        return int(lock.read_text())

    def first_epoch_seconds(self) -> float:
        self.wait_for_epochs(1)
        return read_records(self.run_dir / "metrics.jsonl")[0]["time/epoch_s"]

    def finish(self) -> dict:
        try:
            code = self.process.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name}: still running\n{self.diagnostics()}") from None
        assert code == 0, f"{self.name}: launcher exit {code}\n{self.diagnostics()}"
        return _summary(self.run_dir)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def diagnostics(self) -> str:
        logs = sorted(self.run_dir.parents[2].glob(".submitit/*/*.err"))
        tails = [f"--- {path.name}\n{path.read_text()[-1500:]}" for path in logs[-4:]]
        return "\n".join(
            [self.log.read_text()[-2000:], *tails, json.dumps(_summary(self.run_dir))[-1500:]]
        )


@pytest.fixture
def launch(slurm, results_dir: Path) -> Iterator[Callable[[str, list[str]], SlurmLaunch]]:
    started: list[SlurmLaunch] = []

    def start(name: str, args: list[str]) -> SlurmLaunch:
        started.append(SlurmLaunch(results_dir, name, args))
        return started[-1]

    yield start
    for job in started:  # a failed test leaves no job behind
        subprocess.run(["scancel", f"--name={job.name}"], check=False)
        job.stop()


def test_two_task_job_joins_one_process_group(launch) -> None:
    job = launch("two_tasks", [*SLURM_RUN, "trainer.devices=2", "trainer.epochs=1"])
    summary = job.finish()
    assert summary["status"] == "finished"
    assert summary["world_size"] == 2 and "2 processes" in summary["hardware"]


def _process_state(pid: int) -> tuple[str, int]:
    """(state letter, pending signal mask) of ``pid``; ("", 0) once it is gone."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    except FileNotFoundError:
        return "", 0
    return fields["State"].split()[0], int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)


def _wait_while(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and condition():
        time.sleep(0.05)


def _hold_until_time_limit_signal(job: SlurmLaunch, longest_s: float = 75.0) -> None:
    """Pause the training process in its second epoch until SLURM's time-limit warning comes
    (at most ``longest_s``), then let it go: the signal lands mid-epoch however fast the
    machine trains. SLURM sends SIGCONT with its signals, so the process may go on by itself."""
    seconds = job.first_epoch_seconds()
    pid = job.training_pid()
    time.sleep(seconds / 2)
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    _wait_while(lambda: _process_state(pid)[0] not in ("T", ""), 10)
    _wait_while(
        lambda: _process_state(pid)[0] == "T" and not _process_state(pid)[1] & SIGUSR2_BIT,
        longest_s,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def test_requeued_and_timed_out_jobs_match_an_uninterrupted_run(launch, train_in_process) -> None:
    # Both jobs run at once (one CPU each); the reference trains here afterwards.
    requeued = launch("requeued", LONG_RUN)
    timed_out = launch(
        "timed_out",
        [
            *LONG_RUN,
            "hydra.launcher.timeout_min=1",
            f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
        ],
    )
    with ThreadPoolExecutor(max_workers=1) as pool:  # both jobs are watched at once
        held = pool.submit(_hold_until_time_limit_signal, timed_out)
        time.sleep(requeued.first_epoch_seconds() / 2)  # into epoch 2
        subprocess.run(["scontrol", "requeue", requeued.job_id()], check=True)
        held.result()
    reference = train_in_process([*LONG_RUN[1:], "experiment_name=whole"])

    for job, reason in ((requeued, "SIGTERM"), (timed_out, "SIGUSR2")):
        summary = job.finish()
        assert summary["status"] == "finished", job.diagnostics()
        resumes = summary["resumes"]
        assert resumes and resumes[0]["reason"] == reason, resumes
        assert all(r["world_size"] == 1 and r["host"] for r in resumes)
        _assert_same_run(job.run_dir, reference)
        _assert_same_optimizer(job.run_dir, reference)
    (first, *_) = _summary(timed_out.run_dir)["resumes"]
    assert first["previous_status"] == "requeued"  # submitit requeued it after our checkpoint


def test_scancel_leaves_interrupted_and_a_relaunch_resumes(launch, train_in_process) -> None:
    job = launch("cancelled", LONG_RUN)
    time.sleep(job.first_epoch_seconds() / 2)
    subprocess.run(["scancel", job.job_id()], check=True)
    job.wait_for(lambda: _summary(job.run_dir).get("status") == "interrupted", "interrupted status")
    job.stop()  # the launcher would wait for a result the cancelled job never writes
    interruption = _summary(job.run_dir)["interruption"]
    assert interruption["signal"] == "SIGTERM"

    train_in_process([*LONG_RUN[1:], "experiment_name=cancelled"])
    summary = _summary(job.run_dir)
    assert summary["status"] == "finished"
    assert summary["resumes"][0]["step"] == interruption["step"]
    assert summary["epochs_done"] == 4
