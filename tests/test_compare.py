"""``python -m scripts.compare`` / ``make compare``: requests checked in one line before anything
runs, the requested runs named as the runner names them, the printed numbers those of the runs'
summary.json files, a second invocation trains nothing, a dry run trains and writes nothing; and
the ``-m`` sweep summary's mean ± std per schedule."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from scipy import stats

from experiments import rundir as rd
from experiments import sweep_report
from scripts import compare as compare_cli
from scripts.analysis import statistics
from scripts.analysis.compare_request import Comparison, parse_seeds, plan_comparison
from tests.conftest import REPO_ROOT, TINY_RUN, expected_run_dir
from tests.fake_runs import write_fake_run

# TINY_RUN's overrides but the preset, as extra overrides of a comparison.
TINY_EXTRAS = [o for o in TINY_RUN if not o.startswith("experiment=")]
HONEST, PAPER = "test_err_at_best_val", "min_test_err"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _table(text: str, caption_part: str) -> list[dict[str, str]]:
    """The rows of the Markdown table printed under the caption containing ``caption_part``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if caption_part in line and "|" not in line)
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def _cell(values: list[float]) -> str:
    """How tables print mean ± sample std (n), computed here from the values."""
    if len(values) == 1:
        return f"{values[0]:.2f} (1)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)})"


def _summaries(runs_dir: Path, comparison: Comparison) -> dict[str, dict[int, dict]]:
    """schedule -> seed -> the run's summary.json, for the comparison's run ids."""
    found: dict[str, dict[int, dict]] = {}
    for run_id, (schedule, seed) in comparison.run_ids().items():
        path = runs_dir / run_id / rd.SUMMARY_FILE
        found.setdefault(schedule, {})[seed] = json.loads(path.read_text())
    return found


def _expected_paired(
    summaries: dict[str, dict[int, dict]], schedule: str, first: str, key: str
) -> dict[str, str]:
    """The paired row of ``schedule`` against ``first`` computed from the summaries (of these
    two schedules only, finished runs only): the mean of the differences and the t interval
    widened by half the lattice step of the values (all of them, paired or not) / n."""
    seeds = sorted(set(summaries[schedule]) & set(summaries[first]))
    diffs = np.array([summaries[schedule][s][key] - summaries[first][s][key] for s in seeds])
    values = [summary[key] for name in (schedule, first) for summary in summaries[name].values()]
    n = len(diffs)
    half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n)
    half += float(statistics.resolution(np.array(values))) / (2 * n)
    mean = diffs.mean()
    interval = "n/a" if np.ptp(diffs) <= 1e-9 else f"{mean - half:+.2f}, {mean + half:+.2f}"
    return {"pairs": str(n), "mean diff [95 % CI]": f"{mean:+.2f} [{interval}]"}


# ---- the request is checked first -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--task", "quick/digit", "--schedules", "autodrop,step"],
            "error: --task 'quick/digit' is invalid: allowed values are ablation/buffer_size,",
        ),
        (["--task", "quick/digit", "--schedules", "autodrop,step"], "did you mean quick/digits?"),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,stpe"],
            "error: schedule 'stpe' in --schedules autodrop,stpe is invalid: allowed values are "
            "autodrop, autodrop_v1,",
        ),
        (["--task", "quick/digits", "--schedules", "autodrop,stpe"], "; did you mean step?"),
        (["--task", "quick/digits", "--schedules", "step,step"], "names step more than once"),
        (["--task", "quick/digits", "--schedules", "step"], "name at least two schedules"),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,step", "--seeds", "4-0"],
            "error: --seeds '4-0' is invalid: expected seeds like 0-4 or 0,1,2",
        ),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,step", "--", "trainer.epoch=3"],
            "error: unknown key trainer.epoch; did you mean trainer.epochs?",
        ),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,step", "--", "seed=3"],
            "error: extra override 'seed=3' is invalid: seed is set by --task",
        ),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,step", "--", "optimizer.lr=1,2"],
            "sweeps over several values: a comparison sweeps --schedules and --seeds only",
        ),
        (
            ["--task", "ablation/window", "--schedules", "autodrop,step"],
            "error: --task ablation/window sweeps scheduler.window over 32,64,128,256",
        ),
        (
            ["--task", "quick/digits", "--schedules", "autodrop,step", "--runs", "results"],
            "error: --runs results is invalid: the runner writes runs into <results>/runs",
        ),
        (
            ["--task", "quick/digits", "--schedules", "step,cosine", "--", "trainer.epochs=0"],
            "error: trainer.epochs=0 is invalid",
        ),
    ],
)
def test_a_bad_request_is_one_line_and_runs_nothing(
    arguments, message, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare_cli, "launch", lambda command: pytest.fail("launched"))
    assert compare_cli.main([*arguments[:4], "--out", "out", *arguments[4:]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert list(tmp_path.iterdir()) == []


def test_seeds_are_read_as_lists_and_ranges() -> None:
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,1,5") == (0, 1, 5)
    assert parse_seeds("0-2,7") == (0, 1, 2, 7)
    with pytest.raises(ValueError, match="names a seed more than once"):
        parse_seeds("0-2,1")


def test_the_requested_runs_are_named_as_the_runner_names_them(tmp_path) -> None:
    extras = [*TINY_EXTRAS, "optimizer.lr=0.1"]
    comparison = plan_comparison(
        "quick/digits", "step,cosine", "0,3", extras, results_dir=tmp_path / "results"
    )
    runs = tmp_path / "results" / "runs"
    expected = {
        expected_run_dir(tmp_path / "results", [*TINY_RUN, "optimizer.lr=0.1", f"scheduler={name}",
                                                f"seed={seed}"]).relative_to(runs.absolute())
        for name in ("step", "cosine") for seed in (0, 3)
    }  # fmt: skip
    assert {Path(run_id) for run_id in comparison.run_ids()} == expected
    assert all(",optimizer.lr=0.1" in label for label in comparison.labels)
    assert comparison.runner_overrides(tmp_path / "results")[:3] == [
        "experiment=quick/digits", "scheduler=step,cosine", "seed=0,3"
    ]  # fmt: skip


# ---- the comparison of finished runs ----------------------------------------------------------


def _fake_comparison_runs(runs_dir: Path, seeds: range) -> Comparison:
    """AutoDrop and Step at ``seeds`` with a validation split; Step worse by 2 to 3 points;
    Step's last seed diverged; a run of another setup (another label) beside them."""
    for seed in seeds:
        for name, offset in (("autodrop", 0.0), ("step", 2.0 + (seed % 2))):
            status = rd.DIVERGED if name == "step" and seed == seeds[-1] else rd.FINISHED
            write_fake_run(
                runs_dir, experiment="quick/digits", dataset="digits", model="resnet8",
                scheduler=name, seed=seed, status=status,
                test_errs=[30.0, 10.0 + offset + seed * 0.5, 12.0 + offset],
                val_errs=[31.0, 12.0 + offset, 11.0 + offset + seed * 0.25],
            )  # fmt: skip
    write_fake_run(
        runs_dir, experiment="quick/digits", dataset="digits", model="resnet8", scheduler="step",
        seed=0, test_errs=[1.0, 1.0], changes={"trainer.epochs": 2},
    )  # fmt: skip
    return Comparison(
        task="quick/digits", experiment="quick/digits", dataset="digits", model="resnet8",
        epochs=3, schedules=("autodrop", "step"), labels=("autodrop", "step"),
        seeds=tuple(seeds), overrides=(),
    )  # fmt: skip


def test_the_report_prints_the_runs_numbers_and_marks_from_five_pairs(tmp_path, capsys) -> None:
    runs_dir = tmp_path / "results" / "runs"
    comparison = _fake_comparison_runs(runs_dir, range(6))
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "compare_stale.md").write_text("not the comparison's\n")
    assert compare_cli.report(comparison, runs_dir, out) == 1  # a run did not finish
    printed = capsys.readouterr().out
    assert "1 of 12 runs are left out:\n  step seed=5: diverged" in printed

    summaries = _summaries(runs_dir, comparison)
    finished = {
        name: {s: v for s, v in by_seed.items() if v["status"] == rd.FINISHED}
        for name, by_seed in summaries.items()
    }
    rows = _table(printed, "): test error (%) per schedule")
    assert [row["schedule"] for row in rows] == ["AutoDrop", "Step"]
    for row, name in zip(rows, ("autodrop", "step"), strict=True):
        assert row["seeds finished"] == f"{len(finished[name])} of 6"
        assert row["honest (%)"] == _cell([v[HONEST] for v in finished[name].values()])
        assert row["paper (%)"] == _cell([v[PAPER] for v in finished[name].values()])
    paired = _table(printed, "paired difference of each schedule to AutoDrop")
    assert [(row["schedule"], row["protocol"]) for row in paired] == [
        ("Step", "honest"), ("Step", "paper")
    ]  # fmt: skip
    for row, key in zip(paired, (HONEST, PAPER), strict=True):
        expected = _expected_paired(finished, "step", "autodrop", key)
        assert {k: row[k] for k in expected} == expected
        assert row["marked"] == "yes"  # 5 pairs, every difference 2 or 3 points
    assert "marked: p (Holm) < 0.05, which takes >= 5 paired seeds" in printed
    assert "Honest protocol" in printed and "Paper's protocol" in printed

    tables = out / "tables"
    for name in ("compare_schedules", "compare_paired", "table2", "table2_honest", "comparisons"):
        assert (tables / f"{name}.md").is_file() and (tables / f"{name}.csv").is_file(), name
    assert (out / "figures" / "fig_task.png").is_file()
    assert (tables / "compare_stale.md").is_file()  # not a file of the comparison: kept
    assert "| Step " in (tables / "compare_paired.md").read_text()


def test_no_mark_below_five_pairs_and_no_stale_output(tmp_path, capsys) -> None:
    runs_dir = tmp_path / "results" / "runs"
    comparison = _fake_comparison_runs(runs_dir, range(3))
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "table2_honest.md").write_text("an earlier comparison's\n")
    (out / "figures").mkdir()
    (out / "figures" / "fig_task.pdf").write_text("an earlier comparison's\n")
    for run_dir in runs_dir.rglob("seed=*"):  # no validation split: the paper's protocol only
        summary = json.loads((run_dir / rd.SUMMARY_FILE).read_text())
        for key in ("min_val_err", "best_val_epoch", "test_err_at_best_val", "validation"):
            summary[key] = None
        (run_dir / rd.SUMMARY_FILE).write_text(json.dumps(summary))
        records = rd.read_records(run_dir / rd.METRICS_FILE)
        lines = [{k: v for k, v in r.items() if not k.startswith("val/")} for r in records]
        (run_dir / rd.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    compare_cli.report(comparison, runs_dir, out)
    printed = capsys.readouterr().out
    assert "honest: no number (the runs hold out no validation split)" in printed
    paired = _table(printed, "paired difference of each schedule to AutoDrop")
    assert [(row["protocol"], row["pairs"], row["marked"]) for row in paired] == [
        ("paper", "2", "no")
    ]
    assert "here at most 2: nothing can be marked" in printed
    assert not (out / "tables" / "table2_honest.md").exists()
    assert (out / "figures" / "fig_task.pdf").read_bytes().startswith(b"%PDF")


def test_versus_baseline_is_the_pairwise_test_with_holm_over_the_comparisons() -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"row": "t", "scheduler": name, "seed": seed, "v": float(rng.normal(shift, 1.0))}
        for name, shift in (("a", 0.0), ("b", 1.0), ("c", 3.0))
        for seed in range(6)
    ]
    import pandas as pd

    runs = pd.DataFrame(rows)
    both = statistics.versus_baseline(runs, "a", ["b", "c"], "v")
    assert list(both["schedule"]) == ["b", "c"] and set(both["baseline"]) == {"a"}
    alone = [statistics.compare(runs, "t", name, "a", "v") for name in ("b", "c")]
    assert np.allclose(both["mean_diff"], [r["mean_diff"] for r in alone])
    assert np.allclose(both["ci_low"], [r["ci_low"] for r in alone])
    assert np.allclose(both["p_value"], [r["p_value"] for r in alone])
    assert np.allclose(both["p_holm"], statistics.holm(np.array([r["p_value"] for r in alone])))


# ---- the -m sweep's summary -------------------------------------------------------------------


def _done(label: str, honest: float | None, paper: float, experiment="quick/digits") -> dict:
    run = {"experiment": experiment, "dataset": "digits", "model": "resnet8", "scheduler": label,
           HONEST: honest, PAPER: paper}  # fmt: skip
    return {"status": "finished", "line": "finished: x", "run": run}


def test_the_sweep_summary_adds_mean_and_std_per_schedule(tmp_path, capsys) -> None:
    report = sweep_report.SweepReport()
    sweep_report.reset()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    report.on_multirun_start(config)
    outcomes = [
        _done("step", 10.0, 9.0),
        _done("autodrop", 8.0, 7.5),
        {**_done("step", 12.5, 11.0), "status": "skipped"},
        _done("autodrop", 9.0, 8.0),
        {"status": "failed", "message": "boom"},
        _done("cosine", None, 20.0),  # no validation split: the paper's number
        _done("cosine", 30.0, 21.0),
        _done("step", 1.0, 1.0, experiment="paper/resnet18_cifar10"),
    ]
    for number, outcome in enumerate(outcomes):
        job = JobReturn(overrides=[f"n={number}"], status=JobStatus.COMPLETED)
        job.return_value = outcome
        report.on_job_end(OmegaConf.create({"hydra": {"job": {"num": number}}}), job)
    report.on_multirun_end(config)
    printed = capsys.readouterr().out.splitlines()
    start = printed.index(
        "test error (%) per schedule, mean ± std over seeds (n) of the finished and skipped jobs:"
    )
    honest = "honest: test error at the best validation epoch"
    paper = "paper: minimum test error over the epochs"
    assert [line.split() for line in printed[start + 1 :]] == [
        line.split() for line in [
            "  quick/digits/digits-resnet8:",
            f"    step      {_cell([10.0, 12.5])}  {honest}",
            f"    autodrop  {_cell([8.0, 9.0])}  {honest}",
            f"    cosine    {_cell([20.0, 21.0])}  {paper}",
            "  paper/resnet18_cifar10/digits-resnet8:",
            f"    step  {_cell([1.0])}  {honest}",
        ]
    ]  # fmt: skip


# ---- end to end: make compare on quick/digits --------------------------------------------------


def _compare(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "scripts.compare", *arguments]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_compare_trains_what_is_missing_then_only_reads(tmp_path) -> None:
    results, out = tmp_path / "results", tmp_path / "out"
    request = ["--task", "quick/digits", "--schedules", "step,autodrop", "--seeds", "0-1",
               "--runs", str(results / "runs"), "--out", str(out), "--", *TINY_EXTRAS]  # fmt: skip

    dry = _compare(*request[: -len(TINY_EXTRAS) - 1], "--dry-run", "--", *TINY_EXTRAS)
    assert dry.returncode == 0, dry.stderr
    assert not results.exists() and not out.exists()  # nothing trained, nothing written
    assert "would start (2 epochs): quick/digits/digits-resnet8/step,data.image_size=8," in (
        dry.stdout
    )
    write_fake_run(
        results / "runs",
        experiment="quick/digits",
        dataset="digits",
        model="resnet8",
        scheduler="step",
        seed=0,
        test_errs=[1.0, 1.0, 1.0],
    )  # fmt: skip  (the preset's own step run: another setup, never compared)

    first = _compare(*request)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "sweep of 4 jobs: 4 finished, 0 skipped" in first.stdout
    comparison = plan_comparison("quick/digits", "step,autodrop", "0-1", TINY_EXTRAS, results)
    summaries = _summaries(results / "runs", comparison)
    rows = _table(first.stdout, "): test error (%) per schedule")
    for row, name in zip(rows, ("step", "autodrop"), strict=True):
        assert row["seeds finished"] == "2 of 2"
        assert row["honest (%)"] == _cell([s[HONEST] for s in summaries[name].values()])
        assert row["paper (%)"] == _cell([s[PAPER] for s in summaries[name].values()])
    paired = _table(first.stdout, "paired difference of each schedule to Step")
    for row, key in zip(paired, (HONEST, PAPER), strict=True):
        assert row["schedule"] == "AutoDrop" and row["marked"] == "no"
        expected = _expected_paired(summaries, "autodrop", "step", key)
        assert {k: row[k] for k in expected} == expected
    for label in comparison.labels:  # the sweep summary's mean ± std line of each schedule
        name = label.partition(",")[0]
        line = next(x for x in first.stdout.splitlines() if x.strip().startswith(label + " "))
        assert _cell([s[HONEST] for s in summaries[name].values()]) in line
    assert (out / "tables" / "compare_paired.md").is_file()
    assert (out / "figures" / "fig_task.png").is_file()

    def run_files() -> dict[str, int]:  # Hydra rewrites its multirun.yaml beside them
        return {name: t for name, t in _files(results / "runs").items() if "/seed=" in name}

    trained = run_files()
    again = _compare(*request)
    assert again.returncode == 0, again.stderr
    assert "sweep of 4 jobs: 0 finished, 4 skipped" in again.stdout
    assert run_files() == trained  # no run touched
    caption = "quick/digits (digits/resnet8"
    assert (
        again.stdout[again.stdout.index(caption) :] == first.stdout[first.stdout.index(caption) :]
    )

    written = {**_files(results), **_files(out)}
    dry = _compare(*request[: -len(TINY_EXTRAS) - 1], "--dry-run", "--", *TINY_EXTRAS)
    assert "would train nothing: all 4 requested runs finished" in dry.stdout
    assert {**_files(results), **_files(out)} == written


@pytest.mark.parametrize(("runner_exit", "expected"), [(1, 1), (130, 130)])
def test_a_sweep_with_a_failed_job_is_compared_a_stopped_one_is_not(
    runner_exit, expected, tmp_path, monkeypatch, capsys
) -> None:
    runs_dir = tmp_path / "results" / "runs"
    _fake_comparison_runs(runs_dir, range(3))  # the preset's own labels: no extra overrides
    launched = []
    monkeypatch.setattr(
        compare_cli, "launch", lambda command: launched.append(command) or runner_exit
    )
    out = tmp_path / "out"
    status = compare_cli.main(
        ["--task", "quick/digits", "--schedules", "autodrop,step", "--seeds", "0-2",
         "--runs", str(runs_dir), "--out", str(out)]
    )  # fmt: skip
    assert status == expected
    assert launched and launched[0][-4:] == [
        "experiment=quick/digits", "scheduler=autodrop,step", "seed=0,1,2",
        f"paths.results_dir={runs_dir.parent}",
    ]  # fmt: skip
    captured = capsys.readouterr()
    if runner_exit == 1:  # step's seed 2 diverged: listed, the rest compared
        assert "step seed=2: diverged" in captured.out
        assert _table(captured.out, "): test error (%) per schedule")[1]["seeds finished"] == (
            "2 of 3"
        )
        assert (out / "tables" / "compare_schedules.md").is_file()
    else:
        assert "error: the runner stopped with exit status 130: nothing compared" in captured.err
        assert not out.exists()
