"""Exponential moving average of the generator weights (G_ema)."""

from __future__ import annotations

from typing import Optional

import torch


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: Optional[float]) -> float:
    """EMA decay per step: half-life of ema_kimg, ramped up to cur_nimg * ema_rampup early on."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers are copied."""
    ema_params = list(G_ema.parameters())
    params = [p.detach() for p in G.parameters()]
    if ema_params:
        torch._foreach_lerp_(ema_params, params, 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
