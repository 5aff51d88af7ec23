"""The shared-weight ("unfused") modulated convolution of StyleGAN2/3: x scaled per sample by
the styles, one conv with a weight shared by all samples, then scaled by the demodulation
coefficients. Unresampled, with gradients recorded, it runs as `_StyledConv`, which keeps x
instead of x * styles for backward; `_unfused_conv` is the plain expression, the reference
the kernel is tested against and what a double backward differentiates.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from creps.ops.conv2d_resample import conv2d_resample


def unfused_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, dcoefs: Optional[torch.Tensor],
                 up: int = 1, padding: int = 0, resample_filter: Optional[torch.Tensor] = None,
                 flip_weight: bool = True) -> torch.Tensor:
    """x scaled by the styles [N, I], one conv with weight [O, I, k, k] shared by all samples,
    then scaled by the demodulation coefficients [N, O] (if any), in x's precision. Without
    resampling (the filter only matters when up > 1) and with gradients recorded, it runs as
    `_StyledConv`, which keeps x instead of x * styles for backward."""
    if up == 1 and isinstance(padding, int) and padding >= 0 and torch.is_grad_enabled():
        w = weight if flip_weight or weight.shape[2] * weight.shape[3] == 1 else weight.flip([2, 3])
        return _StyledConv.apply(x, styles, w.to(x.dtype), dcoefs, padding)
    return _unfused_conv(x, weight, styles, dcoefs, up, padding, resample_filter, flip_weight)


def _unfused_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, dcoefs: Optional[torch.Tensor],
                  up: int = 1, padding: int = 0, resample_filter: Optional[torch.Tensor] = None,
                  flip_weight: bool = True) -> torch.Tensor:
    """The plain expression of `unfused_conv` (autograd keeps x * styles)."""
    n, in_ch = x.shape[0], x.shape[1]
    y = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
    y = conv2d_resample(y, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    if dcoefs is not None:
        y = y * dcoefs.to(y.dtype).reshape(n, -1, 1, 1)
    return y


class _StyledConv(torch.autograd.Function):
    """y = conv2d(x * s, w, padding) * d for the unresampled convolutions, keeping x rather
    than x * s for backward (x * s is recomputed there: one product, against an input-sized
    tensor per layer). Forward and backward run under the autocast state of the forward
    call, so every product is taken in the precision the plain expression would use. When
    the backward itself is differentiated (path-length regularisation), it re-runs the plain
    expression on the saved inputs and differentiates that, so higher derivatives are exact."""

    @staticmethod
    def forward(ctx, x, styles, weight, dcoefs, padding):
        ctx.device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(ctx.device_type), torch.get_autocast_dtype(ctx.device_type))
        ctx.padding = padding
        out = F.conv2d(x * styles.to(x.dtype).reshape(*styles.shape, 1, 1), weight, padding=padding)
        if dcoefs is None:
            ctx.save_for_backward(x, styles, weight)
            return out
        ctx.save_for_backward(x, styles, weight, dcoefs, out)
        return out * dcoefs.to(out.dtype).reshape(*dcoefs.shape, 1, 1)

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        x, styles, weight = saved[:3]
        dcoefs, out = saved[3:] if len(saved) == 5 else (None, None)
        enabled, dtype = ctx.autocast
        with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
            if torch.is_grad_enabled():  # a double backward: differentiate the plain expression
                return _StyledConv._differentiable_backward(ctx, dy, x, styles, weight, dcoefs)
            s = styles.to(x.dtype).reshape(*styles.shape, 1, 1)
            scaled = x * s
            d_out, d_dcoefs = dy, None
            if dcoefs is not None:
                d_out = dy * dcoefs.to(dy.dtype).reshape(*dcoefs.shape, 1, 1)
                if ctx.needs_input_grad[3]:
                    d_dcoefs = (dy * out).sum(dim=[2, 3]).to(dcoefs.dtype)
            conv_in = scaled.to(d_out.dtype)
            d_x = d_styles = d_weight = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                d_scaled = torch.nn.grad.conv2d_input(conv_in.shape, weight.to(d_out.dtype), d_out,
                                                      padding=ctx.padding).to(x.dtype)
                if ctx.needs_input_grad[0]:
                    d_x = d_scaled * s
                if ctx.needs_input_grad[1]:
                    d_styles = (d_scaled * x).sum(dim=[2, 3]).to(styles.dtype)
            if ctx.needs_input_grad[2]:
                d_weight = torch.nn.grad.conv2d_weight(conv_in, weight.shape, d_out,
                                                       padding=ctx.padding).to(weight.dtype)
        return d_x, d_styles, d_weight, d_dcoefs, None

    @staticmethod
    def _differentiable_backward(ctx, dy, x, styles, weight, dcoefs):
        inputs = [t for t, needed in zip((x, styles, weight, dcoefs), ctx.needs_input_grad) if needed]
        y = _unfused_conv(x, weight, styles, dcoefs, padding=ctx.padding)
        grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True, allow_unused=True))
        return tuple(next(grads) if needed else None for needed in ctx.needs_input_grad[:4]) + (None,)
