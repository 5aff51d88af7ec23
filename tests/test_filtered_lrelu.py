"""Low-pass filter design (Kaiser / jinc) and the filtered leaky ReLU op."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import seeded_randn
from creps.ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_output_size, filtered_lrelu_reference
from creps.ops.filters import (
    bessel_j1,
    design_lowpass_filter,
    jinc_lowpass,
    kaiser_beta,
    kaiser_lowpass,
)


# --- filter design ---------------------------------------------------------------------------

DESIGNS = [  # numtaps, cutoff, width, fs: the StyleGAN3 cases (6 taps per rate step) and odd ones
    (12, 2.0, 3.3, 32.0),
    (24, 5.66, 2.4, 64.0),
    (12, 16.0, 8.0, 64.0),
    (13, 3.0, 2.0, 16.0),
    (7, 1.0, 0.8, 8.0),
]


def test_bessel_j1_known_values():
    x = np.array([0.0, 0.5, 1.0, 2.5, 5.0, 7.0155866698156, 10.0, 30.0])
    want = np.array([0.0, 0.2422684576748739, 0.4400505857449335, 0.4970941024642741, -0.3275791375914652,
                     0.0, 0.04347274616886141, -0.11875106261662305])
    np.testing.assert_allclose(bessel_j1(x), want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(bessel_j1(-x), -want, rtol=0, atol=1e-13)


def test_kaiser_beta_pieces():
    assert kaiser_beta(10) == 0
    assert kaiser_beta(30) == pytest.approx(0.5842 * 9**0.4 + 0.07886 * 9)
    assert kaiser_beta(60) == pytest.approx(0.1102 * 51.3)


@pytest.mark.parametrize("numtaps,cutoff,width,fs", DESIGNS)
def test_kaiser_lowpass_dc_gain_symmetry_and_response(numtaps, cutoff, width, fs):
    taps = kaiser_lowpass(numtaps, cutoff, width, fs)
    assert taps.shape == (numtaps,)
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-15)
    # |H(f)|: about 1/2 at the cutoff, small at Nyquist.
    pos = np.arange(numtaps) - (numtaps - 1) / 2
    response = lambda f: abs(np.sum(taps * np.exp(-2j * np.pi * f / fs * pos)))  # noqa: E731
    assert response(0) == pytest.approx(1.0)
    assert 0.3 < response(cutoff) < 0.7
    assert response(fs / 2) < 0.05


@pytest.mark.parametrize("numtaps,cutoff,width,fs", DESIGNS)
def test_kaiser_lowpass_equals_scipy_firwin(numtaps, cutoff, width, fs):
    signal = pytest.importorskip("scipy.signal")
    want = signal.firwin(numtaps, cutoff, width=width, fs=fs)
    np.testing.assert_allclose(kaiser_lowpass(numtaps, cutoff, width, fs), want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("numtaps,cutoff,width,fs", DESIGNS)
def test_jinc_lowpass_is_radial_with_unit_dc_gain(numtaps, cutoff, width, fs):
    f = jinc_lowpass(numtaps, cutoff, width, fs)
    assert f.shape == (numtaps, numtaps)
    assert np.isfinite(f).all()
    assert f.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(f, f.T, atol=1e-15)  # symmetric in x <-> y
    np.testing.assert_allclose(f, f[::-1, ::-1], atol=1e-15)  # point symmetric
    np.testing.assert_allclose(f, f[::-1, :], atol=1e-15)  # mirror symmetric
    # Not separable: the jinc is not an outer product (rank > 1).
    assert np.linalg.svd(f, compute_uv=False)[1] > 1e-6 * abs(f).max()


def test_jinc_lowpass_equals_scipy_construction():
    special = pytest.importorskip("scipy.special")
    signal = pytest.importorskip("scipy.signal")
    numtaps, cutoff, width, fs = 12, 5.66, 2.4, 64.0
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    want = special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    window = np.kaiser(numtaps, signal.kaiser_beta(signal.kaiser_atten(numtaps, width / (fs / 2))))
    want = want * np.outer(window, window)
    want /= want.sum()
    np.testing.assert_allclose(jinc_lowpass(numtaps, cutoff, width, fs), want, rtol=0, atol=1e-15)


def test_design_lowpass_filter_forms():
    assert design_lowpass_filter(1, 2.0, 1.0, 16.0) is None
    sep = design_lowpass_filter(12, 2.0, 3.0, 32.0)
    rad = design_lowpass_filter(12, 2.0, 3.0, 32.0, radial=True)
    assert sep.dtype == rad.dtype == torch.float32
    assert sep.shape == (12,) and rad.shape == (12, 12)
    with pytest.raises(ValueError):
        design_lowpass_filter(0, 2.0, 3.0, 32.0)
    with pytest.raises(ValueError):
        kaiser_lowpass(12, 20.0, 3.0, 32.0)  # cutoff above Nyquist


# --- filtered_lrelu --------------------------------------------------------------------------


def _filters(kind: str, up: int, down: int):
    fu = fd = None
    if kind in ("sep", "radial"):
        fu = design_lowpass_filter(6 * up, 2.0, 3.0, 8.0 * up) if up > 1 else None
        fd = design_lowpass_filter(6 * down, 2.0, 3.0, 8.0 * down, radial=kind == "radial") if down > 1 else None
    if kind == "odd":
        fu = torch.tensor([1.0, 3.0, 4.0, 2.0, 1.0]) / 11
        fd = torch.tensor([[1.0, 2.0, 1.0], [2.0, 5.0, 2.0], [0.0, 1.0, 1.0]]) / 15
    return fu, fd


CASES = [
    # kind, up, down, padding, gain, slope, clamp, flip
    ("sep", 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, None, False),
    ("radial", 2, 2, [11, 10, 11, 10], math.sqrt(2), 0.2, 0.8, False),
    ("sep", 4, 2, [-6, -9, -6, -9], math.sqrt(2), 0.2, None, False),
    ("sep", 2, 2, [-3, -4, -3, -4], math.sqrt(2), 0.2, 1.0, True),
    ("none", 1, 1, 0, 1.0, 1.0, 0.5, False),  # the ToRGB form: clamp only
    ("odd", 1, 1, [3, 1, 2, 2], 1.5, 0.1, None, False),
    ("odd", 2, 1, [1, 2, 0, 3], 0.7, 0.0, 2.0, True),
]


@pytest.mark.parametrize("kind,up,down,padding,gain,slope,clamp,flip", CASES)
def test_filtered_lrelu_matches_reference(kind, up, down, padding, gain, slope, clamp, flip):
    fu, fd = _filters(kind, up, down)
    x = seeded_randn(2, 3, 20, 20, dtype=torch.float32)
    b = seeded_randn(3, dtype=torch.float32, seed=1)
    kw = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
    got = filtered_lrelu(x, fu, fd, b, **kw)
    want = filtered_lrelu_reference(x.double(), fu, fd, b.double(), **kw)
    assert tuple(got.shape[2:]) == filtered_lrelu_output_size((20, 20), fu, fd, up, down, padding)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_filtered_lrelu_step_by_step_definition():
    """Direct check of the semantics on one channel: bias, up x2 with fu, lrelu, down x2 with fd."""
    fu = torch.tensor([0.25, 0.5, 0.25])
    fd = torch.tensor([0.5, 0.5])
    x = seeded_randn(1, 1, 5, 5)
    b = torch.tensor([0.3], dtype=torch.float64)
    y = x + 0.3
    big = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    big[..., ::2, ::2] = y
    big = torch.nn.functional.pad(big, [2, 1, 2, 1])
    k_up = torch.outer(fu, fu).double().flip([0, 1]) * 4
    up = torch.nn.functional.conv2d(big, k_up[None, None])
    act = torch.where(up > 0, up, 0.2 * up) * 2.0
    k_down = torch.outer(fd, fd).double().flip([0, 1])
    want = torch.nn.functional.conv2d(act, k_down[None, None])[..., ::2, ::2]
    got = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[2, 1, 2, 1], gain=2.0, slope=0.2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,up,down,padding,slope,clamp,size", [
    ("sep", 2, 2, [5, 4, 5, 4], 0.2, None, (7, 7)),
    ("radial", 2, 2, [5, 4, 5, 4], 0.2, 1.0, (7, 7)),
    ("sep", 4, 2, [-6, -9, -4, -9], 0.2, None, (14, 13)),  # the layer where the rate doubles
    ("odd", 2, 1, [1, 2, 0, 3], 0.1, None, (5, 6)),
    ("odd", 1, 3, [2, 0, 1, 3], 0.3, 0.5, (8, 9)),
    ("none", 1, 1, 0, 1.0, 1.5, (4, 5)),
])
def test_filtered_lrelu_gradcheck(kind, up, down, padding, slope, clamp, size):
    fu, fd = _filters(kind, up, down)
    if kind == "odd" and down > 1:
        fu = None
    x = seeded_randn(1, 2, *size, seed=2).requires_grad_()
    b = seeded_randn(2, seed=3).requires_grad_()

    def fn(x, b):
        return filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=math.sqrt(2),
                              slope=slope, clamp=clamp)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_filtered_lrelu_keeps_low_precision_dtype():
    fu, fd = _filters("sep", 2, 2)
    x = seeded_randn(1, 4, 12, 12, dtype=torch.bfloat16)
    b = torch.zeros(4, dtype=torch.bfloat16)
    y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[9, 8, 9, 8], clamp=256)
    want = filtered_lrelu(x.float(), fu, fd, b.float(), up=2, down=2, padding=[9, 8, 9, 8], clamp=256)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), want, rtol=0, atol=0.1)


def test_filtered_lrelu_rejects_bad_arguments():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError):
        filtered_lrelu(x, b=torch.zeros(3))
    with pytest.raises(ValueError):
        filtered_lrelu(x[0])
    with pytest.raises(ValueError):
        filtered_lrelu(x, up=0)


@pytest.mark.parametrize("kind,up,down,padding,gain,slope,clamp,flip", CASES)
def test_filtered_lrelu_gradient_matches_reference(kind, up, down, padding, gain, slope, clamp, flip):
    fu, fd = _filters(kind, up, down)
    kw = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
    x = (seeded_randn(1, 2, 20, 20) * 2).requires_grad_()  # large enough for some samples to clamp
    b = seeded_randn(2, seed=1).requires_grad_()
    out = filtered_lrelu(x, fu, fd, b, **kw)
    weights = seeded_randn(*out.shape, seed=4)
    got = torch.autograd.grad((out * weights).sum(), (x, b))
    want = torch.autograd.grad((filtered_lrelu_reference(x, fu, fd, b, **kw) * weights).sum(), (x, b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-10)
