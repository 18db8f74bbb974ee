"""docs/adding-a-dataset.md, followed in a copy of the repository: the builder, its registry
line and its YAML file are all it takes. The dataset trains (its options checked and recorded),
`--help` lists it, a bad value is refused in one line, and the tests that check every registered
dataset still pass, unedited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import guides
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "adding-a-dataset.md"


@pytest.mark.slow  # a copy of the repository, a run, the data tests there
def test_following_the_guide_adds_a_dataset(tmp_path: Path) -> None:
    root = guides.copy_repository(tmp_path / "repo")
    guides.run_all(guides.apply(GUIDE, root), root)
    (run_dir,) = (root / "results/runs/adhoc/blobs-resnet8").glob("*/seed=0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["dataset"] == "blobs"
    assert summary["setup"]["data.per_class"] == 40
    assert summary["setup"]["data.fingerprint"].startswith("train 120, test 40, ")
    assert guides.in_help(root, "data", "blobs")
    refused = guides.run("python -m experiments.train data=blobs data.per_class=1", root)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: data.per_class=1 is invalid")
    guides.tests_pass(root, "tests/test_registration.py", "tests/test_components.py")
