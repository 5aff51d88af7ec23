import pytest
import torch

from creps.ops.bias_act import bias_act, bias_act_reference


@pytest.mark.parametrize("dim,clamp", [(1, None), (1, 0.7), (-1, None), (-1, 0.9)])
def test_fused_lrelu_matches_reference_values_and_grads(dim, clamp):
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    b = torch.randn(x.shape[dim], dtype=torch.float64)
    fused = bias_act(x, b, dim=dim, act="lrelu", gain=1.3, clamp=clamp)
    ref = bias_act_reference(x, b, dim=dim, act="lrelu", gain=1.3, clamp=clamp)
    assert torch.equal(fused, ref)

    def f(fn):
        xx, bb = x.clone().requires_grad_(), b.clone().requires_grad_()
        y = fn(xx, bb, dim=dim, act="lrelu", gain=1.3, clamp=clamp)
        gx, gb = torch.autograd.grad((y * torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)).sum(),
                                     [xx, bb], create_graph=True)
        (ggx,) = torch.autograd.grad((gx.square().sum() + gb.sum()) * 1.0 + (y.square()).sum(), [xx])
        return gx, gb, ggx

    for a, r in zip(f(bias_act), f(bias_act_reference)):
        torch.testing.assert_close(a, r)


def test_fused_lrelu_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, b):
        return bias_act(x, b, dim=1, act="lrelu", gain=1.5, clamp=2.0)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_fused_lrelu_keeps_only_its_output_for_backward():
    x = torch.randn(64, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bias_act(x, torch.zeros(32), act="lrelu", clamp=256)
    assert len(saved) == 1
