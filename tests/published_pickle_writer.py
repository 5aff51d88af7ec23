"""Network pickles in the published StyleGAN2-ADA / StyleGAN3 / CREPS format, written by the tests.

Written from what the format is (see the README of the `published-pkl` parity fixtures), not from the
published code: a pickle of a dict `G`, `D`, `G_ema`, `augment_pipe`, `training_set_kwargs`;
each network module a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta` = type / version / module_src / class_name / state; a few modules pickled by reference
(`torch.nn.Sequential`, CREPS's `training.networks_creps.SynthesisInput`); tensors pickled by
torch's own pickling. The pickler writes those global names because, while `published_names()`
is active, stand-in modules answer them in `sys.modules`; they are removed afterwards.

The module tree comes from the state-dict names alone (`a.b.weight` is tensor `weight` of
module `a.b`); tensors named like the published buffers are written as buffers, the rest as
parameters. Inner class names are close to the published ones but carry no meaning.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

PLACEHOLDER_SOURCE = "# source of the published module omitted (written by the creps tests)"
# Tensors the published modules register as buffers (the rest are parameters).
BUFFER_NAMES = {"w_avg", "resample_filter", "noise_const", "coords", "freqs", "phases", "transform",
                "magnitude_ema", "up_filter", "down_filter", "p"}
MODULE_HOOKS = ("_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
                "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
OLD_MODULE_HOOKS = ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                    "_load_state_dict_pre_hooks")  # what files of older PyTorch versions carry


# ---------------------------------------------------------------------------------------
# Stand-ins that the pickler names by the published globals.


def _reconstruct_persistent_obj(meta):  # never called: only its name is written
    raise AssertionError("the stand-in reconstructor must not run")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Pickles as `dnnlib.util.EasyDict` (a dict subclass: NEWOBJ, then SETITEMS)."""


EasyDict.__module__ = "dnnlib.util"


class SynthesisInput:
    """Pickles as `training.networks_creps.SynthesisInput` (NEWOBJ, then BUILD with the state)."""


SynthesisInput.__module__ = "training.networks_creps"

STAND_INS = {
    "torch_utils": {},
    "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
    "dnnlib": {},
    "dnnlib.util": {"EasyDict": EasyDict},
    "training": {},
    "training.networks_creps": {"SynthesisInput": SynthesisInput},
}


@contextlib.contextmanager
def published_names() -> Iterator[None]:
    """Install the stand-in modules in sys.modules for the pickler; restore sys.modules after."""
    saved = {name: sys.modules.get(name) for name in STAND_INS}
    try:
        for name, attrs in STAND_INS.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            if "." not in name:
                module.__path__ = []
            sys.modules[name] = module
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Persistent:
    """A persistent object of the published code: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, class_name: str, state: dict[str, Any], version: int = 6,
                 module_src: str = PLACEHOLDER_SOURCE):
        self.meta = {"type": "class", "version": version, "module_src": module_src, "class_name": class_name,
                     "state": state}

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


class Payload:
    """An object whose unpickling calls `func(*args)` (to test that a reader refuses it)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def by_reference(cls: type, state: dict[str, Any]) -> Any:
    """An instance of `cls` with attribute dict `state`, pickled the ordinary way."""
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def easydicts(value: Any) -> Any:
    """Nested dicts -> EasyDict, as the published train.py builds its option dicts."""
    if isinstance(value, dict):
        return EasyDict({k: easydicts(v) for k, v in value.items()})
    return value


# ---------------------------------------------------------------------------------------
# Network trees.


@dataclass
class PublishedNetwork:
    """What a published network pickle records of one network."""

    name: str  # published network name: creps.Generator, stylegan2.Generator, ...
    init: dict[str, Any]  # published constructor kwargs (nested dicts are written as EasyDict)
    state: dict[str, torch.Tensor]  # published state dict
    init_args: tuple = ()
    none_buffers: tuple[str, ...] = ()  # buffers stored as None ("synthesis.L14_32_3.up_filter")
    extra_init_kwargs: dict[str, Any] = field(default_factory=dict)  # added to the top's _init_kwargs as is


def _class_name(network: str, path: str) -> str:
    """A class name close to the published one for the module at `path` (no meaning to a reader)."""
    if path == "":
        return network.split(".")[1]
    if network == "stylegan2.Discriminator":
        table = [(r"b4$", "DiscriminatorEpilogue"), (r"b\d+$", "DiscriminatorBlock"), (r"mapping$", "MappingNetwork"),
                 (r"b4\.(fc|out)$|mapping\.", "FullyConnectedLayer")]
        return next((name for pattern, name in table if re.search(pattern, path)), "Conv2dLayer")
    table = [(r"^mapping$", "MappingNetwork"), (r"^synthesis$", "SynthesisNetwork"), (r"input$", "SynthesisInput"),
             (r"affine$|^mapping\.|decoder|\.\d+$", "FullyConnectedLayer"), (r"torgb$", "ToRGBLayer"),
             (r"tores$", "ToResLayer"), (r"^synthesis\.(b\d+|block\d+)$", "SynthesisBlock")]
    return next((name for pattern, name in table if re.search(pattern, path)), "SynthesisLayer")


def _module_state(tensors: dict[str, Any], children: dict[str, Any], attrs: dict[str, Any],
                  old_torch: bool) -> dict[str, Any]:
    """A module's __dict__: the torch.nn.Module internals, then its own attributes."""
    mapping = collections.OrderedDict if old_torch else dict
    params = mapping((k, v) for k, v in tensors.items() if k not in BUFFER_NAMES)
    buffers = mapping((k, v) for k, v in tensors.items() if k in BUFFER_NAMES)
    state: dict[str, Any] = {"training": False, "_parameters": params, "_buffers": buffers,
                             "_non_persistent_buffers_set": set()}
    for hook in OLD_MODULE_HOOKS if old_torch else MODULE_HOOKS:
        state[hook] = None if hook == "_is_full_backward_hook" else collections.OrderedDict()
    state["_modules"] = mapping(children)
    state.update(attrs)
    return state


def network_record(net: PublishedNetwork, old_torch: bool = False) -> Persistent:
    """The persistent-object tree of a network (see the module docstring)."""
    modules: dict[str, dict[str, Any]] = {"": {}}
    for key, value in net.state.items():
        path, _, name = key.rpartition(".")
        parts = path.split(".") if path else []
        for i in range(len(parts) + 1):
            modules.setdefault(".".join(parts[:i]), {})
        tensor = value.detach().clone().contiguous()
        modules[path][name] = tensor if name in BUFFER_NAMES else torch.nn.Parameter(tensor, requires_grad=False)
    for key in net.none_buffers:
        path, _, name = key.rpartition(".")
        modules[path][name] = None
    sources: dict[str, str] = {}  # one source string per class name, shared as in real files

    def build(path: str) -> Any:
        prefix = f"{path}." if path else ""
        names = {p[len(prefix):].split(".")[0] for p in modules if p.startswith(prefix) and p != path}
        children = {name: build(prefix + name) for name in sorted(names, key=_natural)}
        class_name = _class_name(net.name, path)
        attrs: dict[str, Any] = {}
        if "weight" in modules[path]:
            fan_in = int(np.prod(modules[path]["weight"].shape[1:])) or 1
            attrs["weight_gain"] = np.float64(1 / np.sqrt(fan_in))
        if class_name == "SynthesisLayer":
            attrs["use_fp16"] = np.bool_(False)
            if net.name == "stylegan3.Generator":  # StyleGAN3 layers keep their sizes as int64 arrays
                attrs["in_size"] = np.array([36, 36], dtype=np.int64)
        if path == "":
            attrs.update({k: v for k, v in net.init.items() if isinstance(v, int)})
        if re.search(r"decoder_\w+$", path) and net.name == "creps.Generator":
            return by_reference(torch.nn.Sequential, _module_state(modules[path], children, {}, old_torch))
        if path.endswith("b4.input") and net.name == "creps.Generator":
            return by_reference(SynthesisInput, _module_state(modules[path], children, {}, old_torch))
        attrs["_init_args"] = net.init_args if path == "" else ()
        top_kwargs = {**{k: easydicts(v) for k, v in net.init.items()}, **net.extra_init_kwargs}
        attrs["_init_kwargs"] = top_kwargs if path == "" else {}  # a plain dict holding EasyDicts
        src = sources.setdefault(class_name, PLACEHOLDER_SOURCE + " ")  # a distinct str object per class
        return Persistent(class_name, _module_state(modules[path], children, attrs, old_torch), module_src=src)

    return build("")


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def augment_pipe(p: float) -> Persistent:
    """An AugmentPipe with the 'bgc' options and probability buffer `p`."""
    options = {k: 1 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                              "contrast", "lumaflip", "hue", "saturation")}
    state = _module_state({"p": torch.tensor(p)}, {}, {k: float(v) for k, v in options.items()}, old_torch=False)
    state.update(_init_args=(), _init_kwargs=options)
    return Persistent("AugmentPipe", state)


def snapshot_dict(G: Optional[PublishedNetwork], D: Optional[PublishedNetwork], G_ema: Optional[PublishedNetwork],
                  augment_p: Optional[float] = None, training_set_kwargs: Optional[dict] = None,
                  old_torch: bool = False) -> dict[str, Any]:
    """The top-level dict of a published network pickle."""
    return {
        "G": None if G is None else network_record(G, old_torch),
        "D": None if D is None else network_record(D, old_torch),
        "G_ema": None if G_ema is None else network_record(G_ema, old_torch),
        "augment_pipe": None if augment_p is None else augment_pipe(augment_p),
        "training_set_kwargs": training_set_kwargs,
    }


def dumps(obj: Any, protocol: int = 4) -> bytes:
    """Pickle `obj` with the published global names (stand-ins installed for the call only)."""
    with published_names():
        f = io.BytesIO()
        pickle.Pickler(f, protocol=protocol).dump(obj)
        return f.getvalue()


def write_network_pickle(path, G=None, D=None, G_ema=None, augment_p=None, training_set_kwargs=None,
                         protocol: int = 4) -> None:
    """Write a published-format network pickle at `path` (files of protocol <= 3 get the module
    dicts of an older PyTorch: OrderedDicts, fewer hook fields)."""
    tree = snapshot_dict(G, D, G_ema, augment_p, training_set_kwargs, old_torch=protocol <= 3)
    with open(path, "wb") as f:
        f.write(dumps(tree, protocol))


def storage_bytes(values: torch.Tensor) -> bytes:
    """The bytes torch's pickling embeds for the storage of `values` (a legacy torch.save stream)."""
    func, (data,) = values.contiguous()._typed_storage().__reduce__()
    assert func.__module__ == "torch.storage" and func.__name__ == "_load_from_bytes"
    return data


__all__ = ["PublishedNetwork", "Persistent", "Payload", "EasyDict", "SynthesisInput", "published_names",
           "network_record", "snapshot_dict", "dumps", "write_network_pickle", "storage_bytes", "by_reference",
           "augment_pipe"]
