"""The entry point as a user meets it: one-line errors with exit code 2, unknown keys refused
with a did-you-mean, the ``autodrop-train`` command with tab completion, run and sweep results."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from experiments import sweep_report
from experiments.cli import finish_line
from experiments.config import ConfigError
from experiments.console import EpochProgress, format_epoch_line, run_eta_s
from experiments.overrides import check_overrides, check_single_run
from tests.conftest import REPO_ROOT, TINY_RUN


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    environment = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    if "HYDRA_FULL_ERROR" not in (env or {}):
        environment.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1"], "error: optimizer.lr=-1.0 is invalid: expected a finite number"),
        (["trainer.epoch=3"], "error: unknown key trainer.epoch; did you mean trainer.epochs?"),
        (["+trainer.epoch=3"], "error: unknown key trainer.epoch; did you mean trainer.epochs?"),
        (
            ["scheduler.window=0"],
            "error: scheduler.window=0 is invalid: expected an int with 1 <= window",
        ),
        (["data=cifar10"], "error: data.image_size=8 is invalid: cifar10 images are 32x32"),
        (["trainer.epochs=many"], "error: trainer.epochs='many' is invalid"),
        (["data=mnist"], "error: data=mnist is invalid: allowed values are cifar10"),
        (["model.width=3"], "error: unknown key model.width (--cfg job prints"),
        (["scheduler=step", "scheduler.window=3"], "error: unknown key scheduler.window for"),
        # the preset's scheduler (autodrop) has no milestones; step has: Hydra's 6 lines before
        (
            ["scheduler.milestones=[5]"],
            "error: unknown key scheduler.milestones for scheduler=autodrop",
        ),
        (["trainer.precision=bf61"], "; did you mean trainer.precision=bf16?"),
        (["scheduler=cosin"], "; did you mean scheduler=cosine?"),
        (["scheduler=null"], "error: scheduler=null is invalid: allowed values are autodrop,"),
        (["scheduler=autodrop,step"], "error: scheduler=autodrop,step sweeps over several values"),
        (["seed=range(0,2)"], "add -m (--multirun)"),
        (
            ["scheduler=step", "scheduler.milestones=[5,10]", "trainer.epochs=1"],
            "milestones must lie within the 1-epoch budget",
        ),
    ],
)
def test_common_mistakes_print_one_line_exit_2_and_leave_nothing(
    train_cli, results_dir, overrides, message
) -> None:
    result = train_cli([*TINY_RUN, *overrides])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not results_dir.exists()  # also a launch refused after its run directory was made


def test_missing_data_is_one_line_naming_how_to_get_it(train_cli, results_dir) -> None:
    result = train_cli(
        ["experiment=paper/resnet18_cifar10", "logger=none", "paths.data_dir=nowhere"]
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "data.download=true" in line
    assert not results_dir.exists()


def test_hydra_full_error_shows_the_traceback(results_dir: Path) -> None:
    command = [sys.executable, "-m", "experiments.train", *TINY_RUN, "optimizer.lr=-1"]
    result = _run(
        [*command, f"paths.results_dir={results_dir}"], REPO_ROOT, {"HYDRA_FULL_ERROR": "1"}
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "ConfigError: optimizer.lr=-1.0 is invalid" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["+trainer.epoch=3"], "unknown key trainer.epoch; did you mean trainer.epochs?"),
        (["++logger.projct=x"], "unknown key logger.projct; did you mean logger.project?"),
        (["+foo=1"], "unknown key foo"),
        (["seed=one"], "seed='one' is invalid"),
        (["scheduler=autodrop,step", "scheduler.window=3"], "for scheduler=step: its keys"),
        (["experiment=paper/resnet18_cifar10", "optimizer.beta=1e-3"], "for optimizer=sgd: its"),
        (
            [
                "experiment=quick/digits,paper/resnet18_cifar10",
                "scheduler=hd,step",
                "optimizer.beta=1",
            ],
            "unknown key optimizer.beta for optimizer=sgd",  # the step jobs compose plain sgd
        ),
        (["experiment=quick/nothing"], "experiment=quick/nothing is invalid: allowed values"),
    ],
)
def test_overrides_are_checked_against_the_schemas(arguments, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("+", r"\+")):
        check_overrides(arguments)


def test_a_sweep_without_m_is_refused_in_one_line_and_with_m_or_quoted_passes() -> None:
    for sweep in ("scheduler=autodrop,step", "seed=range(0,3)", "optimizer=glob(sgd*)"):
        with pytest.raises(ConfigError, match=r"sweeps over several values, which needs -m"):
            check_single_run([sweep])
    check_single_run(["scheduler.label='a,b'", "scheduler.milestones=[5,10]", "seed=1"])


def test_valid_overrides_pass_the_check() -> None:
    check_overrides(
        [
            "experiment=quick/digits",
            "scheduler=step,exp",
            "optimizer.lr=0.1,0.2",
            "seed=range(0,3)",
            "optimizer=glob(sgd*)",
            "model.in_channels=1",
            "scheduler.label='constant-lr=${optimizer.lr}'",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "scheduler.gamma=0.5",
        ]
    )
    check_overrides(["experiment=paper/resnet18_cifar10", "scheduler=hd", "optimizer.beta=1e-4"])


def test_a_key_whose_section_cannot_be_composed_is_left_to_hydra() -> None:
    check_overrides(["~scheduler", "scheduler.window=3"])  # no scheduler: Hydra says why


def _console_script(tmp_path: Path) -> Path:
    """The ``autodrop-train`` command as pip writes it from pyproject's [project.scripts]."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["autodrop-train"].split(":")
    script = tmp_path / "bin" / "autodrop-train"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    )
    script.chmod(0o755)
    return script


def test_console_script_runs_completes_and_reports_errors(tmp_path: Path) -> None:
    script = _console_script(tmp_path)
    env = {"PYTHONPATH": str(REPO_ROOT)}  # where an editable install points
    install = _run([str(script), "-sc", "install=bash"], REPO_ROOT, env)
    assert install.returncode == 0, install.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion autodrop-train" in (
        install.stdout
    )
    line = "autodrop-train sched"
    completion = _run(
        [str(script), "-sc", "query=bash"],
        REPO_ROOT,
        {**env, "COMP_LINE": line, "COMP_POINT": str(len(line))},
    )
    assert "scheduler=" in completion.stdout.split(), completion.stdout
    job = _run([str(script), "--cfg", "job", "experiment=quick/digits"], tmp_path, env)
    assert job.returncode == 0 and OmegaConf.create(job.stdout).scheduler.window == 3
    mistake = _run([str(script), "trainer.epoch=3"], REPO_ROOT, env)
    assert mistake.returncode == 2
    assert mistake.stderr.strip().endswith("did you mean trainer.epochs?")


def test_finish_line_states_the_result() -> None:
    summary = {
        "min_test_err": 1.666,
        "min_test_err_epoch": 21,
        "final_test_err": 2.222,
        "wall_time_s": 33.2,
    }
    assert finish_line("finished", summary, Path("runs/x")) == (
        "finished: min test err 1.67 % at epoch 21, final 2.22 %, 33 s -> runs/x"
    )


def _job_return(overrides: list[str], status: JobStatus, value: object) -> JobReturn:
    job = JobReturn(overrides=overrides, status=status)
    job.return_value = value
    return job


def test_sweep_report_lists_every_job_and_the_failures(tmp_path: Path, capsys) -> None:
    report = sweep_report.SweepReport()
    sweep_report.reset()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    report.on_multirun_start(config)
    jobs = [
        (
            ["seed=0", "optimizer.lr=0.1"],
            JobStatus.COMPLETED,
            {"status": "finished", "line": "finished: min test err 1.00 %"},
        ),
        (
            ["seed=0", "optimizer.lr=-1"],
            JobStatus.COMPLETED,
            {"status": "failed", "message": "optimizer.lr=-1.0 is invalid"},
        ),
        (["seed=0", "optimizer.lr=9"], JobStatus.FAILED, RuntimeError("a bug")),
    ]
    for number, (overrides, status, value) in enumerate(jobs):
        job_config = OmegaConf.create({"hydra": {"job": {"num": number}}})
        report.on_job_end(job_config, _job_return(overrides, status, value))
    report.on_multirun_end(config)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "sweep of 3 jobs: 1 finished, 0 skipped, 0 diverged, 2 failed"
    assert printed[1].endswith("finished  optimizer.lr=0.1: min test err 1.00 %")
    assert printed[2].endswith("failed    optimizer.lr=-1: optimizer.lr=-1.0 is invalid")
    assert printed[3].endswith("failed    optimizer.lr=9: RuntimeError: a bug")
    assert len(sweep_report.unfinished_jobs()) == 2
    assert list(tmp_path.iterdir()) == []  # the outcome files are removed


@pytest.mark.slow
def test_a_sweep_runs_every_job_and_ends_with_their_summary(train_cli) -> None:
    result = train_cli(["-m", *TINY_RUN, "trainer.epochs=1", "optimizer.lr=-1,0.05"])
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    summary = result.stdout[result.stdout.index("sweep of 2 jobs") :].splitlines()
    assert summary[0] == "sweep of 2 jobs: 1 finished, 0 skipped, 0 diverged, 1 failed"
    assert summary[1].split()[:2] == ["failed", "optimizer.lr=-1:"]
    assert summary[1].endswith(
        "optimizer.lr=-1.0 is invalid: expected a finite number with 0.0 < lr"
    )
    assert summary[2].split()[:4] == ["finished", "optimizer.lr=0.05:", "min", "test"]


def test_run_eta_is_the_rest_of_the_epoch_plus_the_epochs_left_at_their_mean() -> None:
    # 10 of 40 steps in 5 s: 15 s left of this epoch, then 3 epochs at the mean of 18 and 22 s
    assert run_eta_s(3, [18.0, 22.0], elapsed_s=5.0, done=10, total=40) == 15.0 + 3 * 20.0
    # no finished epoch yet: the others take as long as this one is projected to (20 s)
    assert run_eta_s(2, [], elapsed_s=5.0, done=10, total=40) == 15.0 + 2 * 20.0
    assert run_eta_s(2, [], elapsed_s=0.0, done=0, total=40) is None


def test_progress_bar_and_epoch_line_show_the_run_eta() -> None:
    progress = EpochProgress(True, total=4, epoch=2, epochs=5, past_epoch_s=[60.0])
    progress.advance()
    progress.refresh(loss=1.0, acc=50.0, lr=0.1, samples_per_s=100.0)
    assert "run_eta=03:0" in str(progress.bar.postfix)  # about 3 epochs x 60 s
    progress.close()
    record = {
        "epoch": 2, "step": 8, "lr": 0.1, "train/loss": 1.0, "train/acc": 50.0,
        "test/loss": 1.0, "test/err": 40.0, "time/epoch_s": 60.0,
    }  # fmt: skip
    assert format_epoch_line(record, 5, eta_s=180.0).endswith("| run ETA 03:00")
    assert "ETA" not in format_epoch_line({**record, "epoch": 5}, 5, eta_s=0.0)


def test_a_worker_processs_error_is_cut_to_its_exception_line() -> None:
    from torch.multiprocessing import ProcessRaisedException

    from experiments.cli import TrainingFailed, error_line

    remote = (
        "\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call "
        'last):\n  File "cifar.py", line 3, in load\n    raise DatasetUnavailableError(m)\n'
        "experiments.data.errors.DatasetUnavailableError: CIFAR-10 is expected as data/x.\n"
    )
    failed = TrainingFailed(f"{ProcessRaisedException(remote, 0, 1)} (details in r/train.log)")
    assert error_line(failed) == (
        "error: DatasetUnavailableError: CIFAR-10 is expected as data/x. (details in r/train.log)"
    )
    assert error_line(ValueError("two\nlines")) == "error: two lines"
