"""Published `training/networks_creps.py Generator` kwargs -> `creps.nets.creps.Generator`."""

from __future__ import annotations

from typing import Any

from creps.nets.creps import Generator

_SYNTHESIS_KEYS = {"channel_base", "channel_max", "biline_channels"}
_IGNORED = {"num_fp16_res", "fp16_channels_last", "architecture"}  # precision/layout only


def build_creps_generator(init: dict[str, Any]) -> Generator:
    kw = dict(init)
    mapping = dict(kw.pop("mapping_kwargs", {}) or {})
    args: dict[str, Any] = {k: kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    for key in _SYNTHESIS_KEYS & kw.keys():
        args[key] = kw.pop(key)
    if "fc_clamp" in kw:
        args["fc_clamp"] = kw.pop("fc_clamp")
    for key in _IGNORED & kw.keys():
        kw.pop(key)
    if kw:
        raise ValueError(f"unsupported CREPS generator arguments: {sorted(kw)}")
    args["mapping_layers"] = mapping.pop("num_layers", 8)
    if "lr_multiplier" in mapping:
        args["mapping_lr_multiplier"] = mapping.pop("lr_multiplier")
    if "w_avg_beta" in mapping:
        args["w_avg_beta"] = mapping.pop("w_avg_beta")
    if mapping:
        raise ValueError(f"unsupported CREPS mapping arguments: {sorted(mapping)}")
    return Generator(**args)
