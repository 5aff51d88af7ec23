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


def _stylegan2(g: GeneratorConfig) -> torch.nn.Module:
    from creps.nets.stylegan2 import Generator

    return Generator(
        z_dim=g.z_dim, c_dim=g.c_dim, w_dim=g.w_dim, img_resolution=g.img_resolution,
        img_channels=g.img_channels, channel_base=g.channel_base, channel_max=g.channel_max,
        mapping_layers=g.mapping_layers, conv_clamp=g.clamp,
    )


def _stylegan3(g: GeneratorConfig) -> torch.nn.Module:
    from creps.nets.stylegan3 import Generator

    return Generator(
        z_dim=g.z_dim, c_dim=g.c_dim, w_dim=g.w_dim, img_resolution=g.img_resolution,
        img_channels=g.img_channels, channel_base=g.channel_base, channel_max=g.channel_max,
        mapping_layers=g.mapping_layers, conv_clamp=g.clamp, magnitude_ema_beta=g.magnitude_ema_beta,
        conv_kernel=g.conv_kernel, use_radial_filters=g.use_radial_filters,
    )


GENERATORS: dict[str, Callable[[GeneratorConfig], torch.nn.Module]] = {
    "creps": _creps,
    "stylegan2": _stylegan2,
    "stylegan3-t": _stylegan3,
    "stylegan3-r": _stylegan3,
}


def build_generator(g: GeneratorConfig) -> torch.nn.Module:
    try:
        return GENERATORS[g.arch](g)
    except (KeyError, ModuleNotFoundError):
        raise NotImplementedError(f"the {g.arch} generator is not implemented yet") from None


def set_training_switches(G: torch.nn.Module, recompute: bool, fused_ops: bool = False) -> None:
    """Speed switches of a generator family, where it has them (they never change results
    beyond float rounding): CREPS recomputes its per-pixel layers in backward; StyleGAN3
    runs its filtered leaky ReLU through the compiled fused path."""
    synthesis = G.synthesis
    if hasattr(synthesis, "recompute"):
        synthesis.recompute = recompute
    if hasattr(synthesis, "fused_lrelu"):
        synthesis.fused_lrelu = fused_ops


def build_discriminator(d: DiscriminatorConfig) -> torch.nn.Module:
    from creps.nets.discriminator import Discriminator

    return Discriminator(
        c_dim=d.c_dim, img_resolution=d.img_resolution, img_channels=d.img_channels,
        channel_base=d.channel_base, channel_max=d.channel_max, conv_clamp=d.conv_clamp,
        mbstd_group_size=d.mbstd_group_size, freeze_layers=d.freeze_layers,
    )
