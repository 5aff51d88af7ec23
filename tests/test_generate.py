"""creps.generate: region and tiled renders, style mixing, interpolation, the user transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from creps import generate
from creps.nets import creps as creps_net
from creps.nets import stylegan2, stylegan3


def tiny_creps(c_dim: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    G = creps_net.Generator(creps_net.CrepsConfig(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
                                                channel_base=256, channel_max=32, mapping_layers=1)).eval().requires_grad_(False)
    with torch.no_grad():  # non-zero biases so that every layer shapes the image
        for name, p in G.named_parameters():
            if name.endswith(".bias") and "mapping" not in name:
                p.copy_(torch.randn_like(p) * 0.1)
    return G


def tiny_stylegan2() -> torch.nn.Module:
    torch.manual_seed(0)
    return stylegan2.Generator(stylegan2.StyleGAN2Config(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                                                  channel_base=256, channel_max=16, mapping_layers=1)).eval().requires_grad_(False)


def tiny_stylegan3() -> torch.nn.Module:
    torch.manual_seed(0)
    return stylegan3.Generator(stylegan3.StyleGAN3Config(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                                                  channel_base=512, channel_max=16, mapping_layers=1)).eval().requires_grad_(False)


def ws_of(G, seeds, psi=1.0):
    z = torch.cat([generate.z_from_seed(s, G.z_dim) for s in seeds])
    return generate.mapped_ws(G, z, None, truncation_psi=psi)


def test_capabilities():
    C, S2, S3 = tiny_creps(), tiny_stylegan2(), tiny_stylegan3()
    assert [generate.supports_any_scale(G) for G in (C, S2, S3)] == [True, False, False]
    assert [generate.supports_user_transform(G) for G in (C, S2, S3)] == [False, False, True]
    assert [generate.has_noise_inputs(G) for G in (C, S2, S3)] == [False, True, False]
    assert generate.output_size(C, scale=2.5) == (40, 40) and generate.output_size(C, size=(12, 20)) == (12, 20)
    assert generate.output_size(S2) == (16, 16)
    with pytest.raises(ValueError, match="renders at its native 16x16 only"):
        generate.output_size(S2, scale=2)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_creps_region_is_the_crop_of_the_whole_render(scale):
    G = tiny_creps()
    z = generate.z_from_seed(3, G.z_dim)
    full = generate.render(G, z, None, truncation_psi=0.7, scale=scale)
    rows = full.shape[2]
    region = (rows // 3, rows // 4, rows // 2, rows // 2 + 1)
    part = generate.render(G, z, None, truncation_psi=0.7, scale=scale, region=region)
    top, left, h, w = region
    assert part.shape == (1, 3, h, w)
    torch.testing.assert_close(part, full[:, :, top: top + h, left: left + w], rtol=0, atol=1e-5)


def test_creps_region_outside_the_output_is_refused():
    G = tiny_creps()
    z = generate.z_from_seed(0, G.z_dim)
    with pytest.raises(ValueError, match="not inside the 32x32 output"):
        generate.render(G, z, None, scale=2, region=(20, 0, 16, 16))
    with pytest.raises(ValueError, match="renders at its native 16x16 only"):
        generate.render(tiny_stylegan2(), z, None, region=(0, 0, 8, 8))


@pytest.mark.parametrize("tile", [7, 16, 64])
def test_creps_tiles_put_together_equal_the_whole_render(tile):
    G = tiny_creps()
    ws = ws_of(G, [0, 1, 2], psi=0.8)
    whole = generate.to_uint8(G.synthesis(ws, size=(24, 40)))
    calls = []
    tiled = generate.render_tiles(G, ws, size=(24, 40), tile=tile, max_pixels=2 * tile * tile,
                                  before_each=lambda: calls.append(1))
    assert tiled.shape == (3, 24, 40, 3) and tiled.dtype == np.uint8
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float sums may round differently
    assert (tiled == whole).mean() > 0.999
    tiles_per_image = -(-24 // tile) * -(-40 // tile)
    per_call = max(1, 2 * tile * tile // (min(tile, 24) * min(tile, 40)))
    assert len(calls) == -(-3 // per_call) * (tiles_per_image + 1)  # + 1: the check that ends each batch
    region = generate.render_tiles(G, ws[:1], scale=3, region=(10, 7, 20, 9), tile=tile)
    crop = generate.to_uint8(generate.render(G, generate.z_from_seed(0, G.z_dim), None, truncation_psi=0.8,
                                             scale=3))[:, 10:30, 7:16]
    assert region.shape == (1, 20, 9, 3) and np.abs(region.astype(int) - crop.astype(int)).max() <= 1


def test_tiled_render_stops_when_asked():
    G = tiny_creps()
    ws = ws_of(G, [0])

    class Stop(Exception):
        pass

    count = []

    def before_each():
        count.append(1)
        if len(count) == 3:
            raise Stop

    with pytest.raises(Stop):
        generate.render_tiles(G, ws, size=64, tile=8, before_each=before_each)
    assert len(count) == 3  # two of the 64 tiles rendered, then it stopped


def test_render_tiles_of_other_networks_are_whole_images():
    G = tiny_stylegan2()
    ws = ws_of(G, [0, 1, 2])
    out = generate.render_tiles(G, ws, max_pixels=2 * 16 * 16)
    z = torch.cat([generate.z_from_seed(s, 16) for s in (0, 1, 2)])
    assert np.array_equal(out, generate.to_uint8(generate.render(G, z, None)))
    with pytest.raises(ValueError, match="renders at its native 16x16 only"):
        generate.render_tiles(G, ws, region=(0, 0, 4, 4))


def test_truncation_cutoff_limits_the_truncated_rows():
    G = tiny_creps()
    z = generate.z_from_seed(5, G.z_dim)
    plain = generate.mapped_ws(G, z, None)
    cut = generate.mapped_ws(G, z, None, truncation_psi=0.0, truncation_cutoff=4)
    w_avg = G.mapping.w_avg
    torch.testing.assert_close(cut[0, :4], w_avg.expand(4, -1))
    torch.testing.assert_close(cut[0, 4:], plain[0, 4:])
    full = generate.render(G, z, None, truncation_psi=0.0, truncation_cutoff=4)
    assert torch.equal(full, G.synthesis(cut))


def test_mix_styles_takes_the_chosen_rows_from_the_donor():
    G = tiny_creps()
    a, b = ws_of(G, [1]), ws_of(G, [2])
    mixed = generate.mix_styles(a, b, [0, 1, 2])
    assert torch.equal(mixed[:, :3], b[:, :3]) and torch.equal(mixed[:, 3:], a[:, 3:])
    assert torch.equal(generate.mix_styles(a, b, []), a)
    with pytest.raises(ValueError, match="out of range"):
        generate.mix_styles(a, b, [G.num_ws])


def test_interpolation_runs_from_one_latent_to_the_other():
    G = tiny_creps()
    a, b = ws_of(G, [1]), ws_of(G, [2])
    path = generate.interpolate_ws(a, b, 5)
    assert path.shape == (5, G.num_ws, G.w_dim)
    torch.testing.assert_close(path[0], a[0])
    torch.testing.assert_close(path[-1], b[0])
    torch.testing.assert_close(path[2], (a[0] + b[0]) / 2)
    with pytest.raises(ValueError):
        generate.interpolate_ws(a, b, 1)


def test_user_transform_translates_and_is_put_back():
    G = tiny_stylegan3()
    z = generate.z_from_seed(0, G.z_dim)
    before = generate.render(G, z, None)
    with generate.transformed(G, translate=(0.25, 0), angle_deg=0):
        moved = generate.render(G, z, None)
    after = generate.render(G, z, None)
    assert torch.equal(before, after)
    # A quarter of the width to the right: the moved image's columns 4.. are the original's 0..
    err = (moved[..., 6:14] - before[..., 2:10]).abs().mean() / before.abs().mean()
    assert err < 0.2 and (moved - before).abs().mean() / before.abs().mean() > 0.3
    generate.set_transform(G, angle_deg=90)
    turned = generate.render(G, z, None)
    generate.set_transform(G)
    assert torch.equal(generate.render(G, z, None), before) and not torch.equal(turned, before)
    with pytest.raises(ValueError, match="only StyleGAN3"):
        generate.set_transform(tiny_creps(), (0.1, 0))
    with pytest.raises(ValueError, match="only StyleGAN3"):
        with generate.transformed(tiny_creps(), (0.1, 0)):
            pass
