"""A pickle reader that admits only what the official CIFAR python releases contain.

The releases were written by Python 2's cPickle: dicts of py2 ``str`` keys holding lists of ints,
py2 ``str`` values and one numpy uint8 array each. Apart from the built-in containers, their
only globals are numpy's array reconstruction and dtype. Everything else a pickle can name
(``os.system``, ``builtins.eval``, ``_codecs.encode``, ...) is refused before it is looked up,
so a planted object never runs. Module names from the file are never imported: each admitted
spelling maps to an object resolved here.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

# (module, name) as spelt in the file -> the object it stands for. Python 2's numpy wrote
# numpy.core.multiarray; numpy >= 2 writes numpy._core.multiarray.
ADMITTED_GLOBALS: dict[tuple[str, str], object] = {
    (module, name): getattr(_multiarray, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global no CIFAR release contains."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits ``ADMITTED_GLOBALS`` only."""

    def find_class(self, module: str, name: str) -> object:
        admitted = ADMITTED_GLOBALS.get((module, name))
        if admitted is None:
            raise RefusedGlobal(module, name)
        return admitted

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError(f"persistent id {pid!r}: not part of a CIFAR release")


def load_cifar_pickle(data: bytes) -> object:
    """Unpickle one CIFAR file's bytes; py2 ``str`` comes back as ``bytes`` (as in the keys
    b"data", b"labels"). Raises ``RefusedGlobal`` for anything outside the release format."""
    return CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
