"""One training iteration: the G and D phases at their intervals, then the G_ema update.

This is the exact code the trainer runs; `benchmarks/bench_train.py` calls it too.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from creps.config import OptimizerConfig, TrainConfig
from creps.nets.registry import build, set_training_switches
from creps.train.augment import AdaStats, build_augment_pipe
from creps.parallel import SINGLE, World, average_gradients
from creps.ops.compiled import CompiledCall
from creps.train.compiled import on_device
from creps.train.draws import Draws
from creps.train.ema import ema_beta, update_ema
from creps.train.loss import GANLoss, LossModules, Phase
from creps.train.stats import StatsCollector


@dataclass
class Networks:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module


def build_networks(cfg: TrainConfig, device: torch.device) -> Networks:
    G = build(cfg.G).to(device).train().requires_grad_(False)
    D = build(cfg.D).to(device).train().requires_grad_(False)
    set_training_switches(G, recompute=on_device(cfg.recompute, device), fused_ops=on_device(cfg.compile, device))
    G_ema = copy.deepcopy(G).eval()
    return Networks(G=G, D=D, G_ema=G_ema)


def lazy_regularization_adam(opt: OptimizerConfig) -> tuple[float, tuple[float, float]]:
    """Adam lr and betas corrected for lazy regularisation every k minibatches:
    with r = k / (k + 1), lr' = lr * r and beta' = beta ** r."""
    if opt.reg_interval is None:
        return opt.lr, tuple(opt.betas)
    ratio = opt.reg_interval / (opt.reg_interval + 1)
    return opt.lr * ratio, (opt.betas[0] ** ratio, opt.betas[1] ** ratio)


def make_adam(params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Adam:
    """Adam; the fused CUDA kernel (one launch for all parameters) when every parameter is a
    CUDA float tensor, else the multi-tensor (foreach) path."""
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                            **({"fused": True} if fused else {"foreach": True}))


def build_phases(cfg: TrainConfig, nets: Networks) -> list[Phase]:
    phases = []
    for prefix, module, opt_cfg in (("G", nets.G, cfg.G_opt), ("D", nets.D, cfg.D_opt)):
        lr, betas = lazy_regularization_adam(opt_cfg)
        params = list(module.parameters())  # frozen D layers are buffers, never seen here
        opt = make_adam(params, lr, betas, opt_cfg.eps)
        if opt_cfg.reg_interval is None:
            phases.append(Phase(f"{prefix}both", module, opt, 1))
        else:
            phases.append(Phase(f"{prefix}main", module, opt, 1))
            phases.append(Phase(f"{prefix}reg", module, opt, opt_cfg.reg_interval))
    return phases


def autocast_factory(device: torch.device, fp32: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """Mixed precision: bfloat16 autocast on CUDA unless --fp32; float32 on CPUs."""
    enabled = device.type == "cuda" and not fp32
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def sanitize_grads(params: list[torch.nn.Parameter]) -> None:
    """Replace NaN/Inf gradients so that one bad minibatch cannot poison the weights."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)


def compiled_modules(nets: Networks, log: Callable[[str], None]) -> LossModules:
    """G's mapping and synthesis and D through torch.compile, for the main phases."""
    return LossModules(mapping=CompiledCall(nets.G.mapping, "G.mapping", log),
                       synthesis=CompiledCall(nets.G.synthesis, "G.synthesis", log),
                       D=CompiledCall(nets.D, "D", log))


class Trainer:
    def __init__(self, cfg: TrainConfig, nets: Networks, device: torch.device,
                 sample_labels: Callable[[int], torch.Tensor], stats: Optional[StatsCollector] = None,
                 world: World = SINGLE, log: Callable[[str], None] = print):
        self.cfg, self.nets, self.device, self.world = cfg, nets, device, world
        self.sample_labels = sample_labels
        self.stats = stats or StatsCollector()
        self.draws = Draws(cfg.G.z_dim, sample_labels, device)
        self.phases = build_phases(cfg, nets)
        self.augment_pipe = build_augment_pipe(cfg.augment, device)
        self.ada = AdaStats.from_config(cfg.augment, cfg.batch_size, device, world)
        self.compiled = on_device(cfg.compile, device)
        self.loss = GANLoss(nets.G, nets.D, cfg.loss, self.stats, self.draws, augment=self.augment_pipe,
                            autocast=autocast_factory(device, cfg.fp32),
                            on_real_logits=self.ada.accumulate if self.ada is not None else None,
                            main=compiled_modules(nets, log) if self.compiled else None)
        self.rounds = cfg.batch_size // (cfg.batch_gpu * cfg.num_gpus)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per network ("G", "D"), shared by its main and reg phases."""
        return {phase.name[0]: phase.opt for phase in self.phases}

    def augment_p(self) -> float:
        return float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides weights and optimizers that training carries from step to step."""
        state = {"pl_mean": self.loss.pl_mean.detach().clone(), "label_rng": self.sample_labels.get_state()}
        if self.augment_pipe is not None:
            state["augment_p"] = self.augment_pipe.p.detach().clone()
        if self.ada is not None:
            sums = self.ada.state_dict()
            state["ada_sums"] = torch.tensor([sums["sign_sum"], sums["count"]], dtype=torch.float64)
        return state

    def load_extra_state(self, state: dict[str, Optional[torch.Tensor]]) -> None:
        self.loss.pl_mean = state["pl_mean"].to(self.device)
        self.sample_labels.set_state(state["label_rng"])
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.copy_(state["augment_p"])
        if self.ada is not None and state.get("ada_sums") is not None:
            total, count = state["ada_sums"].tolist()
            self.ada.load_state_dict({"sign_sum": total, "count": count})

    def step(self, real_img: torch.Tensor, real_c: torch.Tensor, batch_idx: int, cur_nimg: int) -> None:
        """One iteration on this rank's share of the batch (uint8 images, float labels)."""
        real_img, real_c = self.prepare_reals(real_img, real_c)
        for phase in self.phases:
            if batch_idx % phase.interval != 0:
                continue
            n = real_img.shape[0]
            self.run_phase(phase, real_img, real_c, self.draws.latents(n), self.draws.labels(n), cur_nimg)
        self.update_ema(cur_nimg)
        if self.ada is not None and self.ada.ready(batch_idx + 1):
            self.ada.step_p(self.augment_pipe)

    def prepare_reals(self, real_img: torch.Tensor, real_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> float32 in [-1, 1] on the device; labels on the device."""
        real_img = real_img.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1
        return real_img, real_c.to(self.device, non_blocking=True)

    def update_ema(self, cur_nimg: int) -> None:
        cfg = self.cfg
        update_ema(self.nets.G_ema, self.nets.G, ema_beta(cfg.batch_size, cur_nimg, cfg.ema_kimg, cfg.ema_rampup))

    def run_phase(self, phase: Phase, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                  gen_c: torch.Tensor, cur_nimg: int) -> None:
        """One phase on this rank's batch (prepared reals, the phase's latents and labels):
        gradients over --batch-gpu rounds, averaged over ranks, sanitised, one Adam step."""
        split = self.cfg.batch_gpu
        self._run_phase(phase, real_img.split(split), real_c.split(split), gen_z.split(split), gen_c.split(split),
                        cur_nimg)

    def _run_phase(self, phase: Phase, real_imgs, real_cs, gen_zs, gen_cs, cur_nimg: int) -> None:
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        # Each round's loss is a mean over its images; dividing the gain by the number of
        # rounds makes the accumulated gradient the mean over the whole batch, so
        # --batch-gpu changes memory use, not the training.
        gain = phase.interval / len(real_imgs)
        for real_img, real_c, gen_z, gen_c in zip(real_imgs, real_cs, gen_zs, gen_cs):
            self.loss.accumulate(phase.name, real_img, real_c, gen_z, gen_c, gain=gain, cur_nimg=cur_nimg)
        phase.module.requires_grad_(False)
        params = [p for p in phase.module.parameters() if p.grad is not None]
        average_gradients(params, self.world)
        sanitize_grads(params)
        phase.opt.step()
