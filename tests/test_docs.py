"""Docs as tests: every fenced command in README.md and docs/*.md is run or checked, so none
goes stale.

A ```bash block holds commands, one per line (a trailing backslash continues one; ``#`` starts a
comment; ``<name>`` is a placeholder). Each command is handled by the first rule that knows it:
- the runner (``python -m experiments.train``, ``autodrop-train``, ``torchrun ... -m
  experiments.train``): a command on the embedded digits data (a ``quick/*`` experiment, one
  process, a local launcher) RUNS at a tiny size (8x8 digits, one epoch, every job of its sweep);
  any other (CIFAR, ImageNet, several GPUs, SLURM) is composed and validated as the runner does
  before it trains, for each value of every swept key;
- ``make <target> [VARS]``: a target that trains or writes runs with ``DRY_RUN=1`` (each is run
  at a tiny size by tests/test_make_targets.py), ``help`` and ``status`` run as written, the
  others (install, test, bench, ...) must exist (``make -n``);
- ``python -m scripts.<name> [options]``: every option it names is one the script accepts;
- a few setup commands (``source .venv/bin/activate``, ``sudo scripts/slurm_local.sh``,
  ``pytest ... <files>``, the completion ``eval``): what they name exists.
A command no rule knows fails: a new kind of documented command needs its rule here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_make_targets import NOT_GRID_OR_OUTPUT, _stamp

DOCUMENTS = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])
# The adding-a-* guides are executed whole (their files, then their commands) in a copy of the
# repository by tests/guides.py; here their commands would run without the files they add.
GUIDES = {document for document in DOCUMENTS if document.name.startswith("adding-a-")}
FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER = re.compile(r"<[\w-]+>")
RUNNER = ("python -m experiments.train", "autodrop-train")
TINY = (
    "data.image_size=8",
    "trainer.epochs=1",
    "trainer.cpu_threads=1",
    "trainer.progress=plain",
    "logger=none",
)
LOCAL_LAUNCHERS = {"basic", "joblib"}
MAKE_AS_WRITTEN = {"help", "status"}
SETUP_COMMANDS = {"source", "sudo", "pytest", "eval"}


@dataclass(frozen=True)
class Command:
    document: str
    line: str

    @property
    def words(self) -> list[str]:
        return shlex.split(PLACEHOLDER.sub("x", self.line))

    def __str__(self) -> str:
        return f"{self.document}: {self.line}"


def documented_commands() -> list[Command]:
    commands = []
    for document in sorted(set(DOCUMENTS) - GUIDES):
        for block in FENCE.findall(document.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    commands.append(Command(str(document.relative_to(REPO_ROOT)), line))
    return commands


COMMANDS = documented_commands()


def _runner_arguments(command: Command) -> list[str] | None:
    """The runner's own arguments of ``command``, or None when it does not start the runner."""
    words = command.words
    for prefix in RUNNER:
        if command.line.startswith(prefix):
            return words[len(prefix.split()) :]
    if words[0] == "torchrun" and "experiments.train" in words:
        return words[words.index("experiments.train") + 1 :]
    return None


def _sweep(arguments: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides without ``-m`` split into fixed ones and the swept keys' values."""
    fixed, swept = [], {}
    for argument in arguments:
        if argument == "-m":
            continue
        key, _, value = argument.partition("=")
        if "," in value and not value.startswith("["):
            swept[key] = value.split(",")
        else:
            fixed.append(argument)
    return fixed, swept


def _runs_on_this_cpu(arguments: list[str]) -> bool:
    values = dict(argument.partition("=")[::2] for argument in arguments if "=" in argument)
    return (
        values.get("experiment", "quick/digits").startswith("quick/")
        and values.get("hydra/launcher", "basic") in LOCAL_LAUNCHERS
        and values.get("trainer.devices", "1") == "1"
        and not any(word.startswith("hydra.launcher.") for word in values)
    )


def _check_runner(command: Command, arguments: list[str], tmp_path: Path) -> None:
    if _runs_on_this_cpu(arguments):
        done = subprocess.run(
            [sys.executable, "-m", "experiments.train", *arguments, *TINY,
             f"paths.results_dir={tmp_path / 'results'}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert "finished" in done.stdout + done.stderr, command
        return
    from experiments.config import compose_config, compose_with_choices
    from experiments.validation import validate_config

    fixed, swept = _sweep(arguments)
    hydra_overrides = [o for o in fixed if o.startswith(("hydra.", "hydra/"))]
    job_overrides = [o for o in fixed if o not in hydra_overrides]
    # Each value of every swept key, the other swept keys at their first value.
    variants = [
        [*(f"{k}={v[0]}" for k, v in swept.items() if k != key), f"{key}={value}"]
        for key, values in swept.items()
        for value in values
    ] or [[]]
    for variant in variants:
        overrides = [*job_overrides, *variant]
        compose_config([*hydra_overrides, *overrides], with_hydra=True)
        validate_config(compose_with_choices(overrides)[0])


def _check_make(command: Command, tmp_path: Path) -> None:
    words = command.words[1:]
    targets = [word for word in words if "=" not in word]
    variables = [word for word in words if "=" in word]
    assert targets, f"{command}: name the target"
    stamp = _stamp(tmp_path)
    make = ["make", "--no-print-directory", f"PY={sys.executable}", f"STAMP={stamp}"]
    results = tmp_path / "results"
    if set(targets) <= MAKE_AS_WRITTEN:
        run = [*make, *words, f"RESULTS={results}"]
    elif set(targets) & NOT_GRID_OR_OUTPUT:
        run = [*make, "-n", *words]
    else:
        trained = tmp_path / "trained"
        run = [*make, *targets, *variables, "DRY_RUN=1", f"RESULTS={results}",
               f"TRAIN=touch {trained}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        run, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert not (tmp_path / "trained").exists(), f"{command}: the dry run trained"


def _check_script(command: Command) -> None:
    words = command.words
    module = words[2]
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    for option in (word.split("=")[0] for word in words[3:] if word.startswith("--")):
        assert option in done.stdout, f"{command}: {module} has no option {option}"


def _check_setup(command: Command) -> None:
    """The setup commands (SETUP_COMMANDS): what they name exists."""
    words = command.words
    if words[:2] == ["source", ".venv/bin/activate"]:
        assert "VENV" in (REPO_ROOT / "Makefile").read_text()  # make install builds .venv
        return
    if words[:2] == ["sudo", "scripts/slurm_local.sh"]:
        assert os.access(REPO_ROOT / words[1], os.X_OK), command
        return
    if words[0] == "pytest":
        files = [word for word in words[1:] if word.endswith(".py")]
        assert files and all((REPO_ROOT / name).is_file() for name in files), command
        return
    if words[0] == "eval" and "-sc" in command.line:
        done = subprocess.run(
            [sys.executable, "-m", "experiments.train", "-sc", "install=bash"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0 and "complete" in done.stdout, command
        return
    raise AssertionError(f"no rule checks this documented command: {command}")


def _rule(command: Command) -> str | None:
    """The name of the rule that checks ``command`` (None: no rule knows it)."""
    words = command.words
    if _runner_arguments(command) is not None:
        return "runner"
    if words[0] == "make":
        return "make"
    if words[:2] == ["python", "-m"] and words[2].startswith("scripts."):
        return "script"
    if words[0] in SETUP_COMMANDS:
        return "setup"
    return None


def test_the_documents_hold_commands_and_a_rule_knows_each() -> None:
    assert len(COMMANDS) >= 10
    unknown = [str(command) for command in COMMANDS if _rule(command) is None]
    assert not unknown, f"no rule checks these documented commands: {unknown}"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command(command: Command, tmp_path: Path) -> None:
    rule = _rule(command)
    if rule == "runner":
        _check_runner(command, _runner_arguments(command) or [], tmp_path)
    elif rule == "make":
        _check_make(command, tmp_path)
    elif rule == "script":
        _check_script(command)
    else:
        _check_setup(command)


def test_the_readme_schedule_table_is_the_registry() -> None:
    from autodrop.registry import SCHEDULE_CLASSES

    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[3] in ("yes", "no"):
            for name in re.findall(r"`(\w+)`", cells[0]):
                rows[name] = (cells[2], cells[3] == "yes")
    signal_words = {
        "GRADIENTS": "gradients",
        "PARAMETERS": "parameters",
        "HELD_OUT_METRIC": "held-out metric",
    }
    for cls in SCHEDULE_CLASSES:
        reads = ", ".join(sorted(signal_words[s.name] for s in cls.reads)) or "nothing"
        assert rows.get(cls.name) == (reads, cls.needs_budget), cls.name
    assert set(rows) == {cls.name for cls in SCHEDULE_CLASSES}


def test_the_readme_quotes_the_committed_quick_tables() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    tables = REPO_ROOT / "results" / "quick" / "tables"
    quoted = 0
    for name in ("table2.md", "table2_honest.md"):
        committed = (tables / name).read_text().splitlines()
        for row in (line for line in committed if line.startswith("| digits/")):
            assert row in readme, f"README quotes a stale {name}: {row}"
            quoted += 1
    assert quoted == 2


def test_every_document_link_resolves() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for document in DOCUMENTS:
        for target in link.findall(document.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (document.parent / target).exists(), f"{document.name} links {target}"


def test_the_readme_stays_a_front_door() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    for step in ("make install", "source .venv/bin/activate", "python -m experiments.train",
                 " -m experiment=", "make compare", "results/local/"):  # fmt: skip
        assert step in head, step
    assert lines[2].strip().startswith("make quick") and lines[3].strip().startswith("make test")


def test_no_document_points_to_a_file_outside_the_repository() -> None:
    for document in DOCUMENTS:
        text = document.read_text()
        for name in ("DESIGN.md", "PAPER.md", "BASELINES.md", "BENCHMARKS.md"):
            assert name not in text, f"{document.name} names {name}, which is not in the repository"


def test_every_source_path_the_documents_name_exists() -> None:
    path = re.compile(r"`((?:autodrop|models|experiments|scripts|tests|conf|docs)/[\w/.-]+)`")
    for document in sorted(set(DOCUMENTS) - GUIDES):  # a guide names the files it adds
        for name in path.findall(document.read_text()):
            stem = name.split("<")[0]
            assert (REPO_ROOT / stem).exists(), f"{document.name} names {name}, which is missing"
