"""Data pipelines of the benchmark suite: the registered datasets (``datasets``: CIFAR-10/100,
ImageNet, scikit-learn's digits) and the loaders over them.

``load_data(name, Loading.for_rank(...), root=..., **options)`` returns a ``DataBundle``
whose train loader is deterministic in (seed, epoch) and sharded so every rank takes the same
number of steps.

The names below are imported on first use: the torch-free modules of this package (the dry
run's ``presence`` check, the CIFAR releases, ImageNet's layout) must not pay torch's import.
"""

from __future__ import annotations

from typing import Any

_BUILD = (
    "LOADER_NAMES",
    "build_array_bundle",
    "build_data",
    "fingerprint_data",
    "load_data",
    "make_dataset",
)
_BUNDLE = ("DataBundle", "EvalLoader", "TrainLoader")

__all__ = sorted([*_BUILD, *_BUNDLE, "DatasetUnavailableError", "Loading"])


def __getattr__(name: str) -> Any:
    if name in _BUILD:
        from experiments.data import build as home
    elif name in _BUNDLE:
        from experiments.data import bundle as home
    elif name == "Loading":
        from experiments.data import loading as home
    elif name == "DatasetUnavailableError":
        from experiments import errors as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value
