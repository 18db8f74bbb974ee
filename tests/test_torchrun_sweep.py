"""A Hydra ``-m`` sweep launched under torchrun: every process runs the jobs in turn and they
share one process group for the whole launch (a second init_process_group on torchrun's store
used to hang the second job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_RUN, torchrun_train

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two gloo processes, two jobs: ~40 s on two cores
def test_a_two_job_sweep_under_torchrun_trains_both_jobs_on_both_ranks(results_dir) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    command = [
        sys.executable,
        *torchrun_train(2),
        "-m",
        *TINY_RUN,
        "trainer.epochs=1",
        "scheduler=constant,step",
        f"paths.results_dir={results_dir}",
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = results_dir / "runs/quick/digits/digits-resnet8"
    for label in ("constant", "step"):
        run = base / f"{label},data.image_size=8,trainer.epochs=1/seed=0"  # the run identity
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["world_size"] == 2
