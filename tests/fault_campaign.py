"""Fault-injection campaign over the real training runner (``python -m experiments.train``).

``python -m tests.fault_campaign [--trials N] [--scenario NAME ...] [--workdir DIR]`` runs each
scenario, prints one line per scenario (trials, survived, lost) and then a table of all of them;
the exit status is 1 when any trial was lost. Every run uses the CPU digits preset shrunk to
four 8x8 epochs with deterministic algorithms, so each run is compared number for number with
one uninterrupted reference run. No traffic leaves 127.0.0.1 (wandb is pointed at local ports).

Faults are injected from outside the runner: signals, files damaged on disk, a small tmpfs (or
RLIMIT_FSIZE where mounting is not allowed), local sockets, hostile dataset files (the tiny fake
CIFAR and ImageNet trees of ``tests.fake_datasets``), and a child wrapper (``child_main``) that
only slows ``os.fsync``, kills the process after its n-th checkpoint, or takes a fake CIFAR
release's md5s as the official ones (so a tampered byte is what the md5 check sees).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.server
import io
import itertools
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from experiments import rundir as rd
from experiments.rundir import SUMMARY_FILE, DamagedRecords, read_records, read_summary
from scripts.analysis.runs import HYDRA_CONFIG, TRACE_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
BASE_RUN = (
    "experiment=quick/digits",
    "data.image_size=8",
    f"trainer.epochs={EPOCHS}",
    "trainer.cpu_threads=1",
    "trainer.progress=plain",
    "trainer.deterministic=true",
    "scheduler=autodrop",
    "logger=none",
)


def run_subdir(epochs: int) -> Path:
    """The run directory of BASE_RUN trained for ``epochs``: its run identity names the values
    it changes from the quick/digits preset."""
    label = f"autodrop,data.image_size=8,trainer.epochs={epochs}"
    return Path(f"runs/quick/digits/digits-resnet8/{label}/seed=0")


RUN_SUBDIR = run_subdir(EPOCHS)
RUN_TIMEOUT_S = 180.0
SECRET_NAME_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# The child wrapper's knobs (read only by ``child_main``, never by the runner).
SLOW_FSYNC_ENV = "FAULTS_SLOW_FSYNC_S"
KILL_AFTER_SAVES_ENV = "FAULTS_KILL_AFTER_SAVES"
TRUSTED_CIFAR_MD5_ENV = "FAULTS_TRUSTED_CIFAR_MD5"  # JSON {kind: {file: md5}}
AUTO_PRECISION_ENV = "FAULTS_AUTO_PRECISION"  # what trainer.precision=auto means (a GPU stand-in)
CHILD_CODE = "import tests.fault_campaign as faults; faults.child_main()"


@dataclass
class Outcome:
    """What one scenario saw: a trial is lost when any of its checks failed."""

    scenario: str
    trials: int = 0
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def survived(self) -> int:
        return self.trials - len(self.lost)

    def record(self, problem: str | None, label: str) -> None:
        self.trials += 1
        if problem is not None:
            self.lost.append(f"{label}: {problem}")

    def line(self) -> str:
        text = (
            f"{self.scenario}: trials={self.trials} survived={self.survived} lost={len(self.lost)}"
        )
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")


# ------------------------------------------------------------------------- the child wrapper
def child_main() -> None:
    """Run ``experiments.train`` with the faults the environment asks for, then exit."""
    import runpy

    slow = float(os.environ.get(SLOW_FSYNC_ENV, "0"))
    if slow > 0:
        real_fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            time.sleep(slow)
            real_fsync(fd)

        os.fsync = slow_fsync
    kill_after = int(os.environ.get(KILL_AFTER_SAVES_ENV, "0"))
    if kill_after > 0:
        from experiments import checkpoint

        real_save = checkpoint.save_checkpoint
        saves = itertools.count(1)

        def save_then_die(path: Path, state: dict[str, Any], **kwargs: Any) -> str:
            digest = real_save(path, state, **kwargs)
            if next(saves) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return digest

        checkpoint.save_checkpoint = save_then_die
    trusted = json.loads(os.environ.get(TRUSTED_CIFAR_MD5_ENV, "{}"))
    if trusted:
        from experiments.data import cifar

        for kind, file_md5 in trusted.items():
            release = dataclasses.replace(cifar.CIFAR_RELEASES[kind], file_md5=file_md5)
            cifar.CIFAR_RELEASES[kind] = release
    auto_precision = os.environ.get(AUTO_PRECISION_ENV)
    if auto_precision:
        from experiments import runtime

        real_precision = runtime.resolved_precision

        def precision_as_on_a_gpu(precision: str, device_type: str) -> str:
            return auto_precision if precision == "auto" else real_precision(precision, device_type)

        runtime.resolved_precision = precision_as_on_a_gpu
    sys.argv = ["experiments.train", *sys.argv[1:]]
    runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)


# ------------------------------------------------------------------------------ run helpers
def runner_command(results_dir: Path, *overrides: str, wrapped: bool = False) -> list[str]:
    """The CLI of one run of the campaign (through the fault wrapper if ``wrapped``)."""
    head = ["-c", CHILD_CODE] if wrapped else ["-m", "experiments.train"]
    return [sys.executable, *head, *BASE_RUN, *overrides, f"paths.results_dir={results_dir}"]


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not SECRET_NAME_PATTERN.search(k)}
    env.update({"WANDB_MODE": "disabled", "WANDB_ERROR_REPORTING": "false"})
    env.update(extra or {})
    return env


def run_cli(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float = RUN_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=REPO_ROOT,
        env=_clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec,
    )


def start_cli(command: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> Any:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as sink:
        return subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=_clean_env(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(process: subprocess.Popen[Any]) -> bool:
    """SIGKILL ``process`` if it still runs; True when it was killed."""
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return True


def wait_for(condition: Callable[[], bool], process: Any, timeout: float = RUN_TIMEOUT_S) -> bool:
    """Poll ``condition`` until it holds (True) or ``process`` ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.005)
    return False


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def summary_of(run_dir: Path) -> dict[str, Any]:
    return read_summary(run_dir / SUMMARY_FILE) or {}


def difference_from(run_dir: Path, reference: Path) -> str | None:
    """None when ``run_dir`` finished with the reference's records and final weights."""
    from experiments.checkpoint import load_checkpoint

    if summary_of(run_dir).get("status") != rd.FINISHED:
        return f"status {summary_of(run_dir).get('status')!r}, not finished"
    for name in (rd.METRICS_FILE, TRACE_FILE):
        try:
            mine = _without_times(read_records(run_dir / name))
        except DamagedRecords as error:
            return f"{name} holds a broken line ({error})"
        if mine != _without_times(read_records(reference / name)):
            return f"{name} differs from the uninterrupted run"
    mine = load_checkpoint(run_dir / rd.CHECKPOINT_FILE)["model"]
    theirs = load_checkpoint(reference / rd.CHECKPOINT_FILE)["model"]
    if mine.keys() != theirs.keys() or any(not mine[k].equal(theirs[k]) for k in theirs):
        return "final weights differ from the uninterrupted run"
    return None


def _log_text(run_dir: Path) -> str:
    path = run_dir / rd.LOG_FILE
    return path.read_text(errors="replace") if path.is_file() else ""


class Workspace:
    """Scratch directories of a campaign and the runs every scenario compares against."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.random = random.Random(seed)
        self._reference: Path | None = None
        self._reference_s = 0.0
        self._partial: Path | None = None
        self._counter = itertools.count()

    def fresh(self, name: str) -> Path:
        path = self.root / f"{name}-{next(self._counter)}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    @property
    def reference(self) -> Path:
        """The run directory of one uninterrupted run."""
        if self._reference is None:
            results = self.fresh("reference")
            result = run_cli(runner_command(results))
            if result.returncode != 0:
                raise RuntimeError(f"the reference run failed:\n{result.stdout[-3000:]}")
            self._reference = results / RUN_SUBDIR
            self._reference_s = float(summary_of(self._reference)["wall_time_s"])
        return self._reference

    @property
    def training_seconds(self) -> float:
        _ = self.reference
        return self._reference_s

    def partial_run(self, results: Path, saves: int = 2) -> Path:
        """``results`` holding a run killed right after its ``saves``-th checkpoint."""
        if self._partial is None:
            template = self.fresh("partial")
            env = {KILL_AFTER_SAVES_ENV: str(saves)}
            result = run_cli(runner_command(template, wrapped=True), env=env)
            if result.returncode != -signal.SIGKILL:
                raise RuntimeError(f"the partial run was not killed:\n{result.stdout[-3000:]}")
            self._partial = template
        shutil.rmtree(results, ignore_errors=True)
        shutil.copytree(self._partial, results)
        return results / RUN_SUBDIR


# ---------------------------------------------------------------------- 1. SIGKILL anywhere
def _is_file(path: Path) -> bool:
    return path.is_file()


def _has_records(path: Path, count: int) -> bool:
    try:
        return len(read_records(path)) >= count
    except DamagedRecords:  # a line being written right now
        return False


def _checkpoint_temp_exists(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(p.name.endswith(".tmp") for p in folder.iterdir())


def scenario_sigkill(ws: Workspace, trials: int) -> Outcome:
    """Kill -9 at a random moment (every other trial: inside a checkpoint write, slowed by
    the wrapper), relaunch, and compare with the uninterrupted run."""
    outcome = Outcome("sigkill")
    killed_in_save = 0
    for trial in range(trials):
        results = ws.fresh("sigkill")
        run_dir = results / RUN_SUBDIR
        in_save = trial % 2 == 0
        env = {SLOW_FSYNC_ENV: "0.15"} if in_save else None
        process = start_cli(runner_command(results, wrapped=in_save), results / "kill.out", env)
        if in_save:
            epoch = ws.random.randint(1, EPOCHS - 1)
            wait_for(partial(_has_records, run_dir / rd.METRICS_FILE, epoch), process)
            wait_for(partial(_checkpoint_temp_exists, run_dir), process)
            time.sleep(ws.random.uniform(0.0, 1.0))
        else:
            wait_for(partial(_is_file, run_dir / rd.SUMMARY_FILE), process)
            time.sleep(ws.random.uniform(0.0, ws.training_seconds))
        killed = kill(process)
        killed_in_save += killed and in_save
        relaunch = run_cli(runner_command(results))
        problem = None if relaunch.returncode == 0 else f"relaunch exit {relaunch.returncode}"
        outcome.record(problem or difference_from(run_dir, ws.reference), f"trial {trial}")
    outcome.notes.append(f"{killed_in_save} killed during a checkpoint write")
    return outcome


# ----------------------------------------------------------------- 2. damaged checkpoints
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def _damage_both(path: Path) -> None:
    _truncate(path)
    _flip_bytes(path.with_name("prev.pt"))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "resuming from the fallback checkpoint"),
    "bytes flipped": (_flip_bytes, "resuming from the fallback checkpoint"),
    "sidecar lost": (lambda p: p.with_name("last.pt.sha256").unlink(), "has no checksum file"),
    "both damaged": (_damage_both, "restarts from scratch"),
}


def scenario_corrupt_checkpoint(ws: Workspace, trials: int) -> Outcome:
    """Damage checkpoints of an interrupted run; the relaunch must say what it does and end
    identical to the uninterrupted run (fallback to prev.pt, or a restart from scratch)."""
    outcome = Outcome("corrupt_checkpoint")
    kinds = list(CORRUPTIONS)
    for trial in range(trials):
        kind = kinds[trial % len(kinds)]
        damage, expected_message = CORRUPTIONS[kind]
        results = ws.fresh("corrupt")
        run_dir = ws.partial_run(results)
        damage(run_dir / rd.CHECKPOINT_FILE)
        relaunch = run_cli(runner_command(results))
        problem = None
        if relaunch.returncode != 0:
            problem = f"relaunch exit {relaunch.returncode}: {relaunch.stdout[-500:]}"
        elif expected_message not in _log_text(run_dir):
            problem = f"train.log does not say {expected_message!r}"
        outcome.record(problem or difference_from(run_dir, ws.reference), kind)
    return outcome


# ------------------------------------------------------------------------- 3. a full disk
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` at ``path``; yields False (and mounts nothing) if not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
        if shutil.which("mount")
        else False
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _grow_tmpfs(path: Path) -> bool:
    command = ["mount", "-o", "remount,size=64m", str(path)]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def _file_size_limit(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _disk_full_problem(
    result: subprocess.CompletedProcess[str], run_dir: Path, ref: Path
) -> str | None:
    """Checks after the run hit the full disk: clear message, records and checkpoint intact."""
    from experiments.checkpoint import CheckpointError, verify_checkpoint

    if result.returncode == 0:
        return "the run did not notice the full disk"
    if "the disk is full" not in result.stdout + result.stderr:
        return "no clear 'the disk is full' message"
    try:
        metrics = read_records(run_dir / rd.METRICS_FILE)
    except DamagedRecords as error:
        return f"metrics.jsonl was left with a broken line ({error})"
    if (
        _without_times(metrics)
        != _without_times(read_records(ref / rd.METRICS_FILE))[: len(metrics)]
    ):
        return "metrics.jsonl no longer matches the run's records"
    checkpoints = [p for p in (run_dir / "checkpoints").glob("*.pt") if p.name != "next.pt"]
    for checkpoint in checkpoints:
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError as error:
            return f"a checkpoint was damaged by the full disk: {error}"
    return None


def scenario_disk_full(ws: Workspace, trials: int) -> Outcome:
    """Write the run onto a small tmpfs (fallback: RLIMIT_FSIZE below the checkpoint size);
    it must stop with a clear message, keep its files, and finish once space is back."""
    outcome = Outcome("disk_full")
    sizes = ["1m", "2500k", "4m", "4500k"]
    for trial in range(trials):
        size = sizes[trial % len(sizes)]
        mount_point = ws.fresh("disk")
        with small_tmpfs(mount_point, size) as mounted:
            if mounted:
                results = mount_point / "results"
                run_dir = results / RUN_SUBDIR
                first = run_cli(runner_command(results))
                method = f"tmpfs {size}"
            else:
                run_dir = ws.partial_run(mount_point / "results")
                results = mount_point / "results"
                first = run_cli(runner_command(results), preexec=_file_size_limit(1 << 20))
                method = "RLIMIT_FSIZE 1 MiB"
            problem = _disk_full_problem(first, run_dir, ws.reference)
            if problem is None and mounted and not _grow_tmpfs(mount_point):
                problem = "could not give the tmpfs more space"
            if problem is None:
                relaunch = run_cli(runner_command(results))
                if relaunch.returncode != 0:
                    problem = f"relaunch with space exit {relaunch.returncode}"
                else:
                    problem = difference_from(run_dir, ws.reference)
            outcome.record(problem, method)
    return outcome


# ------------------------------------------------------------------------- 4. divergence
def scenario_divergence(ws: Workspace, trials: int) -> Outcome:
    """A multirun with ``trials`` exploding learning rates and one good one: the bad runs end
    ``diverged`` with their files, the good one finishes, aggregate lists the bad ones."""
    outcome = Outcome("divergence")
    results = ws.fresh("diverge")
    bad = [f"1e{6 + 2 * i}" for i in range(trials)]
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "-m",
        *[o for o in BASE_RUN if not o.startswith("trainer.epochs")],
        "trainer.epochs=2",
        "scheduler=constant",
        "scheduler.label='constant-lr=${optimizer.lr}'",
        f"optimizer.lr={','.join([*bad, '0.05'])}",
        f"paths.results_dir={results}",
    ]
    sweep = run_cli(command, timeout=RUN_TIMEOUT_S * (trials + 1))
    base = results / "runs/quick/digits/digits-resnet8"
    aggregate = run_cli(
        [
            sys.executable,
            "-m",
            "scripts.aggregate",
            "--runs",
            str(results / "runs"),
            "--out",
            str(results / "tables"),
        ]
    )
    listing = aggregate.stdout + aggregate.stderr
    # BASE_RUN's 8x8 digits and 2 epochs differ from the preset: the run identity's suffix.
    suffix = ",data.image_size=8,trainer.epochs=2/seed=0"
    good = summary_of(base / f"constant-lr=0.05{suffix}").get("status")
    for lr in bad:
        run_dir = base / f"constant-lr={float(lr)}{suffix}"
        summary = summary_of(run_dir)
        problem = None
        if summary.get("status") != rd.DIVERGED:
            problem = f"status {summary.get('status')!r}"
        elif "non-finite" not in (summary.get("message") or ""):
            problem = "no clear message in summary.json"
        elif not all((run_dir / n).is_file() for n in (rd.LOG_FILE, str(HYDRA_CONFIG))):
            problem = "files of the diverged run are missing"
        elif good != rd.FINISHED:
            problem = f"the good job of the sweep did not finish ({good!r})"
        elif not re.search(rf"constant-lr={re.escape(str(float(lr)))}\S* is diverged", listing):
            problem = "scripts.aggregate does not list the run as diverged"
        outcome.record(problem, f"lr={lr}")
    outcome.notes.append(f"sweep exit {sweep.returncode}")
    return outcome


# ------------------------------------------------------------------------------ 5. wandb
@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A local TCP port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def _refuse(self) -> None:
        body = b'{"errors": [{"message": "invalid api key"}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def unauthorized_server() -> Iterator[int]:
    """A local HTTP server that answers 401 (an invalid API key) to every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    yield 9


WANDB_TROUBLES: dict[str, Callable[[], contextlib.AbstractContextManager[int]]] = {
    "no route (closed port)": closed_port,
    "server never answers": silent_server,
    "invalid API key (401)": unauthorized_server,
}
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _seconds_between(log: str, start: str, end: str) -> float | None:
    times = {}
    for line in log.splitlines():
        for marker in (start, end):
            match = LOG_TIME.match(line)
            if marker in line and match and marker not in times:
                times[marker] = time.mktime(time.strptime(match[1][:19], "%Y-%m-%d %H:%M:%S"))
                times[marker] += int(match[1][20:]) / 1000
    if start in times and end in times:
        return times[end] - times[start]
    return None


def scenario_wandb(ws: Workspace, trials: int, init_timeout_s: float = 30.0) -> Outcome:
    """logger=wandb online against a dead, a silent and a refusing local server: the run must
    finish, fall back to offline within init_timeout_s (+ slack), and say how to sync."""
    outcome = Outcome("wandb")
    troubles = list(WANDB_TROUBLES)
    worst = 0.0
    for trial in range(trials):
        trouble = troubles[trial % len(troubles)]
        results = ws.fresh("wandb")
        run_dir = results / run_subdir(1)
        with WANDB_TROUBLES[trouble]() as port:
            env = {
                "WANDB_MODE": "online",
                "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
                "WANDB_API_KEY": "f" * 40,
            }
            command = runner_command(
                results,
                "logger=wandb",
                "trainer.epochs=1",
                f"logger.init_timeout_s={init_timeout_s}",
            )
            command = [c for c in command if c != f"trainer.epochs={EPOCHS}"]
            started = time.monotonic()
            result = run_cli(command, env=env, timeout=RUN_TIMEOUT_S + 3 * init_timeout_s)
            wall = time.monotonic() - started
        log = _log_text(run_dir)
        fallback = _seconds_between(log, "starting ", "wandb online init failed")
        problem = None
        if result.returncode != 0:
            problem = f"exit {result.returncode}: {result.stdout[-500:]}"
        elif summary_of(run_dir).get("status") != rd.FINISHED:
            problem = "run did not finish"
        elif fallback is None or "wandb sync" not in log:
            problem = "no offline fallback with a sync hint in train.log"
        elif not list((run_dir / "wandb").glob("offline-run-*")):
            problem = "no offline wandb run was written"
        elif fallback > init_timeout_s + 15:
            problem = f"fallback took {fallback:.1f}s"
        worst = max(worst, fallback or 0.0)
        outcome.record(problem, f"{trouble} ({wall:.0f}s run)")
    outcome.notes.append(f"slowest fallback {worst:.1f}s at init_timeout_s={init_timeout_s:g}")
    return outcome


# ------------------------------------------------------------------------ 6. config fuzz
# Keys the fuzz perturbs: (scheduler it belongs to or None, key, valid values, invalid values).
FUZZ_SPEC: list[tuple[str | None, str, list[Any], list[Any]]] = [
    (None, "trainer.epochs", [2, 3], [0, -3]),
    (None, "trainer.batch_size", [1, 64, 1437], [0, -64]),  # 1437: the digits train split
    (None, "trainer.eval_batch_size", [1, 360], [0]),
    (None, "trainer.nan_check_every", [0, 3], [-1]),
    (None, "trainer.devices", [1], [0, -2]),
    (None, "trainer.precision", ["auto", "fp32"], ["fp8", "half"]),
    (None, "trainer.progress", ["plain", "auto"], ["fancy"]),
    (None, "trainer.accelerator", ["cpu"], ["tpu"]),
    (None, "trainer.loader", ["device", "classic"], ["fast"]),
    (None, "optimizer.lr", [1e-4, 0.05, 1.0], [0.0, -0.1]),
    (None, "optimizer.momentum", [0.0, 0.5, 0.99], [1.0, -0.1, 1.5]),
    (None, "optimizer.weight_decay", [0.0, 1e-3], [-1e-4]),
    ("step", "scheduler.gamma", [0.1, 1.0], [0.0, 1.5, -0.2]),
    ("step", "scheduler.milestones", [[1], None], [[0], [5, 9], [1, 1]]),
    ("cosine", "scheduler.eta_min", [0.0, 1e-5], [-0.01, 5.0]),
    ("cosine", "scheduler.warmup_epochs", [0.0, 0.5], [-1.0, 50.0]),
    ("onecycle", "scheduler.pct_start", [0.3, 1.0], [0.0, 1.2]),
    ("onecycle", "scheduler.anneal_strategy", ["cos", "linear"], ["cubic"]),
    ("onecycle", "scheduler.div_factor", [25.0], [0.0, -1.0]),
    ("exp", "scheduler.gamma", [0.5, 1.0], [0.0, 2.0]),
    ("plateau", "scheduler.mode", ["min", "max"], ["avg"]),
    ("plateau", "scheduler.factor", [0.1, 0.5], [0.0, 1.0, 2.0]),
    ("plateau", "scheduler.patience", [0, 3], [-1]),
    ("autodrop", "scheduler.window", [1, 4], [0, -4]),
    ("autodrop", "scheduler.rho", [0.5, 0.95], [0.0, 1.0, 1.5]),
    ("autodrop", "scheduler.buffer_size", [1, 10], [0]),
    ("autodrop", "scheduler.threshold", [0.0, 0.1], [-0.1]),
    ("autodrop_v1", "scheduler.drop_factor", [0.2, 0.5], [0.0, 1.0]),
    ("autodrop_v1", "scheduler.extra_epochs", [1, 2], [0]),
    ("autodrop_v1", "scheduler.theta", [0.0, 0.01], [-0.01]),
    ("adam", "optimizer.betas", [[0.9, 0.999], [0.0, 0.5]], [[1.0, 0.999], [0.9, -0.1]]),
    ("adam", "optimizer.eps", [0.0, 1e-8], [-1e-8]),
]
# The quick preset's sizes spelt out (the preset itself pins optimizer=sgd, so adam could not
# be fuzzed on top of it).
FUZZ_BASE = (
    "data=digits",
    "model=resnet8",
    "data.image_size=8",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.eval_batch_size=360",
    "trainer.accelerator=cpu",
    "trainer.cpu_threads=1",
    "trainer.num_workers=0",
    "trainer.progress=plain",
    "optimizer.lr=0.05",
    "logger=none",
)


def _override(key: str, value: Any) -> str:
    if value is None:
        return f"{key}=null"
    if isinstance(value, list):
        return f"{key}=[{','.join(repr(v) for v in value)}]"
    return f"{key}={value!r}" if not isinstance(value, str) else f"{key}={value}"


def _mentions(message: str, key: str, value: Any) -> bool:
    """``message`` names the key (or an element of it) and the value."""
    shown = {repr(value), str(value)}
    if isinstance(value, float) and value.is_integer():
        shown.add(repr(int(value)))
    if isinstance(value, list):
        shown |= {repr(v) for v in value}
    return key in message and any(s in message for s in shown)


def one_training_step(cfg: Any, choices: dict[str, Any], run_root: Path) -> float:
    """Build the run of ``cfg`` as the runner does and take one optimizer step; its loss."""
    from experiments.console import EpochProgress
    from experiments.job import TrainingJob
    from experiments.loop import train_epoch
    from experiments.run_identity import identify_run
    from experiments.rundir import RunDir
    from experiments.running.processes import DistContext
    from experiments.runtime import select_device
    from experiments.settings import RunSettings

    device = select_device(cfg.trainer.accelerator, 0)
    identity = identify_run(cfg, choices)[1]
    settings = RunSettings.from_config(cfg)
    job = TrainingJob(settings, RunDir(run_root), DistContext(), device, identity)
    job.data.train.set_epoch(0)
    result = train_epoch(
        job.model,
        itertools.islice(iter(job.data.train), 1),
        job.optimizer,
        job.schedule,
        autocast=job.autocast,
        device=job.device,
        ctx=job.ctx,
        progress=EpochProgress(False, 1, 1, 1),
    )
    return result.totals.mean_loss


def fuzz_example(choice: list[tuple[int, bool, int]], root: Path) -> str | None:
    """Check one combination: a list of (spec index, valid?, value index). None when the
    runner did the right thing (refused an invalid one clearly, trained a valid one)."""
    from experiments.config import ConfigError, compose_with_choices
    from experiments.train import run_job
    from experiments.validation import validate_config

    picked: dict[str, tuple[Any, bool]] = {}
    scheduler = optimizer = None
    for index, valid, value_index in choice:
        owner, key, good, bad = FUZZ_SPEC[index]
        if owner in ("adam",):
            optimizer = optimizer or owner
            if optimizer != owner:
                continue
        elif owner is not None:
            scheduler = scheduler or owner
            if scheduler != owner:
                continue
        values = good if valid else bad
        picked.setdefault(key, (values[value_index % len(values)], valid))
    if optimizer == "adam":
        picked.pop("optimizer.momentum", None)  # adam has no momentum (composition refuses it)
    overrides = [*FUZZ_BASE, f"scheduler={scheduler or 'constant'}"]
    if optimizer:
        overrides.append(f"optimizer={optimizer}")
    overrides += [_override(key, value) for key, (value, _) in picked.items()]
    invalid = {key: value for key, (value, valid) in picked.items() if not valid}
    cfg = choices = None
    try:  # the schemas refuse some values at composition already (enum fields)
        cfg, choices = compose_with_choices([*overrides, f"paths.results_dir={root}"])
        validate_config(cfg)
    except ConfigError as error:
        message = str(error)
        if not invalid:
            return f"{overrides[len(FUZZ_BASE) :]}: a valid config was refused: {message}"
        if not any(_mentions(message, k, v) for k, v in invalid.items()):
            return (
                f"{overrides[len(FUZZ_BASE) :]}: the message does not name key and value: {message}"
            )
        if "must" not in message and "allowed" not in message and "expected" not in message:
            return f"{overrides[len(FUZZ_BASE) :]}: the message does not say what is allowed"
        try:
            if cfg is not None:
                run_job(cfg, choices)
        except ConfigError:
            pass
        if (root / "runs").exists():
            return f"{overrides[len(FUZZ_BASE) :]}: run_job wrote files before refusing"
        return None
    if invalid:
        return f"{overrides[len(FUZZ_BASE) :]}: invalid values {invalid} were accepted"
    try:
        one_training_step(cfg, choices, root / "step")
    except Exception as error:  # noqa: BLE001 - any crash of a valid config is a finding
        return f"{overrides[len(FUZZ_BASE) :]}: a valid config failed to train: {error!r}"
    return None


def scenario_config_fuzz(ws: Workspace, trials: int) -> Outcome:
    """Hypothesis draws combinations of valid and invalid schedule, optimizer and trainer
    values; every invalid one must be refused before training, every valid one must train."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    outcome = Outcome("config_fuzz")
    root = ws.fresh("fuzz")
    entry = st.tuples(st.integers(0, len(FUZZ_SPEC) - 1), st.booleans(), st.integers(0, 3))

    @settings(
        max_examples=trials,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(entry, min_size=1, max_size=3))
    def check(choice: list[tuple[int, bool, int]]) -> None:
        example_root = Path(tempfile.mkdtemp(dir=root))
        outcome.record(fuzz_example(choice, example_root), "example")
        shutil.rmtree(example_root, ignore_errors=True)

    import torch

    threads = torch.get_num_threads()
    try:
        check()
    finally:
        torch.set_num_threads(threads)
    return outcome


# ------------------------------------------------------------------- 7. two launches at once
def scenario_lock(ws: Workspace, trials: int) -> Outcome:
    """Launch the same run twice at once: the second exits at once with a clear message and the
    first finishes untouched; a SIGKILLed holder never blocks the next launch."""
    outcome = Outcome("concurrent_launch")
    for trial in range(trials):
        results = ws.fresh("lock")
        run_dir = results / RUN_SUBDIR
        # fsyncs slowed so the first launch is still training when the second one starts
        slow = {SLOW_FSYNC_ENV: "0.4"}
        first = start_cli(runner_command(results, wrapped=True), results / "first.out", slow)
        wait_for(partial(_is_file, run_dir / rd.SUMMARY_FILE), first)
        started = time.monotonic()
        second = run_cli(runner_command(results))
        second_s = time.monotonic() - started
        first.wait(timeout=RUN_TIMEOUT_S)
        output = second.stdout + second.stderr
        problem = None
        if second.returncode == 0 or "being trained by another process" not in output:
            problem = f"second launch exit {second.returncode} without the lock message"
        elif first.returncode != 0:
            problem = f"the first launch failed ({first.returncode})"
        elif _log_text(run_dir).count("starting ") != 1:
            problem = "train.log shows more than one start"
        else:
            problem = difference_from(run_dir, ws.reference)
        outcome.record(problem, f"pair {trial} (second exited after {second_s:.1f}s)")

        stale = start_cli(runner_command(results, "seed=1"), results / "stale.out")
        stale_dir = results / str(RUN_SUBDIR).replace("seed=0", "seed=1")
        wait_for(partial(_is_file, stale_dir / rd.SUMMARY_FILE), stale)
        kill(stale)
        relaunch = run_cli(runner_command(results, "seed=1"))
        problem = None if relaunch.returncode == 0 else "a killed holder's lock blocked a relaunch"
        outcome.record(problem, f"stale lock {trial}")
    return outcome


# --------------------------------------------------------------------------- 8. security
class CodeOnLoad:
    """Pickles to a call of ``open(marker, "w")``: loading it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def plant_malicious_checkpoint(path: Path, marker: Path, *, forge_checksum: bool) -> None:
    """Overwrite ``path`` with a checkpoint carrying a code-running pickle (plain torch.save)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": 1, "epoch": 99, "payload": CodeOnLoad(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    if forge_checksum:
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        path.with_name(path.name + ".sha256").write_text(digest + "\n")


class MkdirOnLoad:
    """Pickles to a call of ``os.mkdir(marker)``, which also runs when a Python-2 pickle is read
    with ``encoding="bytes"`` (its str arguments arrive as bytes): loading it makes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


FAKE_SECRETS = {
    "WANDB_API_KEY": "0" * 24 + "fakewandbkey0000",
    "FAULTS_SERVICE_TOKEN": "tok-3f9a1c-fault-campaign",
    "FAULTS_DB_PASSWORD": "pw-7d2e-never-logged",
    "FAULTS_CLIENT_SECRET": "sec-a41b-do-not-save",
}


def leaked_secrets(run_dir: Path) -> list[str]:
    """``name in file`` for every fake secret value found in any file under ``run_dir``."""
    found = []
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{name} in {path.relative_to(run_dir)}"
                for name, value in FAKE_SECRETS.items()
                if value.encode() in data
            ]
    return found


def scenario_security(ws: Workspace, trials: int) -> Outcome:
    """Malicious checkpoints are refused without running their code (with and without a forged
    checksum), and no secret from the environment lands in any file of a wandb-logged run."""
    outcome = Outcome("security")
    for trial in range(trials):
        forge = trial % 2 == 0
        results = ws.fresh("pickle")
        run_dir = ws.partial_run(results)
        marker = results / "code-ran"
        plant_malicious_checkpoint(run_dir / rd.CHECKPOINT_FILE, marker, forge_checksum=forge)
        relaunch = run_cli(runner_command(results))
        expected = "was refused" if forge else "corrupt or truncated"
        problem = None
        if marker.exists():
            problem = "the pickle's code ran"
        elif relaunch.returncode != 0:
            problem = f"relaunch exit {relaunch.returncode}"
        elif expected not in _log_text(run_dir):
            problem = f"train.log does not say {expected!r}"
        else:
            problem = difference_from(run_dir, ws.reference)
        label = "pickle, forged checksum" if forge else "pickle, no checksum"
        outcome.record(problem, label)

    results = ws.fresh("secrets")
    env = {**FAKE_SECRETS, "WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9"}
    command = [c for c in runner_command(results, "logger=wandb") if c != "logger=none"]
    result = run_cli(command, env=env)
    run_dir = results / RUN_SUBDIR
    leaks = leaked_secrets(run_dir)
    has_wandb_files = bool(list((run_dir / "wandb").glob("offline-run-*/*.wandb")))
    for name in FAKE_SECRETS:
        problem = None
        if result.returncode != 0 or not has_wandb_files:
            problem = f"the offline wandb run did not complete (exit {result.returncode})"
        elif any(leak.startswith(f"{name} ") for leak in leaks):
            problem = "; ".join(leak for leak in leaks if leak.startswith(f"{name} "))
        outcome.record(problem, f"secret {name}")
    return outcome


# ---------------------------------------------------------------------- 9. hostile datasets
# The digits run of the campaign with another dataset: one epoch of the small ResNet.
DATA_RUN = (
    *(o for o in BASE_RUN if not o.startswith(("data.image_size", "trainer.epochs"))),
    "trainer.epochs=1",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=8",
    "trainer.num_workers=0",
    "protocol=paper",  # no validation split: these datasets are far smaller than its size
)
CIFAR_RUN = ("data=cifar10", "data.image_size=32")
IMAGENET_RUN = (
    "data=imagenet",
    "trainer.loader=classic",
    "data.crop_size=16",
    "data.resize_size=20",
)


@dataclass
class DataRun:
    """What one run on a hostile dataset left: its exit, its output, its summary."""

    result: subprocess.CompletedProcess[str]
    summary: dict[str, Any]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


# Private memory a data run may map (RLIMIT_DATA): a tiny run needs well under 1 GiB, so a
# reader that allocated what a hostile file declares fails with MemoryError, not the machine.
DATA_RUN_MEMORY_BYTES = 4 << 30


def _private_memory_limit() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_RUN_MEMORY_BYTES, DATA_RUN_MEMORY_BYTES))


def run_on_data(
    ws: Workspace, data_dir: Path, *overrides: str, trusted_md5: dict | None = None
) -> DataRun:
    results = ws.fresh("data-run")
    env = {TRUSTED_CIFAR_MD5_ENV: json.dumps(trusted_md5)} if trusted_md5 else None
    command = [
        sys.executable,
        "-c",
        CHILD_CODE,
        *DATA_RUN,
        *overrides,
        f"paths.data_dir={data_dir}",
        f"paths.results_dir={results}",
    ]
    result = run_cli(command, env=env, preexec=_private_memory_limit)
    summaries = list((results / "runs").rglob(rd.SUMMARY_FILE))
    return DataRun(result, summary_of(summaries[0].parent) if summaries else {})


def refused(run: DataRun, *expected: str) -> str | None:
    """None when the run failed before training, with every ``expected`` text in its output."""
    if run.result.returncode == 0:
        return "the run was not refused"
    missing = [text for text in expected if text not in run.output]
    return f"the refusal does not say {missing}" if missing else None


def refused_before_training(run: DataRun, *expected: str) -> str | None:
    """``refused``, and before the run had started (no summary.json)."""
    if run.summary:
        return f"the run started: summary.json says {run.summary.get('status')!r}"
    return refused(run, *expected)


def finished(run: DataRun, **fields: Any) -> str | None:
    """None when the run finished and its summary holds ``fields``."""
    if run.result.returncode != 0 or run.summary.get("status") != rd.FINISHED:
        return f"exit {run.result.returncode}, status {run.summary.get('status')!r}"
    wrong = {k: run.summary.get(k) for k, v in fields.items() if run.summary.get(k) != v}
    return f"summary.json has {wrong}, expected {fields}" if wrong else None


def _fake_cifar(ws: Workspace) -> tuple[Path, Any]:
    from tests.fake_datasets import write_fake_cifar

    data_dir = ws.fresh("cifar-data")
    return data_dir, write_fake_cifar(data_dir, "cifar10", n_train=40, n_test=16)


def _plant_cifar_code(path: Path, marker: Path) -> None:
    import pickle

    from tests.fake_datasets import py2_pickle

    content = pickle.loads(path.read_bytes(), encoding="bytes")  # the campaign's own file
    content[b"payload"] = MkdirOnLoad(marker)
    path.write_bytes(py2_pickle(content))


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # a pixel byte: the pickle stays valid
    path.write_bytes(bytes(data))


def cifar_code_carrying(ws: Workspace, name: str, verify: bool) -> str | None:
    data_dir, fake = _fake_cifar(ws)
    marker = data_dir / "code-ran"
    _plant_cifar_code(fake.folder / name, marker)
    if verify:
        run = run_on_data(ws, data_dir, *CIFAR_RUN, trusted_md5={"cifar10": fake.file_md5})
        problem = refused(run, str(fake.folder / name), "has md5")
    else:
        run = run_on_data(ws, data_dir, *CIFAR_RUN, "data.verify=false")
        problem = refused(run, str(fake.folder / name), "global posix.mkdir")
    return "the pickle's code ran" if marker.exists() else problem


def cifar_tampered_byte(ws: Workspace) -> str | None:
    data_dir, fake = _fake_cifar(ws)
    trusted = {"cifar10": fake.file_md5}
    problem = finished(run_on_data(ws, data_dir, *CIFAR_RUN, trusted_md5=trusted), data_verify=True)
    if problem:
        return f"the untouched release: {problem}"
    _flip_one_byte(fake.folder / "data_batch_3")
    run = run_on_data(ws, data_dir, *CIFAR_RUN, trusted_md5=trusted)
    problem = refused(run, str(fake.folder / "data_batch_3"), "has md5", "data.download=true")
    if problem:
        return f"the tampered release: {problem}"
    run = run_on_data(ws, data_dir, *CIFAR_RUN, "data.verify=false", trusted_md5=trusted)
    problem = finished(run, data_verify=False)
    return f"the tampered release with data.verify=false: {problem}" if problem else None


def _md5_as_written(fake: Any) -> dict[str, dict[str, str]]:
    """The CIFAR-10 md5s of ``fake``'s files as they are now (the child takes them as official,
    so what the restricted reader does with a planted file is what is tried)."""
    files = {name: (fake.folder / name).read_bytes() for name in fake.file_md5}
    return {"cifar10": {name: hashlib.md5(data).hexdigest() for name, data in files.items()}}


def cifar_forged_stamp(ws: Workspace) -> str | None:
    """A planted copy with the verification stamp earlier versions trusted, forged to match it."""
    data_dir, fake = _fake_cifar(ws)
    _flip_one_byte(fake.folder / "data_batch_3")
    stamp = {}
    for name, md5 in fake.file_md5.items():
        status = (fake.folder / name).stat()
        identity = (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
        keys = ("size", "mtime_ns", "ctime_ns", "inode")
        stamp[name] = {**dict(zip(keys, identity, strict=True)), "md5": md5}
    (fake.folder / ".autodrop-verified.json").write_text(json.dumps(stamp))
    run = run_on_data(ws, data_dir, *CIFAR_RUN, trusted_md5={"cifar10": fake.file_md5})
    return refused_before_training(run, f"{fake.folder / 'data_batch_3'} has md5")


def cifar_planted(
    ws: Workspace, name: str, verify: bool, expected: str, **changes: Any
) -> str | None:
    """CIFAR-10 file ``name`` rewritten with ``changes`` (``tests.fake_datasets`` constructs)
    and taken as official: refused naming the file, before anything is allocated."""
    from tests.fake_datasets import hostile_cifar_pickle

    data_dir, fake = _fake_cifar(ws)
    path = fake.folder / name
    hostile_cifar_pickle(path, **changes)
    verify_override = f"data.verify={str(verify).lower()}"
    run = run_on_data(ws, data_dir, *CIFAR_RUN, verify_override, trusted_md5=_md5_as_written(fake))
    return refused_before_training(run, str(path), expected)


def cifar_object_array_bomb(ws: Workspace, verify: bool) -> str | None:
    """The issue's ~150-byte pickle declaring 2^31 - 1 objects (17 GB once numpy allocates)."""
    from tests.fake_datasets import OBJECT_ARRAY_BOMB

    return cifar_planted(ws, "test_batch", verify, "dtype 'O8'", data=OBJECT_ARRAY_BOMB)


def cifar_empty_test_split(ws: Workspace) -> str | None:
    import numpy as np

    empty = {"data": np.zeros((0, 3072), dtype=np.uint8), "labels": [], "filenames": []}
    return cifar_planted(ws, "test_batch", False, "holds no images", **empty)


def cifar_memo_bomb(ws: Workspace) -> str | None:
    from tests.fake_datasets import memo_bomb

    data_dir, fake = _fake_cifar(ws)
    path = fake.folder / "batches.meta"
    path.write_bytes(memo_bomb(2**30))
    run = run_on_data(ws, data_dir, *CIFAR_RUN, "data.verify=false")
    return refused_before_training(run, str(path), "memo slot 1073741824")


def _fake_imagenet(ws: Workspace, per_class: int = 4) -> tuple[Path, Any]:
    from tests.fake_datasets import write_fake_imagenet

    data_dir = ws.fresh("imagenet-data")
    return data_dir, write_fake_imagenet(data_dir / "imagenet", 2, per_class, 24, val_per_class=2)


def imagenet_link_out(ws: Workspace) -> str | None:
    data_dir, fake = _fake_imagenet(ws)
    outside = data_dir / "elsewhere"
    outside.mkdir()
    link = fake.root / "train" / fake.classes[1]
    os.rename(link, outside / link.name)
    link.symlink_to(outside / link.name)
    problem = refused(run_on_data(ws, data_dir, *IMAGENET_RUN), str(link), "data.follow_links")
    if problem:
        return problem
    run = run_on_data(ws, data_dir, *IMAGENET_RUN, "data.follow_links=true")
    return finished(run, steps_per_epoch=2)


def imagenet_loop(ws: Workspace) -> str | None:
    data_dir, fake = _fake_imagenet(ws, per_class=8)
    (fake.root / "train" / fake.classes[0] / "loop").symlink_to("..")
    # 16 images at batch 4: a loop that multiplied them would make many more steps
    return finished(run_on_data(ws, data_dir, *IMAGENET_RUN), steps_per_epoch=4)


def imagenet_truncated(ws: Workspace) -> str | None:
    data_dir, fake = _fake_imagenet(ws)
    bad = fake.train_files[3]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    problem = refused(
        run_on_data(ws, data_dir, *IMAGENET_RUN), str(bad), "cannot be read as an image"
    )
    if problem:
        return problem
    run = run_on_data(ws, data_dir, *IMAGENET_RUN, "data.skip_bad_images=true")
    return finished(run, data_skipped_images=1)


def imagenet_train_val_overlap(ws: Workspace, hard: bool) -> str | None:
    """Validation images put into train by a class-folder link inside the root (``train/<c>``
    -> ``../val/<c>``) or by hard links: refused naming a train path, a val path, the count."""
    data_dir, fake = _fake_imagenet(ws)
    wnid = fake.classes[1]
    train_class, val_class = fake.root / "train" / wnid, fake.root / "val" / wnid
    if hard:
        for image in sorted(val_class.iterdir()):
            os.link(image, train_class / f"copy_{image.name}")
    else:
        shutil.rmtree(train_class)
        train_class.symlink_to(Path("..") / "val" / wnid)
    run = run_on_data(ws, data_dir, *IMAGENET_RUN)
    expected = ("train and val share 2 image files", str(train_class), str(val_class))
    return refused_before_training(run, *expected)


def imagenet_oversized(ws: Workspace) -> str | None:
    from PIL import Image

    data_dir, fake = _fake_imagenet(ws)
    Image.new("RGB", (40, 30)).save(fake.val_files[0], format="JPEG")
    run = run_on_data(ws, data_dir, *IMAGENET_RUN, "data.max_image_pixels=1000")
    return refused(run, str(fake.val_files[0]), "1200 pixels", "data.max_image_pixels=1000")


DATA_FAULTS: dict[str, Callable[[Workspace], str | None]] = {
    **{
        f"code-carrying {name}, data.verify={str(verify).lower()}": partial(
            cifar_code_carrying, name=name, verify=verify
        )
        for name in ("data_batch_1", "test_batch", "batches.meta")
        for verify in (False, True)
    },
    "cifar tampered byte": cifar_tampered_byte,
    "cifar planted copy with a forged verification stamp": cifar_forged_stamp,
    **{
        f"cifar object-array bomb, data.verify={str(verify).lower()}": partial(
            cifar_object_array_bomb, verify=verify
        )
        for verify in (False, True)
    },
    "cifar memo bomb": cifar_memo_bomb,
    # data_batch_2 of the campaign's fake holds 8 images
    "cifar label 9.9, data.verify=false": partial(
        cifar_planted,
        name="data_batch_2",
        verify=False,
        labels=[9.9] * 8,
        expected="is 9.9 (float)",
    ),
    "cifar label b'7', data.verify=true": partial(
        cifar_planted,
        name="data_batch_2",
        verify=True,
        labels=[b"7"] * 8,
        expected="is b'7' (bytes)",
    ),
    "cifar empty test split, data.verify=false": cifar_empty_test_split,
    "imagenet link out of the root": imagenet_link_out,
    "imagenet symlink loop": imagenet_loop,
    "imagenet truncated jpeg": imagenet_truncated,
    "imagenet oversized image": imagenet_oversized,
    "imagenet train/val overlap by a class-folder link": partial(
        imagenet_train_val_overlap, hard=False
    ),
    "imagenet train/val overlap by hard links": partial(imagenet_train_val_overlap, hard=True),
}


def scenario_hostile_data(ws: Workspace, trials: int) -> Outcome:
    """Hostile dataset files through the real runner: code-carrying CIFAR pickles (with and
    without the md5 check) never run, a tampered byte is refused (and accepted only with
    data.verify=false, recorded in summary.json), also under a forged verification stamp; an
    object-array bomb, a memo bomb, labels that are not ints and an empty split are refused
    before training (the bombs under a 4 GiB memory limit); ImageNet links out of the root,
    loops, truncated and oversized images are refused or handled as configured, and train/val
    overlaps (link or hard link) are refused. ``trials`` cases, taken in order (all of them by
    default)."""
    outcome = Outcome("hostile_data")
    cases = list(DATA_FAULTS.items())
    for label, case in cases[: min(trials, len(cases))]:
        outcome.record(case(ws), label)
    return outcome


LINK_ENTRIES = (rd.LOCK_FILE, rd.LOG_FILE, str(HYDRA_CONFIG), rd.METRICS_FILE, rd.CHECKPOINT_FILE)
ESCAPING_NAMES = ("scheduler.label=../../../../x", "experiment_name=../../x", "model.name=../x")


def planted_link(ws: Workspace, entry: str) -> str | None:
    """A link planted at ``entry`` of a fresh run directory: refused naming it, target kept."""
    results = ws.fresh("link")
    target = results / "precious.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("must stay byte-identical\n")
    link = results / RUN_SUBDIR / entry
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    result = run_cli(runner_command(results))
    if result.returncode == 0:
        return f"a run with {entry} linked out trained"
    if target.read_text() != "must stay byte-identical\n":
        return f"the target of {entry} was written through"
    if "symbolic links" not in result.stdout + result.stderr:
        return f"no message naming the planted link {entry}"
    return None


def escaping_name(ws: Workspace, override: str) -> str | None:
    """A name that would leave the results directory: refused, nothing written anywhere."""
    scratch = ws.fresh("escape")
    scratch.mkdir(parents=True, exist_ok=True)
    for mode in ((), ("-m",)):
        result = run_cli(runner_command(scratch / "results", *mode, override))
        if result.returncode == 0:
            return f"{override} {' '.join(mode)} was accepted"
    written = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))
    return f"{override} wrote {written}" if written else None


def scenario_planted_links(ws: Workspace, trials: int) -> Outcome:
    """Links planted in a run directory (lock, log, .hydra, records, checkpoint) and names that
    would escape the results directory: every launch is refused and writes nothing."""
    outcome = Outcome("planted_links")
    cases = [(f"link at {e}", partial(planted_link, entry=e)) for e in LINK_ENTRIES]
    cases += [(f"escaping {o}", partial(escaping_name, override=o)) for o in ESCAPING_NAMES]
    for label, case in cases[: min(trials, len(cases))]:
        outcome.record(case(ws), label)
    return outcome


# ------------------------------------ 11. run identity, records and values (a second pass)
def _copied_reference(ws: Workspace) -> tuple[Path, Path]:
    """A fresh results directory holding a copy of the finished reference run; its run dir."""
    results = ws.fresh("identity")
    source = ws.reference.parents[len(RUN_SUBDIR.parts) - 1]
    shutil.copytree(source, results, dirs_exist_ok=True)
    return results, results / RUN_SUBDIR


def _files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def _refused_unchanged(
    result: subprocess.CompletedProcess[str], run_dir: Path, before: dict, *expected: str
) -> str | None:
    """None when ``result`` was refused with exit 2 naming every ``expected`` text and
    ``run_dir`` kept every byte."""
    if result.returncode != 2:
        return f"exit {result.returncode}, expected a refusal (2)"
    missing = [text for text in expected if text not in _output(result)]
    if missing:
        return f"the refusal does not say {missing}: {result.stderr.strip()[-300:]}"
    return "the refused launch changed the run directory" if _files_of(run_dir) != before else None


def rounding_skip(ws: Workspace) -> str | None:
    """A finished run relaunched with trainer.channels_last=true: skipped, saying so."""
    results, run_dir = _copied_reference(ws)
    before = _files_of(run_dir)
    result = run_cli(runner_command(results, "trainer.channels_last=true"))
    if result.returncode != 0 or "skipped" not in _output(result):
        return f"exit {result.returncode}, not skipped"
    if "trained with other rounding values: trainer.channels_last: False -> True" not in (
        _output(result)
    ):
        return "the skip line does not name the rounding value that differs"
    return "the skip changed the run directory" if _files_of(run_dir) != before else None


def rounding_resume(ws: Workspace, allow: bool) -> str | None:
    """SIGKILL after a checkpoint, relaunch with channels_last=true: refused naming key, old
    and new value; then either the same command resumes exactly, or the change allowed is
    recorded with the resume."""
    results = ws.fresh("rounding-resume")
    run_dir = ws.partial_run(results)
    before = _files_of(run_dir)
    changed = runner_command(results, "trainer.channels_last=true")
    problem = _refused_unchanged(
        run_cli(changed),
        run_dir,
        before,
        "trainer.channels_last: False -> True",
        "trainer.allow_numerics_change=true",
    )
    if problem:
        return problem
    if not allow:
        relaunch = run_cli(runner_command(results))
        if relaunch.returncode != 0:
            return f"the unchanged relaunch: exit {relaunch.returncode}"
        return difference_from(run_dir, ws.reference)
    relaunch = run_cli([*changed, "trainer.allow_numerics_change=true"])
    summary = summary_of(run_dir)
    if relaunch.returncode != 0 or summary.get("status") != rd.FINISHED:
        return f"the allowed relaunch: exit {relaunch.returncode}"
    recorded = (summary.get("resumes") or [{}])[-1].get("numerics_change_allowed")
    if recorded != ["trainer.channels_last: False -> True"]:
        return f"summary.json records {recorded!r} for the allowed change"
    return None


def unsynchronised_batchnorm(ws: Workspace) -> str | None:
    """trainer.devices=2 trainer.sync_bn=false beside the finished one-process run."""
    results = ws.fresh("bn")
    short = ("trainer.sync_bn=false", "trainer.epochs=1")
    first = run_cli(runner_command(results, *short))
    second = run_cli(runner_command(results, *short, "trainer.devices=2"))
    if first.returncode or second.returncode:
        return f"exits {first.returncode}, {second.returncode}"
    if "skipped" in _output(second):
        return "the two-process run was skipped as the one-process run"
    finished = sorted(p.parent.parent.name for p in (results / "runs").rglob(rd.SUMMARY_FILE))
    return None if len(finished) == 2 else f"runs found: {finished}"


def precision_resolved(ws: Workspace, finished: bool) -> str | None:
    """A run trained in fp32 (auto on this CPU) relaunched where auto means bf16 (the wrapper
    stands in for a GPU): refused naming the precision, whether finished or interrupted."""
    if finished:
        results, run_dir = _copied_reference(ws)
    else:
        results = ws.fresh("precision")
        run_dir = ws.partial_run(results)
    before = _files_of(run_dir)
    result = run_cli(runner_command(results, wrapped=True), env={AUTO_PRECISION_ENV: "bf16"})
    return _refused_unchanged(result, run_dir, before, "trainer.precision: 'fp32' -> 'bf16'")


def skipping_images_is_another_run(ws: Workspace) -> str | None:
    """data.skip_bad_images=true changes which images train: never skipped into the run."""
    results, run_dir = _copied_reference(ws)
    result = run_cli(runner_command(results, "data.skip_bad_images=true"))
    if result.returncode != 0 or "skipped" in _output(result):
        return f"exit {result.returncode}: {result.stdout[-200:]}"
    label = f"autodrop,data.image_size=8,data.skip_bad_images=true,trainer.epochs={EPOCHS}"
    other = RUN_SUBDIR.parent.with_name(label) / RUN_SUBDIR.name
    return None if (results / other / rd.SUMMARY_FILE).is_file() else "no run of its own"


def other_data(ws: Workspace, dataset: str) -> str | None:
    """The same command on other data (another CIFAR copy read unverified, an image added to
    ImageNet): refused naming data.fingerprint, for a finished run."""
    from tests.fake_datasets import write_fake_cifar

    results = ws.fresh("other-data")
    if dataset == "cifar10":
        data_dir, _ = _fake_cifar(ws)
        overrides = [*DATA_RUN, *CIFAR_RUN, "data.verify=false"]
    else:
        data_dir, fake = _fake_imagenet(ws)
        overrides = [*DATA_RUN, *IMAGENET_RUN]
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        *overrides,
        f"paths.data_dir={data_dir}",
        f"paths.results_dir={results}",
    ]
    first = run_cli(command)
    if first.returncode != 0:
        return f"the first run: exit {first.returncode}: {first.stderr[-300:]}"
    (summary_path,) = (results / "runs").rglob(rd.SUMMARY_FILE)
    before = _files_of(summary_path.parent)
    if dataset == "cifar10":
        write_fake_cifar(data_dir, "cifar10", n_train=40, n_test=16, seed=1)
    else:
        shutil.copy(fake.train_files[0], fake.train_files[0].with_name("added.JPEG"))
    return _refused_unchanged(run_cli(command), summary_path.parent, before, "data.fingerprint")


def exact_names(ws: Workspace) -> str | None:
    """optimizer.lr=0.1234567,0.1234568 (one apart in the 7th digit): two runs, both finish."""
    results = ws.fresh("names")
    command = [o for o in runner_command(results) if not o.startswith("trainer.epochs=")]
    command[3:3] = ["-m", "trainer.epochs=1", "optimizer.lr=0.1234567,0.1234568"]
    sweep = run_cli(command)
    names = sorted(p.parent.parent.name for p in (results / "runs").rglob(rd.SUMMARY_FILE))
    expected = [
        f"autodrop,data.image_size=8,optimizer.lr={lr},trainer.epochs=1"
        for lr in ("0.1234567", "0.1234568")
    ]
    if sweep.returncode != 0 or names != expected:
        return f"exit {sweep.returncode}, runs {names}"
    return None


IDENTITY_FAULTS: dict[str, Callable[[Workspace], str | None]] = {
    "finished run relaunched with trainer.channels_last=true": rounding_skip,
    "killed run resumed with channels_last=true (refused, then exact)": partial(
        rounding_resume, allow=False
    ),
    "killed run resumed with channels_last=true, allowed": partial(rounding_resume, allow=True),
    "trainer.devices=2 trainer.sync_bn=false beside one process": unsynchronised_batchnorm,
    "finished fp32 run relaunched where auto is bf16": partial(precision_resolved, finished=True),
    "killed fp32 run resumed where auto is bf16": partial(precision_resolved, finished=False),
    "data.skip_bad_images=true": skipping_images_is_another_run,
    "another CIFAR copy (data.verify=false)": partial(other_data, dataset="cifar10"),
    "an image added to ImageNet": partial(other_data, dataset="imagenet"),
    "optimizer.lr=0.1234567,0.1234568": exact_names,
}


def scenario_run_identity(ws: Workspace, trials: int) -> Outcome:
    """Launches that must not share a run (other rounding values, BatchNorm split, precision,
    skipped images, other data, values equal to 6 digits): each is skipped saying so, refused
    naming what differs, or trained as a run of its own, and a refused resume then continues
    exactly. ``trials`` cases, in order (all by default)."""
    outcome = Outcome("run_identity")
    for label, case in list(IDENTITY_FAULTS.items())[:trials]:
        outcome.record(case(ws), label)
    return outcome


def _checkout_copy(ws: Workspace) -> Path:
    """A fresh git checkout holding this tree's code (committed), to run the runner from."""
    copy = ws.fresh("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith("results/"):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=f", "-c", "user.email=f@f", "commit", "-qm", "code"],
    ):
        subprocess.run(["git", *command], cwd=copy, check=True, capture_output=True)
    return copy


def code_fingerprint(ws: Workspace, case: str) -> str | None:
    """Results kept inside a git checkout (``paths.results_dir=out`` or inside a package), an
    untracked notebook beside the code, an edited source file: a killed run resumes exactly in
    the first two cases and is refused naming the file in the third."""
    checkout = _checkout_copy(ws)
    results = "experiments/out" if case == "notebook" else "out"
    command = [*runner_command(Path(results), wrapped=True)]

    def launch(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=checkout,
            env=_clean_env(env),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

    killed = launch({KILL_AFTER_SAVES_ENV: "2"})
    if killed.returncode != -signal.SIGKILL:
        return f"the run was not killed: exit {killed.returncode}: {killed.stdout[-300:]}"
    run_dir = checkout / results / RUN_SUBDIR
    if case == "notebook":
        (checkout / "experiments" / "scratch.ipynb").write_text('{"cells": []}')
    if case == "edited":
        edited = checkout / "experiments" / "console.py"
        edited.write_text(edited.read_text() + "\n# an edit\n")
        refusal = launch()
        if refusal.returncode != 2 or "files that differ: experiments/console.py" not in (
            refusal.stderr
        ):
            return f"the edited code: exit {refusal.returncode}: {refusal.stderr[-300:]}"
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=checkout, check=True)
    resumed = launch()
    if resumed.returncode != 0 or "resuming" not in _output(resumed):
        return f"the resume: exit {resumed.returncode}: {_output(resumed)[-300:]}"
    return difference_from(run_dir, ws.reference)


def scenario_code_fingerprint(ws: Workspace, trials: int) -> Outcome:
    """The code fingerprint counts code only: results and notebooks in the tree never block a
    resume, an edited source file is named."""
    outcome = Outcome("code_fingerprint")
    for case in ("results in the tree", "notebook", "edited")[:trials]:
        outcome.record(code_fingerprint(ws, case), case)
    return outcome


def forged_summary(ws: Workspace, case: str) -> str | None:
    """A finished run whose summary.json was edited: listed as damaged, never averaged."""
    from scripts.analysis.runs import load_runs

    results, run_dir = _copied_reference(ws)
    summary = summary_of(run_dir)
    if case == "cut":  # the records cut to one epoch, the summary edited to match
        records = read_records(run_dir / rd.METRICS_FILE)[:1]
        (run_dir / rd.METRICS_FILE).write_text(json.dumps(records[0]) + "\n")
        summary.update(epochs_planned=1, **rd.summarize_metrics(records))
        reason = "trainer.epochs=4"
    else:
        summary["time_per_iter_s"] *= 100
        reason = "time_per_iter_s"
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary))
    runs = load_runs(results / "runs").runs
    status, message = runs["status"].iloc[0], str(runs["message"].iloc[0])
    if status != "damaged" or reason not in message:
        return f"status {status!r}, message {message!r}"
    return None


def scenario_forged_summary(ws: Workspace, trials: int) -> Outcome:
    """Summaries edited to agree with cut records, or with a time per iteration x100."""
    outcome = Outcome("forged_summary")
    for case in ("cut", "time")[:trials]:
        outcome.record(forged_summary(ws, case), case)
    return outcome


UNUSABLE_VALUES = (
    "optimizer.lr=nan",
    "optimizer.lr=inf",
    "trainer.epochs=100000000000",
    "trainer.batch_size=2000",
    "paths.results_dir=",
    "paths.results_dir=' '",
    "paths.data_dir=",
)


def unusable_value(ws: Workspace, override: str) -> str | None:
    """Refused in one line naming the key, before anything is written anywhere (the launch
    runs in an empty folder, so a stray relative write would show)."""
    scratch = ws.fresh("values")
    command = [*runner_command(scratch / "results"), override]
    try:
        result = subprocess.run(
            command,
            cwd=scratch,
            env=_clean_env({"PYTHONPATH": str(REPO_ROOT)}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "still training after 60 s: not refused"
    lines = result.stderr.strip().splitlines()
    key = override.partition("=")[0]
    if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith(f"error: {key}="):
        return f"exit {result.returncode}: {result.stderr.strip()[-300:]}"
    written = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))
    return f"wrote {written}" if written else None


def scenario_unusable_values(ws: Workspace, trials: int) -> Outcome:
    """nan and inf learning rates, an absurd epoch budget, a batch larger than the training
    set, empty paths: each refused in one line before anything is written."""
    outcome = Outcome("unusable_values")
    for override in UNUSABLE_VALUES[:trials]:
        outcome.record(unusable_value(ws, override), override)
    return outcome


def ctrl_c_twice(ws: Workspace, step: int) -> str | None:
    """Ctrl-C twice (the second during the first one's checkpoint): one line, no traceback,
    status failed; the relaunch finishes exactly as the uninterrupted run."""
    results = ws.fresh("ctrl-c")
    injection = f"SIGINT:step:{step},SIGINT:checkpoint:{step // 23 + 1}"
    code = (
        "import runpy, tests.signal_injection; runpy.run_module('experiments.train', "
        "run_name='__main__', alter_sys=True)"
    )
    command = [sys.executable, "-c", code, *runner_command(results)[3:]]
    result = run_cli(command, env={"AUTODROP_TEST_SIGNAL": injection})
    lines = result.stderr.strip().splitlines()
    if result.returncode != 130 or "Traceback" in _output(result) or len(lines) != 1:
        return f"exit {result.returncode}: {_output(result)[-400:]}"
    if summary_of(results / RUN_SUBDIR).get("status") != rd.FAILED:
        return f"status {summary_of(results / RUN_SUBDIR).get('status')!r}, not failed"
    relaunch = run_cli(runner_command(results))
    if relaunch.returncode != 0:
        return f"the relaunch: exit {relaunch.returncode}"
    return difference_from(results / RUN_SUBDIR, ws.reference)


def scenario_ctrl_c_twice(ws: Workspace, trials: int) -> Outcome:
    outcome = Outcome("ctrl_c_twice")
    for _ in range(trials):
        step = ws.random.randint(24, 3 * 23 - 1)  # epochs 2..3: a checkpoint came before
        outcome.record(ctrl_c_twice(ws, step), f"step {step}")
    return outcome


# --------------------------------------------------------------------------- the campaign
SCENARIOS: dict[str, tuple[Callable[[Workspace, int], Outcome], int]] = {
    "sigkill": (scenario_sigkill, 20),
    "corrupt_checkpoint": (scenario_corrupt_checkpoint, 4),
    "disk_full": (scenario_disk_full, 4),
    "divergence": (scenario_divergence, 2),
    "wandb": (scenario_wandb, 3),
    "config_fuzz": (scenario_config_fuzz, 60),
    "concurrent_launch": (scenario_lock, 2),
    "security": (scenario_security, 2),
    "hostile_data": (scenario_hostile_data, len(DATA_FAULTS)),
    "planted_links": (scenario_planted_links, len(LINK_ENTRIES) + len(ESCAPING_NAMES)),
    "run_identity": (scenario_run_identity, len(IDENTITY_FAULTS)),
    "code_fingerprint": (scenario_code_fingerprint, 3),
    "forged_summary": (scenario_forged_summary, 2),
    "unusable_values": (scenario_unusable_values, len(UNUSABLE_VALUES)),
    "ctrl_c_twice": (scenario_ctrl_c_twice, 2),
}


def format_table(outcomes: Sequence[Outcome]) -> str:
    rows = [("scenario", "trials", "survived", "lost")]
    rows += [(o.scenario, str(o.trials), str(o.survived), str(len(o.lost))) for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_campaign(names: Sequence[str], trials: int | None, workdir: Path) -> list[Outcome]:
    """Run the named scenarios (``trials`` overrides each default count); print as it goes."""
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}: choose from {list(SCENARIOS)}")
    if trials is not None and trials < 1:
        raise ValueError(f"--trials={trials} is invalid: must be >= 1")
    workspace = Workspace(workdir)
    outcomes = []
    for name in names:
        scenario, default_trials = SCENARIOS[name]
        started = time.monotonic()
        outcome = scenario(workspace, trials or default_trials)
        outcome.notes.append(f"{time.monotonic() - started:.0f}s")
        print(outcome.line(), flush=True)
        for lost in outcome.lost:
            print(f"  lost: {lost}", flush=True)
        outcomes.append(outcome)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="trials per scenario")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default: all"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch (default: a temp dir)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        outcomes = run_campaign(args.scenario or list(SCENARIOS), args.trials, workdir)
    print()
    print(format_table(outcomes))
    print(f"wall time {time.monotonic() - started:.0f}s")
    return 1 if any(o.lost for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
