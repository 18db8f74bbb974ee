"""Data pipelines of the benchmark suite: the registered datasets (``datasets``: CIFAR-10/100,
ImageNet, scikit-learn's digits) and the loaders over them.

``load_data(name, Loading.for_rank(...), root=..., **options)`` returns a ``DataBundle``
whose train loader is deterministic in (seed, epoch) and sharded so every rank takes the same
number of steps.

The names below are imported on first use: the torch-free modules of this package (the dry
run's ``presence`` check, the CIFAR releases, ImageNet's layout) must not pay torch's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "LOADER_NAMES": "build",
    "build_array_bundle": "build",
    "build_data": "build",
    "fingerprint_data": "build",
    "load_data": "build",
    "make_dataset": "build",
    "DataBundle": "bundle",
    "EvalLoader": "bundle",
    "TrainLoader": "bundle",
    "Loading": "loading",
    "DatasetUnavailableError": None,  # experiments.errors
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _HOMES[name]
    module = importlib.import_module(f"{__name__}.{home}" if home else "experiments.errors")
    value = getattr(module, name)
    globals()[name] = value
    return value
