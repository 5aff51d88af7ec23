"""Random weights files in the published VGG16 (torchvision) and LPIPS layouts, for tests."""

from __future__ import annotations

import math

import torch

WIDTH = 1 / 16  # 4 .. 32 channels
FC = 32
CLASSES = 10
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision's VGG16 `features`


def vgg_state(seed: int = 0, width: float = WIDTH, fc: int = FC, classes: int = CLASSES) -> dict[str, torch.Tensor]:
    """Random VGG16 weights with torchvision's keys, scaled to keep activations O(1)."""
    gen = torch.Generator().manual_seed(seed)
    state, channels = {}, 3
    outs = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for idx, out in zip(CONV_INDICES, outs):
        out = max(1, round(out * width))
        fan_in = channels * 9
        state[f"features.{idx}.weight"] = torch.randn(out, channels, 3, 3, generator=gen) * math.sqrt(2 / fan_in)
        state[f"features.{idx}.bias"] = torch.randn(out, generator=gen) * 0.1
        channels = out
    for idx, (n_in, n_out) in zip((0, 3, 6), ((channels * 49, fc), (fc, fc), (fc, classes))):
        state[f"classifier.{idx}.weight"] = torch.randn(n_out, n_in, generator=gen) * math.sqrt(2 / n_in)
        state[f"classifier.{idx}.bias"] = torch.randn(n_out, generator=gen) * 0.1
    return state


def lin_state(seed: int = 1, width: float = WIDTH) -> dict[str, torch.Tensor]:
    """Random non-negative LPIPS weights with LPIPS's keys and shapes [1, C, 1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, max(1, round(c * width)), 1, 1, generator=gen)
            for k, c in enumerate((64, 128, 256, 512, 512))}
