"""StyleGAN2 generator ("Analyzing and Improving the Image Quality of StyleGAN", config F).

The computation and the state_dict layout are those of the published
`training/networks_stylegan2.py Generator` with the default 'skip' architecture:

- `mapping`: z (+ embedded label) -> w through an MLP, broadcast to `num_ws` rows, with the
  running mean `w_avg` used for truncation (moved on `update_emas=True` passes, as NVlabs do);
- `synthesis`: one block per resolution 4, 8, ..., img_resolution (`b{res}`). Block b4 starts
  from a learned constant; every later block upsamples with its first conv (`conv0`). Each
  block ends in a 1x1 `torgb`, whose output is added to the running RGB image after that
  image is upsampled by 2 with the FIR filter.

Every 3x3 conv is a *modulated* conv: the weight is scaled per sample by a style (an affine
map of one w row) on its input channels and renormalised per output channel (demodulation).
It runs either as one grouped conv with per-sample weights ("fused") or as an ordinary conv
between two per-sample scalings ("non-fused"); both compute the same function.

Rows of ws: each block reads its convs' rows and then the row after them for `torgb`, and
the next block starts at that same row (its `conv0` shares the previous `torgb`'s row).

Precision follows the discriminator: there is no dtype juggling beyond the block boundary.
Under `torch.autocast`, the blocks at the `num_fp16_res` highest resolutions compute in the
autocast dtype and the others in float32; styles, demodulation coefficients and the RGB
image are always float32; `force_fp32=True` turns autocast off for the whole call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from creps.nets.family import (REQUIRED_G, Capability, Family, GeneratorConfig, GeneratorOptions, Preset, Section,
                               config_from_dict, translate_published)
from creps.nets.generator import MappedGenerator, check_synthesis_inputs
from creps.nets.layers import DEFAULT_RESAMPLE_FILTER, FullyConnectedLayer
from creps.nets.mapping import MappingNetwork
from creps.nets.modconv import (
    check_modconv_inputs,
    demodulation_coefficients,
    fused_conv,
    per_sample_weights,
    use_fused,
)
from creps.nets.precision import autocast_dtype, autocast_off
from creps.nets.resolution import feature_channels, low_precision_from, resolution_log2
from creps.ops.bias_act import bias_act, default_gain
from creps.ops.styled_conv import unfused_conv
from creps.ops.upfirdn2d import setup_filter, upsample2d

@dataclass(frozen=True)
class StyleGAN2Config(GeneratorConfig):
    """Everything the StyleGAN2 generator is built from (its constructor's input)."""

    mapping_layers: int = 8
    conv_clamp: Optional[float] = 256  # output clamp of every conv; None: none
    num_fp16_res: int = 4  # blocks at the highest resolutions that follow autocast
    fused_modconv: Optional[bool] = None  # grouped-conv modulation; None: in eval only
    use_noise: bool = True
    resample_filter: tuple[float, ...] = DEFAULT_RESAMPLE_FILTER
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: Optional[float] = 0.998
    mapping_embed_features: Optional[int] = None
    mapping_layer_features: Optional[int] = None


def _overflow_safe(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale weight rows and styles to max |.| ~ 1 before float16 maths; demodulation cancels the scale."""
    fan_in = weight[0].numel()
    weight = weight / (weight.abs().amax(dim=[1, 2, 3], keepdim=True) * math.sqrt(fan_in))
    styles = styles / styles.abs().amax(dim=1, keepdim=True)
    return weight, styles


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     fused: bool = True, noise: Optional[torch.Tensor] = None, up: int = 1, padding: int = 0,
                     resample_filter: Optional[torch.Tensor] = None, flip_weight: bool = True) -> torch.Tensor:
    """Modulated (and demodulated) conv of x [N, I, H, W] with weight [O, I, k, k] and styles [N, I].

    Per sample n: w'_oik = w_oik * s_ni, then (demodulate) w''_oik = w'_oik * d_no. `noise`
    (broadcastable to the output) is added after the conv. `fused` runs one grouped conv with
    the per-sample weights; otherwise x is scaled by s before and by d after a shared conv.
    """
    check_modconv_inputs(x, weight, styles)
    # Styles, demodulation and per-sample weights in float32; the conv in x's precision.
    with autocast_off(x.device.type):
        weight, styles = weight.float(), styles.float()
        if demodulate and x.dtype == torch.float16:
            weight, styles = _overflow_safe(weight, styles)
        dcoefs = demodulation_coefficients(weight, styles) if demodulate else None
        if fused:
            per_sample = per_sample_weights(weight, styles)  # [N, O, I, k, k]
            if dcoefs is not None:
                per_sample = per_sample * dcoefs.reshape(*dcoefs.shape, 1, 1, 1)

    conv = dict(up=up, padding=padding, resample_filter=resample_filter, flip_weight=flip_weight)
    y = fused_conv(x, per_sample, **conv) if fused else unfused_conv(x, weight, styles, dcoefs, **conv)
    if noise is not None:
        y = y + noise.to(y.dtype)
    return y


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally upsampling by 2) + per-pixel noise + bias, lrelu, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 kernel_size: int = 3, use_noise: bool = True,
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up = resolution, up
        self.use_noise, self.conv_clamp = use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = default_gain("lrelu")
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def noise(self, batch: int, device: torch.device, noise_mode: str) -> Optional[torch.Tensor]:
        """Per-pixel noise, one map per sample ('random') or the stored map ('const'), times its strength."""
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            return torch.randn(batch, 1, self.resolution, self.resolution, device=device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool = True) -> torch.Tensor:
        with autocast_off(w.device.type):
            styles = self.affine(w.float())
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=True, fused=fused,
            noise=self.noise(x.shape[0], x.device, noise_mode),
            up=self.up, padding=self.padding, resample_filter=self.resample_filter,
            flip_weight=self.up == 1,  # the upsampling conv is a true convolution, as published
        )
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=self.act_gain, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv without demodulation: features -> image channels (+ bias, clamp)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)  # equalized lr, folded into the styles

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        with autocast_off(w.device.type):
            styles = self.affine(w.float()) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias.to(x.dtype), act="linear", clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}"


class SynthesisBlock(torch.nn.Module):
    """One resolution of the 'skip' generator: (const | conv0 up 2), conv1, torgb into the image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: Optional[float] = 256, use_noise: bool = True,
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, low_precision: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.img_channels, self.low_precision = resolution, img_channels, low_precision
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.is_first = in_channels == 0
        layer_kwargs = dict(use_noise=use_noise, resample_filter=resample_filter, conv_clamp=conv_clamp)
        if self.is_first:
            self.const = torch.nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kwargs)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    @property
    def num_conv(self) -> int:
        return 1 if self.is_first else 2

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: Sequence[torch.Tensor],
                noise_mode: str = "random", fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: this block's rows (conv0, conv1, torgb; b4: conv1, torgb). Returns (features, image)."""
        device_type = ws[0].device.type
        dtype = autocast_dtype(device_type, self.low_precision)  # None: this block runs in float32
        with autocast_off(device_type, active=dtype is None):
            dtype = torch.float32 if dtype is None else dtype
            if self.is_first:
                x = self.const.to(dtype).unsqueeze(0).expand(ws[0].shape[0], -1, -1, -1)
                x = self.conv1(x, ws[0], noise_mode, fused)
            else:
                x = self.conv0(x.to(dtype), ws[0], noise_mode, fused)
                x = self.conv1(x, ws[1], noise_mode, fused)
            rgb = self.torgb(x, ws[-1], fused)
        with autocast_off(device_type):
            rgb = rgb.float()
            img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img

    def extra_repr(self) -> str:
        precision = ", low precision under autocast" if self.low_precision else ""
        return f"resolution={self.resolution}{precision}"


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] (float32)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: Optional[float] = 256,
                 use_noise: bool = True, resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 fused_modconv: Optional[bool] = None):
        super().__init__()
        log2 = resolution_log2(img_resolution, minimum=4)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.fused_modconv = fused_modconv
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        width = {res: feature_channels(res, channel_base, channel_max) for res in self.block_resolutions}
        fp16_from = low_precision_from(log2, num_fp16_res)
        for res in self.block_resolutions:
            block = SynthesisBlock(
                in_channels=width[res // 2] if res > 4 else 0, out_channels=width[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, conv_clamp=conv_clamp, use_noise=use_noise,
                resample_filter=resample_filter, low_precision=res >= fp16_from,
            )
            self.add_module(f"b{res}", block)
        self.num_ws = sum(block.num_conv for block in self.blocks()) + 1  # + the last block's torgb

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def block_ws_rows(self) -> list[list[int]]:
        """Rows of ws per block: its convs' rows, then one more for torgb, which the next block's conv0 reuses."""
        rows, start = [], 0
        for block in self.blocks():
            rows.append(list(range(start, start + block.num_conv + 1)))
            start += block.num_conv
        return rows

    def _use_fused(self, fused_modconv: Optional[bool]) -> bool:
        return use_fused(self.fused_modconv, fused_modconv, self.training)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", update_emas: bool = False,
                force_fp32: bool = False, fused_modconv: Optional[bool] = None) -> torch.Tensor:
        del update_emas  # synthesis keeps no running statistics
        check_synthesis_inputs(ws, noise_mode, self.num_ws, self.w_dim)
        fused = self._use_fused(fused_modconv)
        with autocast_off(ws.device.type, active=force_fp32):
            w_rows = ws.float().unbind(dim=1)
            x = img = None
            for block, rows in zip(self.blocks(), self.block_ws_rows()):
                x, img = block(x, img, [w_rows[i] for i in rows], noise_mode, fused)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(MappedGenerator):
    """StyleGAN2 generator: mapping network + 'skip' synthesis network."""

    def __init__(self, config: StyleGAN2Config):
        c = config
        super().__init__(config)
        self.synthesis = SynthesisNetwork(
            c.w_dim, c.img_resolution, c.img_channels, channel_base=c.channel_base, channel_max=c.channel_max,
            num_fp16_res=c.num_fp16_res, conv_clamp=c.conv_clamp, use_noise=c.use_noise,
            resample_filter=c.resample_filter, fused_modconv=c.fused_modconv,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            c.z_dim, c.c_dim, c.w_dim, self.num_ws, num_layers=c.mapping_layers,
            embed_features=c.mapping_embed_features, layer_features=c.mapping_layer_features,
            lr_multiplier=c.mapping_lr_multiplier, w_avg_beta=c.w_avg_beta, w_avg_update_on="update_emas",
        )


# ---------------------------------------------------------------------------------------
# The family: train.py preset, published constructor arguments, capabilities.


def train_py_config(o: GeneratorOptions) -> StyleGAN2Config:
    """`train.py --cfg=stylegan2`."""
    return StyleGAN2Config(**o.sizes(), conv_clamp=o.clamp)


_PUBLISHED_TOP = Section(
    names={
        **{name: name for name in (*REQUIRED_G, "channel_base", "channel_max", "conv_clamp", "use_noise",
                                   "resample_filter")},
        "num_fp16_res": "num_fp16_res",  # which blocks follow autocast (see the module doc)
        "fused_modconv_default": "fused_modconv",  # value translated through _PUBLISHED_FUSED
    },
    fixed={"architecture": "skip", "activation": "lrelu", "kernel_size": 3},
    ignored=frozenset({"fp16_channels_last"}),  # memory layout only
)
_PUBLISHED_MAPPING = Section(
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
_PUBLISHED_FUSED = {True: True, False: False, "inference_only": None}


def from_published(init: Mapping[str, Any]) -> StyleGAN2Config:
    """Published `training/networks_stylegan2.py Generator` kwargs -> our config. The published
    constructor passes every argument besides the sizes and `mapping_kwargs` on to the
    synthesis blocks; files of the StyleGAN2-ADA code nest them in `synthesis_kwargs`, which
    count as top level here, as in the later code."""
    if isinstance(init.get("synthesis_kwargs"), dict):
        init = {**{k: v for k, v in init.items() if k != "synthesis_kwargs"}, **init["synthesis_kwargs"]}
    fields = translate_published("StyleGAN2 generator", init, REQUIRED_G, _PUBLISHED_TOP,
                                 {"mapping_kwargs": _PUBLISHED_MAPPING})
    if "fused_modconv" in fields:
        if not isinstance(fields["fused_modconv"], (bool, str)) or fields["fused_modconv"] not in _PUBLISHED_FUSED:
            raise ValueError(f"StyleGAN2 generator: fused_modconv_default={fields['fused_modconv']!r} is not supported")
        fields["fused_modconv"] = _PUBLISHED_FUSED[fields["fused_modconv"]]
    return config_from_dict(StyleGAN2Config, fields, "StyleGAN2 generator")


FAMILY = Family(
    name="stylegan2", role="G", config=StyleGAN2Config, network=Generator, published_name="stylegan2.Generator",
    from_published=from_published, marker="synthesis.b4.const", capabilities=frozenset({Capability.NOISE_INPUTS}),
    presets=(Preset("stylegan2", train_py_config, glr=0.002, mapping_layers=8, lazy_g_reg=True, pl_weight=2,
                    style_mixing_prob=0.9, pl_no_weight_grad=True),),
)
