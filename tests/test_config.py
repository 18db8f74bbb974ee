"""The Hydra config tree: presets compose, hold the paper's protocol, and bad configs fail early."""

from __future__ import annotations

import copy

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from experiments.config import CONF_DIR, ConfigError, compose_config
from experiments.overrides import check_overrides
from experiments.validation import validate_config

EXPERIMENT_PRESETS = sorted(
    str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
    for p in (CONF_DIR / "experiment").rglob("*.yaml")
)

# PAPER.md, "Experimental protocol" (ResNet-50: He et al. 2016, as the preset says).
# preset: dataset, model, epochs, batch, lr, weight decay, momentum, nesterov,
#         multistep milestones, multistep gamma, AutoDrop window, AutoDropV1 drop factor
PAPER_PROTOCOL = {
    "paper/resnet18_cifar10": (
        "cifar10",
        "resnet18",
        200,
        128,
        0.05,
        5e-4,
        0.9,
        True,
        [60, 120, 160],
        0.2,
        64,
        0.2,
    ),
    "paper/wrn28_10_cifar10": (
        "cifar10",
        "wrn28_10",
        200,
        128,
        0.1,
        5e-4,
        0.9,
        False,
        [60, 120, 160],
        0.2,
        64,
        0.2,
    ),
    "paper/resnet34_cifar100": (
        "cifar100",
        "resnet34",
        200,
        128,
        0.05,
        5e-4,
        0.9,
        True,
        [60, 120, 160],
        0.2,
        64,
        0.2,
    ),
    "paper/wrn40_10_cifar100": (
        "cifar100",
        "wrn40_10",
        200,
        128,
        0.1,
        5e-4,
        0.9,
        False,
        [60, 120, 160],
        0.2,
        64,
        0.2,
    ),
    "paper/resnet18_imagenet": (
        "imagenet",
        "resnet18_imagenet",
        100,
        128,
        0.1,
        1e-4,
        0.9,
        False,
        [30, 60, 90],
        0.1,
        640,
        0.1,
    ),
    "paper/resnet50_imagenet": (
        "imagenet",
        "resnet50_imagenet",
        100,
        256,
        0.1,
        1e-4,
        0.9,
        False,
        [30, 60, 90],
        0.1,
        640,
        0.1,
    ),
}


@pytest.fixture(scope="module")
def quick_config():
    return compose_config(["experiment=quick/digits"])


def test_every_preset_composes_validates_and_names_itself() -> None:
    assert len(EXPERIMENT_PRESETS) >= 12
    for preset in EXPERIMENT_PRESETS:
        cfg = compose_config([f"experiment={preset}"])
        validate_config(cfg)
        assert cfg.experiment_name == preset


@pytest.mark.parametrize("preset", sorted(PAPER_PROTOCOL))
def test_paper_presets_match_the_protocol_table(preset: str) -> None:
    (
        dataset,
        model,
        epochs,
        batch,
        lr,
        wd,
        momentum,
        nesterov,
        milestones,
        gamma,
        window,
        drop_factor,
    ) = PAPER_PROTOCOL[preset]
    step = compose_config([f"experiment={preset}", "scheduler=step"])
    assert (step.data.name, step.model.name) == (dataset, model)
    assert (step.trainer.epochs, step.trainer.batch_size) == (epochs, batch)
    assert (step.optimizer.name, step.optimizer.lr, step.optimizer.weight_decay) == ("sgd", lr, wd)
    assert (step.optimizer.momentum, step.optimizer.nesterov) == (momentum, nesterov)
    assert (list(step.scheduler.milestones), step.scheduler.gamma) == (milestones, gamma)
    autodrop = compose_config([f"experiment={preset}", "scheduler=autodrop"])
    assert (autodrop.scheduler.window, autodrop.scheduler.rho) == (window, 0.95)
    assert (autodrop.scheduler.buffer_size, autodrop.scheduler.threshold) == (10, 0.1)
    v1 = compose_config([f"experiment={preset}", "scheduler=autodrop_v1"])
    assert (v1.scheduler.drop_factor, v1.scheduler.extra_epochs, v1.scheduler.theta) == (
        drop_factor,
        20,
        0.01,
    )


def test_quick_preset_scales_each_schedule_and_the_command_line_still_wins() -> None:
    assert compose_config(["experiment=quick/digits", "scheduler=autodrop"]).scheduler.window == 3
    v1 = compose_config(["experiment=quick/digits", "scheduler=autodrop_v1"])
    assert v1.scheduler.extra_epochs == 3 == v1.trainer.epochs // 10
    assert (
        compose_config(["experiment=quick/digits", "scheduler=step"]).scheduler.milestones is None
    )
    override = compose_config(
        ["experiment=quick/digits", "scheduler=autodrop", "scheduler.window=7"]
    )
    assert override.scheduler.window == 7
    # Without a preset the paper defaults apply.
    assert compose_config(["scheduler=autodrop"]).scheduler.window == 64


def test_hydra_writes_nothing_into_run_directories() -> None:
    cfg = compose_config(
        ["experiment=ablation/window", "scheduler.window=32", "seed=3"], with_hydra=True
    )
    assert cfg.hydra.output_subdir is None and cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir == "."  # the runner names and writes the run directory itself
    assert (cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir) == ("results/runs/ablation/window", ".")


@pytest.mark.parametrize(
    ("preset", "key", "values"),
    [
        ("ablation/window", "scheduler.window", "32,64,128,256"),
        ("ablation/window_imagenet", "scheduler.window", "64,256,512,640"),
        ("ablation/buffer_size", "scheduler.buffer_size", "5,10,20,30,50"),
        ("ablation/rho", "scheduler.rho", "0.5,0.8,0.9,0.95,0.99"),
    ],
)
def test_ablation_presets_sweep_the_paper_grid(preset: str, key: str, values: str) -> None:
    cfg = compose_config([f"experiment={preset}"], with_hydra=True)
    assert cfg.hydra.sweeper.params[key] == values
    assert cfg.hydra.sweeper.params["seed"] == "0,1,2,3"
    setting = key.split(".")[1]
    assert cfg.scheduler.label == f"autodrop-{setting}={cfg.scheduler[setting]}"


def test_fixed_lr_preset_tracks_angles_with_constant_lr_labels() -> None:
    cfg = compose_config(["experiment=quick/fixed_lr", "optimizer.lr=0.03"], with_hydra=True)
    assert cfg.scheduler.name == "constant" and cfg.trainer.track_angle
    assert cfg.scheduler.label == "constant-lr=0.03"
    assert len(cfg.hydra.sweeper.params["optimizer.lr"].split(",")) >= 3


def test_lr_sensitivity_preset_sweeps_the_task_lr_times_the_multipliers() -> None:
    preset = compose_config(["experiment=ablation/lr_sensitivity"], with_hydra=True)
    params = preset.hydra.sweeper.params
    assert params["lr_sweep.multiplier"] == "0.25,0.5,1,2,4"
    assert params["scheduler"] == "autodrop,autodrop_v1,step,cosine,onecycle"
    # the base lr is quick/digits' lr, and the preset otherwise composes on quick/digits
    digits = compose_config(["experiment=quick/digits"])
    assert preset.lr_sweep.base_lr == digits.optimizer.lr == 0.05
    assert preset.trainer == digits.trainer and preset.data == digits.data
    lrs = {}
    for multiplier in params["lr_sweep.multiplier"].split(","):
        for scheduler in params["scheduler"].split(","):
            overrides = [f"scheduler={scheduler}", f"lr_sweep.multiplier={multiplier}"]
            cfg = compose_config(["experiment=ablation/lr_sensitivity", *overrides])
            validate_config(cfg)  # the label starts with the schedule name
            assert cfg.scheduler.label == f"{scheduler}-lrx={multiplier}"
            lrs.setdefault(multiplier, set()).add(cfg.optimizer.lr)
    assert lrs == {"0.25": {0.0125}, "0.5": {0.025}, "1": {0.05}, "2": {0.1}, "4": {0.2}}


def test_lr_sensitivity_keeps_the_quick_scaling_of_each_schedule() -> None:
    autodrop = compose_config(["experiment=ablation/lr_sensitivity", "scheduler=autodrop"])
    v1 = compose_config(["experiment=ablation/lr_sensitivity", "scheduler=autodrop_v1"])
    assert autodrop.scheduler.window == 3 and v1.scheduler.extra_epochs == 3


def test_mul_resolver_names_a_value_that_is_not_a_number() -> None:
    cfg = compose_config(["experiment=ablation/lr_sensitivity", "lr_sweep.base_lr=null"])
    with pytest.raises(Exception, match="factor None is invalid: must be a number"):
        _ = cfg.optimizer.lr


@pytest.mark.parametrize(
    "override",
    ["trainer.epoch=3", "scheduler.windw=3", "optimizer.betas=[0.9,0.99]"],
)
def test_misspelt_keys_and_wrong_types_fail_at_composition(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config(["experiment=quick/digits", override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epochs=many", "trainer.epochs='many' is invalid: Value 'many' of type 'str'"),
        ("data.image_size=big", "data.image_size='big' is invalid: Value 'big' of type 'str'"),
    ],
)
def test_a_value_the_schema_refuses_is_one_line_naming_key_and_value(override, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_config(["experiment=quick/digits", override])
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_options_added_with_plus_are_checked_against_the_schedule(quick_config) -> None:
    cfg = compose_config(["experiment=quick/digits", "scheduler=step", "+scheduler.windw=3"])
    with pytest.raises(ConfigError, match="scheduler.windw=3 is invalid: .*milestones, gamma"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("optimizer.lr", 0.0, "expected a finite number with 0.0 < lr"),
        ("optimizer.momentum", 1.0, "0.0 <= momentum < 1.0"),
        ("trainer.epochs", 0, ">= 1"),
        ("trainer.devices", 0, ">= 1"),
        ("data.name", "mnist", "cifar10, cifar100, imagenet, digits"),
        ("model.name", "vgg16", "resnet18"),
        ("scheduler.name", "linear", "autodrop"),
        ("scheduler.label", "step-window=3", "schedule name 'autodrop'"),
        ("scheduler.label", "autodrop/x", "no '/'"),
        ("experiment_name", "../elsewhere", "relative path"),
        ("seed", -1, ">= 0"),
        ("optimizer.lr", float("nan"), "must be a finite number"),
        ("optimizer.lr", float("inf"), "must be a finite number"),
        ("trainer.checkpoint_every_minutes", float("inf"), "must be a finite number"),
        ("trainer.epochs", 100_000_000_000, "must be <= 100000"),
        ("paths.results_dir", "", "must name a folder"),
        ("paths.results_dir", "  ", "must name a folder"),
        ("paths.data_dir", "", "must name a folder"),
        ("scheduler.label", "autodrop-window=32", "must take its value from the config"),
    ],
)
def test_semantic_checks_name_key_value_and_what_is_allowed(
    quick_config, key: str, value: object, allowed: str
) -> None:
    cfg = copy.deepcopy(quick_config)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    assert message.startswith(f"{key}={value!r} is invalid")
    assert allowed in message


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("trainer.precision", "fp16", "auto, bf16, fp32"),
        ("trainer.accelerator", "tpu", "auto, cpu, cuda"),
        ("trainer.loader", "fast", "device, classic"),
        ("trainer.progress", "fancy", "auto, bar, plain"),
        ("logger.mode", "sometimes", "online, offline, disabled"),
        ("data.decode", "nvdec", "cpu, gpu"),  # a dataset option annotated with a Literal
    ],
)
def test_fixed_choices_are_refused_by_the_schema_with_the_choices(
    key: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_overrides(["data=imagenet", f"{key}={value}"])  # digits, the default, has no decode
    message = str(caught.value)
    assert message.startswith(f"{key}={value!r} is invalid") and allowed in message
    cfg = compose_config(["experiment=paper/resnet18_imagenet", "logger=wandb"])
    with pytest.raises(ValidationError, match=f"Invalid value '{value}'.*{allowed}"):
        OmegaConf.update(cfg, key, value)


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("trainer.precision=bf61", "trainer.precision=bf16"),
        ("trainer.accelerator=cud", "trainer.accelerator=cuda"),
        ("trainer.loader=clasic", "trainer.loader=classic"),
        ("logger.mode=offlin", "logger.mode=offline"),
        ("data.decode=CPU", "data.decode=cpu"),
    ],
)
def test_an_enum_value_gets_a_did_you_mean_on_the_command_line_and_at_composition(
    override: str, meant: str
) -> None:
    preset = ["experiment=paper/resnet18_imagenet", "logger=wandb"]  # its data has a decode
    with pytest.raises(ConfigError) as checked:
        check_overrides([*preset, override])
    with pytest.raises(ConfigError) as composed:  # e.g. a grid passed to scripts.status
        compose_config([*preset, override])
    for caught in (checked, composed):
        assert str(caught.value).endswith(f"; did you mean {meant}?"), caught.value


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("scheduler=cosin", "scheduler=cosine"),
        ("scheduler=autodrop_1", "scheduler=autodrop_v1"),
        ("model=resnet", "model=resnet8"),
        ("experiment=quick/digit", "experiment=quick/digits"),
        ("optimizer=sdg", "optimizer=sgd"),
        ("hydra/launcher=jobib", "hydra/launcher=joblib"),  # Hydra's group, plugins included
    ],
)
def test_a_group_choice_gets_a_did_you_mean(override: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"; did you mean {meant}[?]$"):
        check_overrides([override])


@pytest.mark.parametrize(
    ("key", "value", "meant"),
    [
        ("data.name", "cifar1", "cifar10"),
        ("model.name", "resnet81", "resnet18"),
        ("scheduler.name", "onecylce", "onecycle"),
        ("logger.name", "wanb", "wandb"),
    ],
)
def test_a_name_checked_against_a_registry_gets_a_did_you_mean(
    quick_config, key: str, value: str, meant: str
) -> None:
    cfg = copy.deepcopy(quick_config)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=f"; did you mean {key}={meant}[?]$"):
        validate_config(cfg)


def test_no_did_you_mean_when_no_choice_is_close() -> None:
    # 'gpu' is as close to 'cpu' as a swap of letters: suggesting cpu would mislead
    for override in ("trainer.accelerator=gpu", "data=mnist"):
        with pytest.raises(ConfigError) as caught:
            check_overrides([override])
        assert "did you mean" not in str(caught.value)


def test_global_batch_must_split_over_devices_and_imagenet_needs_classic_loader(
    quick_config,
) -> None:
    cfg = copy.deepcopy(quick_config)
    cfg.trainer.devices = 3
    with pytest.raises(
        ConfigError, match=r"trainer.batch_size=64 .*divisible by trainer.devices=3"
    ):
        validate_config(cfg)
    imagenet = compose_config(["experiment=paper/resnet18_imagenet", "trainer.loader=device"])
    with pytest.raises(ConfigError, match="imagenet needs trainer.loader=classic"):
        validate_config(imagenet)


@pytest.mark.parametrize(
    "override", ["optimizer.lr=nan", "optimizer.lr=inf", "trainer.batch_size=2000"]
)
def test_unusable_values_are_refused_in_one_line_before_anything_is_written(
    train_cli, results_dir, override: str
) -> None:
    result = train_cli(["experiment=quick/digits", "logger=none", override])
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    key, _, value = override.partition("=")
    assert line.startswith(f"error: {key}={value} is invalid: ") or line.startswith(
        f"error: {key}={value!r} is invalid: "
    )
    if key == "trainer.batch_size":
        assert "training set's 1077 samples (digits)" in line  # 360 held out for validation
    assert not results_dir.exists()


def test_an_empty_results_dir_writes_nothing_into_the_current_directory(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    for value in ("", " "):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.train",
                "experiment=quick/digits",
                "logger=none",
                f"paths.results_dir={value}",
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2 and "paths.results_dir" in result.stderr
        assert "must name a folder" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_help_lists_the_groups_and_cfg_job_prints_the_config(train_cli) -> None:
    help_text = train_cli(["--help"]).stdout
    lines = {line.split(":")[0]: line for line in help_text.splitlines() if ": " in line}
    for group in (
        "data",
        "model",
        "optimizer",
        "scheduler",
        "trainer",
        "logger",
        "protocol",
        "hydra/launcher",
    ):
        assert group in lines
    for preset in EXPERIMENT_PRESETS:
        folder, _, name = preset.rpartition("/")
        assert name in lines[f"experiment/{folder}"].split(": ")[1].split(", ")
    assert "autodrop, autodrop_v1" in lines["scheduler"] and "slurm" in lines["hydra/launcher"]
    assert "schema" not in help_text
    printed = train_cli(["--cfg", "job", "experiment=quick/digits", "scheduler=autodrop"])
    assert printed.returncode == 0, printed.stderr
    job = OmegaConf.create(printed.stdout)
    assert job.experiment_name == "quick/digits" and job.scheduler.window == 3


@pytest.mark.parametrize("preset", sorted(PAPER_PROTOCOL))
def test_imagenet_presets_use_per_gpu_batchnorm_and_cifar_keeps_it_synchronised(preset) -> None:
    cfg = compose_config([f"experiment={preset}"])
    # torchvision's ImageNet recipe: BatchNorm per GPU; CIFAR's 128 images split over GPUs are
    # too few per GPU, so its statistics stay those of the global batch.
    assert cfg.trainer.sync_bn is (cfg.data.name != "imagenet")
