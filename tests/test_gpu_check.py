"""tests/gpu_check.py: without a GPU it says so in one line; each section runs in a process of its
own, killed with everything it started at its limit, and the report keeps every section's
outcome; the estimates keep the promise of 8 minutes on one H200; and the CPU mode runs every
section end to end through the same code."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
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
    assert len(lines) == 1 and "no CUDA GPU is visible" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_estimates_fit_the_promise() -> None:
    names = [name for name, _ in gpu_check.SECTIONS]
    for scale in (gpu_check.FULL, gpu_check.TINY):
        assert sorted(scale.estimate_s) == sorted(names)
    assert sum(gpu_check.FULL.estimate_s.values()) <= gpu_check.BUDGET_S == 480


@pytest.mark.parametrize("name", gpu_check.CIFAR_SCHEDULES)
def test_the_full_size_cifar_runs_are_valid(name, tmp_path) -> None:
    """Section d's runs at the GPU's sizes, which CI does not train: each composes and passes
    the runner's checks (the step run once asked for milestones past its 2 epochs)."""
    from experiments.config import compose_config
    from experiments.validation import validate_config

    overrides = gpu_check.cifar_run(name, tmp_path, gpu_check.FULL, "cuda")
    cfg = compose_config([*gpu_check.COMMON, *overrides])
    validate_config(cfg)
    assert (cfg.model.name, cfg.trainer.batch_size) == ("resnet18", gpu_check.FULL.cifar_batch)
    assert 10_000 % cfg.trainer.eval_batch_size == 0 and cfg.data.verify is False


@pytest.mark.parametrize("name", [name for name, _ in gpu_check.SECTIONS])
def test_every_section_is_a_named_function(name: str) -> None:
    assert name[0] in "abcdefg" and callable(dict(gpu_check.SECTIONS)[name])


# Stand-in sections (Python run as a section's process would be, without torch), by name.
STAND_INS = {
    "a_ok": "record('figure', 1.5)",
    "b_broken": "raise RuntimeError('CUDA error: out of memory')",
    # Records a figure, starts a process in a session of its own (as torchrun starts its
    # workers), then hangs: the kill at the limit must take both.
    "c_hangs": (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "(work / 'grandchild.pid').write_text(str(child.pid))\n"
        "record('partial', 7)\n"
        "time.sleep(600)"
    ),
    "d_ok": "record('figure', 2)",
    "e_too_long": "record('never', 0)",
}
ESTIMATES = {"a_ok": 5.0, "b_broken": 5.0, "c_hangs": 2.0, "d_ok": 5.0, "e_too_long": 10_000.0}


def stand_in_command(name, args, work, result) -> list[str]:
    code = (
        "import json\n"
        "from pathlib import Path\n"
        f"work, result, figures = Path({str(work)!r}), Path({str(result)!r}), {{}}\n"
        "def record(key, value):\n"
        "    figures[key] = value\n"
        "    result.write_text(json.dumps(figures))\n"
        f"{STAND_INS[name]}\n"
    )
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process nobody reaped yet is a zombie: not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sections_run_apart_are_killed_at_their_limit_and_reported_one_by_one(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(gpu_check, "SECTIONS", tuple((name, None) for name in STAND_INS))
    monkeypatch.setattr(
        gpu_check, "TINY", dataclasses.replace(gpu_check.TINY, estimate_s=ESTIMATES)
    )
    monkeypatch.setattr(gpu_check, "section_command", stand_in_command)
    works: list[Path] = []
    original = gpu_check.section_command
    monkeypatch.setattr(
        gpu_check,
        "section_command",
        lambda name, args, work, result: (
            works.append(work) or stand_in_command(name, args, work, result)
        ),
    )
    written: list[list[str]] = []
    write_report = gpu_check.write_report

    def recording_write_report(out, report) -> None:
        written.append(list(report["sections"]))
        write_report(out, report)

    monkeypatch.setattr(gpu_check, "write_report", recording_write_report)
    grandchild_pid = {}
    kill_tree = gpu_check.kill_tree

    def note_grandchild(process) -> None:
        grandchild_pid["pid"] = int((works[-1] / "grandchild.pid").read_text())
        kill_tree(process)

    monkeypatch.setattr(gpu_check, "kill_tree", note_grandchild)
    start = time.perf_counter()
    code = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "60"])
    assert code == 1 and time.perf_counter() - start < 60
    assert original is stand_in_command
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert [e["status"] for e in sections.values()] == [
        "ok",
        "failed",
        "killed at its limit (4 s)",
        "ok",
        sections["e_too_long"]["status"],
    ]
    assert sections["e_too_long"]["status"].startswith("skipped (estimate 10000 s")
    assert sections["a_ok"]["result"] == {"figure": 1.5}
    assert "out of memory" in sections["b_broken"]["error"]
    assert sections["c_hangs"]["result"] == {"partial": 7}  # what it had recorded is kept
    assert not alive(grandchild_pid["pid"])  # the process it started went with it
    assert written == [list(STAND_INS)[: n + 1] for n in range(len(STAND_INS))]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| a_ok | ok |" in table and "| b_broken | failed |" in table


def test_a_section_gets_at_most_what_is_left_of_the_budget(tmp_path, monkeypatch) -> None:
    limits = {}
    monkeypatch.setattr(gpu_check, "SECTIONS", (("a_ok", None), ("d_ok", None)))
    monkeypatch.setattr(
        gpu_check, "TINY", dataclasses.replace(gpu_check.TINY, estimate_s=ESTIMATES)
    )

    def three_seconds_of_work(name, args, limit_s, logs) -> dict:
        limits[name] = limit_s
        time.sleep(3)
        return {"status": "ok"}

    monkeypatch.setattr(gpu_check, "run_section", three_seconds_of_work)
    assert (
        gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "7"])
        == 1
    )
    assert limits["a_ok"] == pytest.approx(7, abs=0.5)  # not 2 x 5 s: the budget ends first
    assert "d_ok" not in limits  # 5 s estimated, about 4 s left


@pytest.mark.slow  # every section at tiny sizes: about 2.5 minutes on 2 cores
def test_the_cpu_mode_runs_every_section_and_each_gives_its_figures(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.gpu_check", "--device", "cpu", "--tiny"]
        + ["--out", str(tmp_path), "--budget-s", "1200"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    statuses = {name: entry["status"] for name, entry in sections.items()}
    assert statuses == {name: "ok" for name, _ in gpu_check.SECTIONS}, result.stdout
    assert result.returncode == 0
    a, b, c, d, e, f, g = (sections[name]["result"] for name, _ in gpu_check.SECTIONS)
    assert a["finished"] and a["identical_epochs"] and a["device_rng_saved"] and a["resumes"] == 1
    assert b["on_device"]["status"] == b["on_cpu"]["status"] == "finished"
    assert (c["status"], c["world_size"]) == ("finished", 2)
    floor_first = list(d)[:3]  # the compute floor is measured before the runner runs
    assert floor_first == [
        "floor_nchw_eager",
        "floor_channels_last_eager",
        "floor_channels_last_compiled",
    ]
    for name in ("step", "autodrop", "hd", "tlr"):
        assert d[f"runner_{name}"]["ms_per_step"] > 0
    assert d["runner_step_over_floor"] > 0 and "data.verify=false" in d["data"]
    assert (
        e["workers"] >= 1 and e["gpu_decode_images_per_s"] > 0 and e["cpu_decode_images_per_s"] > 0
    )
    assert f["resnet8"]["mb"] > 0 and f["resnet8"]["total_s"] >= f["resnet8"]["blocking_s"]
    assert g["recompiles_in_epoch_2"] == 0 and g["graphs_after_epoch"][0] == 4
    assert "| g_compile | ok |" in (tmp_path / "gpu_check.md").read_text()
