"""The frame every generator shares: z (+ label) -> mapping, in float32 -> ws -> synthesis."""

from __future__ import annotations

from typing import Any, Optional

import torch

from creps.nets.precision import autocast_off

NOISE_MODES = ("random", "const", "none")


def check_synthesis_inputs(ws: torch.Tensor, noise_mode: str, num_ws: int, w_dim: int) -> None:
    """A StyleGAN synthesis call takes a known noise mode and ws [N, num_ws, w_dim]."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (num_ws, w_dim):
        raise ValueError(f"ws must have shape [N, {num_ws}, {w_dim}], got {list(ws.shape)}")


class MappedGenerator(torch.nn.Module):
    """A generator whose subclass builds `synthesis` and then `mapping` (that order keeps the
    published state_dict order); the mapping always runs in float32. `config` is the family's
    config dataclass the generator was built from."""

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels

    def mapped_ws(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                  truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """ws [N, num_ws, w_dim] for latents z and labels c, computed in float32 even under autocast."""
        with autocast_off(z.device.type):
            return self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                update_emas=update_emas)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False, noise_mode: str = "random",
                force_fp32: bool = False, fused_modconv: Optional[bool] = None) -> torch.Tensor:
        ws = self.mapped_ws(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, force_fp32=force_fp32,
                              fused_modconv=fused_modconv)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
