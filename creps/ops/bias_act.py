"""Bias + activation + gain + clamp, in plain PyTorch.

`bias_act` is the published operation y = clamp(act(x + b) * gain, -c, c). For leaky ReLU,
the activation every network here uses in its large layers, a fused autograd function
keeps only the output for the backward pass (the derivative follows from the output's sign
and whether it was clamped), instead of the three intermediate tensors that the plain
expression keeps. Its backward is itself built from differentiable operations, so R1 and
path-length regularisation (double backward) work through it. `bias_act_reference` is the
plain expression, kept for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class Activation:
    fn: Callable[[torch.Tensor], torch.Tensor]
    default_gain: float


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x: x, 1.0),
    "relu": Activation(F.relu, math.sqrt(2)),
    "lrelu": Activation(_lrelu, math.sqrt(2)),
    "tanh": Activation(torch.tanh, 1.0),
    "sigmoid": Activation(torch.sigmoid, 1.0),
    "swish": Activation(F.silu, math.sqrt(2)),
}


def default_gain(act: str) -> float:
    return ACTIVATIONS[act].default_gain


def _bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    shape = [1] * x.ndim
    shape[dim] = -1
    return shape


def bias_act_reference(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                       gain: Optional[float] = None, clamp: Optional[float] = None) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), step by step."""
    spec = ACTIVATIONS[act]
    if b is not None:
        x = x + b.to(x.dtype).reshape(_bias_shape(x, dim))
    x = spec.fn(x)
    gain = spec.default_gain if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _lrelu_grad(dy: torch.Tensor, y: torch.Tensor, gain: float, clamp: Optional[float]) -> torch.Tensor:
    """dy * d y / d (x + b), from the output alone: gain (or slope * gain, where y <= 0), and 0
    where clamped. (leaky_relu_backward reads the slope side from the sign of its output.)"""
    dx = torch.ops.aten.leaky_relu_backward(dy * gain if gain != 1 else dy, y, LRELU_SLOPE, True)
    if clamp is not None:
        dx = torch.where(y.abs() < clamp, dx, 0)
    return dx


class _LReLUBackward(torch.autograd.Function):
    """dx = dy * scale(y); differentiable in dy, so it can be part of a double backward."""

    @staticmethod
    def forward(ctx, dy, y, gain, clamp):
        ctx.save_for_backward(y)
        ctx.gain, ctx.clamp = gain, clamp
        return _lrelu_grad(dy, y, gain, clamp)

    @staticmethod
    def backward(ctx, ddx):
        (y,) = ctx.saved_tensors
        # The activation is piecewise linear: no second-order term in y.
        return _LReLUBackward.apply(ddx, y, ctx.gain, ctx.clamp), None, None, None


class _BiasLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, gain, clamp):
        # One new tensor, updated in place (x itself is never written).
        y = F.leaky_relu(x, LRELU_SLOPE) if b is None else \
            F.leaky_relu(x + b.to(x.dtype).reshape(_bias_shape(x, dim)), LRELU_SLOPE, inplace=True)
        if gain != 1:
            y.mul_(gain)
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.dim, ctx.gain, ctx.clamp = dim, gain, clamp
        ctx.b_dtype = None if b is None else b.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = _LReLUBackward.apply(dy, y, ctx.gain, ctx.clamp)
        db = None
        if ctx.b_dtype is not None and ctx.needs_input_grad[1]:
            dim = ctx.dim % dx.ndim
            db = dx.sum(dim=[d for d in range(dx.ndim) if d != dim]).to(ctx.b_dtype)
        return dx, db, None, None, None


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             gain: Optional[float] = None, clamp: Optional[float] = None) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp); b is broadcast along `dim`."""
    if act == "lrelu":
        g = ACTIVATIONS[act].default_gain if gain is None else float(gain)
        c = float(clamp) if clamp is not None and clamp >= 0 else None
        return _BiasLReLU.apply(x, b, dim, g, c)
    return bias_act_reference(x, b, dim, act, gain, clamp)
