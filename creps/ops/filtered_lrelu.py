"""Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3, in plain PyTorch.

Per channel of a batch of 2-D images (the published `filtered_lrelu` semantics):

1. add the channel's bias `b`;
2. upsample by `up` (insert up - 1 zeros after every pixel), pad by `padding` (negative
   amounts crop) and convolve with the up-sampling filter `fu`, scaled by up**2 so the
   signal keeps its magnitude (a "valid" convolution, see `upfirdn2d`);
3. leaky ReLU with negative slope `slope`, times `gain`, clamped to [-clamp, clamp];
4. convolve with the down-sampling filter `fd` and keep every `down`-th pixel.

The nonlinearity runs at the higher, temporary sampling rate, and the two low-pass filters
remove what it creates above the output's Nyquist frequency. Filters are float32 tensors as
`upfirdn2d` takes them: [taps] (separable), [h, w] (2-D, e.g. radial) or None (identity).
`flip_filter` correlates instead of convolving.

`filtered_lrelu` chains `upfirdn2d` and the fused `bias_act` leaky ReLU (which keeps only its
output for the backward pass); every step is differentiable to any order.
`filtered_lrelu_reference` computes the same from the definitions, one step at a time with
the tap-by-tap `upfirdn2d_reference`, for tests.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from creps.ops.bias_act import LRELU_SLOPE, bias_act
from creps.ops.upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d, upfirdn2d_reference


def filtered_lrelu_output_size(in_size: tuple[int, int], fu: Optional[torch.Tensor], fd: Optional[torch.Tensor],
                               up: int, down: int, padding: Padding) -> tuple[int, int]:
    """(height, width) of the result for an input of (height, width) `in_size`."""
    px0, px1, py0, py1 = parse_padding(padding)
    (uw, uh), (dw, dh) = filter_size(fu), filter_size(fd)
    height = (in_size[0] * up + py0 + py1 - (uh - 1) - (dh - 1) + down - 1) // down
    width = (in_size[1] * up + px0 + px1 - (uw - 1) - (dw - 1) + down - 1) // down
    return height, width


def _check_args(x: torch.Tensor, b: Optional[torch.Tensor], up: int, down: int, gain: float, slope: float,
                clamp: Optional[float]) -> None:
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects [N, C, H, W], got shape {tuple(x.shape)}")
    if b is not None and tuple(b.shape) != (x.shape[1],):
        raise ValueError(f"bias must have shape [{x.shape[1]}], got {tuple(b.shape)}")
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f"up and down must be ints >= 1, got up={up!r}, down={down!r}")
    if not gain > 0 or not slope >= 0 or (clamp is not None and not clamp >= 0):
        raise ValueError(f"need gain > 0, slope >= 0, clamp None or >= 0; got {gain}, {slope}, {clamp}")


def _add_bias(x: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    return x if b is None else x + b.to(x.dtype).reshape(1, -1, 1, 1)


def _activation(x: torch.Tensor, gain: float, slope: float, clamp: Optional[float]) -> torch.Tensor:
    """clamp(lrelu_slope(x) * gain): the fused op for the usual slope, plain ops otherwise."""
    if slope == LRELU_SLOPE:
        return bias_act(x, None, act="lrelu", gain=gain, clamp=clamp)
    if slope != 1:  # slope 1 is the identity (the ToRGB layer): only gain and clamp remain
        x = F.leaky_relu(x, slope)
    return bias_act(x, None, act="linear", gain=gain, clamp=clamp)


def filtered_lrelu(
    x: torch.Tensor,
    fu: Optional[torch.Tensor] = None,
    fd: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: Optional[float] = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Bias, upsample with fu, leaky ReLU with gain and clamp, downsample with fd (module doc)."""
    _check_args(x, b, up, down, gain, slope, clamp)
    y = _add_bias(x, b)
    y = upfirdn2d(y, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up**2)
    y = _activation(y, float(gain), float(slope), None if clamp is None else float(clamp))
    return upfirdn2d(y, fd, down=down, flip_filter=flip_filter)


def filtered_lrelu_reference(
    x: torch.Tensor,
    fu: Optional[torch.Tensor] = None,
    fd: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: Optional[float] = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """`filtered_lrelu` step by step from the definitions (slow; for tests)."""
    _check_args(x, b, up, down, gain, slope, clamp)
    expected = filtered_lrelu_output_size((x.shape[2], x.shape[3]), fu, fd, up, down, padding)
    biased = _add_bias(x, b)
    upsampled = upfirdn2d_reference(biased, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up**2)
    activated = torch.where(upsampled >= 0, upsampled, upsampled * slope) * gain
    if clamp is not None:
        activated = activated.clamp(-clamp, clamp)
    out = upfirdn2d_reference(activated, fd, down=down, flip_filter=flip_filter)
    if (out.shape[2], out.shape[3]) != expected:
        raise AssertionError(f"filtered_lrelu output {tuple(out.shape[2:])}, expected {expected}")
    return out
