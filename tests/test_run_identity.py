"""Run identity and records: distinct setups are distinct runs, a launch only skips or resumes
the same setup and never writes into a run it does not train, finished means complete."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from experiments import provenance
from experiments import train as train_module
from experiments.config import ConfigError, compose_config, compose_with_choices
from experiments.identity import label_settings
from experiments.rundir import read_records
from experiments.train import identify_run
from scripts import aggregate
from scripts.analysis.runs import load_runs
from tests.conftest import TINY_RUN

RUNS = "runs/quick/digits/digits-resnet8"


def _identify(overrides: list[str]) -> Path:
    return identify_run(*compose_with_choices([*overrides, "paths.results_dir=/r"]))[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_permuted_overrides_name_the_same_run_and_distinct_values_distinct_runs() -> None:
    base = ["experiment=quick/digits", "scheduler=step"]
    a = _identify([*base, "optimizer.lr=0.1", "trainer.epochs=3", "seed=2"])
    b = _identify(["seed=2", "trainer.epochs=3", "optimizer.lr=0.1", *base[::-1]])
    assert a == b == Path(f"/r/{RUNS}/step,optimizer.lr=0.1,trainer.epochs=3/seed=2")
    # The preset's own value adds nothing; how and where a run executes is not its identity.
    assert _identify([*base, "optimizer.lr=0.05"]) == _identify(base)
    same = [
        *base,
        "trainer.devices=2",
        "paths.data_dir=/elsewhere",
        "logger=none",
        "trainer.num_workers=0",
        "trainer.progress=plain",
    ]
    assert _identify(same) == Path(f"/r/{RUNS}/step/seed=0")
    lrs = {_identify([*base, f"optimizer.lr={lr}"]) for lr in (0.05, 0.1, 0.2)}
    assert len(lrs) == 3
    # A label that shows its swept value (ablations, HD's beta) gets no suffix for it.
    ablation = _identify(["experiment=ablation/window", "scheduler.window=32"])
    assert ablation.parent.name == "autodrop-window=32"
    assert _identify([*base[:1], "scheduler=hd", "optimizer.beta=1e-3"]).parent.name == (
        "hd-beta=0.001"
    )


@pytest.mark.slow
def test_lr_and_epochs_sweeps_give_distinct_runs(train_cli, results_dir) -> None:
    result = train_cli(
        ["-m", *TINY_RUN, "scheduler=constant", "optimizer.lr=0.05,0.1", "trainer.epochs=1,2"],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (results_dir / RUNS).iterdir())
    assert runs == [
        "constant,data.image_size=8,optimizer.lr=0.1,trainer.epochs=1",
        "constant,data.image_size=8,optimizer.lr=0.1,trainer.epochs=2",
        "constant,data.image_size=8,trainer.epochs=1",
        "constant,data.image_size=8,trainer.epochs=2",
    ]
    for name in runs:
        summary = _summary(results_dir / RUNS / name / "seed=0")
        assert summary["status"] == "finished" and summary["scheduler"] == name
        assert summary["epochs_done"] == summary["setup"]["trainer.epochs"]


@pytest.mark.slow
def test_relaunching_a_finished_run_with_a_changed_value_leaves_it_byte_identical(
    train_cli, results_dir
) -> None:
    args = [*TINY_RUN, "scheduler=constant", "trainer.epochs=1"]
    assert train_cli(args).returncode == 0
    old = results_dir / RUNS / "constant,data.image_size=8,trainer.epochs=1/seed=0"
    assert (old / ".hydra/config.yaml").is_file() and (old / ".hydra/overrides.yaml").is_file()
    before = _snapshot(old)
    again = train_cli(args)
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr
    changed = train_cli([*args, "optimizer.lr=0.07"])
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert _snapshot(old) == before  # .hydra/ included
    new = old.parent.parent / "constant,data.image_size=8,optimizer.lr=0.07,trainer.epochs=1"
    assert _summary(new / "seed=0")["status"] == "finished"


def test_a_refused_launch_names_the_keys_and_writes_nothing(train_in_process) -> None:
    run_dir = train_in_process([*TINY_RUN, "scheduler=constant", "trainer.epochs=1"])
    summary = _summary(run_dir)
    summary["setup"]["optimizer.lr"] = 0.07  # as if the preset had changed since
    (run_dir / "summary.json").write_text(json.dumps(summary))
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.07 -> 0.05.*changes nothing"):
        train_in_process([*TINY_RUN, "scheduler=constant", "trainer.epochs=1"])
    assert _snapshot(run_dir) == before


def test_a_resume_in_another_world_size_is_refused(train_in_process, killed_at_checkpoint):
    args = [*TINY_RUN, "scheduler=constant"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    with pytest.raises(
        ConfigError,
        match=r"trained in 1 processes; this launch has 2.*"
        r"trainer.devices=1",
    ):
        train_in_process([*args, "trainer.devices=2"])


def test_a_moved_data_dir_resumes_the_same_run(train_in_process, killed_at_checkpoint, tmp_path):
    args = [*TINY_RUN, "scheduler=constant"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    run_dir = train_in_process([*args, f"paths.data_dir={tmp_path / 'node-local-copy'}"])
    summary = _summary(run_dir)
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    assert "resuming" in (run_dir / "train.log").read_text()


def _git_repo(path: Path) -> Path:
    path.mkdir()
    (path / "code.py").write_text("x = 1\n")
    for command in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code"],
    ):
        subprocess.run(["git", *command], cwd=path, check=True)
    return path


def test_a_resume_across_code_changes_is_refused_unless_allowed(
    train_in_process, killed_at_checkpoint, tmp_path, monkeypatch
) -> None:
    repo = _git_repo(tmp_path / "code")
    monkeypatch.setattr(train_module, "code_version", lambda: provenance.code_version(repo))
    args = [*TINY_RUN, "scheduler=constant"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    (repo / "code.py").write_text("x = 2\n")  # an uncommitted edit
    with pytest.raises(
        ConfigError,
        match=r"trained by other code.*uncommitted changes.*"
        r"trainer.allow_code_change=true",
    ):
        train_in_process(args)
    run_dir = train_in_process([*args, "trainer.allow_code_change=true"])
    summary = _summary(run_dir)
    assert summary["status"] == "finished"
    assert summary["code_version"]["dirty"] is True
    assert summary["code_change_allowed_from"]["dirty"] is False
    assert summary["code_change_allowed_from"]["commit"] == summary["code_version"]["commit"]


def test_truncated_records_are_left_out_of_tables_then_repaired(train_in_process, tmp_path):
    run_dir = train_in_process([*TINY_RUN, "scheduler=constant"])
    metrics_path = run_dir / "metrics.jsonl"
    complete = metrics_path.read_text()
    metrics_path.write_text(complete[: len(complete) - 40])  # cut mid-line
    runs = load_runs(run_dir.parents[4])
    (row,) = runs.runs.itertuples()
    assert row.status == "damaged" and "metrics.jsonl:2" in row.message
    assert runs.finished().runs.empty
    train_in_process([*TINY_RUN, "scheduler=constant"])
    assert metrics_path.read_text() == complete
    assert "repaired" in (run_dir / "train.log").read_text()
    assert load_runs(run_dir.parents[4]).finished().runs.shape[0] == 1


@pytest.mark.parametrize("content", [b"{not json", b"\x89PNG\x00\xff\xfe", b"[]"])
def test_a_garbage_summary_is_rebuilt_and_never_stops_the_tables(
    train_in_process, tmp_path, content, capsys
) -> None:
    good = train_in_process([*TINY_RUN, "scheduler=constant", "seed=1"])
    bad = train_in_process([*TINY_RUN, "scheduler=constant", "seed=2"])
    expected = _summary(bad)
    (bad / "summary.json").write_bytes(content)
    runs_root = good.parents[4]
    assert aggregate.main(["--runs", str(runs_root), "--out", str(tmp_path / "out")]) == 0
    failed = (tmp_path / "out/tables/failed_runs.csv").read_text()
    assert "seed=2" in failed and "summary.json" in failed and "seed=1" not in failed
    table2 = (tmp_path / "out/tables/table2.md").read_text()
    assert "(1)" in table2 and "(2)" not in table2  # n counts the one trusted run only
    train_in_process([*TINY_RUN, "scheduler=constant", "seed=2"])
    rebuilt = _summary(bad)
    assert rebuilt["status"] == "finished"
    assert rebuilt["min_test_err"] == expected["min_test_err"]
    assert [r["epoch"] for r in read_records(bad / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment=ablation/window", "scheduler.window=32"], {"scheduler.window": 32}),
        (
            ["experiment=ablation/lr_sensitivity", "lr_sweep.multiplier=0.25"],
            {"lr_sweep.multiplier": 0.25},
        ),
        (["experiment=quick/digits", "scheduler=hd"], {"optimizer.beta": 1e-4}),
        (["experiment=quick/digits"], {}),
    ],
)
def test_label_settings_name_the_keys_the_label_shows(overrides, expected):
    assert label_settings(compose_config(overrides)) == expected
