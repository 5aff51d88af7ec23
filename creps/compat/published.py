"""Published network pickles -> our networks.

    pub = read_published("stylegan3-t-ffhq-1024x1024.pkl")   # path, ~/path, file:// or https:// URL
    pub.G_ema(z, c)                                          # our module, the published weights

The file is read by `pickle_reader` (nothing in it runs). Each top-level network is then
identified from what the file records, not from its embedded source: the class name
(`Generator` / `Discriminator`), the constructor kwargs and the module structure, i.e. the
state-dict keys (each generator family declares a key only its networks have). The recorded
constructor kwargs become the family's config, the recorded tensors must fill the state dict
that config implies exactly (same names and shapes, nothing missing, nothing extra; checked
before anything is built), and then our module is built and loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from creps.compat.pickle_reader import Recorded, UnsafePickle, plain, read_published_pickle
from creps.download import fetch_cached, is_remote, local_path, sha256_of
from creps.errors import UserError
from creps.nets.registry import FAMILIES, build, check_tensors, published_family

NETWORK_KEYS = ("G", "D", "G_ema")
KNOWN_KEYS = (*NETWORK_KEYS, "augment_pipe", "training_set_kwargs")

# Positional constructor arguments of the published top-level classes, in order.
POSITIONAL = {
    "Generator": ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"),
    "Discriminator": ("c_dim", "img_resolution", "img_channels"),
}


@dataclass
class PublishedNetworks:
    """What a published pickle holds, as our modules (eval mode, no gradients, on the CPU)."""

    G: Optional[torch.nn.Module]
    D: Optional[torch.nn.Module]
    G_ema: Optional[torch.nn.Module]
    kinds: dict[str, str]  # network key -> published network name ("stylegan3.Generator", ...)
    init_kwargs: dict[str, dict[str, Any]]  # network key -> the recorded constructor kwargs
    augment_p: Optional[float] = None  # the AugmentPipe's probability when the file has one
    training_set_kwargs: Optional[dict[str, Any]] = None
    sha256: str = ""
    notes: list[str] = field(default_factory=list)  # what was read but not used


def flat_state(record: Recorded, prefix: str = "", _active: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """The state dict of a recorded module tree: parameters and persistent buffers by dotted
    name (None buffers and non-persistent ones are not part of a state dict). A module that
    contains itself is a ValueError."""
    if id(record) in _active:
        raise ValueError(f"the module {prefix.rstrip('.') or 'at the top'} contains itself")
    _active = _active | {id(record)}
    state = record.state
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value
    for name, child in record.children().items():
        if child is None:
            continue
        if not isinstance(child, Recorded):
            raise ValueError(f"{prefix}{name} is a {type(child).__name__}, not a module")
        out.update(flat_state(child, f"{prefix}{name}.", _active))
    return out


def constructor_kwargs(record: Recorded) -> dict[str, Any]:
    """The recorded constructor arguments as keywords (positional ones named)."""
    kwargs = record.init_kwargs
    names = POSITIONAL.get(record.class_name, ())
    args = record.init_args
    if len(args) > len(names):
        raise ValueError(f"{record.class_name} was built with {len(args)} positional arguments (at most "
                         f"{len(names)} known)")
    kwargs.update(zip(names, args))
    return kwargs


def identify(role: str, record: Recorded, state: dict[str, torch.Tensor]) -> str:
    """The published network name of a top-level record (by the families' marker keys)."""
    want = "Discriminator" if role == "D" else "Generator"
    if record.class_name != want:
        raise ValueError(f"{role} is a {record.class_name}, not a {want}")
    candidates = [f for f in FAMILIES if f.role == ("D" if role == "D" else "G")]
    if role == "D":
        return candidates[0].published_name
    found = [f.published_name for f in candidates if f.marker in state]
    if len(found) != 1:
        raise ValueError(f"{role} is a Generator of no known family (CREPS, StyleGAN2, StyleGAN3)")
    return found[0]


def network_from_record(role: str, record: Any) -> tuple[str, dict[str, Any], torch.nn.Module]:
    """(published name, constructor kwargs, our module with the recorded weights)."""
    if not isinstance(record, Recorded) or not record.persistent:
        raise ValueError(f"{role} is a {type(record).__name__}, not a published network")
    state = flat_state(record)
    kind = identify(role, record, state)
    init = constructor_kwargs(record)
    try:
        config = published_family(kind).from_published(init)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{role} ({kind}): {err}") from None
    check_tensors(config, {k: tuple(v.shape) for k, v in state.items()}, f"{role} ({kind})")
    net = build(config)
    net.load_state_dict({k: state[k].to(v.dtype) for k, v in net.state_dict().items()}, strict=True)
    return kind, init, net.eval().requires_grad_(False)


def networks_from_tree(tree: Any) -> PublishedNetworks:
    """The networks of a loaded pickle tree (a dict with G, D, G_ema, ...)."""
    if not isinstance(tree, dict):
        raise ValueError(f"the pickle holds a {type(tree).__name__}, not a dict of networks")
    if not any(key in tree for key in NETWORK_KEYS):
        raise ValueError("the pickle holds none of G, D, G_ema")
    nets: dict[str, Optional[torch.nn.Module]] = dict.fromkeys(NETWORK_KEYS)
    kinds: dict[str, str] = {}
    inits: dict[str, dict[str, Any]] = {}
    for role in NETWORK_KEYS:
        if tree.get(role) is not None:
            kinds[role], inits[role], nets[role] = network_from_record(role, tree[role])
    notes = [f"ignored the entry {key!r}" for key in tree if key not in KNOWN_KEYS]
    augment_p = None
    pipe = tree.get("augment_pipe")
    if isinstance(pipe, Recorded):
        p = flat_state(pipe).get("p")
        augment_p = float(p) if p is not None and p.numel() == 1 else None
        notes.append(f"augment_pipe (p={augment_p}) is not used: a run sets its own augmentation")
    dataset = tree.get("training_set_kwargs")
    return PublishedNetworks(
        G=nets["G"], D=nets["D"], G_ema=nets["G_ema"], kinds=kinds, init_kwargs=inits, augment_p=augment_p,
        training_set_kwargs=plain(dict(dataset)) if isinstance(dataset, dict) else None, notes=notes,
    )


def published_file(source: Union[str, Path]) -> Path:
    """A local path for `source` (path, ~/path, file:// URL, or http(s) URL fetched into the
    cache folder $CREPS_CACHE_DIR/networks)."""
    text = str(source)
    if is_remote(text):
        return fetch_cached(text, "networks", "the network pickle")
    path = local_path(text)
    if not path.is_file():
        raise UserError(f"{text}: no such network file; give the path or URL of a network pickle (.pkl) "
                        "or a creps network-snapshot-*.safetensors")
    return path


def read_published(source: Union[str, Path]) -> PublishedNetworks:
    """Our networks from a published network pickle (path or URL). Anything that is not such a
    file, or holds more than it should, is a UserError naming the problem; nothing in the file
    runs."""
    path = published_file(source)
    try:
        with open(path, "rb") as f:
            tree = read_published_pickle(f)
    except UnsafePickle as err:
        raise UserError(f"{source}: not loaded: {err}") from None
    try:
        pub = networks_from_tree(tree)
    except ValueError as err:
        raise UserError(f"{source}: not a network pickle creps can load: {err}") from None
    pub.sha256 = sha256_of(path)
    return pub
