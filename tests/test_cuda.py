"""CUDA checks (skipped without a CUDA device): same numbers as the CPU in float32, and a
mixed-precision training step that stays finite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from creps.config import DatasetInfo, TrainOptions, resolve
from creps.nets.creps import CrepsConfig, Generator
from creps.train.feed import LabelSampler
from creps.train.step import Trainer, build_networks

pytestmark = pytest.mark.cuda


def test_creps_generator_cuda_matches_cpu_in_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    G = Generator(CrepsConfig(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, channel_base=1024,
                  channel_max=64, mapping_layers=2)).eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        cpu = G(z, None)
        gpu = G.cuda()(z.cuda(), None).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-3


@pytest.mark.parametrize("fp32", [False, True])
def test_training_step_on_cuda_is_finite(fp32):
    options = TrainOptions(outdir="-", cfg="creps", data="-", gpus=1, batch=8, gamma=1.0, aug="noaug", cbase=1024,
                           cmax=64, map_depth=2, mbstd_group=4, metrics=(), fp32=fp32)
    cfg = resolve(options, DatasetInfo("-", "random", 32, 3, 100, False, 0))
    device = torch.device("cuda")
    nets = build_networks(cfg, device)
    trainer = Trainer(cfg, nets, device, LabelSampler(np.zeros((1, 0)), 0))
    before = [p.detach().clone() for p in nets.G.parameters()]
    reals = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    for i in range(16):
        trainer.step(reals, torch.zeros(8, 0), i, i * 8)
    stats = trainer.stats.collect()
    for name in ("Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty"):
        assert np.isfinite(stats[name]["mean"]), name
    changed = [not torch.equal(a, b) for a, b in zip(before, nets.G.parameters())]
    assert sum(changed) > len(changed) // 2
