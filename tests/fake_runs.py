"""Write run directories with chosen numbers, in the runner's on-disk format (for tests).

The summary carries what the runner's ``TrainingJob.summary`` records about the schedule: the
registry name (``scheduler_name``), the label (``scheduler_label``; ``scheduler`` adds the
identity suffix of ``changes``, as ``experiments.run_identity.identity_suffix`` spells it), the
options and ``label_settings`` (the dotted keys the label names, with their values).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from autodrop.registry import SCHEDULE_NAMES, schedule_class
from experiments import rundir as rd
from experiments.config import compact_number
from experiments.run_identity import identity_suffix
from scripts.analysis.runs import HYDRA_CONFIG, TRACE_FILE

# How the presets' labels name a setting when not by its last key part
# (conf/experiment/ablation/lr_sensitivity.yaml: ``${scheduler.name}-lrx=...``).
LABEL_NAMES = {"lr_sweep.multiplier": "lrx"}


def fake_label(name: str, settings: dict | None = None) -> str:
    """The label a preset would give: 'autodrop' + {"scheduler.window": 32} ->
    'autodrop-window=32' (values as the labels' ``compact`` resolver writes them)."""
    parts = [
        f"-{LABEL_NAMES.get(key, key.rpartition('.')[2])}={compact_number(value)}"
        for key, value in (settings or {}).items()
    ]
    return name + "".join(parts)


def write_fake_run(
    runs_dir: str | Path,
    *,
    experiment: str,
    dataset: str,
    model: str,
    scheduler: str,
    seed: int,
    test_errs: Sequence[float],
    status: str = rd.FINISHED,
    epochs_planned: int | None = None,
    lrs: Sequence[float] | None = None,
    time_per_iter_s: float = 0.01,
    steps_per_epoch: int = 10,
    options: dict | None = None,
    extra_metrics: dict[str, Sequence[float | None]] | None = None,
    trace: Sequence[dict] | None = None,
    message: str | None = None,
    wandb_run_id: str | None = None,
    config: dict | None = None,
    settings: dict | None = None,
    changes: dict | None = None,
    val_errs: Sequence[float] | None = None,
    validation: dict | None = None,
    metric_source: str | None = None,
) -> Path:
    """Create one run directory whose epoch e has test error ``test_errs[e-1]``.

    ``val_errs``: a validation split's error per epoch (validation loss = err / 10), recorded
    with ``validation`` (default: 360 images, fingerprint 'fake'); ``metric_source`` as the
    runner records it for a metric-driven schedule.

    ``scheduler`` is the registry name; ``settings`` the label settings (dotted key -> value,
    e.g. ``{"scheduler.window": 32}``: label 'autodrop-window=32'); ``changes`` the values
    that differ from the preset (e.g. ``{"optimizer.lr": 0.1}``: 'step,optimizer.lr=0.1').

    Other per-epoch values are simple functions of the test error (test loss = err / 10, train
    loss = err / 20) so figures have something to draw. ``extra_metrics`` adds per-epoch keys
    (e.g. ``{"angle/epoch": [None, None, 30.0]}``); ``trace`` is written to autodrop.jsonl;
    ``config`` (e.g. ``{"optimizer": {"lr": 0.05}}``) to .hydra/config.yaml, as Hydra records it.
    """
    epochs = len(test_errs)
    planned = epochs if epochs_planned is None else epochs_planned
    lrs = [0.1] * epochs if lrs is None else list(lrs)
    if len(lrs) != epochs:
        raise ValueError(f"lrs has {len(lrs)} values, test_errs {epochs}: they must match")
    settings, changes = dict(settings or {}), dict(changes or {})
    label = fake_label(scheduler, settings)
    full_label = label + identity_suffix({}, changes)
    run_dir = Path(runs_dir) / rd.run_path(experiment, dataset, model, full_label, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    stream = schedule_class(scheduler).record_stream if scheduler in SCHEDULE_NAMES else None
    is_autodrop = stream is not None and rd.records_file(stream) == TRACE_FILE
    records = []
    for index, err in enumerate(test_errs):
        record = {
            "epoch": index + 1,
            "step": (index + 1) * steps_per_epoch,
            "lr": lrs[index],
            "train/loss": err / 20,
            "train/acc": 100 - err / 2,
            "test/loss": err / 10,
            "test/err": err,
            "time/epoch_s": time_per_iter_s * steps_per_epoch,
            "time/iter_s": time_per_iter_s,
            "time/train_s": time_per_iter_s * steps_per_epoch,
        }
        if val_errs is not None:
            record["val/loss"], record["val/err"] = val_errs[index] / 10, val_errs[index]
        if is_autodrop:
            record["autodrop/drops"] = sum(lr < lrs[0] for lr in lrs[: index + 1])
            record["autodrop/omega"] = None if index < 2 else 80.0 + index
        for key, values in (extra_metrics or {}).items():
            record[key] = values[index]
        records.append(record)
    _write_jsonl(run_dir / rd.METRICS_FILE, records)
    if val_errs is not None and validation is None:
        validation = {"size": 360, "fingerprint": "fake", "split_seed": 0}
    if trace is not None:
        _write_jsonl(run_dir / TRACE_FILE, trace)
    derived = rd.summarize_metrics(records)
    summary = {
        "status": status,
        "experiment": experiment,
        "dataset": dataset,
        "model": model,
        "scheduler": full_label,
        "scheduler_label": label,
        "scheduler_name": scheduler,
        "scheduler_options": options or {},
        "label_settings": settings,
        "seed": seed,
        "epochs_planned": planned,
        **derived,  # epochs_done, test and validation errors, times: from the records
        "validation": validation,
        "signals": sorted(s.value for s in schedule_class(scheduler).reads)
        if scheduler in SCHEDULE_NAMES
        else [],
        "metric_source": metric_source,
        "wall_time_s": time_per_iter_s * steps_per_epoch * epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": 128,  # the setup's trainer.batch_size
        "hardware": "cpu (fake)",
        "world_size": 1,
        "versions": {"torch": "fake"},
        "git_commit": None,
        "changes": changes,
        "setup": {
            "experiment_name": experiment,
            "data.name": dataset,
            "model.name": model,
            "scheduler.name": scheduler,
            "seed": seed,
            "trainer.epochs": planned,
            "trainer.batch_size": 128,
            **{f"scheduler.{key}": value for key, value in (options or {}).items()},
            **settings,
            **changes,
        },
        "wandb_run_id": wandb_run_id,
        "message": message,
    }
    (run_dir / rd.SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    if config is not None:
        (run_dir / HYDRA_CONFIG).parent.mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), run_dir / HYDRA_CONFIG)
    return run_dir


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
