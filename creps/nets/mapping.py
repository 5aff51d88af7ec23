"""Mapping network z (+ class label) -> w, with the running mean of w used for truncation."""

from __future__ import annotations

from typing import Optional

import torch

from creps.nets.layers import FullyConnectedLayer, normalize_2nd_moment


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: Optional[int]) -> torch.Tensor:
    """Truncation trick: pull w toward the mean w by factor psi (rows < cutoff only, if given)."""
    if psi == 1:
        return ws
    if cutoff is None or ws.ndim == 2:
        return w_avg.lerp(ws, psi)
    head = w_avg.lerp(ws[:, :cutoff], psi)
    return torch.cat([head, ws[:, cutoff:]], dim=1)


def ema_update_w_avg(w_avg: torch.Tensor, batch_mean: torch.Tensor, beta: float) -> torch.Tensor:
    """Moving average of w: w_avg <- beta * w_avg + (1 - beta) * mean_batch(w)."""
    return batch_mean.to(w_avg.dtype).lerp(w_avg, beta)


# When the running mean of w moves (the two published code bases differ):
#   "train":       on training-mode passes without update_emas (VinAIResearch/CREPS's mapping);
#   "update_emas": on passes with update_emas=True, in any mode (NVlabs StyleGAN2/StyleGAN3).
W_AVG_UPDATE_RULES = ("train", "update_emas")


class MappingNetwork(torch.nn.Module):
    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: Optional[int],
        num_layers: int = 8,
        embed_features: Optional[int] = None,
        layer_features: Optional[int] = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: Optional[float] = 0.998,
        w_avg_update_on: str = "train",
    ):
        super().__init__()
        if w_avg_update_on not in W_AVG_UPDATE_RULES:
            raise ValueError(f"w_avg_update_on must be one of {W_AVG_UPDATE_RULES}, got {w_avg_update_on!r}")
        self.w_avg_update_on = w_avg_update_on
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            layer = FullyConnectedLayer(widths[i], widths[i + 1], activation=activation, lr_multiplier=lr_multiplier)
            self.add_module(f"fc{i}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def _moves_w_avg(self, update_emas: bool) -> bool:
        if self.w_avg_update_on == "update_emas":
            return update_emas
        return self.training and not update_emas

    def forward(
        self,
        z: Optional[torch.Tensor],
        c: Optional[torch.Tensor],
        truncation_psi: float = 1,
        truncation_cutoff: Optional[int] = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"this network needs labels of shape [N, {self.c_dim}]")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.w_avg_beta is not None and self._moves_w_avg(update_emas):
            with torch.no_grad():
                self.w_avg.copy_(ema_update_w_avg(self.w_avg, x.detach().mean(dim=0), self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = truncate(x, self.w_avg, truncation_psi, truncation_cutoff)
        return x
