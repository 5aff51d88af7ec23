"""Published `training/networks_stylegan2.py Generator` kwargs -> `creps.nets.stylegan2.Generator`.

The published constructor takes the five sizes, a nested `mapping_kwargs` dict and every
other argument as a synthesis keyword (passed on to the blocks and layers). Ours takes them
flat. Layout-only options are accepted and ignored; options we do not implement are accepted
only at their published default; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.nets.stylegan2 import DEFAULT_RESAMPLE_FILTER, Generator

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")

# published synthesis keyword -> ours
_SYNTHESIS = {
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "num_fp16_res": "num_fp16_res",  # which blocks follow autocast (see creps.nets.stylegan2)
    "conv_clamp": "conv_clamp",
    "use_noise": "use_noise",
    "resample_filter": "resample_filter",
}
# published mapping keyword -> ours
_MAPPING = {
    "num_layers": "mapping_layers",
    "lr_multiplier": "mapping_lr_multiplier",
    "w_avg_beta": "w_avg_beta",
    "embed_features": "mapping_embed_features",
    "layer_features": "mapping_layer_features",
}
# accepted only with these (published default) values
_FIXED_SYNTHESIS = {"architecture": "skip", "activation": "lrelu", "kernel_size": 3}
_FIXED_MAPPING = {"activation": "lrelu", "freeze_layers": 0, "freeze_embed": False}
# memory layout only
_IGNORED_SYNTHESIS = {"fp16_channels_last"}

# published fused_modconv_default -> our fused_modconv (None: fused in eval, not in training)
_FUSED = {True: True, False: False, "inference_only": None}


def _check_fixed(where: str, key: str, value: Any, default: Any) -> None:
    if value != default:
        raise ValueError(f"StyleGAN2 generator: {where}{key}={value!r} is not supported (only {default!r})")


def build_stylegan2_generator(init: dict[str, Any]) -> Generator:
    """Our Generator for the published constructor kwargs `init`."""
    missing = [k for k in _REQUIRED if k not in init]
    if missing:
        raise ValueError(f"StyleGAN2 generator: missing argument(s): {', '.join(missing)}")
    kwargs: dict[str, Any] = {k: init[k] for k in _REQUIRED}
    unknown = []
    for key, value in init.items():
        if key in _REQUIRED or key == "mapping_kwargs":
            continue
        if key in _SYNTHESIS:
            kwargs[_SYNTHESIS[key]] = list(value) if key == "resample_filter" else value
        elif key == "fused_modconv_default":
            if value not in _FUSED:
                raise ValueError(f"StyleGAN2 generator: fused_modconv_default={value!r} is not supported")
            kwargs["fused_modconv"] = _FUSED[value]
        elif key in _FIXED_SYNTHESIS:
            _check_fixed("", key, value, _FIXED_SYNTHESIS[key])
        elif key not in _IGNORED_SYNTHESIS:
            unknown.append(key)

    mapping = init.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise ValueError(f"StyleGAN2 generator: mapping_kwargs must be a dict, got {type(mapping).__name__}")
    for key, value in mapping.items():
        if key in _MAPPING:
            kwargs[_MAPPING[key]] = value
        elif key in _FIXED_MAPPING:
            _check_fixed("mapping_kwargs.", key, value, _FIXED_MAPPING[key])
        else:
            unknown.append(f"mapping_kwargs.{key}")
    if unknown:
        raise ValueError(f"StyleGAN2 generator: unknown argument(s): {', '.join(sorted(unknown))}")
    kwargs.setdefault("resample_filter", list(DEFAULT_RESAMPLE_FILTER))
    return Generator(**kwargs)
