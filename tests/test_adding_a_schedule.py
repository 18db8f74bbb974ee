"""The README's worked example: a new schedule is a class (plus its line in the registry's list)
and a YAML file; the runner, its config schema, validation, run records and the results'
names and colours need nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.optim import Optimizer

from autodrop import registry
from autodrop.base import Signal, declared_signals
from autodrop.checks import check_float
from autodrop.schedules.per_step import PerStepSchedule
from autodrop.search_space import Uniform, space
from experiments import config as config_module
from experiments import schema
from experiments.config import ConfigError, compose_config
from experiments.rundir import read_records
from experiments.validation import validate_config
from scripts.analysis.display import display_name, schedule_colour, schedule_rank
from tests.conftest import TINY_RUN


class LinearDecaySchedule(PerStepSchedule):
    """Linear decay from the initial lr to ``end_factor`` times it over the whole budget."""

    name = "linear"
    display_name = "Linear"
    colour = "#aa3377"
    reads = frozenset()  # a fixed function of the step: it reads no training signal
    needs_budget = True  # it decays over the whole budget: it takes `epochs`
    search_space = space(scheduler__end_factor=Uniform(0.0, 0.5))  # and the lr

    def __init__(
        self, optimizer: Optimizer, steps_per_epoch: int, epochs: int, end_factor: float = 0.0
    ) -> None:
        self.end_factor = check_float("end_factor", end_factor, low=0.0, high=1.0)
        self.total_steps = steps_per_epoch * epochs
        super().__init__(optimizer, steps_per_epoch)

    def lrs_at(self, step: int) -> list[float]:
        progress = min(step / self.total_steps, 1.0)
        return [base * (1.0 - (1.0 - self.end_factor) * progress) for base in self.base_lrs]


YAML = """\
defaults:
  - /schema_scheduler_linear@_here_
  - _self_
"""


@pytest.fixture
def linear_registered(monkeypatch, tmp_path: Path) -> Path:
    """The two additions of the worked example, made for this test only: the registry's list
    gets the class, conf/scheduler/ gets linear.yaml (in a copy of conf/)."""
    classes = (*registry.SCHEDULE_CLASSES, LinearDecaySchedule)
    monkeypatch.setattr(registry, "SCHEDULE_CLASSES", classes)
    monkeypatch.setattr(registry, "SCHEDULE_NAMES", tuple(cls.name for cls in classes))
    monkeypatch.setitem(registry._SCHEDULES, "linear", LinearDecaySchedule)
    monkeypatch.setitem(schema.SCHEDULER_SCHEMAS, "linear", schema.scheduler_schema("linear"))
    conf = tmp_path / "conf"
    shutil.copytree(config_module.CONF_DIR, conf)
    (conf / "scheduler" / "linear.yaml").write_text(YAML)
    monkeypatch.setattr(config_module, "CONF_DIR", conf)
    return tmp_path


def test_the_schema_comes_from_the_constructor(linear_registered) -> None:
    cfg = compose_config(["experiment=quick/digits", "scheduler=linear"])
    assert dict(cfg.scheduler) == {"name": "linear", "label": "linear", "end_factor": 0.0}
    validate_config(cfg)
    bad = compose_config(["experiment=quick/digits", "scheduler=linear", "scheduler.end_factor=2"])
    with pytest.raises(ConfigError, match=r"end_factor=2.0 is invalid.*end_factor <= 1.0"):
        validate_config(bad)
    assert display_name("linear", {"scheduler.end_factor": 0.5}) == "Linear (end_factor=0.5)"
    assert schedule_colour("linear") == "#aa3377"
    assert schedule_rank("linear") == len(registry.SCHEDULE_NAMES) - 1


def test_the_new_schedule_trains_and_is_recorded(linear_registered, train_in_process) -> None:
    run_dir = train_in_process([*TINY_RUN, "scheduler=linear", "scheduler.end_factor=0.5"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["scheduler_name"] == "linear"
    assert summary["scheduler_options"] == {"end_factor": 0.5}
    lrs = [record["lr"] for record in read_records(run_dir / "metrics.jsonl")]
    base = 0.05  # quick/digits' lr; after the whole budget the lr is end_factor * base
    assert lrs[-1] == pytest.approx(base * 0.5) and lrs[0] > lrs[-1]


def test_the_class_is_a_torch_scheduler_with_the_contract() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LinearDecaySchedule(optimizer, steps_per_epoch=2, epochs=2, end_factor=0.0)
    seen = []
    for _ in range(4):
        optimizer.step()
        schedule.step()
        seen.append(schedule.lr)
    assert seen == [0.75, 0.5, 0.25, 0.0]
    assert schedule.record_stream is None and schedule.epoch_fields([], 0.5) == {}


def test_a_schedule_that_does_not_declare_what_it_reads_is_refused(
    linear_registered, monkeypatch
) -> None:
    monkeypatch.delattr(LinearDecaySchedule, "reads")
    with pytest.raises(TypeError, match=r"LinearDecaySchedule must declare `reads`"):
        declared_signals(LinearDecaySchedule)
    cfg = compose_config(["experiment=quick/digits", "scheduler=linear"])
    with pytest.raises(ConfigError, match=r"must declare `reads`.*HELD_OUT_METRIC"):
        validate_config(cfg)
    monkeypatch.setattr(LinearDecaySchedule, "reads", frozenset({"gradients"}), raising=False)
    with pytest.raises(TypeError, match="must declare `reads`"):
        declared_signals(LinearDecaySchedule)  # strings are not Signal members
    monkeypatch.setattr(LinearDecaySchedule, "reads", frozenset({Signal.GRADIENTS}))
    assert declared_signals(LinearDecaySchedule) == {Signal.GRADIENTS}


def test_a_schedule_that_does_not_declare_its_budget_or_search_space_is_refused(
    linear_registered, monkeypatch
) -> None:
    cfg = compose_config(["experiment=quick/digits", "scheduler=linear"])
    for attribute, text in (
        ("needs_budget", "must declare `needs_budget`"),
        ("search_space", "must declare `search_space`"),
    ):
        with monkeypatch.context() as patch:
            patch.delattr(LinearDecaySchedule, attribute)
            with pytest.raises(ConfigError, match=text):
                validate_config(cfg)
    monkeypatch.setattr(LinearDecaySchedule, "needs_budget", False)  # yet it takes `epochs`
    with pytest.raises(ConfigError, match="declares needs_budget=False but its constructor takes"):
        validate_config(cfg)
