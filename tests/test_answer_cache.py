"""The command line's answers kept on disk (experiments.answer_cache): ``--help``, a tab
completion and a grid's plan read back are byte-identical to the ones computed, are read back
indeed, and any edit of the source tree or a different environment asks again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import answer_cache
from tests.conftest import REPO_ROOT


def _run(arguments: list[str], cache: str, env: dict[str, str] | None = None) -> str:
    environment = {**os.environ, "AUTODROP_ANSWER_CACHE": cache, **(env or {})}
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _answers(cache: Path, kind: str) -> list[Path]:
    return sorted(cache.glob(f"tree-*/{kind}/*.json"))


def _tamper(path: Path, edit) -> None:
    stored = json.loads(path.read_text())
    stored["answer"] = edit(stored["answer"])
    path.write_text(json.dumps(stored))


def test_the_help_page_read_back_is_the_page_hydra_composes(tmp_path: Path) -> None:
    arguments = ["-m", "experiments.train", "--help", "experiment=quick/digits"]
    computed = _run(arguments, "off")
    cache = tmp_path / "answers"
    assert _run(arguments, str(cache)) == computed  # composed, then kept
    [stored] = _answers(cache, "help")
    assert _run(arguments, str(cache)) == computed  # read back
    _tamper(stored, lambda answer: [answer[0], "read: back\n"])
    assert "read: back" in _run(arguments, str(cache))
    assert _run([*arguments, "seed=3"], str(cache)) != computed  # another command line


def test_a_completion_read_back_is_hydras_and_file_names_are_never_kept(tmp_path: Path) -> None:
    cache = tmp_path / "answers"
    arguments = ["-m", "experiments.train", "-sc", "query=bash"]

    def complete(line: str, where: str) -> str:
        return _run(arguments, where, {"COMP_LINE": line, "COMP_POINT": str(len(line))})

    line = "autodrop-train experiment=paper/resnet18_cifar10 optimizer."
    computed = complete(line, "off")
    assert "optimizer.lr=" in computed.split()
    assert complete(line, str(cache)) == computed == complete(line, str(cache))
    [stored] = _answers(cache, "completion")
    _tamper(stored, lambda answer: "read-back=\n")
    assert complete(line, str(cache)) == "read-back=\n"
    files = "autodrop-train paths.data_dir=./"
    assert complete(files, str(cache)) == complete(files, "off")
    assert _answers(cache, "completion") == [stored]  # the file listing was not kept


STATUS = ["-m", "scripts.status", "--experiments", "quick/digits", "--seeds", "0,1", "--dry-run"]


def test_a_plan_read_back_is_the_plan_composed_and_is_read_indeed(tmp_path: Path) -> None:
    arguments = [*STATUS, "--runs", str(tmp_path / "runs"), "--grid", "scheduler=step,cosine"]
    cache = tmp_path / "answers"
    computed = _run(arguments, "off")
    assert _run(arguments, str(cache)) == computed
    [stored] = _answers(cache, "plan")
    assert _run(arguments, str(cache)) == computed
    _tamper(stored, lambda runs: [{**run, "epochs": 7} for run in runs])
    assert "start (7 epochs)" in _run(arguments, str(cache))
    # A world size from the environment (a SLURM task) is another plan.
    assert _run(arguments, str(cache), {"SLURM_NTASKS": "2"}) == computed
    assert len(_answers(cache, "plan")) == 2


def test_a_plan_that_probed_the_device_is_not_kept(tmp_path: Path) -> None:
    # fp32 differs from the preset's `auto` as configured: naming the run resolves both on the
    # device (importing torch), so the plan depends on more than the source tree.
    grid = "scheduler=step trainer.precision=fp32"
    arguments = [*STATUS, "--runs", str(tmp_path / "runs"), "--grid", grid]
    cache = tmp_path / "answers"
    assert _run(arguments, str(cache)) == _run(arguments, "off")
    assert _answers(cache, "plan") == []


def _source_copy(target: Path) -> Path:
    for folder in answer_cache.SOURCE_FOLDERS:
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(
                REPO_ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
    return target


def _stamp(repo: Path) -> str:
    answer_cache.source_stamp.cache_clear()
    return answer_cache.source_stamp(repo)


def test_any_edit_of_the_source_tree_is_another_stamp(tmp_path: Path) -> None:
    repo = _source_copy(tmp_path / "repo")
    original = _stamp(repo)
    assert _stamp(repo) == original
    preset = repo / "conf" / "experiment" / "quick" / "digits.yaml"
    preset.write_text(preset.read_text() + "\n")
    edited = _stamp(repo)
    added = repo / "autodrop" / "new_schedule.py"
    added.write_text("")
    with_new_file = _stamp(repo)
    added.unlink()
    assert len({original, edited, with_new_file, _stamp(repo)}) == 3
    assert _stamp(repo) == edited
    answer_cache.source_stamp.cache_clear()


def test_answers_of_other_trees_are_removed_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "answers"
    old = cache / "tree-0123456789abcdef01234567"
    (old / "plan").mkdir(parents=True)
    (cache / "mine").mkdir()
    (cache / "notes.txt").write_text("kept")
    monkeypatch.setenv("AUTODROP_ANSWER_CACHE", str(cache))
    calls = []
    answer = answer_cache.remembered("help", ["x"], lambda: calls.append(1) or ["a", "b"])
    assert answer == ["a", "b"] and not old.exists()
    assert (cache / "mine").is_dir() and (cache / "notes.txt").read_text() == "kept"
    assert answer_cache.remembered("help", ["x"], lambda: calls.append(1)) == ["a", "b"]
    [stored] = _answers(cache, "help")
    stored.write_text("{not json")
    assert answer_cache.remembered("help", ["x"], lambda: calls.append(1) or ["c"]) == ["c"]
    assert len(calls) == 2  # computed first and after the damage, read back in between
    monkeypatch.setenv("AUTODROP_ANSWER_CACHE", "off")
    assert answer_cache.remembered("help", ["x"], lambda: ["d"]) == ["d"]
