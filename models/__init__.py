"""Architectures of the AutoDrop benchmark suite, built by name through ``build_model``."""

from models.registry import MODEL_NAMES, build_model, count_parameters

__all__ = ["MODEL_NAMES", "build_model", "count_parameters"]
