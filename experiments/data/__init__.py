"""Data pipelines of the benchmark suite: the registered datasets (``datasets``: CIFAR-10/100,
ImageNet, scikit-learn's digits) and the loaders over them.

``load_data(name, Loading.for_rank(...), root=..., **options)`` returns a ``DataBundle``
whose train loader is deterministic in (seed, epoch) and sharded so every rank takes the same
number of steps.
"""

from experiments.data.build import (
    LOADER_NAMES,
    build_array_bundle,
    build_data,
    fingerprint_data,
    load_data,
    make_dataset,
)
from experiments.data.bundle import DataBundle, EvalLoader, TrainLoader
from experiments.data.loading import Loading
from experiments.errors import DatasetUnavailableError

__all__ = [
    "LOADER_NAMES",
    "DataBundle",
    "DatasetUnavailableError",
    "EvalLoader",
    "Loading",
    "TrainLoader",
    "build_array_bundle",
    "build_data",
    "fingerprint_data",
    "load_data",
    "make_dataset",
]
