"""Published `training/networks_creps.py Generator` kwargs -> `creps.nets.creps.Generator`."""

from __future__ import annotations

from typing import Any

from creps.compat.kwargs import Section, translate
from creps.nets.creps import Generator

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_TOP = Section(
    names={name: name for name in (*_REQUIRED, "channel_base", "channel_max", "biline_channels", "fc_clamp")},
    ignored=frozenset({"num_fp16_res", "fp16_channels_last", "architecture"}),  # precision/layout only
)
_MAPPING = Section(
    names={"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"},
)


def creps_generator_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """Our CREPS Generator's keyword arguments for the published constructor kwargs `init`."""
    return translate("CREPS generator", init, _REQUIRED, _TOP, {"mapping_kwargs": _MAPPING})


def build_creps_generator(init: dict[str, Any]) -> Generator:
    """Our CREPS Generator for the published constructor kwargs `init`."""
    return Generator(**creps_generator_kwargs(init))
