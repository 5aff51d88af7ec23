"""Published `training/networks_stylegan2.py Generator` kwargs -> `creps.nets.stylegan2.Generator`.

The published constructor takes the five sizes, a nested `mapping_kwargs` dict and every
other argument as a synthesis keyword (passed on to the blocks and layers). Ours takes them
flat. Layout-only options are accepted and ignored; options we do not implement are accepted
only at their published default; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.compat.kwargs import Section, translate
from creps.nets.stylegan2 import DEFAULT_RESAMPLE_FILTER, Generator

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_TOP = Section(
    # published name -> ours
    names={
        **{name: name for name in _REQUIRED},
        "channel_base": "channel_base",
        "channel_max": "channel_max",
        "num_fp16_res": "num_fp16_res",  # which blocks follow autocast (see creps.nets.stylegan2)
        "conv_clamp": "conv_clamp",
        "use_noise": "use_noise",
        "resample_filter": "resample_filter",
        "fused_modconv_default": "fused_modconv",  # value translated through _FUSED
    },
    fixed={"architecture": "skip", "activation": "lrelu", "kernel_size": 3},
    ignored=frozenset({"fp16_channels_last"}),  # memory layout only
)
_MAPPING = Section(
    names={
        "num_layers": "mapping_layers",
        "lr_multiplier": "mapping_lr_multiplier",
        "w_avg_beta": "w_avg_beta",
        "embed_features": "mapping_embed_features",
        "layer_features": "mapping_layer_features",
    },
    fixed={"activation": "lrelu", "freeze_layers": 0, "freeze_embed": False},
)

# published fused_modconv_default -> our fused_modconv (None: fused in eval, not in training)
_FUSED = {True: True, False: False, "inference_only": None}


def build_stylegan2_generator(init: dict[str, Any]) -> Generator:
    """Our Generator for the published constructor kwargs `init`."""
    return Generator(**stylegan2_generator_kwargs(init))


def stylegan2_generator_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """Our Generator's keyword arguments for the published constructor kwargs `init`. Files of
    the StyleGAN2-ADA code nest the synthesis options in `synthesis_kwargs`; they count as top
    level, as in the later code."""
    if isinstance(init.get("synthesis_kwargs"), dict):
        init = {**{k: v for k, v in init.items() if k != "synthesis_kwargs"}, **init["synthesis_kwargs"]}
    kwargs = translate("StyleGAN2 generator", init, _REQUIRED, _TOP, {"mapping_kwargs": _MAPPING})
    if "fused_modconv" in kwargs:
        if kwargs["fused_modconv"] not in _FUSED:
            raise ValueError(f"StyleGAN2 generator: fused_modconv_default={kwargs['fused_modconv']!r} is not supported")
        kwargs["fused_modconv"] = _FUSED[kwargs["fused_modconv"]]
    kwargs["resample_filter"] = list(kwargs.get("resample_filter", DEFAULT_RESAMPLE_FILTER))
    return kwargs
