"""upfirdn2d and conv2d_resample against plain definitions, plus float64 gradchecks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import seeded_randn
from creps.ops.conv2d_resample import conv2d_resample
from creps.ops.upfirdn2d import (
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upfirdn2d_reference,
    upsample2d,
)


def _numpy_upfirdn_1ch(img: np.ndarray, filt: np.ndarray, up, down, pads, flip, gain) -> np.ndarray:
    """Pixel-by-pixel scipy-style upfirdn of one [H, W] channel, written as loops."""
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = up, down, pads
    h, w = img.shape
    big = np.zeros((h * uy, w * ux))
    big[::uy, ::ux] = img
    padded = np.zeros((h * uy + max(py0, 0) + max(py1, 0), w * ux + max(px0, 0) + max(px1, 0)))
    padded[max(py0, 0) : max(py0, 0) + h * uy, max(px0, 0) : max(px0, 0) + w * ux] = big
    padded = padded[max(-py0, 0) : padded.shape[0] - max(-py1, 0), max(-px0, 0) : padded.shape[1] - max(-px1, 0)]
    taps = filt if flip else filt[::-1, ::-1]
    fh, fw = taps.shape
    out = np.zeros(((padded.shape[0] - fh) // dy + 1, (padded.shape[1] - fw) // dx + 1))
    for oy in range(out.shape[0]):
        for ox in range(out.shape[1]):
            acc = 0.0
            for ky in range(fh):
                for kx in range(fw):
                    acc += padded[oy * dy + ky, ox * dx + kx] * taps[ky, kx]
            out[oy, ox] = acc * gain
    return out


UPFIRDN_CASES = [
    # up, down, padding, flip_filter, gain
    (1, 1, 0, False, 1.0),
    (1, 1, [1, 2, 0, 1], True, 1.0),
    (2, 1, [2, 1, 2, 1], False, 4.0),
    (1, 2, [1, 1, 1, 1], False, 1.0),
    (2, 2, 1, True, 2.5),
    ((2, 1), (1, 2), [2, 1, 0, 1], False, 1.0),
    (3, 1, [-1, 2, 1, -1], False, 1.0),
    (1, 3, [-1, 0, 2, 0], True, 0.5),
]


@pytest.mark.parametrize("up,down,padding,flip,gain", UPFIRDN_CASES)
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 3, 4, 4, 3, 2, 1], "asym2d"])
def test_upfirdn2d_matches_reference(up, down, padding, flip, gain, taps):
    if taps == "asym2d":
        f = seeded_randn(3, 4, dtype=torch.float32, seed=5)
    else:
        f = setup_filter(taps, separable=len(taps) >= 8)
    x = seeded_randn(2, 3, 11, 10, dtype=torch.float64, seed=1)
    fast = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    slow = upfirdn2d_reference(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


@pytest.mark.parametrize("up,down,padding,flip,gain", UPFIRDN_CASES[:6])
def test_reference_matches_numpy_loops(up, down, padding, flip, gain):
    f = seeded_randn(3, 2, dtype=torch.float32, seed=7)
    x = seeded_randn(1, 2, 5, 4, seed=8)
    ours = upfirdn2d_reference(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    as_pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    pads = [padding] * 4 if isinstance(padding, int) else list(padding)
    for ch in range(2):
        want = _numpy_upfirdn_1ch(
            x[0, ch].numpy(), f.double().numpy(), as_pair(up), as_pair(down), pads, flip, gain
        )
        np.testing.assert_allclose(ours[0, ch].numpy(), want, rtol=0, atol=1e-12)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert abs(f.sum().item() - 1) < 1e-7
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)  # long 1D filters stay separable
    assert setup_filter(None).shape == (1, 1)
    assert abs(setup_filter([1, 2, 1], gain=4).sum().item() - 4) < 1e-6
    torch.testing.assert_close(setup_filter([[1, 2], [3, 4]], flip_filter=True), torch.tensor([[4.0, 3], [2, 1]]) / 10)


def test_resampling_helpers_shapes_and_dc():
    f = setup_filter([1, 3, 3, 1])
    x = torch.ones(1, 2, 8, 8)
    assert filter2d(x, f).shape == (1, 2, 8, 8)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # a constant image keeps its value away from the zero-padded border
    torch.testing.assert_close(up[:, :, 3:-3, 3:-3], torch.ones_like(up[:, :, 3:-3, 3:-3]))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.ones_like(down[:, :, 1:-1, 1:-1]))
    torch.testing.assert_close(filter2d(x, f)[:, :, 2:-2, 2:-2], torch.ones(1, 2, 4, 4))


def test_upfirdn2d_rejects_too_small_input():
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 1, 2, 2), setup_filter([1, 3, 3, 1]))


@pytest.mark.parametrize(
    "taps,up,down,padding",
    [([1, 3, 3, 1], 2, 1, [2, 1, 2, 1]), ([1, 3, 3, 1], 1, 2, 1), ([1, 2, 3, 4, 4, 3, 2, 1], 2, 2, 3)],
)
def test_upfirdn2d_gradcheck(taps, up, down, padding):
    f = setup_filter(taps, separable=len(taps) >= 8)
    x = seeded_randn(1, 2, 5, 5, seed=3).requires_grad_(True)
    fn = lambda t: upfirdn2d(t, f, up=up, down=down, padding=padding, gain=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def _conv2d_resample_reference(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Definition: upsample+pad (filter if up), conv2d, then filter+decimate (if down)."""
    px0, px1, py0, py1 = [padding] * 4 if isinstance(padding, int) else padding
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    y = upfirdn2d_reference(
        x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up * up, flip_filter=flip_filter
    )
    y = F.conv2d(y, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        y = upfirdn2d_reference(y, f, down=down, flip_filter=flip_filter)
    return y


CONV_CASES = list(
    itertools.product(
        [1, 3],  # kernel
        [(1, 1), (2, 1), (1, 2), (2, 2)],  # (up, down)
        [1, 2],  # groups
        [True, False],  # flip_weight
    )
)


@pytest.mark.parametrize("kernel,updown,groups,flip_weight", CONV_CASES)
def test_conv2d_resample_matches_composition(kernel, updown, groups, flip_weight):
    up, down = updown
    f = setup_filter([1, 3, 3, 1])
    x = seeded_randn(2, 4, 6, 6, seed=11)
    w = seeded_randn(6, 4 // groups, kernel, kernel, seed=12)
    for padding, flip_filter in ((kernel // 2, False), ([1, 0, 2, 1], True)):
        got = conv2d_resample(
            x, w, f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter
        )
        want = _conv2d_resample_reference(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        assert got.shape == want.shape, (padding, got.shape, want.shape)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_conv2d_resample_output_sizes():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 3, 8, 8)
    assert conv2d_resample(x, torch.randn(5, 3, 3, 3), f, down=2, padding=1).shape == (1, 5, 4, 4)
    assert conv2d_resample(x, torch.randn(5, 3, 1, 1), f, down=2).shape == (1, 5, 4, 4)
    assert conv2d_resample(x, torch.randn(5, 3, 3, 3), f, up=2, padding=1, flip_weight=False).shape == (1, 5, 16, 16)
    assert conv2d_resample(x, torch.randn(5, 3, 3, 3), None, padding=1).shape == (1, 5, 8, 8)


def test_conv2d_resample_gradcheck():
    f = setup_filter([1, 3, 3, 1])
    x = seeded_randn(1, 2, 4, 4, seed=21).requires_grad_(True)
    w = seeded_randn(3, 2, 3, 3, seed=22).requires_grad_(True)
    for up, down, flip in ((1, 2, True), (2, 1, False)):
        fn = lambda a, b: conv2d_resample(a, b, f, up=up, down=down, padding=1, flip_weight=flip)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w))


def test_polyphase_upsampling_matches_reference_over_many_shapes():
    """Upsampling one axis at a time without zero-stuffing: every tap count, factor and
    padding (negative ones crop), along width and along height, equals the definition."""
    rng = torch.Generator().manual_seed(7)
    x = seeded_randn(1, 2, 7, 6, dtype=torch.float64, seed=2)
    checked = 0
    for taps in (1, 2, 3, 4, 5, 8, 12, 13):
        row = torch.randn(taps, generator=rng)
        for up in (2, 3, 4):
            for pad0, pad1 in ((0, 0), (taps - 1, taps - 1), (3, -2), (-2, 5), (taps + up - 1, 1)):
                for f, up_xy, pads in ((row.reshape(1, -1), (up, 1), [pad0, pad1, 0, 0]),
                                       (row.reshape(-1, 1), (1, up), [0, 0, pad0, pad1])):
                    try:
                        slow = upfirdn2d_reference(x, f, up=up_xy, padding=pads, gain=1.3)
                    except ValueError:
                        continue  # the padded image is smaller than the filter
                    fast = upfirdn2d(x, f, up=up_xy, padding=pads, gain=1.3)
                    assert fast.shape == slow.shape, (taps, up, pad0, pad1)
                    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
                    checked += 1
    assert checked > 200


@pytest.mark.parametrize("seed", range(6))
def test_upfirdn2d_backward_is_the_transposed_operation(seed):
    """The gradient upfirdn2d gives (its transpose, computed by itself) equals the one autograd
    derives through the step-by-step operations, over random factors, paddings (negative ones
    crop), filters (separable, 2-D, one row, none), flips and non-square images."""
    from creps.ops.upfirdn2d import _upfirdn2d

    gen = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=gen))  # noqa: E731
    for case in range(12):
        kind = ["separable", "2d", "row", "none"][case % 4]
        taps = rand(1, 6)
        f = {"separable": torch.rand(taps, generator=gen, dtype=torch.float64) + 0.1,
             "2d": torch.rand(rand(1, 4), taps, generator=gen, dtype=torch.float64) + 0.1,
             "row": torch.rand(1, taps, generator=gen, dtype=torch.float64) + 0.1, "none": None}[kind]
        up, down = (rand(1, 3), rand(1, 3)), (rand(1, 3), rand(1, 3))
        pads = tuple(rand(-1, 4) for _ in range(4))
        flip, gain = bool(rand(0, 1)), [1.0, 2.0][rand(0, 1)]
        x = torch.randn(2, 3, rand(5, 9), rand(5, 9), generator=gen, dtype=torch.float64, requires_grad=True)
        y = upfirdn2d(x, f, up=up, down=down, padding=pads, flip_filter=flip, gain=gain)
        dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (ours,) = torch.autograd.grad(y, x, dy)
        (expected,) = torch.autograd.grad(_upfirdn2d(x, f, up, down, pads, flip, gain), x, dy)
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10,
                                   msg=lambda m: f"{kind} up={up} down={down} pads={pads} flip={flip}: {m}")


def test_upfirdn2d_keeps_only_its_filter_for_backward():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        for kwargs in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(up=2, down=2, padding=2)):
            upfirdn2d(x, f, **kwargs)
    assert kept and all(t.numel() == f.numel() for t in kept)
