"""A reader for the network pickles of the published StyleGAN2-ADA / StyleGAN3 / CREPS code
that runs nothing from the file.

A published `.pkl` is one pickle of a dict (`G`, `D`, `G_ema`, `augment_pipe`,
`training_set_kwargs`). Each network class of the published code is stored as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` carries the
complete Python source of the class's module; the published loader executes that source.
We never do. Unpickling here goes through `find_class`, which answers only the handful of
names such files contain, each with a function of ours that builds plain data:

- a persistent object becomes a `Recorded` (class name + the module's attribute dict); its
  source text is dropped unread;
- the few modules pickled by reference (`torch.nn...Sequential`, CREPS's `SynthesisInput`)
  become a `Recorded` too;
- tensors are rebuilt from the embedded legacy `torch.save` streams by our own parser of
  that format (no torch.load), with their offsets and strides bounds-checked;
- NumPy scalars and arrays are rebuilt from their raw bytes, for numeric dtypes only;
- `dnnlib.util.EasyDict` is a plain dict, `collections.OrderedDict` itself.

Any other global (an `os.system`, `builtins.eval`, an unknown class) stops the read with
`UnsafePickle` naming it. Protocols 2 to 5 are accepted.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch

from creps.safe_pickle import (
    DATA_GLOBALS,
    RestrictedUnpickler,
    UnsafePickle,
    load_restricted,
)

PERSISTENCE_VERSION = 6  # the only version the published loader accepts
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first value of a legacy torch.save stream
LEGACY_PROTOCOL = 1001

# Tensor element types by the storage class names of the legacy format.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


# ---------------------------------------------------------------------------------------
# What the file's objects become.


@dataclass
class Recorded:
    """A module of the published code: its class name and its attribute dict (`state`).

    `persistent` is True for classes stored with their source (read as `meta`), False for
    classes stored by reference (`qualname` then names the module and class).
    """

    class_name: str
    state: dict[str, Any] = field(default_factory=dict)
    persistent: bool = True
    qualname: str = ""

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return plain(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple[Any, ...]:
        return tuple(plain(list(self.state.get("_init_args") or ())))

    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})


def _persistent_object(meta: Any) -> Recorded:
    """Stand-in for the published `_reconstruct_persistent_obj(meta)`: keeps the class name and
    attribute dict, checks the record, and drops the module source without reading it."""
    if not isinstance(meta, dict):
        raise UnsafePickle(f"a persistent-object record is a {type(meta).__name__}, not a dict")
    if meta.get("type") != "class":
        raise UnsafePickle(f"persistent-object record of type {meta.get('type')!r} (only 'class' is known)")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise UnsafePickle(f"persistence format version {meta.get('version')!r} (only {PERSISTENCE_VERSION} is known)")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafePickle("a persistent-object record without a class name or attribute dict")
    return Recorded(class_name=class_name, state=state, persistent=True)


class _ByReference:
    """Base of the stand-ins for classes pickled by reference (NEWOBJ, then BUILD with the
    attribute dict, kept as a Recorded in `recorded`)."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickle(f"{self.qualname}: attribute state is a {type(state).__name__}, not a dict")
        self.recorded = Recorded(class_name=self.qualname.rsplit(".", 1)[-1], state=state, persistent=False,
                                 qualname=self.qualname)


def _by_reference(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (_ByReference,), {"qualname": qualname})


# Modules of the published networks that are pickled by reference, not with their source.
BY_REFERENCE = {
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.modules.container", "ModuleDict"),
    ("training.networks_creps", "SynthesisInput"),  # the published CREPS code does not decorate it
}


class RecordedEasyDict(dict):
    """`dnnlib.util.EasyDict` read as a plain dict."""


# ---------------------------------------------------------------------------------------
# Tensors: the legacy torch.save streams that `torch.storage._load_from_bytes` would read.


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.name]


class _LegacyHeaderUnpickler(pickle.Unpickler):
    """The small pickles of a legacy stream: plain values, storage class names, and the
    storage record as a persistent id."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.records: list[tuple[str, torch.dtype, int, Optional[tuple]]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickle(f"a tensor stream names the global {module}.{name}; only torch storage types are allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickle(f"unknown record {str(pid)[:60]!r} in a tensor stream")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise UnsafePickle("malformed storage record in a tensor stream")
        self.records.append((key, storage_type.dtype, numel, view))
        return len(self.records) - 1


def read_legacy_storage(data: bytes) -> torch.Tensor:
    """One storage from a legacy `torch.save` stream (magic, version, system info, the object,
    the storage keys, then per key an 8-byte little-endian count and the raw elements) as a
    1-D tensor. Parsed here, without torch.load."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickle(f"a tensor storage is a {type(data).__name__}, not bytes")
    f = io.BytesIO(data)
    header = _LegacyHeaderUnpickler(f)
    if header.load() != LEGACY_MAGIC:
        raise UnsafePickle("a tensor stream without the torch.save magic number")
    if header.load() != LEGACY_PROTOCOL:
        raise UnsafePickle("a tensor stream of an unknown torch.save version")
    info = header.load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise UnsafePickle("a tensor stream written on a big-endian machine (not supported)")
    root = header.load()
    keys = header.load()
    if not isinstance(root, int) or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UnsafePickle("a tensor stream that does not hold exactly one storage")
    storages: dict[str, torch.Tensor] = {}
    for key in keys:
        record = next((r for r in header.records if r[0] == key), None)
        if record is None:
            raise UnsafePickle(f"a tensor stream lists storage {key!r} it never described")
        _, dtype, numel, _view = record
        count = int.from_bytes(f.read(8), "little")
        raw = f.read(count * dtype.itemsize)
        if count != numel or len(raw) != count * dtype.itemsize:
            raise UnsafePickle("a tensor stream is shorter than its storage (truncated file?)")
        storages[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if count else torch.empty(0, dtype=dtype)
    key, _dtype, _numel, view = header.records[root]
    storage = storages[key]
    if view is not None:  # (view key, offset, size): a slice of the storage
        _view_key, offset, size = view[:3]
        storage = storage[int(offset): int(offset) + int(size)]
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    """Stand-in for `torch._utils._rebuild_tensor_v2`: a view of `storage` with the given
    offset, size and stride, refused when it would reach outside the storage."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise UnsafePickle("a tensor without a storage")
    if not (isinstance(storage_offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride))):
        raise UnsafePickle("a tensor with a malformed offset, size or stride")
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel():
            raise UnsafePickle("a tensor that reaches past the end of its storage")
        if math.prod(size) > storage.numel():  # network weights never repeat storage elements
            raise UnsafePickle("a tensor with more elements than its storage")
    return storage.as_strided(size, stride, storage_offset).clone()


def _rebuild_parameter(data: Any, *_rest: Any) -> torch.Tensor:
    """Stand-in for `torch._utils._rebuild_parameter[_with_state]`: the tensor itself."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickle("a parameter without tensor data")
    return data


# ---------------------------------------------------------------------------------------
# The unpickler.

ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    **DATA_GLOBALS,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): RecordedEasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): read_legacy_storage,
    **{key: _by_reference(".".join(key)) for key in BY_REFERENCE},
}


class _NetworkUnpickler(RestrictedUnpickler):
    allowed = ALLOWED
    what = "a published network pickle"


def _records(v: Any, walk: Callable[[Any], Any], memo: dict[int, Any]) -> Any:
    """finish() for the network stand-ins: by-reference modules and persistent objects
    become `Recorded` (their attribute state walked)."""
    if isinstance(v, _ByReference):
        out = getattr(v, "recorded", None)
        if out is None:
            raise UnsafePickle(f"{v.qualname} without an attribute state")
        memo[id(v)] = out
        out.state = walk(out.state)
        return out
    if isinstance(v, Recorded):
        memo[id(v)] = v
        v.state = walk(v.state)
        return v
    return NotImplemented


def read_published_pickle(file: BinaryIO) -> Any:
    """Read a published network pickle into plain data (see the module docstring). Raises
    UnsafePickle for anything such a file does not contain; runs nothing from the file."""
    head = file.read(2)
    file.seek(-len(head), io.SEEK_CUR)
    if len(head) < 2 or head[0] != pickle.PROTO[0] or not 2 <= head[1] <= 5:
        raise UnsafePickle("not a pickle of protocol 2 to 5 (a published network pickle starts with one)")
    return load_restricted(_NetworkUnpickler(file), _records)


def plain(value: Any, _active: frozenset = frozenset()) -> Any:
    """Constructor arguments as plain Python: EasyDict -> dict, NumPy scalars -> int/float/bool,
    NumPy arrays -> lists, tuples kept. A container that contains itself is a ValueError."""
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _active:
            raise ValueError("constructor arguments that contain themselves")
        inner = _active | {id(value)}
        if isinstance(value, dict):
            return {key: plain(item, inner) for key, item in value.items()}
        items = [plain(item, inner) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
