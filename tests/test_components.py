"""Every registered component builds with its defaults, trains a step and refuses a bad option
value, through the runner's own builders: schedules, models, optimizers and datasets alike,
whichever are registered (no list of them is restated here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autodrop import registry
from experiments import specs
from experiments.data import Loading, build_data, make_dataset
from experiments.data.arrays import ArraySplits
from experiments.errors import DatasetUnavailableError
from experiments.optimizers import SETS_ITS_OWN_LR, build_optimizer, build_schedule
from experiments.settings import Component, Schedule
from models import build_model

BAD = "not-a-value"  # no option of any type takes it
STEPS_PER_EPOCH, EPOCHS = 4, 3


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def _step(model: nn.Module, optimizer, schedule=None, images=None) -> float:
    images = torch.randn(4, 3, 2, 2) if images is None else images
    labels = torch.arange(len(images)) % 3
    loss = nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return float(loss)


def _optimizer_for(schedule: str) -> str:
    """The optimizer a schedule trains with: its own when it sets the lr, else SGD."""
    owners = {method: optimizer for optimizer, method in SETS_ITS_OWN_LR.items()}
    return owners.get(schedule, "sgd")


def _options(section: str, name: str, **values) -> dict:
    """A component's required options, valued as its YAML values them, then ``values``."""
    from experiments.config import compose_config

    spec = specs.spec(section, name)
    cfg = compose_config([f"{section}={name}"])
    required = {o.name: cfg[section][o.name] for o in spec.options if o.required}
    return {**required, **values}


@pytest.mark.parametrize("name", specs.names("scheduler"))
def test_each_schedule_builds_trains_a_step_and_refuses_a_bad_option(name: str) -> None:
    model = _tiny_model()
    optimizer = build_optimizer(Component(_optimizer_for(name)), model, steps_per_epoch=4)
    schedule = build_schedule(
        Schedule(name, {}), optimizer, steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS
    )
    assert schedule.name == name
    schedule.train_mode(model)  # as the loop starts every epoch
    for _ in range(STEPS_PER_EPOCH):
        _step(model, optimizer, schedule)
        assert schedule.lr >= 0.0
    schedule.epoch_end(1.0 if schedule.needs_metric else None)
    for option in specs.spec("scheduler", name).options:
        fresh = build_optimizer(Component(_optimizer_for(name)), model, steps_per_epoch=4)
        with pytest.raises((ValueError, TypeError)):
            registry.build(
                name, fresh, steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS, **{option.name: BAD}
            )


@pytest.mark.parametrize("name", specs.names("optimizer"))
def test_each_optimizer_builds_takes_a_step_and_refuses_a_bad_option(name: str) -> None:
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(Component(name), model, steps_per_epoch=STEPS_PER_EPOCH)
    if hasattr(optimizer, "train"):  # schedule-free's training mode
        optimizer.train()
    _step(model, optimizer)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for option in specs.spec("optimizer", name).options:
        with pytest.raises((ValueError, TypeError)):
            build_optimizer(Component(name, {option.name: BAD}), model, steps_per_epoch=4)


@pytest.mark.parametrize("name", specs.names("model"))
def test_each_model_builds_trains_a_step_and_refuses_a_bad_option(name: str) -> None:
    options = _options("model", name)
    with torch.device("meta"):  # every model, however large, builds
        build_model(name, 3, **options)
    for option in specs.spec("model", name).options:
        with pytest.raises((ValueError, TypeError)), torch.device("meta"):
            build_model(name, 3, **{**options, option.name: BAD})
    torch.manual_seed(0)
    model = build_model(name, 3, **options)
    if sum(p.numel() for p in model.parameters()) > 30_000_000:
        pytest.skip("one CPU step of a large network takes seconds: built on meta above")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = _step(model, optimizer, images=torch.randn(2, 3, 16, 16))
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.parametrize("name", specs.names("data"))
def test_each_dataset_builds_and_trains_a_step_or_says_where_its_files_go(
    name: str, tmp_path
) -> None:
    """Built in an empty folder: a dataset that needs files refuses in one message naming the
    folder; one that needs none is loaded, batched and trained on."""
    options = _options("data", name)
    for option in specs.spec("data", name).options:
        with pytest.raises((ValueError, TypeError)):
            make_dataset(name, str(tmp_path), **{**options, option.name: BAD})
    try:  # an in-memory dataset reads its files here, image folders when loaders are built
        dataset = make_dataset(name, str(tmp_path), **options)
        loader = "device" if isinstance(dataset, ArraySplits) else "classic"
        loading = Loading(batch_size=8, eval_batch_size=16, device="cpu", seed=0, loader=loader)
        bundle = build_data(dataset, loading, name=name)
    except DatasetUnavailableError as error:
        assert str(tmp_path) in str(error) and "\n" not in str(error).strip()
        return
    bundle.train.set_epoch(0)
    images, labels = next(iter(bundle.train))
    assert images.dtype == torch.float32 and len(labels) == 8
    model = build_model(specs.names("model")[0], bundle.num_classes)
    _step(model, torch.optim.SGD(model.parameters(), lr=0.01), images=images)
