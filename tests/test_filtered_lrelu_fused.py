"""filtered_lrelu's fused path (torch.compile; Inductor's C++ backend on the CPU) against the
reference: forward, gradients, and double backward (which runs the plain adjoint)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import seeded_randn
from creps.ops import filtered_lrelu as op
from creps.ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_reference
from test_filtered_lrelu import _filters

CASES = [  # kind, up, down, padding, gain, slope, clamp, flip: a subset of test_filtered_lrelu's
    ("sep", 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, None, False),
    ("radial", 2, 2, [11, 10, 11, 10], math.sqrt(2), 0.2, 0.8, False),
    ("sep", 4, 2, [-6, -9, -6, -9], math.sqrt(2), 0.2, None, False),
    ("odd", 2, 1, [1, 2, 0, 3], 0.7, 0.0, 2.0, True),
]


def fused_compiled() -> bool:
    """The fused forward and backward ran compiled (not their plain fallback)."""
    return all(name in op._FUSED and not op._FUSED[name].failed for name in ("forward", "backward"))


@pytest.mark.parametrize("kind,up,down,padding,gain,slope,clamp,flip", CASES)
def test_fused_matches_reference_forward_and_gradients(kind, up, down, padding, gain, slope, clamp, flip):
    fu, fd = _filters(kind, up, down)
    kw = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
    x = (seeded_randn(2, 3, 20, 20, dtype=torch.float32) * 2).requires_grad_()  # some samples clamp
    b = seeded_randn(3, dtype=torch.float32, seed=1).requires_grad_()
    out = filtered_lrelu(x, fu, fd, b, fused=True, **kw)
    want = filtered_lrelu_reference(x.double(), fu, fd, b.double(), **kw)
    assert out.dtype == torch.float32 and out.shape == want.shape
    torch.testing.assert_close(out.double(), want.detach(), rtol=0, atol=1e-5)
    weights = seeded_randn(*out.shape, dtype=torch.float32, seed=4)
    got = torch.autograd.grad((out * weights).sum(), (x, b))
    ref = torch.autograd.grad((want * weights.double()).sum(), (x, b))
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), r.double(), rtol=0, atol=1e-4 * max(1.0, r.abs().max().item()))
    assert fused_compiled()


def test_fused_gradcheck_and_double_backward():
    """float64 (Inductor compiles it too): first-order gradients through the compiled adjoint,
    second-order through the plain one (R1 and path length differentiate twice)."""
    fu, fd = _filters("sep", 2, 2)
    x = seeded_randn(1, 2, 7, 7, seed=2).requires_grad_()
    b = seeded_randn(2, seed=3).requires_grad_()

    def fn(x, b):
        return filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[5, 4, 5, 4], gain=math.sqrt(2), slope=0.2,
                              clamp=1.0, fused=True)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    # The second-order gradient equals the plain path's.
    for fused in (True, False):
        out = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[5, 4, 5, 4], clamp=1.0, fused=fused)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        (ggb,) = torch.autograd.grad(gx.square().sum(), b)
        if fused:
            fused_ggb = ggb
    torch.testing.assert_close(fused_ggb, ggb, rtol=1e-10, atol=1e-12)
    assert fused_compiled()


def test_stylegan3_layers_switch_to_the_fused_path():
    from creps.nets.registry import set_training_switches
    from creps.nets.stylegan3 import Generator, StyleGAN3Config

    torch.manual_seed(0)
    G = Generator(StyleGAN3Config(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256,
                                  channel_max=16, mapping_layers=1, num_layers=4))
    z = torch.randn(2, 8)
    plain = G(z, None, noise_mode="const")
    set_training_switches(G, recompute=True, fused_ops=True)
    assert G.synthesis.fused_lrelu is True
    fused = G(z, None, noise_mode="const")
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    assert not op._FUSED["forward"].failed
