"""CREPS's modulated fully connected layer: a per-sample (de)modulated weight applied to
[N, M, I] inputs as one batched matmul, keeping only x, the weight and the styles for
backward. `_modulated_linear` is the plain expression, the reference the kernel is tested
against and what a double backward differentiates.
"""

from __future__ import annotations

import torch


def modulated_linear(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Per-sample modulated (and optionally demodulated) linear map: [N, M, I] -> [N, M, O].

    w'_noi = w_oi * s_ni; with demodulation w''_noi = w'_noi / sqrt(sum_i w'_noi^2 + 1e-8).
    With gradients recorded it runs as `_ModulatedLinear`, which keeps x, the weight and the
    styles for backward instead of the per-sample weights (two [N, O, I] tensors a layer).
    """
    if torch.is_grad_enabled():
        return _ModulatedLinear.apply(x, weight, styles, demodulate)
    return _modulated_linear(x, weight, styles, demodulate)


def _modulated_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    w = weight.unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
    if demodulate:
        w = w * (w.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
    return w


def _modulated_linear(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """The plain expression of `modulated_linear`."""
    return torch.bmm(x, _modulated_weight(weight, styles, demodulate).transpose(1, 2).to(x.dtype))


class _ModulatedLinear(torch.autograd.Function):
    """`modulated_linear` keeping x, weight [O, I] and styles [N, I] for backward; the per-sample
    weights are recomputed there. The backward is written out: the bmm products in the
    forward's compute precision, the modulation and demodulation in float32. When the backward
    is itself differentiated (path-length regularisation) it differentiates the plain
    expression, re-run on the saved inputs under the forward's autocast state, instead."""

    @staticmethod
    def forward(ctx, x, weight, styles, demodulate):
        ctx.demodulate = demodulate
        ctx.device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(ctx.device_type), torch.get_autocast_dtype(ctx.device_type))
        ctx.save_for_backward(x, weight, styles)
        y = _modulated_linear(x, weight, styles, demodulate)
        ctx.compute_dtype = y.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, styles = ctx.saved_tensors
        if torch.is_grad_enabled():
            enabled, dtype = ctx.autocast
            needed = [t for t, need in zip((x, weight, styles), ctx.needs_input_grad) if need]
            with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
                y = _modulated_linear(x, weight, styles, ctx.demodulate)
            grads = iter(torch.autograd.grad(y, needed, dy, create_graph=True, allow_unused=True))
            return tuple(next(grads) if need else None for need in ctx.needs_input_grad[:3]) + (None,)
        with torch.autocast(ctx.device_type, enabled=False):
            cdt = ctx.compute_dtype
            w = _modulated_weight(weight, styles, ctx.demodulate)  # float32 [N, O, I]
            dy = dy.to(cdt)
            dx = torch.bmm(dy, w.to(cdt)).to(x.dtype) if ctx.needs_input_grad[0] else None
            dweight = dstyles = None
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                dw = torch.bmm(dy.transpose(1, 2), x.to(cdt)).to(w.dtype)  # d loss / d w, [N, O, I]
                if ctx.demodulate:  # w = v * d with v = weight * styles, d = (sum_i v^2 + eps)^-1/2
                    v = weight.unsqueeze(0) * styles.unsqueeze(1)
                    d = (v.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
                    dw = dw * d - v * (d.pow(3) * (dw * v).sum(dim=2, keepdim=True))
                if ctx.needs_input_grad[1]:
                    dweight = (dw * styles.unsqueeze(1)).sum(dim=0).to(weight.dtype)
                if ctx.needs_input_grad[2]:
                    dstyles = (dw * weight.unsqueeze(0)).sum(dim=1).to(styles.dtype)
        return dx, dweight, dstyles, None
