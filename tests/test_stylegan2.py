"""StyleGAN2 generator: shapes, noise, modulated conv paths, mapping rules, layout, gradients, autocast."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import network_fixtures
from creps.nets.family import GeneratorOptions
from creps.nets.registry import build, build_published, preset_named
from creps.nets.stylegan2 import Generator, StyleGAN2Config, demodulation_coefficients, modulated_conv2d
from creps.ops.conv2d_resample import conv2d_resample
from creps.ops.upfirdn2d import setup_filter

SMALL = dict(z_dim=16, w_dim=16, img_channels=3, channel_base=256, channel_max=16, mapping_layers=2)


def small_g(res: int = 16, c_dim: int = 0, **kw) -> Generator:
    g = Generator(StyleGAN2Config(c_dim=c_dim, img_resolution=res, **{**SMALL, **kw}))
    with torch.no_grad():  # published init leaves these at zero: make them matter
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
            elif name.endswith(".bias") and "affine" not in name and "mapping" not in name:
                p.normal_(0, 0.2)
        g.mapping.w_avg.normal_()
    return g


@pytest.mark.parametrize("res,num_ws", [(16, 6), (32, 8), (64, 10)])
def test_shapes_and_num_ws(res, num_ws):
    g = small_g(res).eval()
    assert g.num_ws == num_ws
    assert g.synthesis.block_resolutions == [2**i for i in range(2, res.bit_length())]
    z = torch.randn(3, g.z_dim)
    ws = g.mapping(z, None)
    assert ws.shape == (3, num_ws, g.w_dim)
    img = g(z, None)
    assert img.shape == (3, 3, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    # channels: min(channel_base // res, channel_max)
    assert g.synthesis.b4.const.shape == (16, 4, 4)
    assert getattr(g.synthesis, f"b{res}").conv1.weight.shape[0] == min(256 // res, 16)


def test_ws_rows_overlap_as_published():
    g = small_g(32)
    assert g.synthesis.block_ws_rows() == [[0, 1], [1, 2, 3], [3, 4, 5], [5, 6, 7]]
    with pytest.raises(ValueError, match="ws must have shape"):
        g.synthesis(torch.zeros(1, 7, 16))


def test_each_ws_row_reaches_its_layers():
    """Changing only row 3 changes b8.torgb and b16.conv0 but not the 8x8 features."""
    g = small_g(16).eval()
    ws = g.mapping(torch.randn(2, 16), None)
    seen = {}
    hooks = [getattr(g.synthesis, f"b{r}").register_forward_hook(lambda m, i, o, r=r: seen.__setitem__(r, o))
             for r in (4, 8, 16)]
    g.synthesis(ws, noise_mode="const")
    base = {r: (o[0].clone(), o[1].clone()) for r, o in seen.items()}
    ws2 = ws.clone()
    ws2[:, 3] += 1
    g.synthesis(ws2, noise_mode="const")
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen[8][0], base[8][0])  # b8 features: rows 1, 2
    assert not torch.allclose(seen[8][1], base[8][1])  # b8 image: torgb reads row 3
    assert not torch.allclose(seen[16][0], base[16][0])  # b16.conv0 reads row 3


def test_noise_modes():
    g = small_g(16).eval()
    ws = g.mapping(torch.randn(2, 16), None)
    const_a = g.synthesis(ws, noise_mode="const")
    const_b = g.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(const_a, const_b, rtol=0, atol=0)
    rand_a = g.synthesis(ws, noise_mode="random")
    rand_b = g.synthesis(ws, noise_mode="random")
    assert not torch.allclose(rand_a, rand_b)
    none = g.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const_a)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    torch.testing.assert_close(g.synthesis(ws, noise_mode="random"), none)
    torch.testing.assert_close(g.synthesis(ws, noise_mode="const"), none)
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(ws, noise_mode="fixed")


def _per_sample_reference(x, weight, styles, demodulate):
    """Plain definition: one F.conv2d per sample with its own modulated (demodulated) weight."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        outs.append(F.conv2d(x[n:n + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_matches_per_sample_definition(demodulate, fused):
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64) + 1
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, fused=fused, padding=1)
    torch.testing.assert_close(got, _per_sample_reference(x, weight, styles, demodulate).float(),
                               check_dtype=False, rtol=1e-5, atol=1e-5)


def test_fused_and_non_fused_modulated_conv_agree_when_upsampling():
    f = setup_filter([1, 3, 3, 1])
    x, weight, styles = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(2, 4)
    noise = torch.randn(2, 1, 10, 10)
    a = modulated_conv2d(x, weight, styles, fused=True, noise=noise, up=2, padding=1, resample_filter=f,
                         flip_weight=False)
    b = modulated_conv2d(x, weight, styles, fused=False, noise=noise, up=2, padding=1, resample_filter=f,
                         flip_weight=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # and both equal: modulate, shared upsampling conv, demodulate
    d = demodulation_coefficients(weight, styles)
    ref = conv2d_resample(x * styles[:, :, None, None], weight, f=f, up=2, padding=1, flip_weight=False)
    torch.testing.assert_close(a, ref * d[:, :, None, None] + noise, rtol=0, atol=1e-5)


def test_generator_fused_equals_non_fused():
    g = small_g(32).eval()
    z = torch.randn(3, 16)
    a = g(z, None, noise_mode="const", fused_modconv=True)
    b = g(z, None, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    # default: fused in eval, not in training (published 'inference_only')
    assert g.synthesis._use_fused(None) is True
    assert g.train().synthesis._use_fused(None) is False


def test_conditional_mapping():
    g = small_g(16, c_dim=4).eval()
    assert g.mapping.embed.weight.shape == (16, 4)
    z = torch.randn(2, 16)
    c0 = F.one_hot(torch.tensor([0, 0]), 4).float()
    c1 = F.one_hot(torch.tensor([1, 1]), 4).float()
    assert not torch.allclose(g.mapping(z, c0), g.mapping(z, c1))
    assert g(z, c0).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="labels"):
        g.mapping(z, None)


def test_w_avg_moves_on_update_emas_passes_as_nvlabs():
    """NVlabs rule: w_avg <- lerp(mean w, w_avg, beta) on update_emas=True passes, in any mode; never otherwise."""
    g = small_g(16)
    z = torch.randn(4, 16)
    before = g.mapping.w_avg.clone()
    g.train()
    g.mapping(z, None)
    g(z, None)
    torch.testing.assert_close(g.mapping.w_avg, before, rtol=0, atol=0)
    g.eval()
    g.mapping(z, None)
    torch.testing.assert_close(g.mapping.w_avg, before, rtol=0, atol=0)
    ws = g.mapping(z, None, update_emas=True)
    expected = ws[:, 0].mean(dim=0).lerp(before, 0.998)
    torch.testing.assert_close(g.mapping.w_avg, expected)
    g.train()
    g(z, None, update_emas=True)
    assert not torch.equal(g.mapping.w_avg, expected)


def test_truncation():
    g = small_g(16).eval()
    z = torch.randn(3, 16)
    ws = g.mapping(z, None)
    w_avg = g.mapping.w_avg
    zero = g.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(zero, w_avg.expand_as(zero))
    half = g.mapping(z, None, truncation_psi=0.5)
    torch.testing.assert_close(half, w_avg + 0.5 * (ws - w_avg))
    cut = g.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], half[:, :2])
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
    # psi = 0 renders the mean image for every z
    img = g(z, None, truncation_psi=0, noise_mode="const")
    torch.testing.assert_close(img, img[:1].expand_as(img))


@pytest.mark.parametrize("path", network_fixtures("stylegan2.Generator"), ids=lambda p: p.stem)
def test_state_dict_layout_equals_published(path):
    spec = json.loads(path.read_text())
    published = {k.removeprefix("param."): v for k, v in load_file(str(path.with_suffix(".safetensors"))).items()
                 if k.startswith("param.")}
    ours = build_published(spec["network"], spec["init"]).state_dict()
    assert sorted(ours) == sorted(published)
    assert len(ours) == spec["state_dict_keys"]
    for key, value in published.items():
        assert ours[key].shape == value.shape, key


def test_compat_arguments():
    base = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    g = build_published("stylegan2.Generator", {**base, "fused_modconv_default": "inference_only",
                                                          "num_fp16_res": 2, "conv_clamp": None, "fp16_channels_last": False,
                                   "mapping_kwargs": {"num_layers": 3, "w_avg_beta": 0.99}})
    assert g.synthesis.fused_modconv is None and g.synthesis.b8.conv1.conv_clamp is None
    assert g.mapping.num_layers == 3 and g.mapping.w_avg_beta == 0.99
    assert g.synthesis.b8.low_precision and not g.synthesis.b4.low_precision
    assert build_published("stylegan2.Generator", {**base, "fused_modconv_default": False}).synthesis.fused_modconv is False
    with pytest.raises(ValueError, match="architecture"):
        build_published("stylegan2.Generator", {**base, "architecture": "resnet"})
    with pytest.raises(ValueError, match="bogus"):
        build_published("stylegan2.Generator", {**base, "mapping_kwargs": {"bogus": 1}})
    with pytest.raises(ValueError, match="missing"):
        build_published("stylegan2.Generator", {"z_dim": 8})


def test_registry_builds_stylegan2():
    cfg = preset_named("stylegan2").generator(GeneratorOptions(
        z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
        mapping_layers=2, clamp=None, batch_size=32))
    g = build(cfg)
    assert isinstance(g, Generator) and g.synthesis.b16.conv1.conv_clamp is None
    assert g.mapping.w_avg_update_on == "update_emas"


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_reach_every_parameter_and_double_backward(fused):
    g = small_g(16).train()
    z = torch.randn(2, 16)
    ws = g.mapping(z, None)
    img = g.synthesis(ws, noise_mode="random", fused_modconv=fused)
    # path-length style Jacobian-vector product keeps the graph (needs double backward)
    (jac,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    loss = img.square().mean() + jac.square().sum()
    loss.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_autocast_bfloat16_on_cpu():
    g = small_g(32, num_fp16_res=2).eval()
    z = torch.randn(2, 16)
    dtypes = {}
    for r in (4, 8, 16, 32):
        getattr(g.synthesis, f"b{r}").register_forward_hook(lambda m, i, o, r=r: dtypes.__setitem__(r, o[0].dtype))
    ref = g(z, None, noise_mode="const")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = g(z, None, noise_mode="const")
        assert dtypes == {4: torch.float32, 8: torch.float32, 16: torch.bfloat16, 32: torch.bfloat16}
        exact = g(z, None, noise_mode="const", force_fp32=True)
        assert set(dtypes.values()) == {torch.float32}
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(exact, ref, rtol=0, atol=0)
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()
    # training step under autocast: gradients in float32 for every parameter
    g.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = g(z, None)
    img.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in g.parameters())
