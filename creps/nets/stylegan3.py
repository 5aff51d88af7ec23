"""StyleGAN3 generator ("Alias-Free Generative Adversarial Networks"), configs T and R.

The computation and the state_dict layout are those of the published
`training/networks_stylegan3.py Generator`:

- `mapping`: z (+ embedded label) -> w (2 layers by default), broadcast to `num_ws` rows;
  its running mean `w_avg` moves on `update_emas=True` passes, as NVlabs do;
- `synthesis.input`: Fourier features. Each of C channels is sin(2 pi (f . x + phase)) for a
  fixed random frequency f (buffer `freqs`) and phase (buffer `phases`), sampled on a grid a
  little larger than the first layer's image. An affine map of ws[0] gives a rotation angle
  and a translation that move the whole pattern; the 3x3 buffer `transform` adds a *user*
  transform on top (see `make_transform`, and `creps.generate.set_transform`); a learned CxC `weight`
  mixes the channels;
- `synthesis.L{i}_{size}_{channels}`: `num_layers` modulated convolutions, each followed by
  a filtered leaky ReLU (bias, upsample x2 (x4 where the sampling rate doubles), lrelu,
  low-pass and downsample), plus a final 1x1 ToRGB layer. Cutoff frequency, stopband,
  sampling rate and channel count follow the published geometric schedule (`layer_plan`);
  the last `num_critical` layers are critically sampled;
- every layer divides its input by the running RMS of its inputs (buffer `magnitude_ema`,
  moved on `update_emas=True` passes by `magnitude_ema_beta`).

StyleGAN3-R differs only in its constructor arguments: 1x1 convolutions (`conv_kernel=1`),
radially symmetric down-sampling filters (`use_radial_filters=True`) in the non-critically
sampled layers, and (in the training config) doubled `channel_base` / `channel_max`.

Precision follows the other networks: under `torch.autocast` the layers whose sampling rate
times 2**num_fp16_res exceeds the image size (the published rule) compute in the autocast
dtype, the others in float32; the input layer, styles, demodulation and the magnitude
statistics are always float32, and `force_fp32=True` turns autocast off for the whole call.
`noise_mode` is accepted for interface compatibility and ignored (StyleGAN3 has no noise).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from creps.nets.family import (REQUIRED_G, Capability, Family, GeneratorConfig, GeneratorOptions, Preset, Section,
                               config_from_dict, translate_published)
from creps.nets.generator import MappedGenerator, check_synthesis_inputs
from creps.nets.layers import FullyConnectedLayer
from creps.nets.mapping import MappingNetwork
from creps.nets.modconv import (
    DEMOD_EPS,
    check_modconv_inputs,
    demodulation_coefficients,
    fused_conv,
    per_sample_weights,
    use_fused,
)
from creps.nets.precision import autocast_dtype, autocast_off
from creps.nets.resolution import resolution_log2
from creps.ops.filtered_lrelu import filtered_lrelu
from creps.ops.filters import design_lowpass_filter
from creps.ops.styled_conv import unfused_conv

FILTER_SIZE = 6  # low-pass taps per unit of the lower of the two sampling rates
LRELU_UPSAMPLING = 2  # the nonlinearity runs at twice the layer's larger sampling rate
LRELU_GAIN = math.sqrt(2)
LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class StyleGAN3Config(GeneratorConfig):
    """Everything the StyleGAN3 generator is built from (its constructor's input)."""

    mapping_layers: int = 2
    conv_clamp: Optional[float] = 256  # output clamp of every conv; None: none
    magnitude_ema_beta: float = 0.999  # decay of the layers' input magnitude statistics
    conv_kernel: int = 3  # StyleGAN3-R: 1
    use_radial_filters: bool = False  # StyleGAN3-R: radially symmetric downsampling filters
    num_fp16_res: int = 4  # layers at the highest sampling rates that follow autocast
    num_layers: int = 14
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10  # extra pixels around the image in the non-final layers
    output_scale: float = 0.25
    fused_modconv: Optional[bool] = None  # grouped-conv modulation; None: in eval only
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998


# ---------------------------------------------------------------------------------------------
# User transform (the renderer's translate / rotate)


def make_transform(translate: Sequence[float] = (0.0, 0.0), angle_deg: float = 0.0) -> torch.Tensor:
    """3x3 float64 matrix that rotates by `angle_deg` degrees and translates by `translate`
    (in image units: the output image spans 1 unit, so 0.25 is a quarter of its width).

    The synthesis input wants the *inverse* of the transform wrt the resulting image, as the
    published gen_images.py sets it:
        G.synthesis.input.transform.copy_(torch.linalg.inv(make_transform((0.1, 0), 5)))
    which `creps.generate.set_transform(G, (0.1, 0), 5)` does. A positive x translation moves
    the content to the right.
    """
    rad = math.radians(angle_deg)
    cos, sin = math.cos(rad), math.sin(rad)
    tx, ty = (float(v) for v in translate)
    return torch.tensor([[cos, sin, tx], [-sin, cos, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# The per-layer schedule of cutoffs, stopbands, sampling rates, sizes and channels


@dataclass(frozen=True)
class LayerPlan:
    """What one synthesis layer (index `index`; the ToRGB layer is the last) computes at."""

    index: int
    is_torgb: bool
    critically_sampled: bool
    low_precision: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_rate: int  # sampling rates (pixels per image unit)
    out_rate: int
    in_cutoff: float  # cutoff frequencies f_c
    out_cutoff: float
    in_half_width: float  # transition band half-widths f_h
    out_half_width: float

    @property
    def name(self) -> str:
        return f"L{self.index}_{self.out_size}_{self.out_channels}"


def geometric_schedule(first: float, last: float, num_layers: int, num_critical: int) -> np.ndarray:
    """Per-layer value rising geometrically from `first` (layer 0) to `last`, reached at layer
    num_layers - num_critical and held through layer num_layers."""
    t = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    return first * (last / first) ** t


def sampling_rates_for(stopbands: np.ndarray, img_resolution: int) -> np.ndarray:
    """Sampling rate of each layer: the power of two at or above twice its stopband, capped
    at the image resolution."""
    return np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))


def layer_plan(img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
               num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
               first_stopband: float = 2**2.1, last_stopband_rel: float = 2**0.3, margin_size: int = 10,
               num_fp16_res: int = 4) -> list[LayerPlan]:
    """The published layer schedule: index 0 describes the input layer's output; entries
    1 .. num_layers + 1 the layers L0 .. L{num_layers} (the last is ToRGB)."""
    last_cutoff = img_resolution / 2
    cutoffs = geometric_schedule(first_cutoff, last_cutoff, num_layers, num_critical)
    stopbands = geometric_schedule(first_stopband, last_cutoff * last_stopband_rel, num_layers, num_critical)
    rates = sampling_rates_for(stopbands, img_resolution)
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + 2 * margin_size  # a margin of extra pixels around the image ...
    sizes[-2:] = img_resolution  # ... except in the last two layers
    channels = np.rint(np.minimum(channel_base / 2 / cutoffs, channel_max))
    channels[-1] = img_channels

    def plan(idx: int, prev: int) -> LayerPlan:
        return LayerPlan(
            index=idx, is_torgb=idx == num_layers, critically_sampled=idx >= num_layers - num_critical,
            low_precision=bool(rates[idx] * 2**num_fp16_res > img_resolution),
            in_channels=int(channels[prev]), out_channels=int(channels[idx]),
            in_size=int(sizes[prev]), out_size=int(sizes[idx]),
            in_rate=int(rates[prev]), out_rate=int(rates[idx]),
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
        )

    return [plan(0, 0)] + [plan(idx, max(idx - 1, 0)) for idx in range(num_layers + 1)]


def resampling_padding(in_size: int, out_size: int, kernel: int, up: int, down: int, up_taps: int,
                       down_taps: int) -> tuple[int, int]:
    """(before, after) padding of the upsampled image so the filtered output has `out_size`
    samples, placed by the symmetric interpretation of sample positions (paper, App. C.3)."""
    total = (out_size - 1) * down + 1  # samples needed before downsampling
    total -= (in_size + kernel - 1) * up  # samples the (full) conv output has after upsampling
    total += up_taps + down_taps - 2  # samples the two valid FIR filters consume
    before = (total + up) // 2
    return before, total - before


# ---------------------------------------------------------------------------------------------
# Layers


def magnitude_ema_update(ema: torch.Tensor, current: torch.Tensor, beta: float) -> torch.Tensor:
    """Running mean square of a layer's input: ema <- beta * ema + (1 - beta) * mean(x^2)."""
    return current.lerp(ema, beta)


def normalized_modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                                padding: int, input_gain: Optional[torch.Tensor] = None,
                                fused: bool = True) -> torch.Tensor:
    """StyleGAN3 modulated conv of x [N, I, H, W] with weight [O, I, k, k] and styles [N, I].

    With demodulation, the weight is first scaled to unit RMS per output channel and the
    styles to unit RMS over the whole batch (no effect on the result except through eps, but
    keeps float16/bfloat16 in range), then w'_noik = w_oik s_ni / sqrt(sum_ik (w_oik s_ni)^2 + eps).
    `input_gain` (a scalar) scales the input. `fused` runs one grouped conv with per-sample
    weights; otherwise x is scaled by the styles before, and by the demodulation after, a
    shared conv (same function, cheaper for large batches).
    """
    check_modconv_inputs(x, weight, styles)
    with autocast_off(x.device.type):
        weight, styles = weight.float(), styles.float()
        if demodulate:
            weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean().rsqrt()
        if fused:
            per_sample = per_sample_weights(weight, styles)  # [N, O, I, k, k]
            if demodulate:
                per_sample = per_sample * (per_sample.square().sum(dim=[2, 3, 4], keepdim=True) + DEMOD_EPS).rsqrt()
            if input_gain is not None:
                per_sample = per_sample * input_gain
        else:
            dcoefs = demodulation_coefficients(weight, styles) if demodulate else None
            if input_gain is not None:
                styles = styles * input_gain
    if fused:
        return fused_conv(x, per_sample, padding=padding)
    return unfused_conv(x, weight, styles, dcoefs, padding=padding)


class SynthesisInput(torch.nn.Module):
    """Fourier-feature input: C sinusoids on a size x size grid, moved by ws[0] and `transform`."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, channels, int(size)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        self.weight = torch.nn.Parameter(torch.randn(channels, channels))
        # (cos, sin) of the rotation and (x, y) of the translation; starts at the identity.
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        # Inverse of the user transform wrt the resulting image (identity = no transform).
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", random_frequencies(channels, bandwidth))
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def grid(self, device: torch.device) -> torch.Tensor:
        """Sample positions (image units) of the pixel centres along one axis: (j - (size-1)/2) / rate."""
        return (torch.arange(self.size, device=device, dtype=torch.float32) - (self.size - 1) / 2) / self.sampling_rate

    def learned_transforms(self, w: torch.Tensor) -> torch.Tensor:
        """[N, 3, 3]: rotation (from the normalised first two affine outputs) after translation
        (the last two), both inverse wrt the resulting image, then the user transform."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rotate = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
        translate = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(-1, 3, 3)
        return rotate @ translate @ self.transform.unsqueeze(0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with autocast_off(w.device.type):
            w = w.float()
            transforms = self.learned_transforms(w)
            phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
            freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2] as (fx, fy)
            amplitudes = out_of_band_damping(freqs.norm(dim=2), self.bandwidth, self.sampling_rate)  # [N, C]
            pos = self.grid(w.device)
            # phase at pixel (row h, column j) = fx * x_j + fy * y_h + phase -> [N, H, W, C]
            arg = (pos.reshape(1, 1, -1, 1) * freqs[:, None, None, :, 0]
                   + pos.reshape(1, -1, 1, 1) * freqs[:, None, None, :, 1])
            arg = arg + phases[:, None, None, :]
            x = torch.sin(arg * (2 * math.pi)) * amplitudes[:, None, None, :]
            x = x @ (self.weight / math.sqrt(self.channels)).t()
            return x.permute(0, 3, 1, 2)  # [N, C, H, W]

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


def random_frequencies(channels: int, bandwidth: float) -> torch.Tensor:
    """[C, 2] random 2-D frequencies inside the disc of radius `bandwidth`: a Gaussian draw of
    radius r keeps its direction and gets radius exp(-r^2 / 4) (< 1), times the bandwidth."""
    freqs = torch.randn(channels, 2)
    radius = freqs.norm(dim=1, keepdim=True)
    return freqs / (radius * (radius.square() / 4).exp()) * bandwidth


def out_of_band_damping(freq_norm: torch.Tensor, bandwidth: float, sampling_rate: float) -> torch.Tensor:
    """Amplitude 1 inside the band, falling linearly to 0 at Nyquist, for frequencies that the
    user transform pushes past the bandwidth."""
    return (1 - (freq_norm - bandwidth) / (sampling_rate / 2 - bandwidth)).clamp(0, 1)


class SynthesisLayer(torch.nn.Module):
    """Modulated conv + filtered leaky ReLU (or, for ToRGB, a 1x1 unnormalised conv + bias + clamp)."""

    def __init__(self, plan: LayerPlan, w_dim: int, conv_kernel: int = 3, use_radial_filters: bool = False,
                 conv_clamp: Optional[float] = 256, magnitude_ema_beta: float = 0.999):
        super().__init__()
        self.plan = plan
        self.w_dim = w_dim
        self.is_torgb = plan.is_torgb
        self.in_channels, self.out_channels = plan.in_channels, plan.out_channels
        self.in_size, self.out_size = plan.in_size, plan.out_size
        self.conv_kernel = 1 if plan.is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.low_precision = plan.low_precision

        self.affine = FullyConnectedLayer(w_dim, plan.in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(plan.out_channels, plan.in_channels,
                                                     self.conv_kernel, self.conv_kernel))
        self.bias = torch.nn.Parameter(torch.zeros(plan.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))

        tmp_rate = max(plan.in_rate, plan.out_rate) * (1 if plan.is_torgb else LRELU_UPSAMPLING)
        self.up_factor = _exact_ratio(tmp_rate, plan.in_rate)
        self.down_factor = _exact_ratio(tmp_rate, plan.out_rate)
        up_taps = FILTER_SIZE * self.up_factor if self.up_factor > 1 and not plan.is_torgb else 1
        down_taps = FILTER_SIZE * self.down_factor if self.down_factor > 1 and not plan.is_torgb else 1
        self.down_radial = use_radial_filters and not plan.critically_sampled
        self.register_buffer("up_filter", design_lowpass_filter(
            up_taps, plan.in_cutoff, 2 * plan.in_half_width, tmp_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            down_taps, plan.out_cutoff, 2 * plan.out_half_width, tmp_rate, radial=self.down_radial))
        before, after = resampling_padding(plan.in_size, plan.out_size, self.conv_kernel, self.up_factor,
                                           self.down_factor, up_taps, down_taps)
        self.padding = [before, after, before, after]

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False, fused: bool = True,
                fused_lrelu: bool = False) -> torch.Tensor:
        """x [N, in_channels, in_size, in_size], computed in x's dtype; w [N, w_dim] float32."""
        if tuple(x.shape[1:]) != (self.in_channels, self.in_size, self.in_size):
            raise ValueError(f"{self.plan.name}: expected input [N, {self.in_channels}, {self.in_size}, "
                             f"{self.in_size}], got {tuple(x.shape)}")
        with autocast_off(x.device.type):
            if update_emas:
                with torch.no_grad():
                    current = x.detach().float().square().mean()
                    self.magnitude_ema.copy_(magnitude_ema_update(self.magnitude_ema, current, self.magnitude_ema_beta))
            input_gain = self.magnitude_ema.rsqrt()
            styles = self.affine(w.float())
            if self.is_torgb:
                styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        x = normalized_modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                                        padding=self.conv_kernel - 1, input_gain=input_gain, fused=fused)
        gain, slope = (1.0, 1.0) if self.is_torgb else (LRELU_GAIN, LRELU_SLOPE)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype), up=self.up_factor,
                              down=self.down_factor, padding=self.padding, gain=gain, slope=slope,
                              clamp=self.conv_clamp, fused=fused_lrelu)

    def extra_repr(self) -> str:
        p = self.plan
        return (f"in={p.in_channels}x{p.in_size}, out={p.out_channels}x{p.out_size}, rates={p.in_rate}->"
                f"{p.out_rate}, cutoff={p.in_cutoff:.3g}->{p.out_cutoff:.3g}, up={self.up_factor}, "
                f"down={self.down_factor}, radial={self.down_radial}, critical={p.critically_sampled}, "
                f"low_precision={p.low_precision}")


def _exact_ratio(num: int, den: int) -> int:
    ratio = int(round(num / den))
    if ratio * den != num:
        raise ValueError(f"sampling rates {num} and {den} are not in an integer ratio")
    return ratio


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                 first_stopband: float = 2**2.1, last_stopband_rel: float = 2**0.3, margin_size: int = 10,
                 output_scale: float = 0.25, num_fp16_res: int = 4, conv_kernel: int = 3,
                 use_radial_filters: bool = False, conv_clamp: Optional[float] = 256,
                 magnitude_ema_beta: float = 0.999, fused_modconv: Optional[bool] = None):
        super().__init__()
        resolution_log2(img_resolution, minimum=4)
        if num_layers <= num_critical:
            raise ValueError(f"num_layers ({num_layers}) must exceed num_critical ({num_critical})")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_layers, self.num_critical = num_layers, num_critical
        self.margin_size, self.output_scale, self.num_fp16_res = margin_size, output_scale, num_fp16_res
        self.fused_modconv = fused_modconv
        # Speed switch, not part of the architecture: the filtered leaky ReLU through its
        # compiled fused path (creps.ops.filtered_lrelu; same results to float rounding).
        self.fused_lrelu = False
        self.num_ws = num_layers + 2  # input + layers L0 .. L{num_layers}
        plans = layer_plan(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                           first_cutoff, first_stopband, last_stopband_rel, margin_size, num_fp16_res)
        first = plans[0]
        self.input = SynthesisInput(w_dim, first.out_channels, first.out_size, first.out_rate, first.out_cutoff)
        self.layer_names = []
        for plan in plans[1:]:
            layer = SynthesisLayer(plan, w_dim, conv_kernel=conv_kernel, use_radial_filters=use_radial_filters,
                                   conv_clamp=conv_clamp, magnitude_ema_beta=magnitude_ema_beta)
            self.add_module(plan.name, layer)
            self.layer_names.append(plan.name)

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, name) for name in self.layer_names]

    def _use_fused(self, fused_modconv: Optional[bool]) -> bool:
        return use_fused(self.fused_modconv, fused_modconv, self.training)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", update_emas: bool = False,
                force_fp32: bool = False, fused_modconv: Optional[bool] = None) -> torch.Tensor:
        check_synthesis_inputs(ws, noise_mode, self.num_ws, self.w_dim)
        device_type = ws.device.type
        fused = self._use_fused(fused_modconv)
        low_dtype = autocast_dtype(device_type, wanted=not force_fp32)
        with autocast_off(device_type):
            w_rows = ws.float().unbind(dim=1)
            x = self.input(w_rows[0])
            for layer, w in zip(self.layers(), w_rows[1:]):
                dtype = low_dtype if layer.low_precision and low_dtype is not None else torch.float32
                x = layer(x.to(dtype), w, update_emas=update_emas, fused=fused, fused_lrelu=self.fused_lrelu)
            x = x.float()
            return x * self.output_scale if self.output_scale != 1 else x

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"num_layers={self.num_layers}, num_critical={self.num_critical}, num_fp16_res={self.num_fp16_res}")


class Generator(MappedGenerator):
    """StyleGAN3 generator (T; R with conv_kernel=1 and use_radial_filters=True)."""

    def __init__(self, config: StyleGAN3Config):
        c = config
        super().__init__(config)
        self.synthesis = SynthesisNetwork(
            c.w_dim, c.img_resolution, c.img_channels, channel_base=c.channel_base, channel_max=c.channel_max,
            num_layers=c.num_layers, num_critical=c.num_critical, first_cutoff=c.first_cutoff,
            first_stopband=c.first_stopband, last_stopband_rel=c.last_stopband_rel, margin_size=c.margin_size,
            output_scale=c.output_scale, num_fp16_res=c.num_fp16_res, conv_kernel=c.conv_kernel,
            use_radial_filters=c.use_radial_filters, conv_clamp=c.conv_clamp,
            magnitude_ema_beta=c.magnitude_ema_beta, fused_modconv=c.fused_modconv,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(c.z_dim, c.c_dim, c.w_dim, self.num_ws, num_layers=c.mapping_layers,
                                      lr_multiplier=c.mapping_lr_multiplier, w_avg_beta=c.w_avg_beta,
                                      w_avg_update_on="update_emas")


# ---------------------------------------------------------------------------------------------
# The family: train.py presets (T and R), published constructor arguments, capabilities.


def magnitude_ema_beta_for_batch(batch_size: int) -> float:
    """Magnitude EMA decay per minibatch in training: a half-life of 20 kimg."""
    return 0.5 ** (batch_size / (20 * 1e3))


def train_py_config_t(o: GeneratorOptions) -> StyleGAN3Config:
    """`train.py --cfg=stylegan3-t`."""
    return StyleGAN3Config(**o.sizes(), conv_clamp=o.clamp,
                           magnitude_ema_beta=magnitude_ema_beta_for_batch(o.batch_size))


def train_py_config_r(o: GeneratorOptions) -> StyleGAN3Config:
    """`train.py --cfg=stylegan3-r`: 1x1 convolutions and radially symmetric filters."""
    return dataclasses.replace(train_py_config_t(o), conv_kernel=1, use_radial_filters=True)


_PUBLISHED_TOP = Section(
    names={name: name for name in (
        *REQUIRED_G, "channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
        "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res", "conv_kernel", "use_radial_filters",
        "conv_clamp", "magnitude_ema_beta",
    )},
    fixed={"filter_size": FILTER_SIZE, "lrelu_upsampling": LRELU_UPSAMPLING},
)
_PUBLISHED_MAPPING = Section(
    names={"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"},
    fixed={"freeze_layers": 0, "freeze_embed": False},
)


def from_published(init: Mapping[str, Any]) -> StyleGAN3Config:
    """Published `training/networks_stylegan3.py Generator` kwargs -> our config. The published
    constructor takes the synthesis and per-layer options flat (they travel through
    `**synthesis_kwargs` / `**layer_kwargs`) and the mapping options in `mapping_kwargs`."""
    fields = translate_published("StyleGAN3 generator", init, REQUIRED_G, _PUBLISHED_TOP,
                                 {"mapping_kwargs": _PUBLISHED_MAPPING})
    return config_from_dict(StyleGAN3Config, fields, "StyleGAN3 generator")


FAMILY = Family(
    name="stylegan3", role="G", config=StyleGAN3Config, network=Generator, published_name="stylegan3.Generator",
    from_published=from_published, marker="synthesis.input.freqs",
    capabilities=frozenset({Capability.USER_TRANSFORM, Capability.FUSED_LRELU}),
    transform_buffer=lambda G: G.synthesis.input.transform,
    presets=(
        Preset("stylegan3-t", train_py_config_t, glr=0.0025, mapping_layers=2,
               matches=lambda config: not config.use_radial_filters),
        Preset("stylegan3-r", train_py_config_r, glr=0.0025, mapping_layers=2, capacity_factor=2, blur_init_sigma=10,
               matches=lambda config: config.use_radial_filters),
    ),
)
