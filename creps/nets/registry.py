"""Explicit registry: config -> network modules. No class names in strings."""

from __future__ import annotations

from typing import Callable

import torch

from creps.config import DiscriminatorConfig, GeneratorConfig


def _creps(g: GeneratorConfig) -> torch.nn.Module:
    from creps.nets.creps import Generator

    return Generator(
        z_dim=g.z_dim, c_dim=g.c_dim, w_dim=g.w_dim, img_resolution=g.img_resolution,
        img_channels=g.img_channels, channel_base=g.channel_base, channel_max=g.channel_max,
        mapping_layers=g.mapping_layers, fc_clamp=g.clamp, head_clamp=g.clamp,
    )


GENERATORS: dict[str, Callable[[GeneratorConfig], torch.nn.Module]] = {
    "creps": _creps,
}


def build_generator(g: GeneratorConfig) -> torch.nn.Module:
    try:
        builder = GENERATORS[g.arch]
    except KeyError:
        raise NotImplementedError(f"the {g.arch} generator is not implemented yet") from None
    return builder(g)


def build_discriminator(d: DiscriminatorConfig) -> torch.nn.Module:
    from creps.nets.discriminator import Discriminator

    return Discriminator(
        c_dim=d.c_dim, img_resolution=d.img_resolution, img_channels=d.img_channels,
        channel_base=d.channel_base, channel_max=d.channel_max, conv_clamp=d.conv_clamp,
        mbstd_group_size=d.mbstd_group_size, freeze_layers=d.freeze_layers,
    )
