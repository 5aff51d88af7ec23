"""Published `training/networks_stylegan2.py Discriminator` kwargs -> our `Discriminator`.

The published constructor takes top-level arguments plus three nested dicts
(`block_kwargs`, `mapping_kwargs`, `epilogue_kwargs`); ours takes them flat. Arguments that
only pick a memory layout are accepted and ignored; arguments we do not implement are
accepted only at their published default value; anything else is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any

from creps.nets.discriminator import DEFAULT_RESAMPLE_FILTER, Discriminator

# published top-level name -> our keyword
_TOP_LEVEL = {
    "c_dim": "c_dim",
    "img_resolution": "img_resolution",
    "img_channels": "img_channels",
    "architecture": "architecture",
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "num_fp16_res": "num_fp16_res",
    "conv_clamp": "conv_clamp",
    "cmap_dim": "cmap_dim",
}
_BLOCK = {"freeze_layers": "freeze_layers"}
_MAPPING = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"}
_EPILOGUE = {"mbstd_group_size": "mbstd_group_size", "mbstd_num_channels": "mbstd_num_channels"}

# accepted only with these (the published defaults) values
_FIXED = {
    "block_kwargs": {"activation": "lrelu", "resample_filter": list(DEFAULT_RESAMPLE_FILTER)},
    "mapping_kwargs": {"activation": "lrelu"},
    "epilogue_kwargs": {"activation": "lrelu"},
}
# layout-only options: no effect on what is computed
_IGNORED = {"block_kwargs": {"fp16_channels_last"}}

_REQUIRED = ("c_dim", "img_resolution", "img_channels")


def _take(section: str, given: dict[str, Any], names: dict[str, str], out: dict[str, Any]) -> None:
    unknown = []
    for key, value in given.items():
        if key in names:
            out[names[key]] = value
        elif key in _IGNORED.get(section, ()):
            continue
        elif key in _FIXED.get(section, {}):
            default = _FIXED[section][key]
            if (list(value) if isinstance(value, (list, tuple)) else value) != default:
                raise ValueError(f"StyleGAN2 discriminator: {section}.{key}={value!r} is not supported (only {default!r})")
        else:
            unknown.append(key)
    if unknown:
        where = "" if section == "top" else f" in {section}"
        raise ValueError(f"StyleGAN2 discriminator: unknown argument(s){where}: {', '.join(sorted(unknown))}")


def build_stylegan2_discriminator(init: dict[str, Any]) -> Discriminator:
    """Our Discriminator for the published constructor kwargs `init`."""
    missing = [k for k in _REQUIRED if k not in init]
    if missing:
        raise ValueError(f"StyleGAN2 discriminator: missing argument(s): {', '.join(missing)}")
    kwargs: dict[str, Any] = {}
    top = {k: v for k, v in init.items() if k not in _FIXED}
    _take("top", top, _TOP_LEVEL, kwargs)
    for section, names in (("block_kwargs", _BLOCK), ("mapping_kwargs", _MAPPING), ("epilogue_kwargs", _EPILOGUE)):
        nested = init.get(section) or {}
        if not isinstance(nested, dict):
            raise ValueError(f"StyleGAN2 discriminator: {section} must be a dict, got {type(nested).__name__}")
        _take(section, nested, names, kwargs)
    return Discriminator(**kwargs)
