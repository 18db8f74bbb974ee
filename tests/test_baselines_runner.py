"""HD, TLR and schedule-free SGD in the runner: config selection and pairing, the optimizers
built from the task's SGD settings, the run-directory records, and bit-identical resume."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pytest
import torch
from omegaconf import OmegaConf
from schedulefree import SGDScheduleFree

from autodrop.hd import SGDHD
from autodrop.registry import schedule_class
from autodrop.schedules.optimizer_lr import HypergradientLR, ScheduleFreeLR
from autodrop.tlr import TrainableLR
from experiments.checkpoint import load_checkpoint
from experiments.config import ConfigError, compose_config
from experiments.optimizers import build_optimizer, build_schedule, method_options
from experiments.rundir import read_records, records_file
from experiments.validation import validate_config
from scripts.analysis import tables
from scripts.analysis.figures.curves import task_figure
from scripts.analysis.runs import load_runs
from tests.conftest import TINY_RUN
from tests.fake_runs import write_fake_run

QUICK = ["experiment=quick/digits"]
PAPER_TASKS = ("paper/resnet18_cifar10", "paper/wrn28_10_cifar10", "paper/resnet18_imagenet")
RESUME_RUN = [*TINY_RUN, "trainer.deterministic=true", "trainer.epochs=3"]


def _composed(overrides: list[str]):
    cfg = compose_config(overrides)
    validate_config(cfg)
    return cfg


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_hd_selects_sgd_hd_with_the_task_sgd_settings(task: str) -> None:
    sgd = _composed([f"experiment={task}", "scheduler=step"]).optimizer
    hd = _composed([f"experiment={task}", "scheduler=hd"])
    assert hd.optimizer.name == "sgd_hd" and hd.optimizer.beta == 1e-4
    for key in ("lr", "momentum", "nesterov", "weight_decay"):
        assert hd.optimizer[key] == sgd[key], key
    assert hd.scheduler.label == "hd-beta=0.0001"
    swept = _composed([f"experiment={task}", "scheduler=hd", "optimizer.beta=1e-5"])
    assert swept.scheduler.label == "hd-beta=1e-05"


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_schedulefree_selects_its_optimizer_with_the_task_lr_momentum_and_decay(task) -> None:
    sgd = _composed([f"experiment={task}", "scheduler=step"]).optimizer
    sf = _composed([f"experiment={task}", "scheduler=schedulefree"])
    assert sf.optimizer.name == "schedulefree_sgd"
    assert (sf.optimizer.lr, sf.optimizer.momentum) == (sgd.lr, sgd.momentum)
    assert sf.optimizer.weight_decay == sgd.weight_decay
    assert (sf.optimizer.lr_multiplier, sf.optimizer.warmup_epochs) == (10.0, 5.0)
    assert sf.scheduler.label == "schedulefree-lr_multiplier=10"
    swept = _composed(
        [f"experiment={task}", "scheduler=schedulefree", "optimizer.lr_multiplier=50"]
    )
    assert swept.scheduler.label == "schedulefree-lr_multiplier=50"


def test_tlr_keeps_sgd_and_has_the_paper_settings() -> None:
    cfg = _composed([*QUICK, "scheduler=tlr"])
    assert cfg.optimizer.name == "sgd" and cfg.scheduler.label == "tlr"
    assert (cfg.scheduler.gap_epochs, cfg.scheduler.bound, cfg.scheduler.gamma) == (0.33, 0.25, 1)


def test_quick_preset_scales_the_schedulefree_warmup_and_the_command_line_wins() -> None:
    assert _composed([*QUICK, "scheduler=schedulefree"]).optimizer.warmup_epochs == 1.0
    cfg = _composed([*QUICK, "scheduler=schedulefree", "optimizer.warmup_epochs=2"])
    assert cfg.optimizer.warmup_epochs == 2.0


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["scheduler=hd", "optimizer=sgd"], "optimizer.name='sgd'", "optimizer.name='sgd_hd'"),
        (
            ["scheduler=schedulefree", "optimizer=sgd_hd"],
            "optimizer.name='sgd_hd'",
            "schedulefree_sgd",
        ),
        (["scheduler=step", "optimizer=sgd_hd"], "scheduler.name='step'", "'hd'"),
        (
            ["scheduler=cosine", "optimizer=schedulefree_sgd"],
            "scheduler.name='cosine'",
            "'schedulefree'",
        ),
        (["scheduler=hd", "optimizer.beta=-1"], "optimizer.beta=-1.0", "0.0 <= beta"),
        (
            ["scheduler=schedulefree", "optimizer.momentum=1"],
            "optimizer.momentum=1.0",
            "0.0 < momentum < 1.0",
        ),
        (
            ["scheduler=schedulefree", "optimizer.lr_multiplier=0"],
            "lr_multiplier=0.0",
            "0.0 < lr_multiplier",
        ),
        (["scheduler=tlr", "+scheduler.beta=1"], "scheduler.beta=1", "gap_epochs, bound, gamma"),
    ],
)
def test_bad_pairings_and_values_fail_naming_key_value_and_allowed(overrides, key, allowed) -> None:
    cfg = compose_config([*QUICK, *overrides])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert key in str(error.value) and allowed in str(error.value)


def _built(overrides: list[str], steps_per_epoch: int = 23):
    cfg = validate_config(compose_config([*QUICK, *overrides]))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = build_optimizer(cfg.optimizer, model, steps_per_epoch=steps_per_epoch)
    schedule = build_schedule(cfg.scheduler, optimizer, steps_per_epoch=steps_per_epoch, epochs=30)
    return cfg, optimizer, schedule


def test_hd_builds_sgdhd_and_a_schedule_that_leaves_its_lr_alone() -> None:
    cfg, optimizer, schedule = _built(["scheduler=hd", "optimizer.beta=1e-3"])
    assert isinstance(optimizer, SGDHD) and isinstance(schedule, HypergradientLR)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["beta"], group["momentum"], group["nesterov"]) == (
        0.05,
        1e-3,
        0.9,
        True,
    )
    model = torch.nn.Linear(4, 1)
    optimizer = SGDHD(model.parameters(), lr=0.05, momentum=0.9, beta=1e-2)
    schedule = build_schedule(cfg.scheduler, optimizer, steps_per_epoch=23, epochs=30)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.ones(2, 4)).square().sum().backward()
        optimizer.step()
        moved = optimizer.param_groups[0]["lr"]
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == schedule.lr == moved
    assert moved != 0.05  # the hypergradient moved it; the schedule left it there
    assert method_options(cfg.scheduler, cfg.optimizer)["beta"] == 1e-3


def test_schedulefree_builds_with_multiplied_lr_and_warmup_in_steps() -> None:
    cfg, optimizer, schedule = _built(
        ["scheduler=schedulefree", "optimizer.lr_multiplier=20", "optimizer.warmup_epochs=2"]
    )
    assert isinstance(optimizer, SGDScheduleFree) and isinstance(schedule, ScheduleFreeLR)
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.05 * 20)
    assert (group["momentum"], group["weight_decay"], group["warmup_steps"]) == (0.9, 5e-4, 46)
    assert method_options(cfg.scheduler, cfg.optimizer)["lr_multiplier"] == 20.0


def test_tlr_builds_the_trainable_lr_on_sgd() -> None:
    _, optimizer, schedule = _built(["scheduler=tlr"])
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(schedule, TrainableLR)
    assert schedule.gap_steps == 8  # round(0.33 * 23)


def test_measurement_files() -> None:
    def measurement_file(name: str) -> str | None:
        stream = schedule_class(name).record_stream
        return records_file(stream) if stream else None

    assert measurement_file("autodrop") == measurement_file("autodrop_v1") == "autodrop.jsonl"
    assert measurement_file("tlr") == "tlr.jsonl"
    assert measurement_file("hd") is measurement_file("schedulefree") is None


# ---------------------------------------------------------------------- tables and figures
TASK = "cifar10/resnet18"


@pytest.fixture
def baseline_runs(tmp_path):
    """ResNet-18 / CIFAR-10: step, an HD beta grid, TLR, a schedule-free multiplier grid."""
    grid = [  # schedule, label settings, errors, options
        ("step", {}, [5.0, 6.0], {}),
        ("hd", {"optimizer.beta": 1e-3}, [9.0, 9.5], {"beta": 1e-3}),
        ("hd", {"optimizer.beta": 1e-4}, [7.0, 7.2], {"beta": 1e-4}),
        ("hd", {"optimizer.beta": 1e-5}, [8.0, 8.0], {"beta": 1e-5}),
        ("tlr", {}, [6.5, 6.7], {"gap_epochs": 0.33}),
        ("schedulefree", {"optimizer.lr_multiplier": 10.0}, [6.0, 6.4], {"lr_multiplier": 10.0}),
        ("schedulefree", {"optimizer.lr_multiplier": 50.0}, [5.5, 5.9], {"lr_multiplier": 50.0}),
    ]
    for name, settings, errors, options in grid:
        for seed, err in enumerate(errors):
            write_fake_run(
                tmp_path,
                experiment="paper/resnet18_cifar10",
                dataset="cifar10",
                model="resnet18",
                scheduler=name,
                settings=settings,
                seed=seed,
                test_errs=[err + 3, err],
                options=options,
            )
    return load_runs(tmp_path).finished()


def test_table2_shows_the_best_setting_of_grid_searched_baselines(baseline_runs) -> None:
    table = tables.table2(baseline_runs)
    display = table.display
    assert list(display.columns) == ["HD", "TLR (reconstruction)", "Schedule-free", "Step"]
    assert display.loc[TASK, "HD"] == "7.10 ± 0.14 (2) [beta=0.0001]"
    assert display.loc[TASK, "Schedule-free"] == "5.70 ± 0.28 (2) [lr_multiplier=50]"
    assert display.loc[TASK, "TLR (reconstruction)"] == "6.60 ± 0.14 (2)"
    assert "lowest mean minimum test error" in table.note and "reconstruction" in table.note
    chosen = table.values.set_index("scheduler").loc["hd"]
    assert (chosen["setting"], chosen["mean"]) == ("beta=0.0001", pytest.approx(7.1))


def test_table2_vs_paper_puts_the_paper_hd_and_tlr_beside_ours(baseline_runs) -> None:
    paper = tables.load_paper_table2()
    display = tables.table2_vs_paper(tables.table2(baseline_runs), paper).display
    assert display.loc[TASK, "HD (paper)"] == "6.78 ± 0.23 (4)"
    assert display.loc[TASK, "TLR (paper)"] == "5.70 ± 0.19 (4)"
    assert display.loc[TASK, "HD (ours)"].endswith("[beta=0.0001]")
    assert display.loc[TASK, "TLR (reconstruction) (ours)"] == "6.60 ± 0.14 (2)"
    assert "Schedule-free (ours)" in display.columns


def test_every_setting_keeps_its_ablation_style_table(baseline_runs) -> None:
    names = {table.name: table for table in tables.ablation_tables(baseline_runs)}
    hd = names["ablation_hd_beta"].display
    assert list(hd.columns) == ["beta=1e-05", "beta=0.0001", "beta=0.001"]
    assert "ablation_schedulefree_lr_multiplier" in names


def test_figure_legend_names_tlr_a_reconstruction(baseline_runs) -> None:
    fig = task_figure(baseline_runs, "ResNet-18 / CIFAR-10")
    (legend,) = fig.legends
    labels = [text.get_text() for text in legend.get_texts()]
    plt.close(fig)
    assert "TLR (reconstruction)" in labels and "tlr" not in labels
    assert "HD (beta=0.0001)" in labels


# ----------------------------------------------------------------------------- end to end


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def _assert_equal_state(mine: Any, theirs: Any, where: str) -> None:
    """Nested state (dicts, lists, tensors, numbers) equal bit for bit."""
    if isinstance(theirs, torch.Tensor):
        assert torch.equal(mine, theirs), where
    elif isinstance(theirs, dict):
        assert mine.keys() == theirs.keys(), where
        for key in theirs:
            _assert_equal_state(mine[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list | tuple):
        assert len(mine) == len(theirs), where
        for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            _assert_equal_state(a, b, f"{where}[{index}]")
    else:
        assert mine == theirs, where


def _check_records(method: str, run_dir, metrics: list[dict]) -> None:
    summary = OmegaConf.load(run_dir / "summary.json")
    assert summary.status == "finished" and summary.scheduler_name == method
    if method == "hd":
        assert summary.scheduler_options.beta == 1e-4
        assert all(isinstance(m["lr/epoch_mean"], float) for m in metrics)
        assert metrics[-1]["lr"] != 0.05  # the hypergradient moved it
    if method == "schedulefree":
        assert summary.scheduler_options.lr_multiplier == 10.0
        # warmup of 1 epoch (17 steps) to 0.05 * 10, then flat
        assert [m["lr"] for m in metrics] == pytest.approx([0.5, 0.5, 0.5])
        assert not (run_dir / "tlr.jsonl").exists()
        # BASELINES.md section 3.5: the routine checkpoint holds x (eval mode).
        checkpoint = load_checkpoint(run_dir / "checkpoints/last.pt")
        assert checkpoint["optimizer"]["param_groups"][0]["train_mode"] is False
    if method == "tlr":
        updates = read_records(run_dir / "tlr.jsonl")
        assert [r["step"] for r in updates] == list(range(6, 52, 6))  # gap round(0.33 * 17)
        assert list(updates[0]) == ["step", "lr", "factor", "line_search_lr", "pairs"]
        assert metrics[-1]["lr"] == updates[-1]["lr"]
        assert all(0.75 <= r["factor"] <= 1.25 for r in updates)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hd", "tlr", "schedulefree"])
def test_method_trains_records_and_resumes_bit_identically(
    train_in_process, killed_at_checkpoint, method: str
) -> None:
    run = [*RESUME_RUN, f"scheduler={method}"]
    reference = train_in_process([*run, "experiment_name=whole"])
    metrics = read_records(reference / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    _check_records(method, reference, metrics)

    # Killed after epoch 2's records, before its checkpoint: the relaunch redoes epoch 2.
    killed_at_checkpoint(2, lambda: train_in_process([*run, "experiment_name=split"]))
    resumed = train_in_process([*run, "experiment_name=split"])

    assert _without_times(read_records(resumed / "metrics.jsonl")) == _without_times(metrics)
    assert read_records(resumed / "tlr.jsonl") == read_records(reference / "tlr.jsonl")
    mine = load_checkpoint(resumed / "checkpoints/last.pt")
    theirs = load_checkpoint(reference / "checkpoints/last.pt")
    for part in ("model", "optimizer", "schedule", "stream_records"):
        _assert_equal_state(mine[part], theirs[part], part)
