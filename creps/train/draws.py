"""Every random number a training iteration draws, in one place.

The trainer and the loss draw only through a `Draws` object: latents and labels per phase,
the path-length direction, the style-mixing choice. All draws are made on the training
device without reading anything back, so an iteration never waits for the device. A caller
that needs given draws (e.g. to replay one recorded iteration) replaces these methods.
"""

from __future__ import annotations

from typing import Callable

import torch


class Draws:
    def __init__(self, z_dim: int, sample_labels: Callable[[int], torch.Tensor], device: torch.device):
        self.z_dim, self.sample_labels, self.device = z_dim, sample_labels, device

    def latents(self, n: int) -> torch.Tensor:
        """z ~ N(0, I), [n, z_dim], for one phase."""
        return torch.randn(n, self.z_dim, device=self.device)

    def labels(self, n: int) -> torch.Tensor:
        """Labels of n random training images ([n, 0] when unconditional), for one phase."""
        return self.sample_labels(n).to(self.device, non_blocking=True)

    def path_length_direction(self, img: torch.Tensor) -> torch.Tensor:
        """N(0, 1) per pixel, shaped like the generated images (before the 1/sqrt(H * W) scaling)."""
        return torch.randn_like(img)

    def mixing(self, z: torch.Tensor, num_ws: int, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Style mixing: (cutoff, z2). With probability `prob` the ws rows from cutoff on, a
        uniform index in [1, num_ws), come from the second latent z2; otherwise cutoff = num_ws
        (no row does). A 0-d device tensor, so choosing never synchronises."""
        cutoff = torch.randint(1, num_ws, [], device=z.device)
        mixed = torch.rand([], device=z.device) < prob
        cutoff = torch.where(mixed, cutoff, torch.full_like(cutoff, num_ws))
        return cutoff, torch.randn_like(z)
