"""Data pipelines of the benchmark suite: CIFAR-10/100, ImageNet and scikit-learn's digits.

``build_data(name, settings)`` returns a ``DataBundle`` whose train loader is deterministic in
(seed, epoch) and sharded so every rank takes the same number of steps.
"""

from experiments.data.build import (
    DATASET_NAMES,
    LOADER_NAMES,
    build_array_bundle,
    build_data,
    fingerprint_data,
)
from experiments.data.bundle import DataBundle, EvalLoader, TrainLoader
from experiments.data.errors import DatasetUnavailableError
from experiments.data.settings import DataSettings

__all__ = [
    "DATASET_NAMES",
    "LOADER_NAMES",
    "DataBundle",
    "DataSettings",
    "DatasetUnavailableError",
    "EvalLoader",
    "TrainLoader",
    "build_array_bundle",
    "build_data",
    "fingerprint_data",
]
