"""Modulated convolution pieces shared by the StyleGAN2 and StyleGAN3 synthesis layers.

Each network prepares its styles and weights in float32 its own way (StyleGAN2 rescales
them only for float16, StyleGAN3 always normalises them and adds an input gain); the
demodulation formula, the per-sample weights and the two ways of running the conv
("fused": one grouped conv with per-sample weights; "non-fused": a shared conv between two
per-sample scalings, the same function: `creps.ops.styled_conv`) are the same and live here.
"""

from __future__ import annotations

from typing import Optional

import torch

from creps.ops.conv2d_resample import conv2d_resample

DEMOD_EPS = 1e-8


def use_fused(default: Optional[bool], override: Optional[bool], training: bool) -> bool:
    """Fused (grouped-conv) modulation unless told otherwise; by default only outside training."""
    choice = default if override is None else override
    return (not training) if choice is None else bool(choice)


def check_modconv_inputs(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> None:
    """x [N, I, H, W], weight [O, I, k, k] and styles [N, I] must agree."""
    n, in_ch = x.shape[0], x.shape[1]
    if weight.shape[1] != in_ch or tuple(styles.shape) != (n, in_ch):
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} do not agree"
        )


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Weight demodulation: 1 / sqrt(sum_{i,k} (w_oik * s_ni)^2 + eps), per sample and output -> [N, O]."""
    energy = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square() @ energy.t() + DEMOD_EPS).rsqrt()


def per_sample_weights(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Modulation: w'_noik = w_oik * s_ni -> [N, O, I, k, k]."""
    return weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, styles.shape[1], 1, 1)


def fused_conv(x: torch.Tensor, per_sample: torch.Tensor, up: int = 1, padding: int = 0,
               resample_filter: Optional[torch.Tensor] = None, flip_weight: bool = True) -> torch.Tensor:
    """x [N, I, H, W] convolved, sample by sample, with per-sample weights [N, O, I, k, k] as
    one grouped conv in x's precision."""
    n, out_ch, in_ch = per_sample.shape[:3]
    kernel = per_sample.reshape(n * out_ch, in_ch, *per_sample.shape[3:]).to(x.dtype)
    y = conv2d_resample(x.reshape(1, n * in_ch, *x.shape[2:]), kernel, f=resample_filter, up=up,
                        padding=padding, groups=n, flip_weight=flip_weight)
    return y.reshape(n, out_ch, *y.shape[2:])
