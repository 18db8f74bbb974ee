"""Aggregation of run directories into the paper's tables, on runs with hand-chosen numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from experiments.rundir import DamagedRecords, read_records
from scripts import aggregate
from scripts.analysis import report, tables
from scripts.analysis.runs import NoRunsError, label_setting, load_runs
from scripts.analysis.wandb_reader import load_runs_from_wandb
from tests.fake_runs import write_fake_run

PAPER_EXP = "paper/resnet18_cifar10"
TASK = "cifar10/resnet18"


def curve(final: float, epochs: int = 8) -> list[float]:
    """Strictly falling test error: epoch e has final + (epochs - e), so the minimum reached by
    epoch c is final + epochs - c."""
    return [final + epochs - epoch for epoch in range(1, epochs + 1)]


def autodrop_trace() -> list[dict]:
    """12 measurements, the first two without an angle, a drop at every fourth."""
    return [
        {
            "step": 5 * (i + 1),
            "omega": None if i < 2 else 80.0 + i,
            "smoothed": None if i < 4 else 79.0 + i,
            "lr": 0.1 * 0.95 ** ((i + 1) // 4),
            "dropped": (i + 1) % 4 == 0,
        }
        for i in range(12)
    ]


def add_run(root: Path, scheduler: str, seed: int, final: float, **kwargs) -> Path:
    settings = {"experiment": PAPER_EXP, "dataset": "cifar10", "model": "resnet18"} | kwargs
    epochs = settings.pop("epochs", 8)
    label = "-".join([scheduler, *(f"{k}={v}" for k, v in settings.get("settings", {}).items())])
    return write_fake_run(
        root,
        scheduler=scheduler,
        seed=seed,
        test_errs=curve(final, epochs),
        wandb_run_id=f"{label}-{seed}-{final}",
        **settings,
    )


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "runs"
    # step: minima 5, 6, 7 -> 6.00 ± 1.00 (3); time 100/110/120 ms -> mean 110 ms
    for seed, (final, seconds) in enumerate([(5.0, 0.100), (6.0, 0.110), (7.0, 0.120)]):
        add_run(root, "step", seed, final, time_per_iter_s=seconds)
    # autodrop: minima 4, 5 -> 4.50 ± 0.71 (2); 121 ms -> +10.0 % over step
    for seed, final in enumerate([4.0, 5.0]):
        trace = autodrop_trace() if seed == 0 else None
        add_run(
            root,
            "autodrop",
            seed,
            final,
            time_per_iter_s=0.121,
            options={"window": 64},
            trace=trace,
        )
    add_run(root, "autodrop_v1", 0, 9.0, time_per_iter_s=0.099)  # -10.0 %
    add_run(root, "cosine", 0, 8.0, epochs=10)  # 10-epoch budget: 25 % -> epoch ceil(2.5) = 3
    # Unfinished runs with tempting numbers: never averaged.
    add_run(root, "autodrop", 2, 1.0, status="failed", message="CUDA out of memory")
    add_run(root, "step", 3, 0.5, status="diverged", message="loss is nan")
    running = add_run(root, "cosine", 1, 0.1, epochs_planned=10)
    (running / "summary.json").unlink()  # the runner has not written its summary yet
    # Ablations: window in the paper experiment, buffer size in its own experiment.
    for seed, final in enumerate([6.0, 7.0]):
        add_run(root, "autodrop", seed, final, settings={"scheduler.window": 32})
    add_run(root, "autodrop", 0, 9.0, settings={"scheduler.window": 128})
    add_run(
        root, "autodrop", 0, 3.0, experiment="ablation/buffer_size",
        settings={"scheduler.buffer_size": 20},
    )  # fmt: skip
    # As the ablation presets label them: the default value has a labelled run too.
    for rho, final in ((0.5, 12.0), (0.95, 3.5)):
        rho_setting = {"scheduler.rho": rho}
        add_run(root, "autodrop", 0, final, experiment="ablation/rho", settings=rho_setting)
    # A second task, outside the paper's.
    add_run(root, "step", 0, 10.0, experiment="quick/digits", dataset="digits", model="resnet8")
    return root


@pytest.fixture(scope="module")
def run_set(runs_dir):
    return load_runs(runs_dir)


@pytest.fixture(scope="module")
def finished(run_set):
    return run_set.finished()


def summary_of(label: str, name: str, settings: dict | None, changes: dict | None = None):
    summary = {"scheduler": label, "scheduler_name": name, "changes": changes or {}}
    if settings is not None:  # None: an older run, recorded before label_settings
        summary |= {"scheduler_label": label.partition(",")[0], "label_settings": settings}
    return summary


def test_base_and_one_setting_come_from_the_recorded_label_settings():
    assert label_setting(summary_of("autodrop", "autodrop", {})) == ("autodrop", None, None, {})
    assert label_setting(summary_of("autodrop_v1", "autodrop_v1", {}))[:3] == (
        "autodrop_v1", None, None
    )  # fmt: skip
    window = {"scheduler.window": 32}
    assert label_setting(summary_of("autodrop-window=32", "autodrop", window)) == (
        "autodrop", "scheduler.window", "32", window
    )  # fmt: skip
    lr = summary_of("constant-lr=0.0001", "constant", {"optimizer.lr": 1e-4})
    assert label_setting(lr)[:3] == ("constant", "optimizer.lr", "0.0001")
    # An older run records no label_settings: no setting, and its label is its own base.
    older = summary_of("autodrop-window=32", "autodrop", None)
    assert label_setting(older) == ("autodrop-window=32", None, None, {})
    assert label_setting(summary_of("autodrop", "autodrop", None))[:3] == ("autodrop", None, None)


def test_a_label_with_an_identity_suffix_is_its_own_column(tmp_path):
    for seed in (0, 1):
        for changes, err in (({}, 5.0), ({"optimizer.lr": 0.1}, 9.0)):
            write_fake_run(
                tmp_path,
                experiment=PAPER_EXP,
                dataset="cifar10",
                model="resnet18",
                scheduler="step",
                changes=changes,
                seed=seed,
                test_errs=[err + seed],
            )
    suffixed = summary_of("step,optimizer.lr=0.1", "step", {}, {"optimizer.lr": 0.1})
    assert label_setting(suffixed)[:3] == ("step,optimizer.lr=0.1", None, None)
    window = summary_of("autodrop-window=32,trainer.epochs=3", "autodrop", {"scheduler.window": 32})
    assert label_setting(window)[1:3] == (None, None)
    table = tables.table2(load_runs(tmp_path).finished())
    cells = table.display.iloc[0]
    assert cells["Step"] == "5.50 ± 0.71 (2)"
    assert cells["Step (optimizer.lr=0.1)"] == "9.50 ± 0.71 (2)"


def test_runs_frame_has_one_row_per_run_with_status_and_minimum(run_set):
    runs = run_set.runs.set_index("run_id")
    assert len(runs) == 17
    step0 = runs.loc[f"{PAPER_EXP}/cifar10-resnet18/step/seed=0"]
    assert (step0["status"], step0["min_test_err"], step0["min_test_err_epoch"]) == (
        "finished",
        5.0,
        8,
    )
    assert step0["final_test_err"] == 5.0 and step0["epochs_done"] == 8
    running = runs.loc[f"{PAPER_EXP}/cifar10-resnet18/cosine/seed=1"]
    # No summary.json and no process holding the run's lock: it died before writing one.
    assert running["status"] == "stale"
    assert running["min_test_err"] == pytest.approx(0.1)
    window = runs.loc[f"{PAPER_EXP}/cifar10-resnet18/autodrop-window=32/seed=0"]
    assert (window["base"], window["setting_key"], window["setting_value"]) == (
        "autodrop",
        "scheduler.window",
        "32",
    )
    assert window["display"] == "AutoDrop (window=32)"
    assert json.loads(runs.loc[f"{PAPER_EXP}/cifar10-resnet18/autodrop/seed=0", "options"]) == {
        "window": 64
    }


def test_table2_cells_are_mean_sample_std_and_count(finished):
    table = tables.table2(finished)
    display = table.display
    assert list(display.columns) == ["Cosine", "Step", "AutoDrop (2021 code)", "AutoDrop"]
    assert list(display.index) == ["cifar10/resnet18", "digits/resnet8"]
    assert display.loc[TASK, "Step"] == "6.00 ± 1.00 (3)"
    assert display.loc[TASK, "AutoDrop"] == f"4.50 ± {math.sqrt(0.5):.2f} (2)"
    assert display.loc[TASK, "Cosine"] == "8.00 (1)"
    assert display.loc["digits/resnet8", "Step"] == "10.00 (1)"
    assert display.loc["digits/resnet8", "AutoDrop"] == ""
    assert table.caption.startswith("Paper's protocol (the epoch chosen on the test set): min")
    assert "mean ± sample std over seeds; n = 1-3 seeds per cell" in table.caption
    step = table.values.set_index(["row", "scheduler"]).loc[(TASK, "step")]
    assert (step["mean"], step["std"], step["n"]) == (6.0, 1.0, 3)


def test_unfinished_runs_are_listed_and_warned_about_never_averaged(run_set, capsys):
    listed = tables.failed_runs(run_set).display
    assert dict(listed["status"]) == {
        f"{PAPER_EXP}/cifar10-resnet18/autodrop/seed=2": "failed",
        f"{PAPER_EXP}/cifar10-resnet18/cosine/seed=1": "stale",
        f"{PAPER_EXP}/cifar10-resnet18/step/seed=3": "diverged",
    }
    report.warn_unfinished(run_set)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3 and all(line.startswith("warning: run ") for line in warnings)
    assert any("diverged" in line and "loss is nan" in line for line in warnings)
    # All three unfinished runs have errors below every finished one: averaging would show.
    table = tables.table2(run_set.finished())
    assert table.values["n"].sum() == 8


def test_table16_takes_the_minimum_within_each_budget_fraction(finished):
    display = tables.table16(finished).display
    step = display.loc[(TASK, "Step")]
    # cut-offs of an 8-epoch budget: epochs 2, 4, 6, 8 -> final + 6, 4, 2, 0
    assert [step[f"{p} %"] for p in (25, 50, 75, 100)] == [
        "12.00 ± 1.00 (3)",
        "10.00 ± 1.00 (3)",
        "8.00 ± 1.00 (3)",
        "6.00 ± 1.00 (3)",
    ]
    cosine = display.loc[(TASK, "Cosine")]  # 10 epochs: cut-offs 3, 5, 8, 10
    assert cosine["epochs"] == "10"
    assert [cosine[f"{p} %"] for p in (25, 50, 75, 100)] == [
        "15.00 (1)",
        "13.00 (1)",
        "10.00 (1)",
        "8.00 (1)",
    ]
    full = display.xs(TASK)["100 %"]
    assert full.to_dict() == tables.table2(finished).display.loc[TASK].loc[full.index].to_dict()


def test_table3_reports_ms_per_iteration_and_overhead_against_step(finished):
    table = tables.table3(finished)
    display = table.display
    assert display.loc[TASK, "Step"] == "110.00 ± 10.00 (3)"
    assert display.loc[TASK, "AutoDrop vs Step"] == "+10.0 %"
    assert display.loc[TASK, "AutoDrop (2021 code) vs Step"] == "-10.0 %"
    assert display.loc["digits/resnet8", "AutoDrop vs Step"] == ""
    assert table.caption.startswith("Time per optimizer step (ms, training only)")
    assert table.note.startswith("AutoDrop vs Step, AutoDrop (2021 code) vs Step: mean time")


def test_table3_has_no_overhead_footer_without_the_baseline(finished):
    without_step = finished.subset(
        finished.runs.loc[finished.runs["scheduler"] != "step", "run_id"]
    )
    table = tables.table3(without_step)
    assert "Step" not in table.display and not any("vs" in c for c in table.display.columns)
    assert table.note == "" and table.caption


def test_ablation_table_places_default_run_at_its_value_and_marks_it(finished):
    by_name = {table.name: table for table in tables.ablation_tables(finished)}
    assert set(by_name) == {
        "ablation_autodrop_window", "ablation_autodrop_buffer_size", "ablation_autodrop_rho"
    }  # fmt: skip
    window = by_name["ablation_autodrop_window"].display
    assert list(window.columns) == ["window=32", "window=64", "window=128"]
    assert window.loc[TASK].tolist() == [
        f"6.50 ± {math.sqrt(0.5):.2f} (2)",
        f"4.50 ± {math.sqrt(0.5):.2f} (2) *",  # plain autodrop runs, options say window=64
        "9.00 (1)",
    ]
    # Buffer runs live in their own experiment; the default comes from the paper experiment's
    # plain autodrop runs, whose options do not record buffer_size: paper default 10.
    buffer = by_name["ablation_autodrop_buffer_size"].display
    assert list(buffer.columns) == ["buffer_size=10", "buffer_size=20"]
    assert buffer.loc[TASK].tolist() == [f"4.50 ± {math.sqrt(0.5):.2f} (2) *", "3.00 (1)"]
    # The default value's labelled run fills its cell; the plain runs are not pooled into it.
    rho = by_name["ablation_autodrop_rho"].display
    assert rho.loc[TASK].tolist() == ["12.00 (1)", "3.50 (1) *"]


def test_ablation_default_is_the_paper_value_when_no_plain_run_exists(tmp_path):
    for window, final in ((64, 30.0), (640, 29.0)):
        write_fake_run(
            tmp_path, experiment="ablation/window_imagenet", dataset="imagenet",
            model="resnet18_imagenet", scheduler="autodrop", seed=0,
            settings={"scheduler.window": window}, test_errs=[final],
        )  # fmt: skip
    (table,) = tables.ablation_tables(load_runs(tmp_path))
    assert table.display.loc["imagenet/resnet18_imagenet"].tolist() == ["30.00 (1)", "29.00 (1) *"]
    assert "paper default window=64 (640 on ImageNet)" in table.note


def test_the_imagenet_window_of_the_tables_is_the_imagenet_presets(monkeypatch, tmp_path):
    from experiments.config import compose_config

    for task in ("paper/resnet18_imagenet", "paper/resnet50_imagenet"):
        assert compose_config([f"experiment={task}"]).scheduler.window == tables.IMAGENET_WINDOW
    conf = tmp_path / "conf"
    preset = conf / "scheduler_preset" / "paper" / "resnet18_imagenet" / "autodrop.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_text("window: 320\n")
    monkeypatch.setattr("experiments.config.CONF_DIR", conf)
    assert tables._imagenet_window() == 320  # read from the presets, not written twice


def test_paper_numbers_sit_beside_ours_where_the_task_matches(finished):
    paper = tables.load_paper_table2()
    assert len(paper) == 42 and set(paper["schedule"]) == {
        "hd", "tlr", "clr", "onecycle", "exp", "step", "autodrop"
    }  # fmt: skip
    display = tables.table2_vs_paper(tables.table2(finished), paper).display
    assert display.loc[TASK, "Step (ours)"] == "6.00 ± 1.00 (3)"
    assert display.loc[TASK, "Step (paper)"] == "4.79 ± 0.17 (4)"
    assert display.loc[TASK, "HD (paper)"] == "6.78 ± 0.23 (4)"
    assert display.loc[TASK, "AutoDrop (paper)"] == "4.79 ± 0.99 (4)"
    assert "Cosine (paper)" not in display and "HD (ours)" not in display
    assert display.loc["digits/resnet8"].filter(like="(paper)").eq("").all()


def test_imagenet_paper_numbers_are_single_values(tmp_path):
    write_fake_run(
        tmp_path, experiment="paper/r18_imagenet", dataset="imagenet",
        model="resnet18_imagenet", scheduler="step", seed=0, test_errs=[40.0, 30.0],
    )  # fmt: skip
    ours = tables.table2(load_runs(tmp_path))
    display = tables.table2_vs_paper(ours, tables.load_paper_table2()).display
    assert display.loc["imagenet/resnet18_imagenet", "Step (paper)"] == "29.74"
    assert display.loc["imagenet/resnet18_imagenet", "Step (ours)"] == "30.00 (1)"


def test_no_paper_table_when_no_task_matches(tmp_path):
    write_fake_run(
        tmp_path, experiment="quick/digits", dataset="digits", model="resnet8",
        scheduler="step", seed=0, test_errs=[3.0],
    )  # fmt: skip
    assert (
        tables.table2_vs_paper(tables.table2(load_runs(tmp_path)), tables.load_paper_table2())
        is None
    )


def test_same_task_in_two_experiments_is_never_pooled(tmp_path):
    for experiment, final in (("quick/digits", 3.0), ("adhoc", 9.0)):
        write_fake_run(
            tmp_path, experiment=experiment, dataset="digits", model="resnet8",
            scheduler="step", seed=0, test_errs=[final],
        )  # fmt: skip
    display = tables.table2(load_runs(tmp_path)).display
    assert display["Step"].to_dict() == {
        "digits/resnet8 [adhoc]": "9.00 (1)",
        "digits/resnet8 [quick/digits]": "3.00 (1)",
    }


def test_aggregate_cli_writes_every_table_in_three_formats(runs_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert aggregate.main(["--runs", str(runs_dir), "--out", str(out)]) == 0
    written = {path.name for path in (out / "tables").iterdir()}
    for name in ("table2", "table2_vs_paper", "table16", "table3", "ablation_autodrop_window"):
        assert {f"{name}.csv", f"{name}.md", f"{name}.tex"} <= written
    assert {"runs.csv", "failed_runs.csv", "failed_runs.md"} <= written
    assert len(pd.read_csv(out / "tables" / "runs.csv")) == 17
    table2_csv = pd.read_csv(out / "tables" / "table2.csv", keep_default_na=False)
    assert table2_csv.set_index("task").loc[TASK, "Step"] == "6.00 ± 1.00 (3)"
    assert "6.00 $\\pm$ 1.00 (3)" in (out / "tables" / "table2.tex").read_text()
    assert "| 6.00 ± 1.00 (3)" in (out / "tables" / "table2.md").read_text()
    for name in ("table2", "table2_vs_paper", "table16", "table3", "ablation_autodrop_window"):
        markdown = (out / "tables" / f"{name}.md").read_text()
        assert markdown.startswith("Table: ") and " over seeds; n = " in markdown, name
        latex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\caption{" in latex and "\\label{tab:" + name + "}" in latex, name
        assert "seeds; n = " in latex and ("(\\%)" in latex or "(ms, " in latex), name
    assert capsys.readouterr().err.count("warning: run ") == 3


def test_experiment_prefix_selects_runs(runs_dir):
    runs = load_runs(runs_dir, experiment="paper").runs
    assert set(runs["experiment"]) == {PAPER_EXP}
    ablations = load_runs(runs_dir, experiment="ablation/").runs
    assert set(ablations["experiment"]) == {"ablation/buffer_size", "ablation/rho"}
    with pytest.raises(NoRunsError, match=r"experiment 'pap'.*experiments found"):
        load_runs(runs_dir, experiment="pap")


def test_missing_or_empty_runs_dir_says_where_and_how_runs_are_made(tmp_path, capsys):
    with pytest.raises(NoRunsError, match=r"does not exist.*experiments\.train"):
        load_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRunsError, match=r"no run directories.*empty.*experiments\.train"):
        load_runs(tmp_path / "empty")
    assert aggregate.main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "python -m experiments.train" in capsys.readouterr().err


def test_a_bad_or_partial_metrics_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2')
    with pytest.raises(DamagedRecords, match=r"metrics.jsonl:2"):
        read_records(path)
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(DamagedRecords, match=r"metrics.jsonl:2"):
        read_records(path)
    path.write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(DamagedRecords, match=r"metrics.jsonl:2: not a JSON object"):
        read_records(path)


def test_unknown_source_is_rejected(tmp_path, capsys):
    assert aggregate.main(["--source", "s3", "--out", str(tmp_path)]) == 2
    assert "'s3' is not one of local, wandb" in capsys.readouterr().err


class FakeWandbRun:
    """The parts of wandb.apis.public.Run the W&B source reads."""

    def __init__(self, run_id, name, group, state, summary, config, history):
        self.id, self.name, self.group, self.state = run_id, name, group, state
        self.summary_metrics, self.config, self._history = summary, config, history

    def scan_history(self):
        return iter(self._history)


class FakeWandbApi:
    def __init__(self, runs):
        self._runs, self.paths = runs, []

    def runs(self, path):
        self.paths.append(path)
        return list(self._runs)


def wandb_run_from_dir(run_dir: Path, runs_dir: Path, full_summary: bool) -> FakeWandbRun:
    """What the runner's W&B logging holds for one run directory: per-epoch rows and trace rows
    (None values left out, booleans as floats), the resolved config, and a summary holding the
    last logged values plus the status, and with ``full_summary`` every summary.json field."""
    parts = run_dir.relative_to(runs_dir).parts
    group, name = "/".join(parts[:-2]), f"{parts[-2]}-s{parts[-1].removeprefix('seed=')}"
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    history = []
    for record in read_records(run_dir / "metrics.jsonl"):
        history.append(
            {"_step": len(history), **{k: v for k, v in record.items() if v is not None}}
        )
    for record in read_records(run_dir / "autodrop.jsonl"):
        values = {f"trace/{k}": float(v) if isinstance(v, bool) else v for k, v in record.items()}
        history.append(
            {"_step": len(history), **{k: v for k, v in values.items() if v is not None}}
        )
    logged = {"_runtime": 3.0, **{k: v for row in history for k, v in row.items()}}
    status = summary.get("status", "running")
    logged_summary = logged | ({**summary} if full_summary else {"status": status})
    config = {}  # a run without summary.json: say its config never reached W&B either
    if summary:
        scheduler = {"name": summary["scheduler_name"], "label": summary["scheduler"]}
        config = {
            "experiment_name": summary["experiment"],
            "data": {"name": summary["dataset"], "image_size": 32},
            "model": {"name": summary["model"]},
            "scheduler": scheduler | summary["scheduler_options"],
            "seed": summary["seed"],
            "trainer": {"epochs": summary["epochs_planned"], "batch_size": summary["batch_size"]},
        }
    # None of these runs has a live process: W&B shows every unfinished one as crashed.
    state = "finished" if status == "finished" else "crashed"
    run_id = summary.get("wandb_run_id") or "no-summary"
    return FakeWandbRun(run_id, name, group, state, logged_summary, config, history)


def fake_api_for(runs_dir: Path, full_summary: bool) -> FakeWandbApi:
    run_dirs = sorted(path.parent for path in runs_dir.rglob("metrics.jsonl"))
    fake_runs = [wandb_run_from_dir(path, runs_dir, full_summary) for path in run_dirs]
    # An older crashed W&B run of a run id that later finished is superseded.
    older = wandb_run_from_dir(run_dirs[0], runs_dir, full_summary)
    older.summary_metrics = {**older.summary_metrics, "status": "failed", "min_test_err": 0.0}
    return FakeWandbApi([older, *fake_runs])


def test_wandb_source_gives_the_same_frames_as_local_files(runs_dir, run_set):
    api = fake_api_for(runs_dir, full_summary=True)
    from_wandb = load_runs_from_wandb("autodrop-bench", "me", api=api)
    assert api.paths == ["me/autodrop-bench"]
    # 'source' says where each came from; the run without summary.json gets W&B's id
    ignore = ["source", "wandb_run_id"]
    pd.testing.assert_frame_equal(
        from_wandb.runs.drop(columns=ignore), run_set.runs.drop(columns=ignore)
    )
    pd.testing.assert_frame_equal(from_wandb.metrics, run_set.metrics)
    pd.testing.assert_frame_equal(from_wandb.traces, run_set.traces)
    assert len(run_set.traces) == 12
    assert from_wandb.runs["source"].str.startswith("wandb:me/autodrop-bench/").all()


def test_wandb_source_with_status_only_summary_reads_identity_from_config(runs_dir, run_set):
    """The runner may put only 'status' into the W&B summary: identity, budget and options
    then come from the config, minima and times from the history, so the tables agree. The
    label settings are only in the summary: without them a labelled run has no setting (as
    an older run), is its own column and is left out of the comparison of the tables."""
    from_wandb = load_runs_from_wandb(api=fake_api_for(runs_dir, full_summary=False))
    same = [
        "run_id", "experiment", "task", "scheduler", "scheduler_name", "seed", "status",
        "epochs_planned", "epochs_done", "min_test_err", "min_test_err_epoch",
        "final_test_err", "time_per_iter_s", "options",
    ]  # fmt: skip
    pd.testing.assert_frame_equal(from_wandb.runs[same], run_set.runs[same])
    assert from_wandb.runs["hardware"].isna().all()  # only summary.json knows the hardware
    labelled = from_wandb.runs["scheduler"] != from_wandb.runs["scheduler_name"]
    assert from_wandb.runs.loc[labelled, "setting_key"].isna().all()
    plain = run_set.runs.loc[run_set.runs["setting_key"].isna(), "run_id"]
    assert set(plain) == set(from_wandb.runs.loc[~labelled, "run_id"])
    for build in (tables.table2, tables.table16, tables.table3):
        ours = build(run_set.subset(plain).finished())
        theirs = build(from_wandb.subset(plain).finished())
        pd.testing.assert_frame_equal(theirs.display, ours.display)


def test_wandb_source_filters_experiments_and_reports_unusable_runs():
    summary = {"status": "finished", "scheduler": "step", "seed": 0, "dataset": "digits"}
    nameless = FakeWandbRun("x1", "step-s0", "", "finished", summary, {}, [])
    with pytest.raises(ValueError, match=r"give \['experiment', 'model'\]"):
        load_runs_from_wandb(api=FakeWandbApi([nameless]))
    rows = [{"_step": 0, "epoch": 1, "test/err": 4.0}, {"_step": 1, "trace/step": 5}]
    named = FakeWandbRun("x2", "step-s0", "quick/digits/digits-resnet8", "finished", {}, {}, rows)
    runs = load_runs_from_wandb(api=FakeWandbApi([named]), experiment="quick")
    assert runs.runs.loc[0, ["run_id", "status", "min_test_err"]].tolist() == [
        "quick/digits/digits-resnet8/step/seed=0",
        "finished",
        4.0,
    ]
    assert runs.traces[["step", "dropped"]].values.tolist() == [[5.0, False]]
    with pytest.raises(NoRunsError, match="experiment 'paper'"):
        load_runs_from_wandb(api=FakeWandbApi([named]), experiment="paper")
