"""StyleGAN3 generator (T and R): layout, schedule, EMAs, user transform, gradients, autocast."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import network_fixtures
from creps.generate import set_transform
from creps.nets.registry import build_published
from creps.nets.stylegan3 import Generator, StyleGAN3Config, layer_plan, make_transform

SG3_FIXTURES = network_fixtures("stylegan3.Generator")
needs_fixtures = pytest.mark.skipif(not SG3_FIXTURES, reason="no stylegan3 parity fixtures found")


def small_g(res: int = 32, radial: bool = False, c_dim: int = 0, **kw) -> Generator:
    extra = dict(conv_kernel=1, use_radial_filters=True) if radial else {}
    base, cmax = (1024, 32) if radial else (512, 16)
    return Generator(StyleGAN3Config(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=res, img_channels=3,
                     channel_base=base, channel_max=cmax, **extra, **kw))


def _labels(n: int, c_dim: int):
    return torch.eye(c_dim)[torch.arange(n) % c_dim] if c_dim else None


@pytest.mark.parametrize("res", [16, 32])
@pytest.mark.parametrize("radial", [False, True])
def test_shapes_and_attributes(res, radial):
    G = small_g(res, radial)
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (32, 0, 32, res, 3)
    assert G.num_ws == 16 and G.mapping.num_layers == 2
    z = torch.randn(3, 32)
    ws = G.mapping(z, None)
    assert ws.shape == (3, 16, 32)
    img = G(z, None, noise_mode="const")
    assert img.shape == (3, 3, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    layers = G.synthesis.layers()
    assert len(layers) == 15 and layers[-1].is_torgb
    assert all(layer.conv_kernel == (1 if radial else 3) for layer in layers[:-1])
    radial_layers = [layer.plan.index for layer in layers if layer.down_radial]
    assert radial_layers == (list(range(12)) if radial else [])
    for layer in layers[:-1]:  # critically sampled layers keep separable filters
        assert layer.down_filter.ndim == (2 if layer.down_radial else 1)
    assert layers[-1].up_filter is None and layers[-1].down_filter is None


def test_layer_plan_schedule():
    plans = layer_plan(1024, 3, 32768, 512)
    layers = plans[1:]
    assert plans[0].out_cutoff == 2 and plans[0].out_rate == 16 and plans[0].out_size == 36
    assert layers[-1].out_cutoff == pytest.approx(512) and layers[-3].out_cutoff == pytest.approx(512)
    assert [p.critically_sampled for p in layers] == [False] * 12 + [True] * 3
    assert [p.out_size for p in layers[-2:]] == [1024, 1024] and layers[-1].out_channels == 3
    rates = [p.out_rate for p in layers]
    assert rates == sorted(rates) and rates[-1] == 1024
    assert all(p.out_size == p.out_rate + 20 for p in layers[:-2])
    for p in layers:  # stopband above cutoff, at most Nyquist
        assert 0 < p.out_half_width and p.out_cutoff <= p.out_rate / 2
    assert layers[0].out_channels == 512 and layers[-2].out_channels == round(32768 / 2 / 512)
    # The published rule for float16 layers: sampling rate * 2^num_fp16_res > resolution.
    assert [p.low_precision for p in layers] == [p.out_rate * 16 > 1024 for p in layers]


_LAYER_NOTE = re.compile(
    r"(L\d+_\d+_\d+): in (\d+)x(\d+) -> out (\d+)x(\d+), up (\d+) \(taps (\d+)\), down (\d+) "
    r"\(taps (\d+), radial (True|False)\), kernel (\d+), padding \[([-\d, ]+)\], critically_sampled (True|False)")


@needs_fixtures
@pytest.mark.parametrize("path", SG3_FIXTURES, ids=lambda p: p.stem)
def test_state_dict_and_schedule_equal_fixture(path):
    spec = json.loads(path.read_text())
    G = build_published(spec["network"], spec["init"])
    stored = {k.removeprefix("param."): v for k, v in load_file(str(path.with_suffix(".safetensors"))).items()
              if k.startswith("param.")}
    ours = G.state_dict()
    assert sorted(ours) == sorted(stored)
    for key, value in ours.items():
        assert value.shape == stored[key].shape and value.dtype == stored[key].dtype, key
        if key.endswith("_filter"):  # filters designed at construction time equal the published ones
            torch.testing.assert_close(value, stored[key], rtol=0, atol=1e-8)
    notes = " ".join(spec.get("notes", []))
    found = _LAYER_NOTE.findall(notes)
    assert len(found) == len(G.synthesis.layer_names)
    for name, _, in_size, _, out_size, up, up_taps, down, down_taps, radial, kernel, padding, critical in found:
        layer = getattr(G.synthesis, name)
        assert (layer.in_size, layer.out_size) == (int(in_size), int(out_size))
        assert (layer.up_factor, layer.down_factor, layer.conv_kernel) == (int(up), int(down), int(kernel))
        assert (1 if layer.up_filter is None else layer.up_filter.shape[0]) == int(up_taps)
        assert (1 if layer.down_filter is None else layer.down_filter.shape[0]) == int(down_taps)
        assert layer.down_radial == (radial == "True") and layer.plan.critically_sampled == (critical == "True")
        assert layer.padding == [int(v) for v in padding.split(",")]


def test_emas_move_only_with_update_emas():
    G = small_g().train()
    z = torch.randn(4, 32)

    def snapshot():
        return {k: v.clone() for k, v in G.named_buffers() if k.endswith("magnitude_ema") or k.endswith("w_avg")}

    before = snapshot()
    G(z, None)  # training mode alone moves nothing (StyleGAN3 rule)
    G.eval()
    G(z, None)
    assert all(torch.equal(before[k], v) for k, v in snapshot().items())

    inputs = {}
    first = G.synthesis.layers()[0]
    hook = first.register_forward_pre_hook(lambda mod, args: inputs.update(x=args[0].detach()))
    G.train()
    G(z, None, update_emas=True)
    hook.remove()
    after = snapshot()
    assert all(not torch.equal(before[k], v) for k, v in after.items())
    beta = first.magnitude_ema_beta
    want = beta * 1.0 + (1 - beta) * inputs["x"].square().mean()
    torch.testing.assert_close(first.magnitude_ema, want)


def test_magnitude_ema_beta_passes_through():
    G = small_g(magnitude_ema_beta=0.5)
    assert all(layer.magnitude_ema_beta == 0.5 for layer in G.synthesis.layers())


def test_make_transform_and_user_transform():
    torch.testing.assert_close(make_transform(), torch.eye(3, dtype=torch.float64))
    m = make_transform((0.1, -0.2), 90)
    torch.testing.assert_close(m, torch.tensor([[0.0, 1, 0.1], [-1, 0, -0.2], [0, 0, 1]], dtype=torch.float64))
    G = small_g()
    set_transform(G, (0.1, -0.2), 90)
    torch.testing.assert_close(G.synthesis.input.transform, torch.linalg.inv(m).float())
    set_transform(G)  # identity again
    torch.testing.assert_close(G.synthesis.input.transform, torch.eye(3))


@pytest.mark.parametrize("radial", [False, True])
def test_translate_transform_shifts_the_image(radial):
    G = small_g(32, radial).eval()
    z = torch.randn(2, 32)
    with torch.no_grad():
        base = G(z, None)
        set_transform(G, (0.25, 0.0))  # a quarter of the image: 8 pixels to the right
        right = G(z, None)
        set_transform(G, (0.0, 0.25))  # 8 pixels down
        down = G(z, None)
    m, scale = 4, base.abs().mean()
    assert (right[..., m:-m, 8 + m:-m] - base[..., m:-m, m:-8 - m]).abs().mean() < 0.05 * scale
    assert (down[..., 8 + m:-m, m:-m] - base[..., m:-8 - m, m:-m]).abs().mean() < 0.05 * scale
    assert (right - base).abs().mean() > 0.2 * scale


def test_rotation_by_quarter_turn_is_rot90_for_r():
    G = small_g(32, radial=True).eval()
    z = torch.randn(2, 32)
    with torch.no_grad():
        base = G(z, None)
        set_transform(G, (0, 0), 90)
        turned = G(z, None)
    assert (turned - torch.rot90(base, 1, dims=(2, 3))).abs().max() < 1e-3 * base.abs().max()


@pytest.mark.parametrize("radial", [False, True])
def test_gradients_reach_every_parameter(radial):
    G = small_g(16, radial, c_dim=3).train()
    z = torch.randn(2, 32)
    img = G(z, _labels(2, 3), update_emas=True)
    (img * torch.randn_like(img)).sum().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fused_and_unfused_modulation_agree():
    G = small_g(16).eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        fused = G(z, None, fused_modconv=True)
        unfused = G(z, None, fused_modconv=False)
    torch.testing.assert_close(unfused, fused, rtol=0, atol=1e-5 * fused.abs().max().item())


def test_truncation_pulls_toward_w_avg():
    G = small_g(16).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        z = torch.randn(2, 32)
        ws = G.mapping(z, None)
        half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=4)
    torch.testing.assert_close(half[:, :4], G.mapping.w_avg.lerp(ws[:, :4], 0.5))
    torch.testing.assert_close(half[:, 4:], ws[:, 4:])


def test_autocast_bf16_on_cpu():
    G = small_g(16).train()
    z = torch.randn(2, 32)
    with torch.no_grad():
        ref = G(z, None, fused_modconv=True)
    seen = {}
    hooks = [layer.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.dtype))
             for name, layer in zip(G.synthesis.layer_names, G.synthesis.layers())]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(z, None, fused_modconv=True)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    for layer, name in zip(G.synthesis.layers(), G.synthesis.layer_names):
        assert seen[name] == (torch.bfloat16 if layer.low_precision else torch.float32), name
    assert any(layer.low_precision for layer in G.synthesis.layers())
    assert (img - ref).abs().mean() < 0.1 * ref.abs().mean()
    img.square().mean().backward()
    assert all(p.grad is not None for p in G.parameters())
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        G(z, None, force_fp32=True)
    assert set(seen.values()) == {torch.float32}
    for h in hooks:
        h.remove()


def test_path_length_style_double_backward():
    G = small_g(16).train()
    ws = G.mapping(torch.randn(2, 32), None).detach().requires_grad_()
    img = G.synthesis(ws)
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad.square().sum().backward()
    assert G.synthesis.L0_36_16.weight.grad is not None


def test_compat_arguments():
    init = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=8,
                mapping_kwargs={"num_layers": 3}, conv_clamp=None, num_fp16_res=0, magnitude_ema_beta=0.99,
                conv_kernel=1, use_radial_filters=True, filter_size=6)
    G = build_published("stylegan3.Generator", init)
    assert G.mapping.num_layers == 3 and G.synthesis.num_fp16_res == 0
    assert all(layer.conv_clamp is None and layer.magnitude_ema_beta == 0.99 for layer in G.synthesis.layers())
    assert not any(layer.low_precision for layer in G.synthesis.layers())
    with pytest.raises(ValueError, match="filter_size"):
        build_published("stylegan3.Generator", {**init, "filter_size": 4})
    with pytest.raises(ValueError, match="bogus"):
        build_published("stylegan3.Generator", {**init, "bogus": 1})
    with pytest.raises(ValueError, match="missing"):
        build_published("stylegan3.Generator", {"z_dim": 8})


@pytest.mark.parametrize("arch", ["stylegan3-t", "stylegan3-r"])
def test_registry_builds_stylegan3(arch):
    from creps.nets.family import GeneratorOptions
    from creps.nets.registry import build, preset_named

    r = arch == "stylegan3-r"
    cfg = preset_named(arch).generator(GeneratorOptions(
        z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, channel_base=512, channel_max=16,
        mapping_layers=2, clamp=256, batch_size=32))
    G = build(cfg)
    assert isinstance(G, Generator)
    assert G.synthesis.L0_36_16.conv_kernel == (1 if r else 3)
    assert G.synthesis.L0_36_16.down_radial == r
    assert G.synthesis.L0_36_16.magnitude_ema_beta == pytest.approx(math.pow(0.5, 32 / 20000))
