"""Published `training/networks_stylegan3.py Generator` kwargs -> `creps.nets.stylegan3.Generator`.

The published constructor takes the synthesis and per-layer options flat at the top level
(they travel through `**synthesis_kwargs` / `**layer_kwargs`) and the mapping options in
`mapping_kwargs`. `num_fp16_res` is a precision hint (which layers may run in the autocast
dtype) and is passed on, as for the other networks. Options we do not implement are
accepted only at their published default; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.nets.stylegan3 import FILTER_SIZE, LRELU_UPSAMPLING, Generator

_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# published top-level name -> our keyword (the names happen to agree)
_TOP_LEVEL = {
    name: name
    for name in (
        "z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
        "num_layers", "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size",
        "output_scale", "num_fp16_res", "conv_kernel", "use_radial_filters", "conv_clamp", "magnitude_ema_beta",
    )
}
_MAPPING = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"}
# accepted only with these (the published defaults) values
_FIXED = {
    "top": {"filter_size": FILTER_SIZE, "lrelu_upsampling": LRELU_UPSAMPLING},
    "mapping_kwargs": {"freeze_layers": 0, "freeze_embed": False},
}


def _take(section: str, given: dict[str, Any], names: dict[str, str], out: dict[str, Any]) -> None:
    unknown = []
    for key, value in given.items():
        if key in names:
            out[names[key]] = value
        elif key in _FIXED[section]:
            if value != _FIXED[section][key]:
                raise ValueError(f"StyleGAN3 generator: {key}={value!r} is not supported "
                                 f"(only {_FIXED[section][key]!r})")
        else:
            unknown.append(key)
    if unknown:
        where = "" if section == "top" else f" in {section}"
        raise ValueError(f"StyleGAN3 generator: unknown argument(s){where}: {', '.join(sorted(unknown))}")


def build_stylegan3_generator(init: dict[str, Any]) -> Generator:
    """Our StyleGAN3 Generator (T or R) for the published constructor kwargs `init`."""
    missing = [k for k in _REQUIRED if k not in init]
    if missing:
        raise ValueError(f"StyleGAN3 generator: missing argument(s): {', '.join(missing)}")
    mapping = init.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise ValueError(f"StyleGAN3 generator: mapping_kwargs must be a dict, got {type(mapping).__name__}")
    kwargs: dict[str, Any] = {}
    _take("top", {k: v for k, v in init.items() if k != "mapping_kwargs"}, _TOP_LEVEL, kwargs)
    _take("mapping_kwargs", dict(mapping), _MAPPING, kwargs)
    return Generator(**kwargs)
