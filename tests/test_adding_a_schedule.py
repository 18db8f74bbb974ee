"""docs/adding-a-schedule.md, followed in a copy of the repository: the class, its registry line
and its YAML file are all it takes. The schedule trains and is recorded, `--help` lists it, a bad
value is refused in one line, the tables name it and the figures colour it, and the tests that
check every registered schedule still pass, unedited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autodrop.base import Signal, declared_signals
from autodrop.registry import check_declarations
from tests import guides
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "adding-a-schedule.md"


def _guide_class() -> type:
    """The guide's class, defined from its code block in this process."""
    (block,) = [b for b in guides.blocks(GUIDE) if b.attributes.get("file", "").endswith(".py")]
    namespace: dict = {"__name__": "linear_from_the_guide"}
    exec(compile(block.text, str(GUIDE), "exec"), namespace)
    return namespace["LinearDecaySchedule"]


def test_the_class_is_a_torch_scheduler_with_the_contract() -> None:
    schedule_class = _guide_class()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = schedule_class(optimizer, steps_per_epoch=2, epochs=2, end_factor=0.0)
    seen = []
    for _ in range(4):
        optimizer.step()
        schedule.step()
        seen.append(schedule.lr)
    assert seen == [0.75, 0.5, 0.25, 0.0]
    assert schedule.record_stream is None and schedule.epoch_fields([], 0.5) == {}
    with pytest.raises(ValueError, match=r"end_factor=2 is invalid"):
        schedule_class(optimizer, steps_per_epoch=2, epochs=2, end_factor=2)


def test_a_schedule_that_does_not_declare_what_it_reads_is_refused(monkeypatch) -> None:
    schedule_class = _guide_class()
    monkeypatch.delattr(schedule_class, "reads")
    with pytest.raises(TypeError, match=r"LinearDecaySchedule must declare `reads`"):
        declared_signals(schedule_class)
    monkeypatch.setattr(schedule_class, "reads", frozenset({"gradients"}), raising=False)
    with pytest.raises(TypeError, match="must declare `reads`"):
        declared_signals(schedule_class)  # strings are not Signal members
    monkeypatch.setattr(schedule_class, "reads", frozenset({Signal.GRADIENTS}))
    assert declared_signals(schedule_class) == {Signal.GRADIENTS}


def test_a_schedule_that_does_not_declare_its_budget_or_search_space_is_refused(
    monkeypatch,
) -> None:
    schedule_class = _guide_class()
    check_declarations(schedule_class)
    for attribute in ("needs_budget", "search_space"):
        with monkeypatch.context() as patch:
            patch.delattr(schedule_class, attribute)
            with pytest.raises(TypeError, match=f"must declare `{attribute}`"):
                check_declarations(schedule_class)
    monkeypatch.setattr(schedule_class, "needs_budget", False)  # yet it takes `epochs`
    with pytest.raises(TypeError, match="declares needs_budget=False but its constructor takes"):
        check_declarations(schedule_class)


@pytest.mark.slow  # a copy of the repository, a run, the tables, the schedule tests there
def test_following_the_guide_adds_a_schedule(tmp_path: Path) -> None:
    root = guides.copy_repository(tmp_path / "repo")
    guides.run_all(guides.apply(GUIDE, root), root)
    (run_dir,) = (root / "results" / "runs" / "quick" / "digits").glob("*/linear*/seed=0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["scheduler_name"] == "linear"
    assert summary["scheduler_options"] == {"end_factor": 0.5}
    lrs = [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs[-1] == pytest.approx(0.05 * 0.5) and lrs[0] > lrs[-1]  # quick/digits' lr 0.05
    tables = "".join(p.read_text() for p in (root / "results/local/linear/tables").glob("*.md"))
    assert "Linear" in tables
    assert guides.in_help(root, "scheduler", "linear")
    refused = guides.run(
        "python -m experiments.train scheduler=linear scheduler.end_factor=2", root
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: scheduler.end_factor=2.0 is invalid")
    figures = (
        "from scripts.analysis.display import schedule_colour; print(schedule_colour('linear'))"
    )
    assert guides.python_output(root, figures) == "#aa3377"
    guides.tests_pass(root, "tests/test_registration.py", "tests/test_schedules.py")
