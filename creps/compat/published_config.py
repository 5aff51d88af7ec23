"""A TrainConfig for the networks of a published pickle, so they can live as a creps snapshot.

A published pickle records each network's constructor kwargs, and the dataset options, but
not the training options (gamma, batch, learning rates). The config built here holds what
the file says about the networks and the data; the rest comes from the `--cfg` presets
(what train.py would pick) with gamma 0 and batch 32, and the snapshot's metadata says so.

`check_reproduces` proves the config rebuilds the same networks: our registry's network for
the config, given the file's weights, must compute exactly what the network built from the
recorded kwargs computes.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch

from creps.compat import published_kwargs
from creps.compat.published import PublishedNetworks
from creps.config import DatasetInfo, DiscriminatorConfig, GeneratorConfig, TrainConfig, TrainOptions, resolve
from creps.nets.registry import build_discriminator, build_generator

ARCH_BY_KIND = {"creps.Generator": "creps", "stylegan2.Generator": "stylegan2", "stylegan3.Generator": "stylegan3"}


def resolved_kwargs(net: torch.nn.Module, kind: str, init: dict[str, Any]) -> dict[str, Any]:
    """Every keyword of our constructor for `net`: the translated recorded kwargs, then the
    constructor's defaults for the rest."""
    given = published_kwargs(kind, init)
    params = inspect.signature(type(net).__init__).parameters
    return {name: given.get(name, p.default) for name, p in params.items() if name != "self"}


def generator_config(pub: PublishedNetworks, role: str = "G_ema") -> GeneratorConfig:
    """The GeneratorConfig of a published generator."""
    net, kind = getattr(pub, role), pub.kinds[role]
    r = resolved_kwargs(net, kind, pub.init_kwargs[role])
    arch = ARCH_BY_KIND[kind]
    if arch == "stylegan3":
        arch = "stylegan3-r" if r["use_radial_filters"] else "stylegan3-t"
    return GeneratorConfig(
        arch=arch, z_dim=r["z_dim"], w_dim=r["w_dim"], c_dim=r["c_dim"], img_resolution=r["img_resolution"],
        img_channels=r["img_channels"], channel_base=r["channel_base"], channel_max=r["channel_max"],
        mapping_layers=r["mapping_layers"], clamp=r["fc_clamp"] if arch == "creps" else r["conv_clamp"],
        magnitude_ema_beta=r.get("magnitude_ema_beta"), conv_kernel=r.get("conv_kernel", 3),
        use_radial_filters=bool(r.get("use_radial_filters", False)),
    )


def discriminator_config(pub: PublishedNetworks) -> DiscriminatorConfig:
    r = resolved_kwargs(pub.D, pub.kinds["D"], pub.init_kwargs["D"])
    return DiscriminatorConfig(
        c_dim=r["c_dim"], img_resolution=r["img_resolution"], img_channels=r["img_channels"],
        channel_base=r["channel_base"], channel_max=r["channel_max"], mbstd_group_size=r["mbstd_group_size"],
        freeze_layers=r["freeze_layers"], conv_clamp=r["conv_clamp"],
    )


def train_config(pub: PublishedNetworks) -> TrainConfig:
    """A TrainConfig holding the published networks' options and dataset (see module doc)."""
    g = generator_config(pub, "G_ema" if pub.G_ema is not None else "G")
    data = pub.training_set_kwargs or {}
    data_path = str(data.get("path") or "")
    group = 4
    d = None
    if pub.D is not None:
        d = discriminator_config(pub)
        group = d.mbstd_group_size or 4
    options = TrainOptions(
        outdir=".", cfg=g.arch, data=data_path, gpus=1, batch=group * max(1, 32 // group), gamma=0,
        cond=g.c_dim > 0, mirror=bool(data.get("xflip", False)), mbstd_group=group,
        cbase=d.channel_base if d else g.channel_base, cmax=d.channel_max if d else g.channel_max,
        map_depth=g.mapping_layers, fp32=g.clamp is None, metrics=(),
    )
    info = DatasetInfo(
        path=data_path, name=Path(data_path).stem if data_path else "unknown", resolution=g.img_resolution,
        channels=g.img_channels, size=int(data.get("max_size") or 0), has_labels=g.c_dim > 0, label_dim=g.c_dim,
    )
    cfg = resolve(options, info)
    return dataclasses.replace(cfg, G=g, D=d or cfg.D)


def check_reproduces(cfg: TrainConfig, pub: PublishedNetworks) -> None:
    """Raise ValueError when our registry's networks for `cfg`, loaded with the file's weights,
    do not compute exactly what the networks built from the recorded kwargs compute."""
    gen = torch.Generator().manual_seed(0)
    for role in ("G", "G_ema", "D"):
        source = getattr(pub, role)
        if source is None:
            continue
        rebuilt = (build_discriminator(cfg.D) if role == "D" else build_generator(cfg.G)).eval()
        try:
            rebuilt.load_state_dict(source.state_dict(), strict=True)
        except RuntimeError as err:
            raise ValueError(f"{role}: the config's network has another layout ({str(err).splitlines()[0]})") from None
        with torch.no_grad():
            if role == "D":
                img = torch.randn([2, source.img_channels, source.img_resolution, source.img_resolution], generator=gen)
                c = torch.zeros([2, source.c_dim])
                a, b = source(img, c), rebuilt(img, c)
            else:
                z = torch.randn([1, source.z_dim], generator=gen)
                c = torch.zeros([1, source.c_dim])
                a = source(z, c, noise_mode="const")
                b = rebuilt(z, c, noise_mode="const")
        if not torch.equal(a, b):
            raise ValueError(f"{role}: a creps config cannot express this network's options (outputs differ by "
                             f"{(a - b).abs().max().item():.3g})")
