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

`filtered_lrelu` is one autograd function that keeps, for the backward pass, only one int8
code per sample at the temporary (upsampled) rate: positive, negative or clamped. The backward
pass is the adjoint chain (transposed down-filter, times the activation's slope, transposed
up-filter), written with differentiable ops, so double backward (R1, path length) works.
Separable filters are applied one axis at a time, upsampling polyphase (see `upfirdn2d`).
With `fused=True` the forward and the first-order backward run through `torch.compile`
(`creps.ops.compiled`: Triton kernels on CUDA, C++ on CPUs; plain again if compiling fails).
`filtered_lrelu_reference` computes the same from the definitions, one step at a time with
the tap-by-tap `upfirdn2d_reference`, for tests.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from creps.ops.compiled import CompiledCall
from creps.ops.upfirdn2d import (
    Padding,
    filter_size,
    parse_padding,
    transposed_padding,
    upfirdn2d,
    upfirdn2d_reference,
)


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


def _resample(x: torch.Tensor, f: Optional[torch.Tensor], up: int, down: int, pads: tuple[int, int, int, int],
              flip_filter: bool, gain: float) -> torch.Tensor:
    """`upfirdn2d` with equal factors on both axes (a separable filter goes axis by axis there,
    upsampling without zero-stuffed images)."""
    return upfirdn2d(x, f, up=up, down=down, padding=list(pads), flip_filter=flip_filter, gain=gain)


def _resample_adjoint(dy: torch.Tensor, f: Optional[torch.Tensor], up: int, down: int,
                      pads: tuple[int, int, int, int], flip_filter: bool, gain: float,
                      in_size: tuple[int, int]) -> torch.Tensor:
    """Gradient wrt the input of `_resample` (same arguments), for an input of (h, w) `in_size`:
    the transposed resampling (see `upfirdn2d.transposed_padding`)."""
    back = transposed_padding(f, (in_size[1], in_size[0]), (dy.shape[3], dy.shape[2]), (up, up), (down, down), pads)
    return _resample(dy, f, down, up, back, not flip_filter, gain)


def _activation_code(pre: torch.Tensor, act: torch.Tensor, clamp: Optional[float]) -> torch.Tensor:
    """int8 per sample: +1 where the activation's input was positive, -1 where not, 0 where clamped."""
    code = torch.where(pre > 0, 1, -1).to(torch.int8)
    if clamp is not None:
        code = code * (act.abs() < clamp).to(torch.int8)
    return code


def _activation_grad(da: torch.Tensor, code: torch.Tensor, gain: float, slope: float) -> torch.Tensor:
    """d(loss)/d(pre-activation): gain (positive side) or slope * gain, and 0 where clamped."""
    dpre = torch.where(code > 0, da * gain, da * (gain * slope))  # scalars keep da's precision
    return dpre.masked_fill(code == 0, 0)


def _forward(x, b, fu, fd, up: int, down: int, pads, gain: float, slope: float, clamp: Optional[float],
             flip_filter: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, int8 activation code): bias, upsample, leaky ReLU, gain, clamp, downsample."""
    y = x if b is None else x + b.to(x.dtype).reshape(1, -1, 1, 1)
    pre = _resample(y, fu, up, 1, pads, flip_filter, float(up**2))
    del y
    act = F.leaky_relu(pre, slope) if slope != 1 else pre
    if gain != 1:
        act = act * gain
    if clamp is not None:
        act = act.clamp(-clamp, clamp)
    code = _activation_code(pre, act, clamp)
    del pre
    return _resample(act, fd, 1, down, (0, 0, 0, 0), flip_filter, 1.0), code


def _backward(dout, code, fu, fd, up: int, down: int, pads, gain: float, slope: float, flip_filter: bool,
              x_size: tuple[int, int]) -> torch.Tensor:
    """d(loss)/d(biased input) from d(loss)/d(output): the adjoint chain, differentiable."""
    tmp_size = (code.shape[2], code.shape[3])
    da = _resample_adjoint(dout, fd, 1, down, (0, 0, 0, 0), flip_filter, 1.0, tmp_size)
    dpre = _activation_grad(da, code, gain, slope)
    return _resample_adjoint(dpre, fu, up, 1, pads, flip_filter, float(up**2), x_size)


# The fused path: the same two functions through torch.compile, so that each runs as a few
# generated kernels instead of a dozen passes over the upsampled tensor. Only the forward and
# the first-order backward are compiled; a backward that is itself differentiated (R1, path
# length) runs the plain adjoint. Made on first use; plain again if compiling fails.
_FUSED: dict[str, CompiledCall] = {}


def _fused(name: str, fn):
    if name not in _FUSED:
        _FUSED[name] = CompiledCall(fn, f"filtered_lrelu {name}")
    return _FUSED[name]


class _FilteredLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, up, down, pads, gain, slope, clamp, flip_filter, fused):
        forward = _fused("forward", _forward) if fused else _forward
        out, code = forward(x, b, fu, fd, up, down, pads, gain, slope, clamp, flip_filter)
        ctx.save_for_backward(code, fu, fd)
        ctx.up, ctx.down, ctx.pads = up, down, pads
        ctx.gain, ctx.slope, ctx.flip_filter, ctx.fused = gain, slope, flip_filter, fused
        ctx.x_size, ctx.x_dtype = (x.shape[2], x.shape[3]), x.dtype
        ctx.b_dtype = None if b is None else b.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        code, fu, fd = ctx.saved_tensors
        backward = _fused("backward", _backward) if ctx.fused and not torch.is_grad_enabled() else _backward
        dx = backward(dout, code, fu, fd, ctx.up, ctx.down, ctx.pads, ctx.gain, ctx.slope, ctx.flip_filter,
                      ctx.x_size)
        db = None
        if ctx.b_dtype is not None and ctx.needs_input_grad[1]:
            db = dx.sum(dim=[0, 2, 3]).to(ctx.b_dtype)
        dx = dx.to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return dx, db, None, None, None, None, None, None, None, None, None, None


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
    fused: bool = False,
) -> torch.Tensor:
    """Bias, upsample with fu, leaky ReLU with gain and clamp, downsample with fd (module doc).
    `fused` runs the compiled path (same results to float rounding); inside a region that is
    being compiled as a whole, the plain path is what gets compiled."""
    _check_args(x, b, up, down, gain, slope, clamp)
    pads = parse_padding(padding)
    clamp = None if clamp is None else float(clamp)
    fused = fused and not torch.compiler.is_compiling()
    return _FilteredLReLU.apply(x, b, fu, fd, up, down, pads, float(gain), float(slope), clamp, flip_filter, fused)


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
    biased = x if b is None else x + b.to(x.dtype).reshape(1, -1, 1, 1)
    upsampled = upfirdn2d_reference(biased, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up**2)
    activated = torch.where(upsampled >= 0, upsampled, upsampled * slope) * gain
    if clamp is not None:
        activated = activated.clamp(-clamp, clamp)
    out = upfirdn2d_reference(activated, fd, down=down, flip_filter=flip_filter)
    if (out.shape[2], out.shape[3]) != expected:
        raise AssertionError(f"filtered_lrelu output {tuple(out.shape[2:])}, expected {expected}")
    return out
