"""StyleGAN2 discriminator (the one every published --cfg trains with, CREPS included).

Same computation and the same state_dict layout as the published
`training/networks_stylegan2.py Discriminator`: one block per resolution from the image
size down to 8 (`b{res}`), each halving the resolution, then a 4x4 epilogue (`b4`) with
minibatch-stddev, a conv, two fully connected layers and, for class-conditional
models, a projection onto the mapped label (`mapping`).

Precision: no dtype juggling inside the blocks. Under `torch.autocast` the blocks of the
`num_fp16_res` highest resolutions run in the autocast dtype and the others in float32
(the published code does the same with float16 on CUDA); the epilogue and the label
mapping always run in float32. `force_fp32=True` turns autocast off for the whole call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from creps.nets.family import Family, Section, config_from_dict, translate_published
from creps.nets.layers import DEFAULT_RESAMPLE_FILTER, FullyConnectedLayer
from creps.nets.mapping import MappingNetwork
from creps.nets.precision import autocast_off
from creps.nets.resolution import feature_channels, low_precision_from, resolution_log2
from creps.ops.bias_act import bias_act, default_gain
from creps.ops.conv2d_resample import conv2d_resample
from creps.ops.upfirdn2d import downsample2d, setup_filter

ARCHITECTURES = ("orig", "skip", "resnet")
LOW_PRECISION = (torch.float16, torch.bfloat16)
RESNET_BRANCH_GAIN = math.sqrt(0.5)  # the two resnet branches are summed at unit variance


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Everything the discriminator is built from (its constructor's input)."""

    c_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: Optional[int] = 4  # minibatch-stddev group (None: the whole batch)
    freeze_layers: int = 0  # the first N layers are frozen (transfer learning)
    conv_clamp: Optional[float] = 256  # output clamp of every conv; None: none
    num_fp16_res: int = 4  # blocks at the highest resolutions that follow autocast
    cmap_dim: Optional[int] = None  # conditional: width of the label projection (None: that at 4x4)
    mbstd_num_channels: int = 1
    architecture: str = "resnet"
    mapping_layers: int = 8  # conditional: the label mapping network
    mapping_lr_multiplier: float = 0.01


def _full_precision(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return x.float() if x is not None and x.dtype in LOW_PRECISION else x


class Conv2dLayer(torch.nn.Module):
    """Equalized-lr conv (weight scaled by 1/sqrt(fan_in) at run time) + bias, activation, clamp.

    `trainable=False` stores weight and bias as buffers under the same names (Freeze-D):
    the state_dict is unchanged and optimizers never see them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: Optional[float] = None,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.trainable = trainable
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = default_gain(activation)

        weight = torch.randn(out_channels, in_channels, kernel_size, kernel_size)
        bias_init = torch.zeros(out_channels) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_init) if bias else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_init)  # a None buffer is not part of the state_dict

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        y = conv2d_resample(x, w, f=self.resample_filter, down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(y, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        frozen = "" if self.trainable else ", frozen"
        return f"{self.in_channels}->{self.out_channels}, act={self.activation}, down={self.down}{frozen}"


class DiscriminatorBlock(torch.nn.Module):
    """One resolution: (fromrgb) -> conv0 -> conv1 (down 2), plus a 1x1 skip (down 2) in 'resnet'.

    Layers are counted from `first_layer_idx` in the order fromrgb, conv0, conv1, skip; those
    with an index below `freeze_layers` are frozen.
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        conv_clamp: Optional[float] = None,
        low_precision: bool = False,
        freeze_layers: int = 0,
    ):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 (first block) or {tmp_channels}, got {in_channels}")
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.architecture, self.low_precision = architecture, low_precision
        self.register_buffer("resample_filter", setup_filter(list(DEFAULT_RESAMPLE_FILTER)))
        self.layer_names: list[str] = []

        def make(name: str, *args, **kwargs) -> None:
            trainable = first_layer_idx + len(self.layer_names) >= freeze_layers
            self.add_module(name, Conv2dLayer(*args, trainable=trainable, **kwargs))
            self.layer_names.append(name)

        self.has_fromrgb = in_channels == 0 or architecture == "skip"
        if self.has_fromrgb:
            make("fromrgb", img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        make("conv0", tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        make("conv1", tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        if architecture == "resnet":
            make("skip", tmp_channels, out_channels, 1, bias=False, down=2)

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    def forward(
        self, x: Optional[torch.Tensor], img: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        with autocast_off(img.device.type if img is not None else x.device.type, active=not self.low_precision):
            if not self.low_precision:
                x, img = _full_precision(x), _full_precision(img)
            if self.has_fromrgb:
                from_img = self.fromrgb(img)
                x = from_img if x is None else x + from_img
                img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
            if self.architecture == "resnet":
                shortcut = self.skip(x, gain=RESNET_BRANCH_GAIN)
                x = self.conv0(x)
                x = self.conv1(x, gain=RESNET_BRANCH_GAIN)
                x = shortcut + x
            else:
                x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


def minibatch_stddev(x: torch.Tensor, group_size: Optional[int], num_channels: int = 1) -> torch.Tensor:
    """Minibatch standard deviation (Karras et al. 2018): append each group's mean feature std.

    Sample i is in group i % (N / G) (x is viewed as [G, N/G, ...]); the C channels are split
    into `num_channels` sets, each contributing one appended channel.
    """
    n, ch, h, w = x.shape
    g = n if group_size is None else min(group_size, n)
    if n % g != 0:
        raise ValueError(
            f"batch size {n} is not divisible by the minibatch-stddev group size {g}; "
            "use a batch size that is a multiple of it (or change mbstd_group_size)"
        )
    grouped = x.reshape(g, -1, num_channels, ch // num_channels, h, w)
    centred = grouped - grouped.mean(dim=0)
    std = (centred.square().mean(dim=0) + 1e-8).sqrt()  # [n/G, F, c, H, W]
    per_group = std.mean(dim=[2, 3, 4])  # [n/G, F]
    stat = per_group.repeat(g, 1).reshape(n, num_channels, 1, 1).expand(n, num_channels, h, w)
    return torch.cat([x, stat], dim=1)


def project_onto_label(x: torch.Tensor, cmap: torch.Tensor) -> torch.Tensor:
    """Projection discriminator (Miyato & Koyama 2018): <out, cmap> / sqrt(cmap_dim)."""
    return (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(cmap.shape[1]))


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head: (fromrgb in 'skip') -> mbstd -> conv -> fc -> out (-> label projection)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: Optional[int] = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: Optional[float] = None,
    ):
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.architecture = architecture
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu")
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor], cmap: Optional[torch.Tensor]) -> torch.Tensor:
        with autocast_off(x.device.type):
            x = _full_precision(x)
            if self.architecture == "skip":
                x = x + self.fromrgb(_full_precision(img))
            if self.mbstd_num_channels > 0:
                x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
            x = self.conv(x)
            x = self.out(self.fc(x.flatten(1)))
            if self.cmap_dim > 0:
                x = project_onto_label(x, cmap)
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, mbstd_group_size={self.mbstd_group_size}"


class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: logits [N, 1] for images [N, C, H, W] (and labels [N, c_dim])."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = c = config
        log2 = resolution_log2(c.img_resolution, minimum=8)
        if c.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {c.architecture!r}")
        if c.mbstd_num_channels < 0:
            raise ValueError(f"mbstd_num_channels must be >= 0, got {c.mbstd_num_channels}")
        self.c_dim, self.img_resolution, self.img_channels = c.c_dim, c.img_resolution, c.img_channels
        self.architecture, self.freeze_layers = c.architecture, c.freeze_layers
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        width = {res: feature_channels(res, c.channel_base, c.channel_max) for res in self.block_resolutions + [4]}
        if c.mbstd_num_channels > 0 and width[4] % c.mbstd_num_channels != 0:
            raise ValueError(f"mbstd_num_channels={c.mbstd_num_channels} must divide the {width[4]} channels at 4x4")
        fp16_from = low_precision_from(log2, c.num_fp16_res)
        self.cmap_dim = (width[4] if c.cmap_dim is None else c.cmap_dim) if c.c_dim > 0 else 0

        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                in_channels=width[res] if res < c.img_resolution else 0, tmp_channels=width[res],
                out_channels=width[res // 2], resolution=res, img_channels=c.img_channels, first_layer_idx=layer_idx,
                architecture=c.architecture, conv_clamp=c.conv_clamp, low_precision=res >= fp16_from,
                freeze_layers=c.freeze_layers,
            )
            self.add_module(f"b{res}", block)
            layer_idx += block.num_layers
        if c.c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c.c_dim, w_dim=self.cmap_dim, num_ws=None,
                                          num_layers=c.mapping_layers, lr_multiplier=c.mapping_lr_multiplier,
                                          w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(
            width[4], cmap_dim=self.cmap_dim, resolution=4, img_channels=c.img_channels, architecture=c.architecture,
            mbstd_group_size=c.mbstd_group_size, mbstd_num_channels=c.mbstd_num_channels, conv_clamp=c.conv_clamp,
        )

    def blocks(self) -> list[DiscriminatorBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def layer_names(self) -> list[str]:
        """Freeze-D layer order: every block's fromrgb, conv0, conv1, skip, highest resolution first."""
        return [f"b{blk.resolution}.{name}" for blk in self.blocks() for name in blk.layer_names]

    def frozen_layer_names(self) -> list[str]:
        return self.layer_names()[: self.freeze_layers]

    def frozen_parameter_names(self) -> list[str]:
        """state_dict keys of the frozen weights and biases (buffers here, parameters when trainable)."""
        return [f"{layer}.{name}" for layer in self.frozen_layer_names() for name in ("weight", "bias")
                if getattr(self.get_submodule(layer), name) is not None]

    def _check_inputs(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> None:
        want = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != want:
            raise ValueError(f"D expects images [N, {want[0]}, {want[1]}, {want[2]}], got {tuple(img.shape)}")
        if self.c_dim > 0 and (c is None or c.ndim != 2 or tuple(c.shape) != (img.shape[0], self.c_dim)):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"D expects labels [{img.shape[0]}, {self.c_dim}], got {got}")

    def forward(
        self,
        img: torch.Tensor,
        c: Optional[torch.Tensor] = None,
        update_emas: bool = False,
        force_fp32: bool = False,
    ) -> torch.Tensor:
        del update_emas  # D tracks no running averages
        self._check_inputs(img, c)
        device_type = img.device.type
        with autocast_off(device_type, active=force_fp32):
            if force_fp32:
                img = _full_precision(img)
            x = None
            for block in self.blocks():
                x, img = block(x, img)
            cmap = None
            if self.c_dim > 0:
                with autocast_off(device_type):
                    cmap = self.mapping(None, c)
            return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


# ---------------------------------------------------------------------------------------
# The family: published constructor arguments (train.py builds it in creps.config).

_PUBLISHED_TOP = Section(names={name: name for name in (
    "c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
    "conv_clamp", "cmap_dim",
)})
_PUBLISHED_NESTED = {
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


def from_published(init: Mapping[str, Any]) -> DiscriminatorConfig:
    """Published `training/networks_stylegan2.py Discriminator` kwargs (top level plus
    `block_kwargs`, `mapping_kwargs`, `epilogue_kwargs`) -> our config."""
    fields = translate_published("StyleGAN2 discriminator", init, ("c_dim", "img_resolution", "img_channels"),
                                 _PUBLISHED_TOP, _PUBLISHED_NESTED)
    return config_from_dict(DiscriminatorConfig, fields, "StyleGAN2 discriminator")


FAMILY = Family(
    name="stylegan2-discriminator", role="D", config=DiscriminatorConfig, network=Discriminator,
    published_name="stylegan2.Discriminator", from_published=from_published,
)
