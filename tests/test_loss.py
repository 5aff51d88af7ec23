"""Loss formulas (R1, path length), lazy regularisation, EMA, and gradient accumulation."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from conftest import saved_bytes
from creps.config import DatasetInfo, OptimizerConfig, TrainOptions, resolve
from creps.nets.creps import CrepsConfig, Generator
from creps.nets.discriminator import Discriminator, DiscriminatorConfig
from creps.train.ema import ema_beta, update_ema
from creps.train.loss import path_length_noise, path_length_penalty, path_lengths, r1_penalty
from creps.train.step import Trainer, build_networks, lazy_regularization_adam

# ---------------------------------------------------------------------------------------
# R1.


def test_r1_of_linear_discriminator_is_weight_norm():
    """D(x) = <w, x> + b has dD/dx = w for every sample, so R1 = |w|^2 exactly."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 1)).double()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    penalty = r1_penalty(D(x), x)
    w = D[1].weight
    assert penalty.shape == (5,)
    torch.testing.assert_close(penalty, w.square().sum().expand(5).detach())
    # The graph is kept: d/dw sum_i |w|^2 = 2 N w.
    penalty.sum().backward()
    torch.testing.assert_close(w.grad, 2 * 5 * w.detach())


def test_r1_of_quadratic_discriminator():
    """D(x) = sum(x^2) / 2 has dD/dx = x, so R1 = |x|^2 per sample."""
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = (x.square().sum(dim=[1, 2, 3]) / 2).unsqueeze(1)
    torch.testing.assert_close(r1_penalty(logits, x), x.detach().square().sum(dim=[1, 2, 3]))


def test_r1_matches_direct_autograd_on_creps_discriminator():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32,
                      mbstd_group_size=2))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(x, None)
    penalty = r1_penalty(logits, x)
    # Direct: the full gradient of sum(D) w.r.t. x (minibatch-stddev couples samples), per-sample |.|^2.
    grad = torch.autograd.functional.jacobian(lambda img: D(img, None).sum(), x.detach())
    torch.testing.assert_close(penalty, grad.square().sum(dim=[1, 2, 3]), rtol=1e-4, atol=1e-6)
    # And an independent check of one directional derivative by central differences (in float64).
    D64 = copy.deepcopy(D).double()
    x64, v64 = x.detach().double(), torch.randn_like(x).double()
    eps = 1e-5
    with torch.no_grad():
        fd = (D64(x64 + eps * v64, None).sum() - D64(x64 - eps * v64, None).sum()) / (2 * eps)
    assert float((grad.double() * v64).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)
    # The penalty can be back-propagated into D (create_graph=True).
    penalty.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_r1_gradient_wrt_discriminator_weights():
    """The double backward that lazy R1 needs: d R1 / d theta against central differences (float64)."""
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32,
                      mbstd_group_size=2, conv_clamp=None)).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)

    def total_r1() -> torch.Tensor:
        img = x.clone().requires_grad_(True)
        return r1_penalty(D(img, None), img).sum()

    params = dict(D.named_parameters())
    total_r1().backward()
    eps = 1e-6
    checked = 0
    for name in (n for n in params if n.endswith("weight")):
        p = params[name]
        u = torch.randn_like(p)
        analytic = float((p.grad * u).sum())
        with torch.no_grad():
            p.add_(eps * u)
        plus = float(total_r1().detach())
        with torch.no_grad():
            p.sub_(2 * eps * u)
        minus = float(total_r1().detach())
        with torch.no_grad():
            p.add_(eps * u)
        fd = (plus - minus) / (2 * eps)
        assert analytic == pytest.approx(fd, rel=1e-3, abs=1e-6), name
        checked += 1
    assert checked >= 3


# ---------------------------------------------------------------------------------------
# Path length.


@pytest.fixture(scope="module")
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(CrepsConfig(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                     channel_max=32, mapping_layers=1)).eval()


def test_path_length_noise_scale():
    torch.manual_seed(0)
    img = torch.zeros(8, 3, 64, 32)
    noise = path_length_noise(img)
    assert noise.shape == img.shape
    assert float(noise.std()) == pytest.approx(1 / math.sqrt(64 * 32), rel=0.03)


def test_path_lengths_match_direct_computation(tiny_generator):
    G = tiny_generator
    torch.manual_seed(1)
    z = torch.randn(3, G.z_dim)
    ws = G.mapping(z, None).detach().requires_grad_(True)
    img = G.synthesis(ws)
    y = path_length_noise(img)
    lengths = path_lengths(img, ws, y)
    assert lengths.shape == (3,)

    # Direct: per sample i, J_i^T y_i with J_i = d img_i / d ws_i; then
    # sqrt(mean over ws rows of the squared norm of each row).
    expected = []
    grads = []
    for i in range(3):
        (g,) = torch.autograd.grad((img[i] * y[i]).sum(), ws, retain_graph=True)
        assert g[[j for j in range(3) if j != i]].abs().max() == 0  # samples are independent
        gi = g[i]
        grads.append(gi)
        rows = [float(gi[k].square().sum()) for k in range(gi.shape[0])]
        expected.append(math.sqrt(sum(rows) / len(rows)))
    torch.testing.assert_close(lengths.detach(), torch.tensor(expected), rtol=1e-4, atol=1e-7)

    # J^T y itself, against central differences: <J^T y, v> = d/dt <y, G(ws + t v)> at t = 0.
    # A tiny random CREPS is piecewise linear with very many kinks, so the tolerance is loose;
    # a wrong gain, a missing term or a wrong ws row would be far outside it.
    v = torch.randn_like(ws)
    eps = 1e-3
    with torch.no_grad():
        plus = (G.synthesis(ws + eps * v) * y).sum(dim=[1, 2, 3])
        minus = (G.synthesis(ws - eps * v) * y).sum(dim=[1, 2, 3])
    fd = (plus - minus) / (2 * eps)
    analytic = torch.stack([(grads[i].detach() * v[i]).sum() for i in range(3)])
    torch.testing.assert_close(analytic, fd, rtol=0.03, atol=0.05)

    # The graph is kept for the penalty's backward into G's weights.
    lengths.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.synthesis.parameters())
    G.zero_grad(set_to_none=True)


@pytest.mark.parametrize("decay", [0.01, 0.5, 1.0])
def test_path_length_penalty_running_mean(decay):
    lengths = torch.tensor([0.5, 1.0, 2.0, 4.5], requires_grad=True)
    a = torch.tensor(0.75)
    penalty, new_a = path_length_penalty(lengths, a, decay)
    mean = lengths.detach().mean()
    expected_a = a + decay * (mean - a)
    torch.testing.assert_close(new_a, expected_a)
    assert not new_a.requires_grad
    torch.testing.assert_close(penalty.detach(), (lengths.detach() - expected_a).square())
    # Repeated updates converge to the mean of constant lengths.
    a = torch.zeros([])
    for _ in range(2000):
        _, a = path_length_penalty(torch.full([4], 3.0), a, 0.01)
    assert float(a) == pytest.approx(3.0, rel=1e-5)


# ---------------------------------------------------------------------------------------
# Lazy regularisation and EMA.


@pytest.mark.parametrize("k", [4, 16])
def test_lazy_regularization_adam(k):
    lr, betas = lazy_regularization_adam(OptimizerConfig(lr=0.002, betas=(0.0, 0.99), reg_interval=k))
    r = k / (k + 1)
    assert lr == pytest.approx(0.002 * r)
    assert betas[0] == pytest.approx(0.0) and betas[1] == pytest.approx(0.99**r)
    lr, betas = lazy_regularization_adam(OptimizerConfig(lr=0.0025, betas=(0.5, 0.9), reg_interval=k))
    assert lr == pytest.approx(0.0025 * r) and betas == pytest.approx((0.5**r, 0.9**r))


def test_no_lazy_regularization_keeps_adam_settings():
    lr, betas = lazy_regularization_adam(OptimizerConfig(lr=0.0025, betas=(0.0, 0.99), reg_interval=None))
    assert lr == 0.0025 and tuple(betas) == (0.0, 0.99)


@pytest.mark.parametrize("batch,cur_nimg,ema_kimg,rampup", [
    (32, 10_000_000, 10, 0.05), (32, 1000, 10, 0.05), (32, 200_000, 10, 0.05), (64, 5000, 20, 0.05),
    (32, 1000, 10, None), (4, 40, 1.25, 0.05),
])
def test_ema_beta(batch, cur_nimg, ema_kimg, rampup):
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    expected = 0.5 ** (batch / ema_nimg)
    assert ema_beta(batch, cur_nimg, ema_kimg, rampup) == pytest.approx(expected, rel=1e-12)


def test_ema_beta_half_life():
    # Half-life of ema_kimg: after ema_kimg * 1000 / batch steps the old weights weigh 1/2.
    beta = ema_beta(32, 10**9, 10, 0.05)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # At the very start the ramp-up makes G_ema follow G exactly.
    assert ema_beta(32, 0, 10, 0.05) == 0


def test_update_ema_lerps_params_and_copies_buffers():
    torch.manual_seed(0)

    def net():
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        m[1].running_mean.normal_()
        return m

    G, G_ema = net(), net()
    before = copy.deepcopy(G_ema)
    beta = 0.3
    update_ema(G_ema, G, beta)
    for (name, p_ema), p_old, p in zip(G_ema.named_parameters(), before.parameters(), G.parameters()):
        torch.testing.assert_close(p_ema, beta * p_old + (1 - beta) * p, msg=name)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        torch.testing.assert_close(b_ema, b)
    # beta = 1 leaves parameters alone; beta = 0 copies G.
    snapshot = copy.deepcopy(G_ema)
    update_ema(G_ema, G, 1.0)
    for a, b in zip(G_ema.parameters(), snapshot.parameters()):
        torch.testing.assert_close(a, b)
    update_ema(G_ema, G, 0.0)
    for a, b in zip(G_ema.parameters(), G.parameters()):
        torch.testing.assert_close(a, b)


def test_w_avg_tracking_follows_published_creps(tiny_generator):
    """VinAIResearch/CREPS's mapping moves w_avg on training-mode passes *without* update_emas
    (the G phases), not on the D phase's pass (update_emas=True), and never in eval mode, so
    rendering with G_ema (truncation uses w_avg) leaves it alone."""
    G = copy.deepcopy(tiny_generator)
    z = torch.randn(4, G.z_dim)
    before = G.mapping.w_avg.clone()
    G.eval()
    G.mapping(z, None)
    G(z, None, truncation_psi=0.5)
    torch.testing.assert_close(G.mapping.w_avg, before, msg="an eval-mode pass moved w_avg")
    G.train()
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, before, msg="the D phase's pass moved w_avg")
    ws = G.mapping(z, None)
    expected = ws[:, 0].detach().mean(dim=0).lerp(before, 0.998)
    torch.testing.assert_close(G.mapping.w_avg, expected)


def test_w_avg_moves_in_float32_under_autocast(tiny_generator):
    """A training-mode pass under bfloat16 autocast (w comes out in bfloat16) still updates
    the float32 running mean."""
    G = copy.deepcopy(tiny_generator).train()
    z = torch.randn(4, G.z_dim)
    before = G.mapping.w_avg.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ws = G.mapping(z, None)
    assert ws.dtype == torch.bfloat16 and G.mapping.w_avg.dtype == torch.float32
    expected = ws[:, 0].float().mean(dim=0).lerp(before, 0.998)
    torch.testing.assert_close(G.mapping.w_avg, expected, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Gradient accumulation: --batch-gpu changes memory use, not the training.


def tiny_cfg(batch_gpu: int, **loss_overrides):
    options = TrainOptions(outdir="/runs", cfg="creps", data="/data/x.zip", gpus=1, batch=8, gamma=1.0,
                           batch_gpu=batch_gpu, cbase=256, cmax=32, map_depth=1, mbstd_group=1, aug="noaug",
                           metrics=(), fp32=True)
    info = DatasetInfo(path="/data/x.zip", name="x", resolution=16, channels=3, size=64, has_labels=False,
                       label_dim=0)
    cfg = resolve(options, info)
    if loss_overrides:
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **loss_overrides))
    return cfg


@pytest.fixture(scope="module")
def base_networks():
    torch.manual_seed(0)
    return build_networks(tiny_cfg(8), torch.device("cpu"))


def run_step(nets, batch_gpu: int, batch_idx: int, cur_nimg: int, **loss_overrides):
    cfg = tiny_cfg(batch_gpu, **loss_overrides)
    nets = copy.deepcopy(nets)
    trainer = Trainer(cfg, nets, torch.device("cpu"), lambda n: torch.zeros(n, 0))
    reals = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    torch.manual_seed(123)
    trainer.step(reals, torch.zeros(8, 0), batch_idx=batch_idx, cur_nimg=cur_nimg)
    return nets


def assert_same_update(a, b, base, rtol=1e-4, atol=1e-6):
    for module in ("G", "D", "G_ema"):
        changed = 0
        for (name, pa), pb, p0 in zip(getattr(a, module).named_parameters(), getattr(b, module).parameters(),
                                      getattr(base, module).parameters()):
            torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=lambda m: f"{module}.{name}: {m}")
            changed += int(not torch.equal(pa, p0))
        assert changed > 0, f"{module} did not change"


def test_accumulation_matches_full_batch_main_phases(base_networks):
    """batch_idx=1 runs Gmain and Dmain: batch-gpu 4 (two rounds) == batch-gpu 8 (one round)."""
    full = run_step(base_networks, 8, batch_idx=1, cur_nimg=8)
    accumulated = run_step(base_networks, 4, batch_idx=1, cur_nimg=8)
    assert_same_update(full, accumulated, base_networks)


def test_accumulation_matches_full_batch_with_r1(base_networks):
    """batch_idx=0 adds the lazy R1 phase (Dreg); path length is off here since it shrinks per round."""
    full = run_step(base_networks, 8, batch_idx=0, cur_nimg=0, pl_weight=0)
    accumulated = run_step(base_networks, 4, batch_idx=0, cur_nimg=0, pl_weight=0)
    assert_same_update(full, accumulated, base_networks)


def test_accumulated_gradient_of_one_phase(base_networks):
    """The gradient left by the Dreg (R1) phase is the same whichever --batch-gpu."""
    grads = []
    for batch_gpu in (8, 4, 2):
        nets = copy.deepcopy(base_networks)
        cfg = tiny_cfg(batch_gpu, pl_weight=0)
        trainer = Trainer(cfg, nets, torch.device("cpu"), lambda n: torch.zeros(n, 0))
        phase = next(p for p in trainer.phases if p.name == "Dreg")
        phase.opt.step = lambda: None  # keep the weights, look at the gradient
        reals = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(5),
                              dtype=torch.uint8).float() / 127.5 - 1
        z = torch.randn(8, cfg.G.z_dim, generator=torch.Generator().manual_seed(9))
        c = torch.zeros(8, 0)
        trainer._run_phase(phase, reals.split(batch_gpu), c.split(batch_gpu), z.split(batch_gpu),
                           c.split(batch_gpu), cur_nimg=0)
        grads.append({n: p.grad.clone() for n, p in nets.D.named_parameters() if p.grad is not None})
    assert grads[0]
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for name in grads[0]:
            torch.testing.assert_close(other[name], grads[0][name], rtol=1e-4, atol=1e-7, msg=name)


# ---------------------------------------------------------------------------------------
# --recompute: CREPS's per-pixel layers re-run in backward instead of keeping activations.


def test_recompute_keeps_a_fraction_of_the_per_pixel_activations():
    torch.manual_seed(0)
    G = Generator(CrepsConfig(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, channel_base=1024,
                  channel_max=64, mapping_layers=1))
    ws = G.mapping(torch.randn(4, 32), None).detach().requires_grad_(True)
    kept = {}
    for on in (False, True):
        G.synthesis.recompute = on
        kept[on] = saved_bytes(lambda: G.synthesis(ws))
    # At 64x64 the decoders and heads hold most of G's saved tensors; recomputed, only
    # their inputs remain.
    assert kept[True] < 0.4 * kept[False], kept
    with torch.no_grad():  # nothing to recompute without a graph: same path, same output
        G.synthesis.recompute = True
        a = G.synthesis(ws)
        G.synthesis.recompute = False
        assert torch.equal(a, G.synthesis(ws))


@pytest.mark.parametrize("batch_idx", [0, 1])
def test_recompute_leaves_every_update_bit_identical(base_networks, batch_idx):
    """batch_idx 0 runs every phase, including path-length regularisation (a double backward
    through the recomputed layers); batch_idx 1 the main phases."""
    assert base_networks.G.synthesis.recompute is False  # the default config on a CPU
    runs = []
    for on in (True, False):
        nets = copy.deepcopy(base_networks)
        nets.G.synthesis.recompute = on
        cfg = tiny_cfg(8)
        trainer = Trainer(cfg, nets, torch.device("cpu"), lambda n: torch.zeros(n, 0))
        reals = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
        torch.manual_seed(123)
        trainer.step(reals, torch.zeros(8, 0), batch_idx=batch_idx, cur_nimg=batch_idx * 8)
        runs.append(nets)
    for module in ("G", "D", "G_ema"):
        a, b = getattr(runs[0], module).state_dict(), getattr(runs[1], module).state_dict()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{module}: {different[:3]}"
    changed = [k for k, v in runs[0].G.state_dict().items() if not torch.equal(v, base_networks.G.state_dict()[k])]
    assert any(k.startswith("synthesis.decoder_") for k in changed) and any(".block1." in k for k in changed)


def test_recompute_follows_the_config_and_defaults_to_the_device():
    for setting, on_cpu in ((False, False), (True, True), (None, False)):
        cfg = dataclasses.replace(tiny_cfg(8), recompute=setting)
        assert build_networks(cfg, torch.device("cpu")).G.synthesis.recompute is on_cpu
