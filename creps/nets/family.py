"""What a network family declares about itself, once, beside its network code.

A family (CREPS, StyleGAN2, StyleGAN3, the StyleGAN2 discriminator) is one module of
`creps.nets` that holds, next to the network:

- its config: a frozen dataclass that is exactly the input of the network's constructor
  (`Generator(config)`), stored as is in snapshots and training states;
- its `train.py` presets (one per `--cfg` that builds it), each turning the options train.py
  decides for every generator (`GeneratorOptions`) into the family's config;
- how the published code names it and how the published constructor's keyword arguments
  become its config (`from_published`), and the state-dict key that tells its generators apart
  in a published pickle;
- its capabilities (renders at any scale, takes a user transform, ...).

`creps.nets.registry` lists the families; everything that asks what a network can do asks it.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch


class Capability(enum.Enum):
    ANY_SCALE = "renders at any output size (scale=, size=)"
    USER_TRANSFORM = "takes a user transform (translate, rotate) of its input"
    NOISE_INPUTS = "has per-layer noise inputs"
    RECOMPUTE = "can recompute its per-pixel layers in backward (synthesis.recompute)"
    FUSED_LRELU = "has a compiled fused filtered leaky ReLU (synthesis.fused_lrelu)"


@dataclass(frozen=True)
class GeneratorConfig:
    """The fields every generator family's config starts with (each family adds its own)."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int = 32768  # feature maps at a resolution: channel_base / resolution ...
    channel_max: int = 512  # ... at most channel_max


@dataclass(frozen=True)
class GeneratorOptions:
    """What train.py decides for any generator; a preset turns it into its family's config."""

    z_dim: int
    w_dim: int
    c_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int  # after the preset's capacity factor
    channel_max: int
    mapping_layers: int
    clamp: Optional[float]  # activation clamp of low-precision layers; None with --fp32
    batch_size: int  # the total batch (StyleGAN3's magnitude EMA follows it)

    def sizes(self) -> dict[str, int]:
        """The fields every generator config has by these names."""
        names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
                 "mapping_layers")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class Preset:
    """The `train.py --cfg=<name>` defaults of one family (the published train.py's)."""

    name: str
    generator: Callable[[GeneratorOptions], Any]  # the family config train.py builds
    glr: float  # G learning rate
    mapping_layers: int
    capacity_factor: int = 1  # G's cbase and cmax are multiplied by this
    lazy_g_reg: bool = False  # path-length regularisation every 4 minibatches (Greg phase)
    pl_weight: float = 0.0
    style_mixing_prob: float = 0.0
    pl_no_weight_grad: bool = False
    blur_init_sigma: float = 0.0  # D input blur at the start of a run (faded out)
    matches: Callable[[Any], bool] = lambda config: True  # is a config one this preset builds?


@dataclass(frozen=True)
class Family:
    name: str  # as stored in snapshots: "creps", "stylegan2", "stylegan3", "stylegan2-discriminator"
    role: str  # "G" or "D"
    config: type  # the frozen dataclass the network's constructor takes
    network: Callable[[Any], torch.nn.Module]  # config -> module
    published_name: str  # the published class, as fixtures and pickles name it ("creps.Generator")
    from_published: Callable[[Mapping[str, Any]], Any]  # published constructor kwargs -> config
    marker: Optional[str] = None  # a state-dict key only this family's generators have
    capabilities: frozenset[Capability] = frozenset()
    presets: tuple[Preset, ...] = ()
    transform_buffer: Optional[Callable[[torch.nn.Module], torch.Tensor]] = None  # USER_TRANSFORM: its 3x3 buffer

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def preset_of(self, config: Any) -> Optional[Preset]:
        """The train.py preset that builds networks like `config` (None for a discriminator)."""
        return next((p for p in self.presets if p.matches(config)), None)


# ---------------------------------------------------------------------------------------
# Configs in files: JSON with the family's name, every field checked against its type.


def config_to_dict(family: Family, config: Any) -> dict[str, Any]:
    return {"family": family.name, **dataclasses.asdict(config)}


def _type_ok(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def config_from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """`cls(**data)` after checking that every key is a field and every value has the field's
    type; a ValueError (naming `where` and the field) otherwise. Missing fields take their
    defaults (a field without one is an error)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    values = {}
    for name, value in data.items():
        if not _type_ok(value, hints[name]):
            raise ValueError(f"{where}: {name}={value!r} is not a {typing.get_args(hints[name]) or hints[name]}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def implied_shapes(family: Family, config: Any) -> dict[str, tuple[int, ...]]:
    """The state dict (names and shapes) of the network `config` describes, built on the meta
    device: nothing is allocated, whatever the config asks for. A config no network can be
    built from (zero channels, a resolution that is no power of two, ...) is a ValueError."""
    try:
        with torch.device("meta"):
            net = family.network(config)
    except Exception as err:  # a config from a file can break a constructor in many ways
        raise ValueError(f"no {family.name} network can be built from it ({type(err).__name__}: {err})") from None
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


# ---------------------------------------------------------------------------------------
# Published constructor kwargs -> a config, the rule every family follows.
#
# The kwargs come as a top level plus nested dicts (`mapping_kwargs`, ...). Per group: names
# we implement are renamed to our fields; layout- or precision-only options are dropped;
# options we do not implement are accepted only at their published default; a missing required
# argument, a nested group that is not a dict and anything unknown is a ValueError naming it.


@dataclass(frozen=True)
class Section:
    """How one group of published kwargs maps to config fields."""

    names: Mapping[str, str]  # published name -> our field
    fixed: Mapping[str, Any] = field(default_factory=dict)  # accepted only at this published default
    ignored: frozenset[str] = frozenset()  # no effect on what is computed: dropped


REQUIRED_G = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def translate_published(network: str, init: Mapping[str, Any], required: Sequence[str], top: Section,
                        nested: Mapping[str, Section]) -> dict[str, Any]:
    """Config fields for the published kwargs `init` of `network` (named in errors): `top`
    describes the top level, `nested` each nested dict by its name."""
    missing = [key for key in required if key not in init]
    if missing:
        raise ValueError(f"{network}: missing argument(s): {', '.join(missing)}")
    groups = [("", top, {key: value for key, value in init.items() if key not in nested})]
    for name, section in nested.items():
        given = init.get(name) or {}
        if not isinstance(given, dict):
            raise ValueError(f"{network}: {name} must be a dict, got {type(given).__name__}")
        groups.append((f"{name}.", section, given))
    out: dict[str, Any] = {}
    unknown = []
    for prefix, section, given in groups:
        for key, value in given.items():
            if key in section.names:
                out[section.names[key]] = value
            elif key in section.fixed:
                default = section.fixed[key]
                if (list(value) if isinstance(value, (list, tuple)) else value) != default:
                    raise ValueError(f"{network}: {prefix}{key}={value!r} is not supported (only {default!r})")
            elif key not in section.ignored:
                unknown.append(prefix + key)
    if unknown:
        raise ValueError(f"{network}: unknown argument(s): {', '.join(sorted(unknown))}")
    return out
