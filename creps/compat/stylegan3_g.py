"""Published `training/networks_stylegan3.py Generator` kwargs -> `creps.nets.stylegan3.Generator`.

The published constructor takes the synthesis and per-layer options flat at the top level
(they travel through `**synthesis_kwargs` / `**layer_kwargs`) and the mapping options in
`mapping_kwargs`. `num_fp16_res` is a precision hint (which layers may run in the autocast
dtype) and is passed on, as for the other networks. Options we do not implement are
accepted only at their published default; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.compat.kwargs import Section, translate
from creps.nets.stylegan3 import FILTER_SIZE, LRELU_UPSAMPLING, Generator

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# published top-level names (ours agree)
_TOP = Section(
    names={name: name for name in (
        "z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
        "num_layers", "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size",
        "output_scale", "num_fp16_res", "conv_kernel", "use_radial_filters", "conv_clamp", "magnitude_ema_beta",
    )},
    fixed={"filter_size": FILTER_SIZE, "lrelu_upsampling": LRELU_UPSAMPLING},
)
_MAPPING = Section(
    names={"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"},
    fixed={"freeze_layers": 0, "freeze_embed": False},
)


def stylegan3_generator_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """Our StyleGAN3 Generator's keyword arguments for the published constructor kwargs `init`."""
    return translate("StyleGAN3 generator", init, _REQUIRED, _TOP, {"mapping_kwargs": _MAPPING})


def build_stylegan3_generator(init: dict[str, Any]) -> Generator:
    """Our StyleGAN3 Generator (T or R) for the published constructor kwargs `init`."""
    return Generator(**stylegan3_generator_kwargs(init))
