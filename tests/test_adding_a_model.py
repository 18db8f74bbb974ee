"""docs/adding-a-model.md, followed in a copy of the repository: the builder, its registry line
and its YAML file are all it takes. `model.width=8` is an option like any other (checked, in the
run's name and setup), `--help` lists the model, a bad value is refused in one line, and the
tests that check every registered model still pass, unedited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import guides
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "adding-a-model.md"


@pytest.mark.slow  # a copy of the repository, a run, the model tests there
def test_following_the_guide_adds_a_model(tmp_path: Path) -> None:
    root = guides.copy_repository(tmp_path / "repo")
    guides.run_all(guides.apply(GUIDE, root), root)
    (run_dir,) = (root / "results/runs/quick/digits/digits-tiny").glob("*/seed=0")
    assert "model.width=8" in run_dir.parent.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model"] == "tiny"
    assert summary["setup"]["model.width"] == 8
    assert guides.in_help(root, "model", "tiny")
    refused = guides.run("python -m experiments.train model=tiny model.width=0", root)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: model.width=0 is invalid")
    guides.tests_pass(root, "tests/test_registration.py", "tests/test_components.py")
