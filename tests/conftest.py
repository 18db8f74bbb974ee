"""Shared fixtures: no test talks to W&B's servers; runs go to a temporary results directory."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch

from experiments import answer_cache

REPO_ROOT = Path(__file__).resolve().parents[1]


# A run of the quick preset small enough for tests: 8x8 digits, 23 steps per epoch, 1 thread.
def torchrun_train(nproc_per_node: int) -> tuple[str, ...]:
    """The ``python`` arguments that start the runner under torchrun with ``nproc_per_node``
    processes on a free port (the runner's own arguments follow)."""
    from experiments.running.processes import free_port

    return (
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc_per_node}",
        f"--master_port={free_port()}",
        "-m",
        "experiments.train",
    )


TINY_RUN = (
    "experiment=quick/digits",
    "data.image_size=8",
    "trainer.epochs=2",
    "trainer.cpu_threads=1",
    "trainer.progress=plain",
    "logger=none",
)


@pytest.fixture(autouse=True)
def _wandb_never_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(autouse=True)
def _answers_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's answers are computed in every test, never read from a cache an earlier
    command kept (tests/test_answer_cache.py turns it on)."""
    monkeypatch.setenv(answer_cache.CACHE_ENV, "off")


@pytest.fixture(autouse=True)
def _no_figure_outlives_its_test() -> Iterator[None]:
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture
def killed_at_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[int, Callable[[], object]], None]:
    """``killed_at_checkpoint(n, launch)`` runs ``launch()`` and interrupts it where its n-th
    checkpoint would be written (after that epoch's records), as a kill would."""
    from experiments import job as job_module

    def run_killed(n: int, launch: Callable[[], object]) -> None:
        original = job_module.TrainingJob.save_checkpoint
        calls: list[int] = []

        def save_or_die(self: job_module.TrainingJob) -> None:
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt("simulated kill")
            original(self)

        monkeypatch.setattr(job_module.TrainingJob, "save_checkpoint", save_or_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                launch()
        finally:
            monkeypatch.setattr(job_module.TrainingJob, "save_checkpoint", original)

    return run_killed


def expected_run_dir(results_dir: Path, overrides: Sequence[str]) -> Path:
    """Where ``python -m experiments.train <overrides>`` trains its run (the run identity)."""
    from experiments.config import compose_with_choices
    from experiments.run_identity import identify_run

    cfg, choices = compose_with_choices([*overrides, f"paths.results_dir={results_dir}"])
    return identify_run(cfg, choices, read_data=False)[0]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def train_cli(results_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m experiments.train <args> paths.results_dir=<tmp>`` and return it."""

    def run(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "experiments.train",
            *args,
            f"paths.results_dir={results_dir}",
        ]
        return subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture
def train_in_process(results_dir: Path) -> Iterator[Callable[[Sequence[str]], Path]]:
    """Run one job in this process (no Hydra launcher) and return its run directory.

    Restores the torch thread count and the root logger afterwards.
    """
    from experiments.config import compose_with_choices
    from experiments.train import run_job

    threads = torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(overrides: Sequence[str]) -> Path:
        cfg, choices = compose_with_choices([*overrides, f"paths.results_dir={results_dir}"])
        return run_job(cfg, choices, overrides).run_dir

    yield run
    torch.set_num_threads(threads)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def data_bundle(name: str, **fields: object):
    """``load_data(name, ...)`` from one flat set of fields: those of ``Loading`` (the rank's
    batches, device, loader, ...) and the dataset's ``root`` and options (all the others)."""
    from dataclasses import fields as dataclass_fields

    from experiments.data import Loading, load_data

    own = {field.name for field in dataclass_fields(Loading)}
    loading = Loading(**{key: value for key, value in fields.items() if key in own})
    return load_data(name, loading, **{k: v for k, v in fields.items() if k not in own})
