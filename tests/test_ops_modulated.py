"""The unresampled shared-weight modulated conv (x * s, conv, * d) keeps x, not x * s, for
backward: its gradients, double-backward included, are those of the plain expression."""

from __future__ import annotations

import pytest
import torch

from conftest import saved_bytes
from creps.ops.styled_conv import _unfused_conv, unfused_conv

CASES = [(3, 1, True, True), (3, 1, False, True), (1, 0, True, False), (3, 2, True, False)]


def inputs(kernel, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 6, 5, generator=g, dtype=dtype, requires_grad=True)
    styles = (torch.rand(3, 4, generator=g, dtype=dtype) + 0.5).requires_grad_(True)
    weight = torch.randn(5, 4, kernel, kernel, generator=g, dtype=dtype, requires_grad=True)
    dcoefs = (torch.rand(3, 5, generator=g, dtype=dtype) + 0.5).requires_grad_(True)
    return x, styles, weight, dcoefs


@pytest.mark.parametrize("kernel,padding,flip_weight,demodulate", CASES)
def test_gradients_and_double_backward_equal_the_plain_expression(kernel, padding, flip_weight, demodulate):
    x, styles, weight, dcoefs = inputs(kernel)
    d = dcoefs if demodulate else None
    leaves = [x, styles, weight] + ([dcoefs] if demodulate else [])
    results = []
    for fn in (unfused_conv, _unfused_conv):
        y = fn(x, weight, styles, d, padding=padding, flip_weight=flip_weight)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        first = torch.autograd.grad(y, leaves, dy, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), leaves)
        results.append((y, first, second))
    (y_a, first_a, second_a), (y_b, first_b, second_b) = results
    torch.testing.assert_close(y_a, y_b, rtol=0, atol=0)
    for a, b in zip(first_a + second_a, first_b + second_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    x, styles, weight, dcoefs = inputs(3)
    fn = lambda *t: unfused_conv(t[0], t[2], t[1], t[3], padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, styles, weight, dcoefs))
    assert torch.autograd.gradgradcheck(fn, (x, styles, weight, dcoefs))


def test_bfloat16_autocast_matches_the_plain_expression():
    """Under autocast the products are taken in bfloat16 as the plain expression takes them."""
    x, styles, weight, dcoefs = [t.detach().float().requires_grad_(True) for t in inputs(3, seed=2)]
    grads = []
    for fn in (unfused_conv, _unfused_conv):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(x, weight, styles, dcoefs, padding=1)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), [x, styles, weight, dcoefs]))
    for a, b in zip(*grads):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_keeps_x_not_the_scaled_copy():
    x = torch.randn(4, 64, 32, 32, requires_grad=True)
    styles = torch.rand(4, 64, requires_grad=True)
    weight = torch.randn(64, 64, 3, 3, requires_grad=True)
    dcoefs = torch.rand(4, 64, requires_grad=True)
    kept = {fn.__name__: saved_bytes(lambda: fn(x, weight, styles, dcoefs, padding=1))
            for fn in (unfused_conv, _unfused_conv)}
    image = x.numel() * 4
    assert kept["_unfused_conv"] - kept["unfused_conv"] >= image  # one input-sized tensor fewer


# ---------------------------------------------------------------------------------------
# CREPS's modulated linear layer keeps x, weight and styles, not the per-sample weights.


def linear_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, 6, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(5, 6, generator=g, dtype=dtype, requires_grad=True)
    styles = (torch.rand(3, 6, generator=g, dtype=dtype) + 0.5).requires_grad_(True)
    return x, weight, styles


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_linear_derivatives_equal_the_plain_expression(demodulate):
    from creps.ops.modulated_linear import _modulated_linear, modulated_linear

    leaves = list(linear_inputs())
    results = []
    for fn in (modulated_linear, _modulated_linear):
        y = fn(*leaves, demodulate)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        plain_first = torch.autograd.grad(y, leaves, dy, retain_graph=True)  # the hand-written backward
        first = torch.autograd.grad(y, leaves, dy, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), leaves)
        results.append((y, first, second, plain_first))
    (y_a, *grads_a), (y_b, *grads_b) = results
    torch.testing.assert_close(y_a, y_b, rtol=0, atol=0)
    for group_a, group_b in zip(grads_a, grads_b):
        for a, b in zip(group_a, group_b):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_modulated_linear_gradcheck_and_gradgradcheck():
    from creps.ops.modulated_linear import modulated_linear

    for demodulate in (True, False):
        fn = lambda x, w, s: modulated_linear(x, w, s, demodulate)  # noqa: E731
        assert torch.autograd.gradcheck(fn, linear_inputs())
        assert torch.autograd.gradgradcheck(fn, linear_inputs())


def test_modulated_linear_under_bfloat16_autocast():
    from creps.ops.modulated_linear import _modulated_linear, modulated_linear

    leaves = [t.detach().float().requires_grad_(True) for t in linear_inputs(seed=3)]
    outs, grads = [], []
    for fn in (modulated_linear, _modulated_linear):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(*leaves, True)
        outs.append(y)
        grads.append(torch.autograd.grad(y.float().square().sum(), leaves))
    assert outs[0].dtype == torch.bfloat16 and torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_modulated_linear_keeps_no_per_sample_weights():
    from creps.ops.modulated_linear import _modulated_linear, modulated_linear

    x = torch.randn(4, 16, 256, requires_grad=True)
    weight = torch.randn(256, 256, requires_grad=True)
    styles = torch.rand(4, 256, requires_grad=True)
    kept = {fn.__name__: saved_bytes(lambda: fn(x, weight, styles, True)) for fn in (modulated_linear, _modulated_linear)}
    assert kept["modulated_linear"] == (x.numel() + weight.numel() + styles.numel()) * 4
    assert kept["_modulated_linear"] >= kept["modulated_linear"] + 2 * 4 * 256 * 256 * 4  # >= two [N, O, I] copies
