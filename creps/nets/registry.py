"""The network families, listed once, and every question about them.

    family = family_named("creps")            # as snapshots record it
    preset = preset_named("stylegan3-r")       # a train.py --cfg
    G = build(preset.generator(options))       # a config -> its module
    family_of(G).can(Capability.ANY_SCALE)     # what a module (or config) can do
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch

from creps.nets import creps, discriminator, stylegan2, stylegan3
from creps.nets.family import Capability, Family, Preset, config_from_dict, config_to_dict, implied_shapes

FAMILIES: tuple[Family, ...] = (creps.FAMILY, stylegan2.FAMILY, stylegan3.FAMILY, discriminator.FAMILY)
PRESETS: dict[str, Preset] = {p.name: p for family in FAMILIES for p in family.presets}
PRESET_FAMILY: dict[str, Family] = {p.name: family for family in FAMILIES for p in family.presets}
CONFIG_NAMES = tuple(PRESETS)  # the train.py --cfg choices

class UnknownFamily(ValueError):
    """A name (recorded in a file, or a published class) that is no family of ours."""


__all__ = ["UnknownFamily", "CONFIG_NAMES", "FAMILIES", "PRESETS", "Capability", "Family", "Preset", "build",
           "build_published", "config_from_record", "config_record", "family_named", "family_of", "preset_named",
           "published_family", "check_tensors", "set_training_switches"]


def family_named(name: str) -> Family:
    """A family by the name snapshots record; ValueError for any other name."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UnknownFamily(f"unknown network family {name!r} (known: {', '.join(f.name for f in FAMILIES)})")


def preset_named(name: str) -> Preset:
    return PRESETS[name]


def family_of(item: Union[torch.nn.Module, Any]) -> Family:
    """The family of a network module, or of a family config."""
    for family in FAMILIES:
        if type(item) is family.network or type(item) is family.config:
            return family
    raise TypeError(f"{type(item).__name__} is not a network (or config) of any family")


def published_family(published_name: str) -> Family:
    """A family by its published class name ("creps.Generator", ...); ValueError otherwise."""
    for family in FAMILIES:
        if family.published_name == published_name:
            return family
    raise UnknownFamily(f"{published_name} is not a network creps builds")


def build(config: Any) -> torch.nn.Module:
    """The module a family config describes."""
    return family_of(config).network(config)


def build_published(published_name: str, init: Mapping[str, Any]) -> torch.nn.Module:
    """Our module for a published class name ("creps.Generator", ...) and the keyword arguments
    its constructor received (as fixtures and pickles record them)."""
    return build(published_family(published_name).from_published(init))


def config_record(config: Any) -> dict[str, Any]:
    """A config as stored in files: its family's name and every field."""
    return config_to_dict(family_of(config), config)


def config_from_record(record: Mapping[str, Any], where: str) -> Any:
    """The config of a stored record; ValueError (naming `where`) for an unknown family or a
    field that is unknown, missing or of the wrong type."""
    if not isinstance(record, Mapping) or not isinstance(record.get("family"), str):
        raise ValueError(f"{where}: no network family recorded")
    family = family_named(record["family"])
    return config_from_dict(family.config, {k: v for k, v in record.items() if k != "family"}, where)


def set_training_switches(G: torch.nn.Module, recompute: bool, fused_ops: bool = False) -> None:
    """Speed switches of a generator, where its family has them (they change results no more
    than float rounding does): recompute per-pixel layers in backward (CREPS), the compiled
    fused filtered leaky ReLU (StyleGAN3)."""
    family = family_of(G)
    if family.can(Capability.RECOMPUTE):
        G.synthesis.recompute = recompute
    if family.can(Capability.FUSED_LRELU):
        G.synthesis.fused_lrelu = fused_ops


def check_tensors(config: Any, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """ValueError unless `shapes` (tensor name -> shape, e.g. from a file's header) are exactly
    the state dict `config` implies: same names, same shapes. Checked on the meta device, so a
    file cannot make us allocate more than its own tensors hold."""
    try:
        wanted = implied_shapes(family_of(config), config)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    problems = [f"{k} missing" for k in wanted if k not in shapes]
    problems += [f"{k} unexpected" for k in shapes if k not in wanted]
    problems += [f"{k} {tuple(shapes[k])} vs {v}" for k, v in wanted.items() if k in shapes and tuple(shapes[k]) != v]
    if problems:
        more = f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ValueError(f"{where}: the tensors do not fit the recorded config: " + "; ".join(problems[:4]) + more)
