"""The StyleGAN2 family's losses: non-saturating logistic loss, lazy R1, path length.

Each penalty is a small function; `GANLoss.accumulate` runs one phase on one minibatch
round and calls backward with the phase's gain (the lazy-regularisation interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from creps.config import LossConfig
from creps.ops.upfirdn2d import filter2d
from creps.train.draws import Draws
from creps.train.stats import StatsCollector


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1: squared norm of dD(x)/dx on real images, per sample (graph kept for backward)."""
    (grad,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


def path_length_noise(img: torch.Tensor, normal: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Random image-space direction y = n / sqrt(H * W), n ~ N(0, 1) per pixel (drawn here unless
    given), for the path-length Jacobian product."""
    normal = torch.randn_like(img) if normal is None else normal
    return normal / math.sqrt(img.shape[2] * img.shape[3])


def path_lengths(img: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """|J_w^T y|: per sample, sqrt of the mean over ws rows of the squared gradient norm."""
    (grad,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: torch.Tensor, pl_mean: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length regulariser (|J^T y| - a)^2, with a the running mean of lengths; returns (penalty, new a)."""
    new_mean = pl_mean.lerp(lengths.mean(), decay)
    return (lengths - new_mean).square(), new_mean.detach()


def blur_sigma_at(cur_nimg: int, init_sigma: float, fade_kimg: float) -> float:
    """Discriminator input blur, fading linearly from init_sigma to 0 over fade_kimg."""
    if fade_kimg <= 0:
        return 0.0
    return max(1 - cur_nimg / (fade_kimg * 1e3), 0) * init_sigma


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with a kernel of radius floor(3 sigma), as applied to D's inputs."""
    radius = int(math.floor(sigma * 3))
    if radius <= 0:
        return img
    taps = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32).div(sigma).square().neg().exp2()
    return filter2d(img, taps / taps.sum())


def mix_styles(ws: torch.Tensor, mixed: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """Style mixing: rows [cutoff, num_ws) of ws from the second latent's ws (cutoff a 0-d tensor)."""
    rows = torch.arange(ws.shape[1], device=ws.device)
    return torch.where((rows >= cutoff).reshape(1, -1, 1), mixed, ws)


@dataclass
class LossModules:
    """What a loss pass calls: G's two halves and D. The main phases may call compiled
    versions of the same modules (same parameters); the regularisation phases, which
    differentiate twice, always call the plain ones."""

    mapping: Callable[..., torch.Tensor]
    synthesis: Callable[..., torch.Tensor]
    D: Callable[..., torch.Tensor]


@dataclass
class Phase:
    name: str  # Gmain, Greg, Gboth, Dmain, Dreg, Dboth
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


class GANLoss:
    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, cfg: LossConfig, stats: StatsCollector,
                 draws: Draws, augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 autocast: Optional[Callable[[], object]] = None,
                 on_real_logits: Optional[Callable[[torch.Tensor], None]] = None,
                 main: Optional[LossModules] = None):
        self.G, self.D, self.cfg, self.stats, self.draws = G, D, cfg, stats, draws
        self.augment = augment
        self.on_real_logits = on_real_logits  # e.g. ADA's statistics of sign(D(real))
        self.autocast = autocast
        self.plain = LossModules(mapping=G.mapping, synthesis=G.synthesis, D=D)
        self.main = main or self.plain  # what the main (single-backward) passes call
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    def _ctx(self):
        return self.autocast() if self.autocast is not None else torch.autocast("cpu", enabled=False)

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False,
              nets: Optional[LossModules] = None) -> tuple[torch.Tensor, torch.Tensor]:
        nets = nets or self.plain
        ws = nets.mapping(z, c, update_emas=update_emas)
        if self.cfg.style_mixing_prob > 0:
            cutoff, z2 = self.draws.mixing(z, ws.shape[1], self.cfg.style_mixing_prob)
            ws = mix_styles(ws, nets.mapping(z2, c, update_emas=False), cutoff)
        with self._ctx():
            img = nets.synthesis(ws, update_emas=update_emas)
        return img.float(), ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, update_emas: bool = False, blur_sigma: float = 0,
              nets: Optional[LossModules] = None) -> torch.Tensor:
        nets = nets or self.plain
        if blur_sigma > 0:
            img = gaussian_blur(img, blur_sigma)
        if self.augment is not None:
            img = self.augment(img)
        with self._ctx():
            return nets.D(img, c, update_emas=update_emas).float()

    def accumulate(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                   gen_c: torch.Tensor, gain: float, cur_nimg: int) -> None:
        cfg = self.cfg
        if cfg.pl_weight == 0:
            phase = {"Greg": "none", "Gboth": "Gmain"}.get(phase, phase)
        if cfg.r1_gamma == 0:
            phase = {"Dreg": "none", "Dboth": "Dmain"}.get(phase, phase)
        blur = blur_sigma_at(cur_nimg, cfg.blur_init_sigma, cfg.blur_fade_kimg)

        if phase in ("Gmain", "Gboth"):
            gen_img, _ = self.run_G(gen_z, gen_c, nets=self.main)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur, nets=self.main)
            loss = F.softplus(-gen_logits)  # -log sigmoid(D(G(z)))
            self.stats.report("Loss/scores/fake", gen_logits)
            self.stats.report("Loss/signs/fake", gen_logits.sign())
            self.stats.report("Loss/G/loss", loss)
            loss.mean().mul(gain).backward()

        if phase in ("Greg", "Gboth"):
            n = max(gen_z.shape[0] // cfg.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
            lengths = path_lengths(gen_img, gen_ws, path_length_noise(gen_img, self.draws.path_length_direction(gen_img)))
            penalty, self.pl_mean = path_length_penalty(lengths, self.pl_mean, cfg.pl_decay)
            loss = penalty * cfg.pl_weight
            self.stats.report("Loss/pl_penalty", penalty)
            self.stats.report("Loss/G/reg", loss)
            loss.mean().mul(gain).backward()

        loss_dgen = None
        if phase in ("Dmain", "Dboth"):
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True, nets=self.main)
            gen_logits = self.run_D(gen_img, gen_c, update_emas=True, blur_sigma=blur, nets=self.main)
            loss_dgen = F.softplus(gen_logits)  # -log(1 - sigmoid(D(G(z))))
            self.stats.report("Loss/scores/fake", gen_logits)
            self.stats.report("Loss/signs/fake", gen_logits.sign())
            loss_dgen.mean().mul(gain).backward()

        if phase in ("Dmain", "Dreg", "Dboth"):
            with_r1 = phase in ("Dreg", "Dboth")
            real = real_img.detach().requires_grad_(with_r1)
            real_logits = self.run_D(real, real_c, blur_sigma=blur, nets=self.plain if with_r1 else self.main)
            if self.on_real_logits is not None:
                self.on_real_logits(real_logits)
            self.stats.report("Loss/scores/real", real_logits)
            self.stats.report("Loss/signs/real", real_logits.sign())
            total = torch.zeros_like(real_logits)
            if phase in ("Dmain", "Dboth"):
                loss_dreal = F.softplus(-real_logits)  # -log sigmoid(D(x))
                total = total + loss_dreal
                self.stats.report("Loss/D/loss", loss_dreal + (loss_dgen.detach() if loss_dgen is not None else 0))
            if with_r1:
                penalty = r1_penalty(real_logits, real)
                loss_r1 = penalty * (cfg.r1_gamma / 2)
                total = total + loss_r1.unsqueeze(1)
                self.stats.report("Loss/r1_penalty", penalty)
                self.stats.report("Loss/D/reg", loss_r1)
            total.mean().mul(gain).backward()
