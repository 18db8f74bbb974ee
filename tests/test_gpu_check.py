"""scripts/gpu_check.py on a machine without a GPU: one line and a non-zero exit; and its report
keeps every section's outcome when one fails (sections are stand-ins here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import gpu_check

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "tests.gpu_check", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == gpu_check.NO_GPU_EXIT
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU is visible" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_failing_section_does_not_stop_the_others(tmp_path, monkeypatch, capsys) -> None:
    seen: list[str] = []

    def ok(work: Path) -> dict:
        assert work.is_dir()
        seen.append("ok")
        return {"figure": 1.5}

    def broken(work: Path) -> dict:
        seen.append("broken")
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda index=0: "fake GPU")
    monkeypatch.setattr(gpu_check, "SECTIONS", (("a_ok", ok), ("b_broken", broken), ("c_ok", ok)))
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert seen == ["ok", "broken", "ok"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [e["status"] for e in report["sections"].values()] == ["ok", "failed", "ok"]
    assert "out of memory" in report["sections"]["b_broken"]["error"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| a_ok | ok |" in table and "| b_broken | failed |" in table


def test_sections_past_the_budget_are_skipped(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda index=0: "fake GPU")
    monkeypatch.setattr(gpu_check, "SECTIONS", (("a", lambda w: {}), ("b", lambda w: {})))
    assert gpu_check.main(["--out", str(tmp_path), "--budget-s", "-1"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {e["status"] for e in report["sections"].values()} == {"skipped (time budget)"}


@pytest.mark.parametrize("name", [name for name, _ in gpu_check.SECTIONS])
def test_every_section_is_a_named_function(name: str) -> None:
    assert name[0] in "abcdefg" and callable(dict(gpu_check.SECTIONS)[name])
