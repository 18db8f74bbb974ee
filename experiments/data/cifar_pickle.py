"""A pickle reader that admits only what the official CIFAR python releases contain.

The releases were written by Python 2's cPickle: dicts of py2 ``str`` keys holding lists of ints,
py2 ``str`` values and one numpy uint8 array each. Apart from the built-in containers, their
only globals are numpy's array reconstruction and dtype. Everything else a pickle can name
(``os.system``, ``builtins.eval``, ``_codecs.encode``, ...) is refused before it is looked up,
so a planted object never runs. Module names from the file are never imported.

Nothing the file declares reaches numpy unchecked, because numpy allocates what a pickle
declares before anything can look at it (8 bytes per element, set to None, for an object
array; an object array whose declared length exceeds its data even crashes numpy):

- ``numpy.dtype`` and ``_reconstruct`` build placeholders (``DeclaredDtype``,
  ``DeclaredArray``); the dtype must be a plain number (bool, int, uint, float: never objects,
  strings, records or subarrays), and an array is made only once its full state is known and
  its declared size (shape x item size) fits in the file and equals its data;
- ``numpy.ndarray`` may only be named as ``_reconstruct``'s subtype, never called;
- the memo indices are checked before unpickling: they must count up as every pickle writer
  numbers them, since Python's unpickler grows its memo table to twice any index it meets (a
  9-byte file could make it zero gigabytes).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import struct

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

# (module, name) as spelt in the file -> the role it plays. Python 2's numpy wrote
# numpy.core.multiarray; numpy >= 2 writes numpy._core.multiarray.
ADMITTED_GLOBALS: dict[tuple[str, str], str] = {
    (module, name): name
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"): "ndarray", ("numpy", "dtype"): "dtype"}

# A plain number's dtype code: kind b(ool), i(nt), u(int) or f(loat) and its size in bytes, or
# a one-letter code of one (py2 numpy passed "b" to _reconstruct).
_PLAIN_DTYPE = re.compile(r"[biuf][1248]|[?bBhHiIlLqQefd]")
_BYTE_ORDERS = ("|", "<", ">", "=")
_MAX_DIMENSIONS = 32  # numpy's limit


class RefusedContent(pickle.UnpicklingError):
    """The pickle holds something no CIFAR release contains; the message says what."""


class RefusedGlobal(RefusedContent):
    """The pickle names a global no CIFAR release contains."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refers to the Python global {module}.{name}")
        self.qualified_name = f"{module}.{name}"


def _text(value: object) -> object:
    """A py2 ``str`` (bytes here) as text; anything else unchanged."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def brief_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, never building more: a planted value may be
    huge (a long string, an int of a million digits) or nested a million deep."""
    if isinstance(value, (bytes, str)):
        text = repr(value[:limit])
    elif isinstance(value, int) and value.bit_length() > 4 * limit:
        text = f"an int of {value.bit_length()} bits"
    elif isinstance(value, (list, tuple, dict)):
        brackets = {list: "[]", tuple: "()", dict: "{}"}.get(type(value), "<>")
        text = f"{brackets[0]}... {len(value)} item{'s' * (len(value) != 1)}{brackets[1]}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NdarrayName:
    """What ``numpy.ndarray`` stands for in a CIFAR file: ``_reconstruct``'s subtype only."""

    __slots__ = ()  # nothing a pickle's BUILD could set

    def __call__(self, *args: object) -> None:
        raise RefusedContent("calls numpy.ndarray directly, which no CIFAR file does")


_NDARRAY = _NdarrayName()


class DeclaredDtype:
    """``numpy.dtype(code, align, copy)`` as the file declares it: a real dtype only once the
    code and the state set by BUILD are those of a plain number."""

    __hash__ = None  # type: ignore[assignment]  # never a dict key

    def __init__(self, code: object, align: object = 0, copy: object = 1) -> None:
        code = _text(code)
        if not isinstance(code, str) or not _PLAIN_DTYPE.fullmatch(code):
            raise RefusedContent(
                f"declares the numpy dtype {brief_repr(code)}; a CIFAR file holds only plain "
                "numbers (bool, int, uint, float), never objects"
            )
        self.code, self.byte_order = code, "|"

    def __setstate__(self, state: object) -> None:
        # numpy's state: (version, byte order, subarray, names, fields, item size, alignment,
        # flags[, metadata]); a plain number has no subarray, names or fields, and flags 0.
        plain = (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and state[0] in (3, 4)
            and _text(state[1]) in _BYTE_ORDERS
            and state[2:8] == (None, None, None, -1, -1, 0)
            and (len(state) == 8 or state[8] is None)
        )
        if not plain:
            raise RefusedContent(
                f"sets the state of a numpy dtype to {brief_repr(state)}, which is not a plain "
                "number's (no subarray, fields or flags)"
            )
        self.byte_order = _text(state[1])

    def resolve(self) -> np.dtype:
        order = self.byte_order if self.byte_order in ("<", ">") else ""
        return np.dtype(order + self.code)


def _dtype_of(value: object) -> np.dtype:
    """The dtype ``_reconstruct`` or ``scalar`` was given: a declared dtype or its code."""
    return (value if isinstance(value, DeclaredDtype) else DeclaredDtype(value)).resolve()


def _check_shape(shape: object) -> tuple[int, ...]:
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_DIMENSIONS
        or not all(type(size) is int and size >= 0 for size in shape)
    ):
        raise RefusedContent(f"declares a numpy array of shape {brief_repr(shape)}")
    return shape


class DeclaredArray:
    """What ``_reconstruct(ndarray, shape, dtype)`` stands for until BUILD gives the array its
    state (shape, dtype, order, data): then, checked, the real array (``value``)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.value: np.ndarray | None = None

    def check_fits(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.file_size:
            raise RefusedContent(
                f"declares a numpy array of shape {brief_repr(shape)} and dtype {dtype} "
                f"({nbytes} bytes), more than the {self.file_size}-byte file could hold"
            )
        return nbytes

    def __setstate__(self, state: object) -> None:
        # numpy's state: ([version 1,] shape, dtype, Fortran order, data)
        if (
            self.value is not None
            or not isinstance(state, tuple)
            or len(state) not in (4, 5)
            or (len(state) == 5 and state[0] != 1)
            or state[-2] not in (False, True)
        ):
            raise RefusedContent(f"sets the state of a numpy array to {brief_repr(state)}")
        shape, dtype, fortran_order, data = state[-4:]
        shape, dtype = _check_shape(shape), _dtype_of(dtype)
        nbytes = self.check_fits(shape, dtype)
        if not isinstance(data, bytes) or len(data) != nbytes:
            held = f"{len(data)} bytes" if isinstance(data, bytes) else brief_repr(data)
            raise RefusedContent(
                f"declares a numpy array of shape {shape} and dtype {dtype} ({nbytes} bytes) "
                f"but holds {held}"
            )
        # Checked: numpy now rebuilds exactly what its own unpickling would.
        array = _multiarray._reconstruct(np.ndarray, (0,), b"b")
        array.__setstate__((1, shape, dtype, bool(fortran_order), data))
        self.value = array


class CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are ``ADMITTED_GLOBALS``, each checked as above."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.file_size = len(data)

    def find_class(self, module: str, name: str) -> object:
        role = ADMITTED_GLOBALS.get((module, name))
        if role is None:
            raise RefusedGlobal(module, name)
        return {
            "_reconstruct": self._reconstruct,
            "scalar": self._scalar,
            "ndarray": _NDARRAY,
            "dtype": self._dtype,
        }[role]

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError(f"persistent id {pid!r}: not part of a CIFAR release")

    def _dtype(self, *args: object) -> DeclaredDtype:
        return DeclaredDtype(*args)

    def _reconstruct(self, subtype: object, shape: object, dtype: object) -> DeclaredArray:
        if subtype is not _NDARRAY:
            raise RefusedContent(f"reconstructs a numpy array of type {brief_repr(subtype)}")
        array = DeclaredArray(self.file_size)
        array.check_fits(_check_shape(shape), _dtype_of(dtype))
        return array

    def _scalar(self, dtype: object, data: object = None) -> object:
        dtype = _dtype_of(dtype)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise RefusedContent(f"declares a numpy {dtype} scalar holding {brief_repr(data)}")
        return _multiarray.scalar(dtype, data)

    def load(self) -> object:
        return _resolve_declared(super().load())


def _resolve_declared(loaded: object) -> object:
    """``loaded`` with every placeholder replaced by the array or dtype it stands for (lists
    and dicts in place, walked without recursion: a planted file may nest deeply)."""

    def resolved(value: object) -> object:
        if isinstance(value, DeclaredArray):
            if value.value is None:
                raise RefusedContent("declares a numpy array but never gives it data")
            return value.value
        return value.resolve() if isinstance(value, DeclaredDtype) else value

    containers = (dict, list, tuple)
    pending, seen = [loaded], set()
    while pending:
        container = pending.pop()
        if id(container) in seen:
            continue
        seen.add(id(container))
        if isinstance(container, tuple):
            if any(isinstance(item, (DeclaredArray, DeclaredDtype)) for item in container):
                raise RefusedContent("holds a numpy array or dtype inside a tuple")
            pending += [item for item in container if isinstance(item, containers)]
            continue
        keys = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            value = container[key] = resolved(container[key])
            if isinstance(value, containers):
                pending.append(value)
    return resolved(loaded)


_COUNT_FORMATS = {
    pickletools.TAKEN_FROM_ARGUMENT1: "<B",
    pickletools.TAKEN_FROM_ARGUMENT4: "<i",
    pickletools.TAKEN_FROM_ARGUMENT4U: "<I",
    pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
}
_OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}


def check_memo_indices(data: bytes) -> None:
    """Refuse a pickle whose memo indices do not count up as pickle writers number them: from 1
    in Python 2's cPickle (which wrote the releases), from 0 in Python's other picklers, so each
    index is at most one more than the number of stores before it. Walks the opcodes without
    decoding their arguments; raises ``RefusedContent`` or ``pickle.UnpicklingError``."""
    position, stores, end = 0, 0, len(data)
    while position < end:
        op = _OPCODES.get(data[position])
        if op is None:
            raise pickle.UnpicklingError(f"unknown opcode {data[position]:#04x} at byte {position}")
        position += 1
        start, arg = position, op.arg
        if arg is None:
            pass
        elif arg.n >= 0:
            position += arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:  # GLOBAL and INST read two lines
            for _ in range(2 if arg is pickletools.stringnl_noescape_pair else 1):
                position = data.find(b"\n", position, end) + 1
                if position == 0:
                    raise pickle.UnpicklingError(f"{op.name} at byte {start - 1} is cut short")
        else:
            form = _COUNT_FORMATS[arg.n]
            if position + struct.calcsize(form) > end:
                raise pickle.UnpicklingError(f"{op.name} at byte {start - 1} is cut short")
            (count,) = struct.unpack_from(form, data, position)
            position += struct.calcsize(form) + max(count, 0)
        if position > end:
            raise pickle.UnpicklingError(f"{op.name} at byte {start - 1} is cut short")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            digits = op.name == "PUT"  # protocol 0 writes the index in decimal
            index = (
                int(data[start : position - 1])
                if digits
                else int.from_bytes(data[start:position], "little")
            )
            if index > stores + 1:
                raise RefusedContent(
                    f"stores into memo slot {index} after {stores} stores (pickle writers "
                    "number them in order)"
                )
            stores += 1
        elif op.name == "MEMOIZE":
            stores += 1
        elif op.name == "STOP":
            return
    raise pickle.UnpicklingError(f"the pickle ends after {end} bytes without STOP (cut short)")


def load_cifar_pickle(data: bytes) -> object:
    """Unpickle one CIFAR file's bytes; py2 ``str`` comes back as ``bytes`` (as in the keys
    b"data", b"labels"). Raises ``RefusedContent`` (``RefusedGlobal`` for a global) for anything
    outside the release format, before building it."""
    check_memo_indices(data)
    return CifarUnpickler(data).load()
