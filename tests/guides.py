"""The guides in docs/ as tests: their code blocks applied to a copy of the repository and their
commands run there, so a guide never goes stale.

A guide marks what a block is with its info string:

- ``python file=<path>`` / ``yaml file=<path>``: the whole content of a new file;
- ``python register=<path>``: the registry lines, an import (put with the module's imports) and
  a table entry (put at the end of the kind's table, ``experiments.specs.KINDS``);
- ``bash``: commands, one per line, run from the copy's root (``python`` is this interpreter).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import specs
from tests.conftest import REPO_ROOT

COPIED = ("autodrop", "models", "experiments", "conf", "scripts", "tests", "pyproject.toml")
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    language: str
    attributes: dict[str, str]
    text: str


def blocks(guide: Path) -> list[Block]:
    found = []
    for language, info, text in _BLOCK.findall(guide.read_text()):
        attributes = dict(part.split("=", 1) for part in info.split() if "=" in part)
        found.append(Block(language, attributes, text))
    return found


def copy_repository(target: Path) -> Path:
    """The suite's code, config, scripts and tests in ``target`` (no results, no caches)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def _register(path: Path, lines: list[str]) -> None:
    """Put the import with the module's imports and the entry at the end of its table."""
    import_line, entry = (line for line in lines if line.strip())
    source = path.read_text()
    tree = ast.parse(source)
    last_import = max(n.end_lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom))
    table_names = {kind.table for kind in specs.KINDS.values()}
    table = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id in table_names
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        )
    )
    text = source.splitlines()
    closing = table.end_lineno - 1  # the line holding the table's ")"
    text.insert(closing, entry.rstrip())
    text.insert(last_import, import_line.strip())
    path.write_text("\n".join(text) + "\n")


def apply(guide: Path, root: Path) -> list[str]:
    """Write the guide's files and registry lines into ``root``; return its commands."""
    commands = []
    for block in blocks(guide):
        if "file" in block.attributes:
            target = root / block.attributes["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        elif "register" in block.attributes:
            _register(root / block.attributes["register"], block.text.splitlines())
        elif block.language == "bash":
            commands += [line for line in block.text.splitlines() if line.strip()]
    return commands


def run(command: str, root: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A guide's command, run from ``root`` with this interpreter and wandb off."""
    words = command.split()
    if words[0] == "python":
        words[0] = sys.executable
    return subprocess.run(
        words, cwd=root, env=_environment(root), capture_output=True, text=True, timeout=timeout
    )


def run_all(commands: list[str], root: Path) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for command in commands:
        result = run(command, root)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        results.append(result)
    return results


def _environment(root: Path) -> dict[str, str]:
    environment = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(root)}
    environment.pop("HYDRA_FULL_ERROR", None)
    return environment


def python_output(root: Path, code: str) -> str:
    """What ``python -c code`` prints in the copy."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=_environment(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def in_help(root: Path, group: str, option: str) -> bool:
    """Whether ``--help`` in the copy lists ``option`` in its config group ``group``."""
    result = run("python -m experiments.train --help", root)
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{group}: "))
    return option in line.partition(": ")[2].split(", ")


def tests_pass(root: Path, *files: str) -> None:
    """The copy's own tests (fast ones) pass there: a component added by a guide breaks none."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
    ]
    result = subprocess.run(
        [*command, *files],
        cwd=root,
        env=_environment(root),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:]
