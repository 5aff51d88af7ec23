"""Unpickling that builds only plain data: containers, numbers, strings and numeric NumPy
arrays. Nothing named by the file is imported or called; each global a file may name is
answered by a function of ours, and anything else stops the read with `UnsafePickle`.

`read_data_pickle` reads data files such as the CIFAR-10 python batches; the reader of the
published network pickles (`creps.compat.pickle_reader`) builds on the same pieces.
"""

from __future__ import annotations

import _compat_pickle
import math
import pickle
from typing import Any, BinaryIO, Callable, Optional

import numpy as np

# NumPy element kinds we rebuild: bool, signed and unsigned ints, floats.
NUMPY_KINDS = frozenset("biuf")


class UnsafePickle(ValueError):
    """The file holds something a published network pickle does not (refused unread)."""


# ---------------------------------------------------------------------------------------
# NumPy values.


class _RecordedDType:
    """`numpy.dtype(code, align, copy)` followed by BUILD: a numeric dtype, checked."""

    def __init__(self, code: Any, *_flags: Any):
        if not isinstance(code, str):
            raise UnsafePickle("a NumPy dtype without a type code")
        try:
            dtype = np.dtype(code)
        except TypeError:
            raise UnsafePickle(f"unknown NumPy type code {code!r}") from None
        if dtype.kind not in NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafePickle(f"NumPy dtype {code!r} is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # state: (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise UnsafePickle("a NumPy dtype with a malformed state")
        if state[2] is not None or state[3] is not None or state[4] is not None:
            raise UnsafePickle("a NumPy dtype with fields or subarrays")
        order = {"=": "<", "|": "|"}.get(state[1], state[1])
        self.dtype = self.dtype.newbyteorder(order) if order != "|" else self.dtype


def _latin1_bytes(raw: Any) -> Any:
    """A Python 2 byte string read as text (encoding='latin1') back to its bytes."""
    return raw.encode("latin1") if isinstance(raw, str) else raw


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    """Stand-in for `numpy.core.multiarray.scalar(dtype, bytes)`."""
    raw = _latin1_bytes(raw)
    if not isinstance(dtype, _RecordedDType) or not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickle("a NumPy scalar that is not a plain number")
    if len(raw) != dtype.dtype.itemsize:
        raise UnsafePickle("a NumPy scalar of the wrong byte length")
    return np.frombuffer(bytes(raw), dtype=dtype.dtype)[0]


class _RecordedArray:
    """`numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by BUILD
    `(version, shape, dtype, is_fortran, raw bytes)`: a numeric array, checked."""

    def __init__(self, cls: Any = None, *_args: Any):
        if cls is not _NDARRAY:
            raise UnsafePickle("a NumPy array of another class than ndarray")
        self.array: Optional[np.ndarray] = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickle("a NumPy array with a malformed state")
        _version, shape, dtype, fortran, raw = state
        self.array = _numpy_frombuffer(_latin1_bytes(raw), dtype, shape, "F" if fortran else "C")


_NDARRAY = object()  # what the file's `numpy.ndarray` global resolves to


def _numpy_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """Stand-in for `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`, which
    protocol 5 uses for contiguous arrays (and `_RecordedArray` for the others): the bytes
    must be exactly `shape` numbers."""
    if not (isinstance(buffer, (bytes, bytearray)) and isinstance(dtype, _RecordedDType) and isinstance(shape, tuple)
            and all(isinstance(n, int) and n >= 0 for n in shape) and order in ("C", "F")):
        raise UnsafePickle("a NumPy array that is not plain numbers")
    if len(buffer) != math.prod(shape) * dtype.dtype.itemsize:
        raise UnsafePickle("a NumPy array whose data does not match its shape")
    return np.frombuffer(bytes(buffer), dtype=dtype.dtype).reshape(shape, order=order).copy()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Protocol-2 pickles store bytes as `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("a _codecs.encode call that is not a protocol-2 byte string")
    return text.encode("latin1")


def _builtin_set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise UnsafePickle("a set built from something other than a list")
    return set(items)


DATA_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("builtins", "set"): _builtin_set,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _RecordedDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _RecordedArray,
    ("numpy._core.multiarray", "_reconstruct"): _RecordedArray,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals are the `allowed` table (Python 2 names mapped to Python 3)."""

    allowed: dict[tuple[str, str], Callable[..., Any]] = DATA_GLOBALS
    what = "a data pickle"

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key == ("numpy", "ndarray"):
            return _NDARRAY
        if key in self.allowed:
            return self.allowed[key]
        raise UnsafePickle(f"the file names the global {module}.{name}, which {self.what} does not contain; "
                           "refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle(f"the file uses persistent ids (a torch.save zip or another format, not {self.what})")


def finish(value: Any, special: Optional[Callable[..., Any]] = None) -> Any:
    """Replace the reader's stand-ins in a loaded tree (NumPy arrays and dtypes become real
    ones) and walk the containers; `special(v, walk, memo)` may answer other stand-ins first
    (it returns NotImplemented for values it does not handle)."""
    memo: dict[int, Any] = {}

    def walk(v: Any) -> Any:
        if id(v) in memo:
            return memo[id(v)]
        if special is not None:
            out = special(v, walk, memo)
            if out is not NotImplemented:
                return out
        if isinstance(v, _RecordedArray):
            if v.array is None:
                raise UnsafePickle("a NumPy array without data")
            return v.array
        if isinstance(v, _RecordedDType):
            return v.dtype
        if isinstance(v, dict):
            out = type(v)()  # dict, OrderedDict or a reader's own dict type: only those get here
            memo[id(v)] = out
            for key, item in v.items():
                out[key] = walk(item)
            return out
        if isinstance(v, list):
            out = []
            memo[id(v)] = out
            out.extend(walk(item) for item in v)
            return out
        if isinstance(v, tuple):
            return tuple(walk(item) for item in v)
        if isinstance(v, set):
            return {walk(item) for item in v}
        return v

    return walk(value)


def load_restricted(unpickler: RestrictedUnpickler, special: Optional[Callable[..., Any]] = None) -> Any:
    """unpickler.load() then finish(); a damaged file is one UnsafePickle."""
    try:
        return finish(unpickler.load(), special)
    except UnsafePickle:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RecursionError, MemoryError, OverflowError, RuntimeError) as err:
        raise UnsafePickle(f"damaged pickle ({type(err).__name__}: {str(err)[:80]})") from None


def read_data_pickle(file: BinaryIO) -> Any:
    """Read a pickle of plain data and numeric NumPy arrays, of any protocol (0 to 5), e.g.
    the batches of the CIFAR-10 python release. Python 2 byte strings come back as str
    (latin-1), arrays as arrays; anything else is refused with UnsafePickle."""
    return load_restricted(RestrictedUnpickler(file, encoding="latin1"))
