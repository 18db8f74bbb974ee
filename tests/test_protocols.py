"""The two protocols end to end: the paper's (no validation split, min test error, plateau on the
test loss) and the honest one (a validation split for every choice, test reported at the best
validation epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autodrop import registry
from autodrop.base import Signal
from experiments.config import compose_config
from experiments.job import TrainingJob
from experiments.loop import Totals
from experiments.rundir import best_validation, read_records, summarize_metrics
from tests.conftest import TINY_RUN, expected_run_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER_PRESETS = sorted(f"paper/{p.stem}" for p in (CONF / "experiment" / "paper").glob("*.yaml"))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_hold_out_nothing_and_honest_holds_out_the_default(preset):
    assert compose_config([f"experiment={preset}"]).data.val_size == 0
    honest = compose_config([f"experiment={preset}", "protocol=honest"])
    assert (
        honest.data.val_size
        == {"cifar10": 5000, "cifar100": 5000, "imagenet": 10_000}[honest.data.name]
    )


def test_the_quick_grid_uses_the_split_and_protocol_paper_names_its_own_runs(results_dir):
    assert compose_config(["experiment=quick/digits"]).data.val_size == 360
    paper = expected_run_dir(results_dir, ["experiment=quick/digits", "protocol=paper"])
    assert paper.parent.name == "autodrop,protocol=paper"


def test_every_registered_schedule_declares_what_it_reads():
    for name in registry.SCHEDULE_NAMES:
        reads = registry.schedule_signals(name)
        assert isinstance(reads, frozenset) and all(isinstance(s, Signal) for s in reads)
        assert "reads" in {
            key for cls in registry.schedule_class(name).__mro__ for key in vars(cls)
        }


def test_best_validation_breaks_ties_by_validation_loss_then_epoch():
    records = [
        {"epoch": 1, "val/err": 5.0, "val/loss": 0.3, "test/err": 6.0},
        {"epoch": 2, "val/err": 4.0, "val/loss": 0.2, "test/err": 9.0},
        {"epoch": 3, "val/err": 4.0, "val/loss": 0.1, "test/err": 7.0},
        {"epoch": 4, "val/err": 4.0, "val/loss": 0.1, "test/err": 3.0},
    ]
    assert best_validation(records)["epoch"] == 3
    derived = summarize_metrics(records)
    assert (derived["min_val_err"], derived["best_val_epoch"]) == (4.0, 3)
    assert derived["test_err_at_best_val"] == 7.0  # the honest number: not the minimum, 3.0
    assert (derived["min_test_err"], derived["min_test_err_epoch"]) == (3.0, 4)  # the paper's
    assert best_validation([{"epoch": 1, "test/err": 2.0}]) is None


# -------------------------------------------------------------- what plateau decides on


def scripted_evaluation(monkeypatch, val_losses, test_losses) -> None:
    """The job's evaluations report these losses (one per epoch) instead of the model's."""
    calls = {"val": 0, "test": 0}
    real = TrainingJob._evaluate

    def scripted(job, model, batches):
        totals = real(job, model, batches)
        split = "val" if batches is job.data.val else "test"
        loss = (val_losses if split == "val" else test_losses)[calls[split]]
        calls[split] += 1
        return Totals(loss * totals.count, totals.correct, totals.count)

    monkeypatch.setattr(TrainingJob, "_evaluate", scripted)


PLATEAU = [*TINY_RUN, "scheduler=plateau", "scheduler.patience=0", "trainer.epochs=3"]
IMPROVING, WORSENING = [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("val", "test", "lrs"),
    [
        (IMPROVING, WORSENING, [0.05, 0.05, 0.05]),  # validation improves: no drop
        (WORSENING, IMPROVING, [0.05, 0.005, 0.0005]),  # validation stalls: a drop per epoch
    ],
)
def test_plateau_decides_on_the_validation_loss_when_a_split_exists(
    train_in_process, monkeypatch, val, test, lrs
):
    scripted_evaluation(monkeypatch, val, test)
    run_dir = train_in_process(PLATEAU)
    metrics = read_records(run_dir / "metrics.jsonl")
    assert [m["val/loss"] for m in metrics] == pytest.approx(val)
    assert [m["test/loss"] for m in metrics] == pytest.approx(test)
    assert [m["lr"] for m in metrics] == pytest.approx(lrs)
    summary = _summary(run_dir)
    assert summary["metric_source"] == "val" and summary["signals"] == ["held_out_metric"]


def test_plateau_decides_on_the_test_loss_under_the_paper_protocol(train_in_process, monkeypatch):
    scripted_evaluation(monkeypatch, [], WORSENING)  # no validation split: never asked
    run_dir = train_in_process([*PLATEAU, "protocol=paper"])
    metrics = read_records(run_dir / "metrics.jsonl")
    assert [m["lr"] for m in metrics] == pytest.approx([0.05, 0.005, 0.0005])
    assert all("val/loss" not in m and "val/err" not in m for m in metrics)
    summary = _summary(run_dir)
    assert summary["metric_source"] == "test" and summary["validation"] is None
    assert summary["min_val_err"] is None and summary["test_err_at_best_val"] is None


def test_the_split_is_the_same_for_every_schedule_and_seed(train_in_process):
    runs = [
        train_in_process([*TINY_RUN, "scheduler=constant", "trainer.epochs=1", "seed=1"]),
        train_in_process([*TINY_RUN, "scheduler=step", "trainer.epochs=1", "seed=2"]),
    ]
    first, second = (_summary(run)["validation"] for run in runs)
    assert first == second and first["size"] == 360
    assert [_summary(run)["metric_source"] for run in runs] == [None, None]


def test_the_completeness_rule_checks_the_honest_fields(tmp_path):
    from experiments.rundir import completeness_problem
    from tests.fake_runs import write_fake_run

    run = write_fake_run(
        tmp_path, experiment="e", dataset="digits", model="resnet8", scheduler="step", seed=0,
        test_errs=[5.0, 4.0, 3.0], val_errs=[6.0, 2.0, 4.0],
    )  # fmt: skip
    assert completeness_problem(run) is None
    summary = _summary(run)
    assert (summary["best_val_epoch"], summary["test_err_at_best_val"]) == (2, 4.0)
    (run / "summary.json").write_text(json.dumps({**summary, "test_err_at_best_val": 3.0}))
    assert "test_err_at_best_val=3.0 disagrees with metrics.jsonl (4.0)" in completeness_problem(
        run
    )


def test_a_split_larger_than_the_training_set_is_refused_in_one_line(train_cli):
    result = train_cli([*TINY_RUN, "data.val_size=1437"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data.val_size=1437 is invalid: must be an integer in 0..1436 (the training "
        "split holds 1437 examples; 0 = no validation split)"
    )
    assert "Traceback" not in result.stderr
