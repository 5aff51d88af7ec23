"""Equivariance metrics (eqt_int, eqt_frac, eqr) and the CREPS scale-consistency metric (eqs):
the image operators against analytic signals, the PSNR formula, the name rules, stub generators
whose equivariance is known exactly, and tiny real StyleGAN3 / CREPS networks end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from creps.errors import UserError
from creps.generate import set_transform, supports_any_scale
from creps.metrics import equivariance as eq
from creps.metrics.features import Evaluation
from creps.metrics.spec import EquivarianceName, MetricSpec, family_of
from creps.nets.creps import line_coords
from creps.nets import registry
from creps.nets.family import Capability, Family
from creps.nets.registry import build_published

# Low-frequency sinusoids, (fx, fy) in cycles per pixel: well inside every pass band used here.
FREQS = ((0.09, -0.06), (-0.04, 0.11), (0.13, 0.05))


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of every pixel centre, in pixels from the image centre, float64 [size, size]."""
    pos = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(pos, pos, indexing="ij")
    return x, y


def _waves(x: torch.Tensor, y: torch.Tensor, phases=(0.3, 1.1, -0.7)) -> torch.Tensor:
    """A band-limited test pattern: a sum of FREQS sinusoids at positions (x, y) (pixels)."""
    return sum(0.3 * torch.sin(2 * math.pi * (fx * x + fy * y) + p) for (fx, fy), p in zip(FREQS, phases))


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    errors = eq.MaskedErrorSum()
    errors.add(a, b, mask)
    return errors.psnr()


def _ev(G, batch_size: int = 8, seed: int = 0, labels=None) -> Evaluation:
    return Evaluation(G=G, data_path="unused", mirror=False, device=torch.device("cpu"), detector=None,
                      progress=False, batch_size=batch_size, seed=seed, _labels=labels)


def _run(G, name: str, **kw) -> float:
    parsed = eq.parse_name(name)
    return eq.evaluate(_ev(G, **kw), MetricSpec(name=name, family="eq", num_gen=parsed.num_samples))[name]


# ---------------------------------------------------------------------------------------
# Names.


@pytest.mark.parametrize("name, test, count", [
    ("eqt50k_int", "eqt_int", 50_000), ("eqt50k_frac", "eqt_frac", 50_000), ("eqr50k", "eqr", 50_000),
    ("eqs50k", "eqs", 50_000), ("eqt1k_int", "eqt_int", 1000), ("eqr200", "eqr", 200), ("eqs1k", "eqs", 1000),
])
def test_names(name, test, count):
    assert eq.parse_name(name) == EquivarianceName(test, count)
    assert family_of(name) == test


@pytest.mark.parametrize("name", ["eqt50k", "eqr50k_int", "eqs50k_frac", "eqt50k_full", "eqt0k_int", "eqx50k",
                                  "eq50k", "eqt_int", "eqr50k_int_x"])
def test_invalid_names(name):
    with pytest.raises(UserError) as err:
        eq.parse_name(name)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_other_families_are_not_eq():
    assert family_of("fid50k_full") is None and eq.parse_name("kid50k") is None


# ---------------------------------------------------------------------------------------
# PSNR.


def test_psnr_by_hand():
    ref = torch.zeros(1, 1, 2, 2)
    img = torch.tensor([[[[0.1, -0.2], [5.0, 0.3]]]])
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    mse = (0.01 + 0.04 + 0.09) / 3
    expected = 20 * math.log10(2) - 10 * math.log10(mse)
    assert _psnr(ref, img, mask) == pytest.approx(expected, abs=1e-6)
    assert eq.psnr_from_mse(0.01) == pytest.approx(26.0206, abs=1e-4)
    # Accumulated over calls: the MSE of all pixels, not the mean of per-call PSNRs.
    errors = eq.MaskedErrorSum()
    errors.add(torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.1), torch.ones(1, 1, 1, 1))
    errors.add(torch.zeros(1, 3, 1, 3), torch.full((1, 3, 1, 3), 0.3), torch.ones(1, 1, 1, 3))
    assert errors.psnr() == pytest.approx(eq.psnr_from_mse((3 * 0.01 + 9 * 0.09) / 12), abs=1e-6)


# ---------------------------------------------------------------------------------------
# Translation.


def test_integer_translate_moves_and_masks():
    img = torch.arange(6 * 7, dtype=torch.float32).reshape(1, 1, 6, 7).repeat(2, 3, 1, 1)
    out, mask = eq.integer_translate(img, dx=2, dy=-1)
    assert mask.shape == (1, 1, 6, 7)
    expected_mask = torch.zeros(6, 7)
    expected_mask[:5, 2:] = 1  # the first 2 columns and the last row wrapped around
    assert torch.equal(mask[0, 0], expected_mask)
    assert torch.equal(out[:, :, :5, 2:], img[:, :, 1:, :5])  # out[y, x] = img[y + 1, x - 2]
    _, empty = eq.integer_translate(img, dx=7, dy=0)
    assert empty.sum() == 0


def test_fractional_translate_matches_shifted_sinusoids():
    x, y = _pixel_grid(32)
    img = _waves(x, y)[None, None].float()
    dx, dy = 2.3, -1.7
    out, mask = eq.fractional_translate(img, dx, dy)
    expected = _waves(x - dx, y - dy)[None, None].float()
    assert mask[0, 0].sum() == (32 - 5) * (32 - 5)  # 3 + 2 border pixels lost per axis
    assert _psnr(out, expected, mask) > 40
    wrong, wrong_mask = eq.fractional_translate(img, -dx, -dy)
    assert _psnr(wrong, expected, wrong_mask * mask) < 20


def test_fractional_translate_by_whole_pixels_is_integer_shift():
    img = torch.randn(2, 3, 12, 12)
    out, mask = eq.fractional_translate(img, 3.0, -2.0)
    ref, ref_mask = eq.integer_translate(img, 3, -2)
    assert torch.allclose(out * mask, ref * mask, atol=1e-6)
    assert torch.all(mask <= ref_mask)


# ---------------------------------------------------------------------------------------
# Rotation.


def test_oriented_filter_taps_match_the_published_algorithm():
    """Taps computed with the published construction (a=3, amax=6, aflt=64)."""
    f1 = eq.oriented_bandlimit_filter(eq.rotation_matrix(0.7), up=1).double()
    assert f1.shape == (11, 11)
    assert [f1[5, 5], f1[5, 6], f1[4, 7], f1[2, 9]] == pytest.approx(
        [0.99953991, 0.10854342, 0.00162486, -3.89348e-05], abs=2e-6)
    f4 = eq.oriented_bandlimit_filter(eq.rotation_matrix(-1.2), up=4).double()
    assert f4.shape == (47, 47)
    assert [f4[23, 23], f4[23, 24], f4[20, 30], f4[10, 15]] == pytest.approx(
        [0.05448253, 0.04946929, -0.00111790, 2.90669e-05], abs=2e-7)
    for r in range(4):  # every output phase keeps DC
        for c in range(4):
            assert float(f4[r::4, c::4].sum()) * 16 == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("angle", [0.0, 0.4, -2.3, math.pi])
def test_rotating_a_radial_pattern_changes_nothing(angle):
    x, y = _pixel_grid(32)
    blob = torch.exp(-(x.square() + y.square()) / (2 * 3.0**2)) * 1.5 - 0.5
    img = blob[None, None].float()
    out, mask = eq.rotate_bandlimited(img, angle)
    assert mask.sum() > 100
    assert _psnr(out, img, mask) > 40


@pytest.mark.parametrize("angle", [0.5, -1.9, 3.0])
def test_rotation_of_sinusoids_matches_the_rotated_pattern(angle):
    x, y = _pixel_grid(40)
    img = _waves(x, y)[None, None].float()
    # The image rotated by `angle` shows at p the pattern at rotation_matrix(-angle) @ p.
    inv = eq.rotation_matrix(-angle)
    expected = _waves(inv[0, 0] * x + inv[0, 1] * y, inv[1, 0] * x + inv[1, 1] * y)[None, None].float()
    out, mask = eq.rotate_bandlimited(img, angle)
    assert _psnr(out, expected, mask) > 40
    # The pseudo-rotation only filters: low frequencies pass unchanged.
    filtered, filtered_mask = eq.pseudo_rotate(expected, angle)
    assert _psnr(filtered, expected, filtered_mask) > 40
    wrong, wrong_mask = eq.rotate_bandlimited(img, -angle)
    assert _psnr(wrong, expected, wrong_mask) < 20


# ---------------------------------------------------------------------------------------
# Scale-consistency low-pass.


def test_lowpass_resampling_matrix():
    coarse, fine = line_coords(32).double().numpy(), line_coords(64).double().numpy()
    weights, valid = eq.lowpass_resampling_matrix(coarse, fine)
    assert weights.shape == (32, 64) and np.allclose(weights.sum(axis=1), 1)
    assert valid.tolist() == [0.0] * 6 + [1.0] * 20 + [0.0] * 6
    # A low-frequency cosine on the fine grid comes back as the same cosine on the coarse grid
    # (frequency in cycles per coarse pixel: 0.12 passes, 0.8 is beyond the coarse Nyquist).
    step = coarse[1] - coarse[0]
    passed = weights @ np.cos(2 * np.pi * 0.12 * fine / step)
    assert np.abs((passed - np.cos(2 * np.pi * 0.12 * coarse / step)) * valid).max() < 2e-3
    stopped = weights @ np.cos(2 * np.pi * 0.8 * fine / step)
    assert np.abs(stopped * valid).max() < 1e-2


# ---------------------------------------------------------------------------------------
# Stub generators with known behaviour.


class _Input(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("transform", torch.eye(3))


class PatternSynthesis(torch.nn.Module):
    """Renders _waves with per-image phases from ws. `mode`: 'follow' samples the pattern at
    transform @ p (exactly equivariant: the buffer holds the inverse image transform),
    'inverse' at transform^-1 @ p (wrong direction), 'ignore' at p."""

    def __init__(self, res: int, mode: str = "follow", fail_on_call: int = 0):
        super().__init__()
        self.res, self.mode, self.fail_on_call, self.calls = res, mode, fail_on_call, 0
        self.input = _Input()

    def forward(self, ws, noise_mode="random", force_fp32=False):
        assert noise_mode == "const" and force_fp32
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("synthesis failed")
        m = self.input.transform.double()
        m = {"follow": m, "inverse": torch.linalg.inv(m), "ignore": torch.eye(3, dtype=torch.float64)}[self.mode]
        x, y = (v / self.res for v in _pixel_grid(self.res))  # image units, as StyleGAN3's input
        qx = (m[0, 0] * x + m[0, 1] * y + m[0, 2]) * self.res
        qy = (m[1, 0] * x + m[1, 1] * y + m[1, 2]) * self.res
        phases = ws[:, 0, :3].double()
        imgs = [_waves(qx, qy, phases=phases[i].tolist()) for i in range(ws.shape[0])]
        return torch.stack(imgs)[:, None].float()


class StubG(torch.nn.Module):
    z_dim, c_dim, img_channels = 3, 0, 1

    def __init__(self, synthesis: torch.nn.Module, res: int):
        super().__init__()
        self.img_resolution = res
        self.synthesis = synthesis

    def mapping(self, z, c):
        return z[:, None, :]


class TransformStubG(StubG):
    """A stub that takes a user transform (declared as such below)."""


class ScaleStubG(StubG):
    """A stub that renders at any scale (declared as such below)."""


@pytest.fixture(autouse=True)
def stub_families(monkeypatch):
    """The stub generators, each declared as a family, as a real network declares itself."""
    def family(name, network, capability, **kw):
        return Family(name=name, role="G", config=type(f"{name}Config", (), {}), network=network,
                      published_name=f"stub.{name}", from_published=lambda init: None,
                      capabilities=frozenset({capability}), **kw)

    stubs = (family("transform-stub", TransformStubG, Capability.USER_TRANSFORM,
                    transform_buffer=lambda G: G.synthesis.input.transform),
             family("scale-stub", ScaleStubG, Capability.ANY_SCALE))
    monkeypatch.setattr(registry, "FAMILIES", registry.FAMILIES + stubs)


@pytest.mark.parametrize("name", ["eqt8_int", "eqt8_frac", "eqr8"])
def test_an_exactly_equivariant_stub_scores_high_and_a_wrong_one_low(name):
    follow = _run(TransformStubG(PatternSynthesis(32, "follow"), 32), name)
    ignore = _run(TransformStubG(PatternSynthesis(32, "ignore"), 32), name)
    inverse = _run(TransformStubG(PatternSynthesis(32, "inverse"), 32), name)
    assert follow > 40, follow
    assert ignore < 25 and inverse < 25, (ignore, inverse)


def test_transform_and_mode_restored_even_on_error():
    synthesis = PatternSynthesis(16, fail_on_call=3)
    G = TransformStubG(synthesis, 16).train()
    set_transform(G, (0.1, -0.05), 20)
    before = G.synthesis.input.transform.clone()
    with pytest.raises(RuntimeError, match="synthesis failed"):
        _run(G, "eqr8")
    assert torch.equal(G.synthesis.input.transform, before) and G.training


class ScaleSynthesis(torch.nn.Module):
    """A CREPS-like synthesis: renders cos(2 pi f u) + cos(2 pi f v) on the CREPS coordinate
    lines at any scale; f in cycles per native pixel."""

    def __init__(self, res: int, freq: float):
        super().__init__()
        self.res, self.freq = res, freq

    def tiles(self, ws, scale=None, **unused):
        """The whole output as one tile (a CREPS synthesis renders in tiles; supports_any_scale asks)."""
        image = self.forward(ws, scale=scale)
        yield (0, 0, image.shape[2], image.shape[3]), image

    def forward(self, ws, noise_mode="random", force_fp32=False, scale=None):
        n = int(self.res * (scale or 1))
        u = line_coords(n).double() * (self.res - 1)  # native pixel units
        wave = torch.cos(2 * math.pi * self.freq * u + ws[:, 0, :1].double())  # [N, n]
        return (0.4 * (wave[:, None, :, None] + wave[:, None, None, :])).float()


def test_eqs_scores_a_band_limited_renderer_high_and_an_aliasing_one_low():
    assert supports_any_scale(ScaleStubG(ScaleSynthesis(32, 0.1), 32))
    good = _run(ScaleStubG(ScaleSynthesis(32, 0.1), 32), "eqs8")
    aliased = _run(ScaleStubG(ScaleSynthesis(32, 0.8), 32), "eqs8")
    assert good > 40 and aliased < 15, (good, aliased)


# ---------------------------------------------------------------------------------------
# Real networks, tiny.


def _sg3(radial: bool = False, c_dim: int = 0):
    init = dict(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                channel_max=16, mapping_kwargs={"num_layers": 1})
    if radial:
        init.update(conv_kernel=1, use_radial_filters=True)
    return build_published("stylegan3.Generator", init)


def _creps():
    init = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32,
                mapping_kwargs={"num_layers": 1})
    return build_published("creps.Generator", init)


def test_stylegan3_t_translation_metrics():
    G = _sg3().train()
    set_transform(G, (0.2, 0.0), 10)
    before = G.synthesis.input.transform.clone()
    first = _run(G, "eqt6_int", batch_size=4)
    assert math.isfinite(first) and first > 0
    assert _run(G, "eqt6_int", batch_size=4) == first  # same seed, same number
    assert _run(G, "eqt6_int", batch_size=4, seed=1) != first
    assert torch.equal(G.synthesis.input.transform, before) and G.training
    assert math.isfinite(_run(G, "eqt4_frac"))


def test_stylegan3_r_rotation_and_conditional():
    assert math.isfinite(_run(_sg3(radial=True), "eqr4"))
    labels = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    assert math.isfinite(_run(_sg3(c_dim=2), "eqt4_int", labels=labels))


def test_creps_scale_consistency_and_wrong_networks():
    G = _creps()
    value = _run(G, "eqs5", batch_size=2)
    assert math.isfinite(value) and value == pytest.approx(_run(G, "eqs5", batch_size=4), abs=1e-4)  # any batching
    with pytest.raises(UserError, match="StyleGAN3"):
        _run(G, "eqt4_int")
    with pytest.raises(UserError, match="CREPS"):
        _run(_sg3(), "eqs4")
