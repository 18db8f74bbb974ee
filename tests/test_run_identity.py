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
from experiments.run_identity import identify_run, label_settings
from experiments.rundir import read_records
from scripts import aggregate
from scripts.analysis.runs import load_runs
from tests.conftest import TINY_RUN, expected_run_dir

RUNS = "runs/quick/digits/digits-resnet8"


def _identify(overrides: list[str]) -> Path:
    cfg, choices = compose_with_choices([*overrides, "paths.results_dir=/r"])
    return identify_run(cfg, choices, read_data=False)[0]


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
    (path / "experiments").mkdir(parents=True)
    (path / "experiments" / "code.py").write_text("x = 1\n")
    for command in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code"],
    ):
        subprocess.run(["git", *command], cwd=path, check=True)
    return path


def _use_code_of(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner fingerprints the code of ``repo`` instead of its own checkout."""
    fingerprint = provenance.code_version
    monkeypatch.setattr(
        provenance, "code_version", lambda exclude=(): fingerprint(repo, exclude=exclude)
    )


def test_a_resume_across_code_changes_is_refused_unless_allowed(
    train_in_process, killed_at_checkpoint, tmp_path, monkeypatch
) -> None:
    repo = _git_repo(tmp_path / "code")
    _use_code_of(repo, monkeypatch)
    args = [*TINY_RUN, "scheduler=constant"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    (repo / "experiments" / "code.py").write_text("x = 2\n")  # an uncommitted edit
    with pytest.raises(
        ConfigError,
        match=r"trained by other code \(files that differ: experiments/code.py\).*"
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


# ------------------------------------------------ identity by what trains (issue: second pass)
def _launch(overrides: list[str], results_dir: Path):
    """``run_job`` of ``overrides`` in this process: its LaunchResult (action, run_dir, note)."""
    cfg, choices = compose_with_choices([*overrides, f"paths.results_dir={results_dir}"])
    return train_module.run_job(cfg, choices, overrides)


def test_a_finished_run_relaunched_with_other_rounding_values_is_skipped_and_says_so(
    train_in_process, results_dir, capsys
) -> None:
    args = [*TINY_RUN, "scheduler=step"]
    run_dir = train_in_process(args)
    summary = _summary(run_dir)
    assert summary["numerics"]["trainer.channels_last"] is False
    assert summary["numerics"]["trainer.cpu_threads"] == 1
    before = _snapshot(run_dir)
    result = _launch([*args, "trainer.channels_last=true"], results_dir)
    assert result.action == "skip" and result.run_dir == run_dir
    assert result.note == (
        "trained with other rounding values: trainer.channels_last: False -> True"
    )
    assert _snapshot(run_dir) == before
    assert _launch(args, results_dir).note is None


def test_a_resume_with_other_rounding_values_is_refused_unless_allowed(
    train_in_process, killed_at_checkpoint, results_dir
) -> None:
    args = [*TINY_RUN, "scheduler=step"]
    killed_at_checkpoint(2, lambda: train_in_process(args))  # epoch 1's checkpoint is kept
    run_dir = expected_run_dir(results_dir, args)
    before = _snapshot(run_dir)
    with pytest.raises(
        ConfigError,
        match=r"other rounding values \(trainer.channels_last: False -> True\).*"
        r"trainer.allow_numerics_change=true",
    ):
        train_in_process([*args, "trainer.channels_last=true"])
    assert _snapshot(run_dir) == before
    train_in_process([*args, "trainer.channels_last=true", "trainer.allow_numerics_change=true"])
    summary = _summary(run_dir)
    assert summary["status"] == "finished"
    assert summary["numerics"]["trainer.channels_last"] is False  # the first segment's
    (resume,) = summary["resumes"]
    assert resume["numerics"]["trainer.channels_last"] is True
    assert resume["numerics_change_allowed"] == ["trainer.channels_last: False -> True"]


def test_the_worker_checks_the_rounding_values_of_the_checkpoint_it_continues(
    train_in_process, killed_at_checkpoint, results_dir
) -> None:
    args = [*TINY_RUN, "scheduler=step"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    run_dir = expected_run_dir(results_dir, args)
    summary = _summary(run_dir)
    summary["numerics"]["trainer.cpu_threads"] = 2  # as if a later segment had said so
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"checkpoint written with other rounding values"):
        train_in_process([*args, "trainer.cpu_threads=2"])


def test_unsynchronised_batchnorm_over_two_processes_is_another_run() -> None:
    base = ["experiment=quick/digits", "scheduler=step", "trainer.sync_bn=false"]
    alone = identify_run(*compose_with_choices([*base, "paths.results_dir=/r"]))
    split = identify_run(
        *compose_with_choices([*base, "trainer.devices=2", "paths.results_dir=/r"])
    )
    assert alone[0] != split[0]
    assert split[0].parent.name == "step,trainer.bn_processes=2,trainer.sync_bn=false"
    assert alone[1].setup["trainer.bn_processes"] == 1
    assert split[1].setup["trainer.bn_processes"] == 2
    # Synchronised BatchNorm normalises over the whole batch in any number of processes.
    synced = _identify(["experiment=quick/digits", "scheduler=step", "trainer.devices=2"])
    assert synced == _identify(["experiment=quick/digits", "scheduler=step"])


def _bf16_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for a GPU on this CPU: ``trainer.precision=auto`` means bf16, as on CUDA."""
    from experiments import runtime

    real = runtime.resolved_precision
    monkeypatch.setattr(
        runtime,
        "resolved_precision",
        lambda precision, device_type: (
            "bf16" if precision == "auto" else real(precision, device_type)
        ),
    )


def test_the_setup_holds_the_precision_actually_used(
    train_in_process, killed_at_checkpoint, results_dir, monkeypatch
) -> None:
    args = [*TINY_RUN, "scheduler=step"]
    finished = train_in_process(args)
    assert _summary(finished)["setup"]["trainer.precision"] == "fp32"
    unfinished = [*args, "seed=1"]
    killed_at_checkpoint(2, lambda: train_in_process(unfinished))
    _bf16_for_auto(monkeypatch)
    for launch in (args, unfinished):
        with pytest.raises(ConfigError, match=r"trainer.precision: 'fp32' -> 'bf16'"):
            train_in_process(launch)
    bf16 = train_in_process([*args, "seed=2"])
    assert _summary(bf16)["setup"]["trainer.precision"] == "bf16"


@pytest.mark.parametrize("override", ["data.skip_bad_images=true", "data.max_image_pixels=1000"])
def test_which_images_are_read_defines_the_run(override: str) -> None:
    base = ["experiment=quick/digits", "data=imagenet", "scheduler=step"]
    assert _identify([*base, override]).parent.name == f"step,{override}"


def _cifar_run(data_dir: Path) -> list[str]:
    return [
        "experiment=quick/digits",
        "data=cifar10",
        "protocol=paper",  # a 24-image fake cannot hold out CIFAR's 5,000
        "data.image_size=32",
        "data.verify=false",
        f"paths.data_dir={data_dir}",
        "trainer.epochs=1",
        "trainer.batch_size=8",
        "trainer.cpu_threads=1",
        "trainer.progress=plain",
        "logger=none",
        "scheduler=step",
    ]


def test_a_launch_on_other_data_is_refused_naming_the_fingerprint(
    train_in_process, tmp_path
) -> None:
    from tests.fake_datasets import write_fake_cifar

    fake = write_fake_cifar(tmp_path / "data", "cifar10", n_train=24, n_test=8)
    args = _cifar_run(tmp_path / "data")
    run_dir = train_in_process(args)
    recorded = _summary(run_dir)["setup"]["data.fingerprint"]
    assert recorded.startswith("train 24, test 8, sha256 ")
    write_fake_cifar(tmp_path / "data", "cifar10", n_train=24, n_test=8, seed=1)  # other images
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"data.fingerprint: 'train 24, test 8, sha256 "):
        train_in_process(args)
    assert _snapshot(run_dir) == before
    assert fake.folder.is_dir()


def test_the_fingerprint_follows_the_samples_and_labels_not_where_the_data_lies(
    tmp_path,
) -> None:
    import shutil

    from experiments.data import fingerprint_data, make_dataset
    from tests.fake_datasets import write_fake_imagenet

    fake = write_fake_imagenet(tmp_path / "a" / "imagenet", classes=2, per_class=2, size=8)

    def fingerprint(root: Path) -> str:
        return fingerprint_data(make_dataset("imagenet", root), val_size=0).value()

    original = fingerprint(fake.root)
    assert original.startswith("train 4, test 4, sha256 ")
    copy = tmp_path / "b"
    shutil.copytree(fake.root, copy)
    assert fingerprint(copy) == original  # a moved copy: the same data
    name = fake.train_files[0].name  # an image of the first class
    (copy / "train" / fake.classes[0] / name).rename(copy / "train" / fake.classes[1] / name)
    relabelled = fingerprint(copy)
    assert relabelled.startswith("train 4, test 4, ") and relabelled != original
    (copy / "train" / fake.classes[1] / name).unlink()
    assert fingerprint(copy).startswith("train 3, test 4, ")


def test_names_write_values_exactly_and_keep_the_presets_names() -> None:
    base = ["experiment=quick/digits", "scheduler=step"]
    names = {_identify([*base, f"optimizer.lr={lr}"]).parent.name for lr in (0.1234567, 0.1234568)}
    assert names == {"step,optimizer.lr=0.1234567", "step,optimizer.lr=0.1234568"}
    presets = {
        ("experiment=quick/digits",): "autodrop",
        ("experiment=quick/digits", "scheduler=step"): "step",
        ("experiment=quick/digits", "scheduler=hd"): "hd-beta=0.0001",
        ("experiment=ablation/window", "scheduler.window=32"): "autodrop-window=32",
        ("experiment=quick/fixed_lr", "optimizer.lr=0.3"): "constant-lr=0.3",
        ("experiment=ablation/lr_sensitivity", "lr_sweep.multiplier=0.25"): "autodrop-lrx=0.25",
        ("experiment=quick/digits", "scheduler=schedulefree"): "schedulefree-lr_multiplier=10",
    }
    for overrides, name in presets.items():
        assert _identify(list(overrides)).parent.name == name


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("cosine", "must be the schedule name 'step'"),  # another schedule's name
        ("step-window=32", "must take its value from the config"),  # claims a setting
    ],
)
def test_a_label_that_would_name_another_setup_is_refused(label: str, expected: str) -> None:
    from experiments.validation import validate_config

    base = ["experiment=quick/digits", "scheduler=step"]
    cfg = compose_config([*base, f"scheduler.label='{label}'"])
    with pytest.raises(ConfigError, match=expected):
        validate_config(cfg)
    validate_config(compose_config([*base, "scheduler.label='step-gamma=${scheduler.gamma}'"]))


# ------------------------------------------------------------------- the code fingerprint
def test_results_inside_the_checkout_and_a_notebook_do_not_block_a_resume(
    train_in_process, killed_at_checkpoint, tmp_path, monkeypatch
) -> None:
    from experiments.config import compose_with_choices as compose

    repo = _git_repo(tmp_path / "code")
    _use_code_of(repo, monkeypatch)
    # The run's own files land inside the tree: in a package folder, and beside it.
    for results in (repo / "experiments" / "out", repo / "out"):
        args = [*TINY_RUN, "scheduler=constant", f"paths.results_dir={results}"]
        cfg, choices = compose(args)
        killed_at_checkpoint(2, lambda cfg=cfg, choices=choices: train_module.run_job(cfg, choices))
        (repo / "experiments" / "analysis.ipynb").write_text("{}")  # untracked, not code
        (repo / "experiments" / "notes.json").write_text("{}")
        cfg, choices = compose(args)
        run_dir = train_module.run_job(cfg, choices).run_dir
        assert _summary(run_dir)["status"] == "finished"
        assert _summary(run_dir)["code_version"]["dirty"] is False


def test_an_edited_source_file_is_named_in_the_refusal(
    train_in_process, killed_at_checkpoint, tmp_path, monkeypatch
) -> None:
    repo = _git_repo(tmp_path / "code")
    _use_code_of(repo, monkeypatch)
    args = [*TINY_RUN, "scheduler=constant"]
    killed_at_checkpoint(2, lambda: train_in_process(args))
    (repo / "conf").mkdir()
    (repo / "conf" / "extra.yaml").write_text("a: 1\n")  # untracked config: code
    (repo / "experiments" / "code.py").write_text("x = 3\n")
    with pytest.raises(
        ConfigError, match=r"files that differ: conf/extra.yaml, experiments/code.py\)"
    ):
        train_in_process(args)


# --------------------------------------------------------- forged summaries are not averaged
def _forge(run_dir: Path, **fields) -> None:
    summary = _summary(run_dir)
    summary.update(fields)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_run_cut_short_with_a_matching_summary_is_damaged_not_averaged(
    train_in_process, tmp_path
) -> None:
    from experiments.rundir import summarize_metrics

    run_dir = train_in_process([*TINY_RUN, "scheduler=constant"])
    metrics_path = run_dir / "metrics.jsonl"
    first, _ = metrics_path.read_text().splitlines()
    metrics_path.write_text(first + "\n")
    _forge(run_dir, epochs_planned=1, **summarize_metrics(read_records(metrics_path)))
    (row,) = load_runs(run_dir.parents[4]).runs.itertuples()
    assert row.status == "damaged"
    assert "epochs_planned=1 disagrees with the recorded setup's trainer.epochs=2" in row.message
    assert aggregate.main(["--runs", str(run_dir.parents[4]), "--out", str(tmp_path / "o")]) == 0
    assert "epochs_planned=1" in (tmp_path / "o/tables/failed_runs.csv").read_text()


@pytest.mark.parametrize(
    ("field", "forged", "reason"),
    [
        ("time_per_iter_s", 100.0, "time_per_iter_s=100.0 disagrees with metrics.jsonl"),
        ("seed", 1, "seed=1 disagrees with the recorded setup's seed=0"),
        ("scheduler", "cosine", "scheduler='cosine' (label 'step') does not name schedule"),
        ("scheduler_options", {"gamma": 0.5}, "scheduler_options.gamma=0.5 disagrees"),
        ("optimizer_lr", 0.3, "optimizer_lr=0.3 disagrees"),
    ],
)
def test_a_summary_field_the_tables_read_is_checked(train_in_process, field, forged, reason):
    run_dir = train_in_process([*TINY_RUN, "scheduler=step"])
    assert load_runs(run_dir.parents[4]).runs["status"].tolist() == ["finished"]
    if field == "scheduler_options":
        forged = {**_summary(run_dir)["scheduler_options"], **forged}
    _forge(run_dir, **{field: forged})
    (row,) = load_runs(run_dir.parents[4]).runs.itertuples()
    assert row.status == "damaged" and reason in row.message


def _trainer_variants():
    from dataclasses import replace

    from experiments.settings import RunSettings

    base = RunSettings.from_config(compose_config(["experiment=quick/digits"]))
    changes = [
        {},
        {"precision": "fp32"},
        {"precision": "bf16"},
        {"channels_last": True},
        {"channels_last": False, "compile": True},
        {"cpu_threads": 1, "num_workers": 2},
        {"checkpoint_every_epochs": 3, "checkpoint_every_minutes": 0.0},
        {"accelerator": "cpu", "precision": "fp32", "compile": False},
    ]
    return [replace(base, trainer=replace(base.trainer, **change)) for change in changes]


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_the_device_resolves_each_value_on_its_own(device_type: str) -> None:
    # What lets a run's name skip probing the device when no value differs as configured
    # (experiments.run_identity.value_changes): a resolved value reads only its own setting.
    import dataclasses

    import torch

    from experiments.runtime import with_device_defaults

    variants = _trainer_variants()
    resolved = [with_device_defaults(v, torch.device(device_type), 2) for v in variants]
    for field in dataclasses.fields(variants[0].trainer):
        by_setting: dict[str, set[str]] = {}
        for variant, after in zip(variants, resolved, strict=True):
            setting = repr(getattr(variant.trainer, field.name))
            by_setting.setdefault(setting, set()).add(repr(getattr(after.trainer, field.name)))
        assert all(len(values) == 1 for values in by_setting.values()), field.name


def test_a_name_that_skips_the_device_probe_is_the_name_the_probe_gives() -> None:
    from experiments.run_identity import _differences, resolve_for_launch, run_setup, value_changes

    variants = _trainer_variants()
    for ours in variants:
        for theirs in variants:
            probed = _differences(
                run_setup(resolve_for_launch(ours, 1), 1),
                run_setup(resolve_for_launch(theirs, 1), 1),
                set(),
            )
            assert value_changes(ours, theirs, 1, set()) == probed
