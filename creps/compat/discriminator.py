"""Published `training/networks_stylegan2.py Discriminator` kwargs -> our `Discriminator`.

The published constructor takes top-level arguments plus three nested dicts
(`block_kwargs`, `mapping_kwargs`, `epilogue_kwargs`); ours takes them flat. Arguments that
only pick a memory layout are accepted and ignored; arguments we do not implement are
accepted only at their published default value; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.compat.kwargs import Section, translate
from creps.nets.discriminator import DEFAULT_RESAMPLE_FILTER, Discriminator

_REQUIRED = ("c_dim", "img_resolution", "img_channels")
# published top-level names (ours agree)
_TOP = Section(names={name: name for name in (
    "c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
    "conv_clamp", "cmap_dim",
)})
_NESTED = {
    "block_kwargs": Section(
        names={"freeze_layers": "freeze_layers"},
        fixed={"activation": "lrelu", "resample_filter": list(DEFAULT_RESAMPLE_FILTER)},
        ignored=frozenset({"fp16_channels_last"}),
    ),
    "mapping_kwargs": Section(
        names={"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"},
        fixed={"activation": "lrelu"},
    ),
    "epilogue_kwargs": Section(
        names={"mbstd_group_size": "mbstd_group_size", "mbstd_num_channels": "mbstd_num_channels"},
        fixed={"activation": "lrelu"},
    ),
}


def stylegan2_discriminator_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """Our Discriminator's keyword arguments for the published constructor kwargs `init`."""
    return translate("StyleGAN2 discriminator", init, _REQUIRED, _TOP, _NESTED)


def build_stylegan2_discriminator(init: dict[str, Any]) -> Discriminator:
    """Our Discriminator for the published constructor kwargs `init`."""
    return Discriminator(**stylegan2_discriminator_kwargs(init))
