"""Fused-in-spirit bias + activation + gain + clamp, in plain PyTorch.

The published code ships a CUDA kernel for this; `torch.compile` fuses the same chain of
element-wise operations, so the plain expression below is both the reference and the fast
path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    fn: Callable[[torch.Tensor], torch.Tensor]
    default_gain: float


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


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


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp); b is broadcast along `dim`."""
    spec = ACTIVATIONS[act]
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.fn(x)
    gain = spec.default_gain if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
