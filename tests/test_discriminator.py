"""StyleGAN2 discriminator: shapes, conditioning, minibatch-stddev, Freeze-D, precision, layout."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import network_fixtures
from creps.nets.discriminator import Discriminator, DiscriminatorConfig, minibatch_stddev
from creps.nets.registry import build_published


def _small_d(res=32, **kw) -> Discriminator:
    kw.setdefault("channel_base", 256)
    kw.setdefault("channel_max", 16)
    kw.setdefault("mbstd_group_size", 2)
    return Discriminator(DiscriminatorConfig(c_dim=kw.pop("c_dim", 0), img_resolution=res, img_channels=3, **kw))


def _images(n, res, seed=0):
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("res", [16, 32, 64])
@pytest.mark.parametrize("architecture", ["resnet", "skip", "orig"])
def test_output_shape_and_backward(res, architecture):
    torch.manual_seed(0)
    d = _small_d(res, architecture=architecture)
    assert d.block_resolutions == [2**i for i in range(res.bit_length() - 1, 2, -1)]
    img = _images(4, res).requires_grad_(True)
    logits = d(img, None)
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    logits.sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert all(p.grad is not None for p in d.parameters())


def test_resnet_layer_count():
    d = _small_d(32)
    assert d.layer_names() == [
        "b32.fromrgb", "b32.conv0", "b32.conv1", "b32.skip",
        "b16.conv0", "b16.conv1", "b16.skip",
        "b8.conv0", "b8.conv1", "b8.skip",
    ]  # fmt: skip
    assert len(_small_d(32, architecture="skip").layer_names()) == 9  # fromrgb in every block, no skip


def test_conditioning():
    torch.manual_seed(0)
    d = _small_d(16, c_dim=4, cmap_dim=8)
    assert d.mapping.num_layers == 8 and d.b4.out.out_features == 8
    img = _images(4, 16)
    one_hot = torch.eye(4)
    out = d(img, one_hot)
    assert out.shape == (4, 1)
    assert not torch.allclose(out, d(img, one_hot.roll(1, dims=0)))
    with pytest.raises(ValueError, match="labels"):
        d(img, None)
    with pytest.raises(ValueError, match="labels"):
        d(img, torch.zeros(4, 3))
    # the default cmap_dim is the channel count at 4x4
    assert _small_d(16, c_dim=3).b4.out.out_features == 16
    assert _small_d(16, c_dim=3, mapping_layers=2).mapping.num_layers == 2


def test_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match="images"):
        _small_d(16)(_images(2, 32), None)


def test_mbstd_group_divisibility():
    d = _small_d(16, mbstd_group_size=2)
    with pytest.raises(ValueError, match="divisible"):
        d(_images(3, 16), None)
    assert d(_images(1, 16), None).shape == (1, 1)  # group size min(G, N)
    assert _small_d(16, mbstd_group_size=None)(_images(3, 16), None).shape == (3, 1)


def test_mbstd_grouping_is_strided():
    # sample i belongs to group i % (N / G): with N=4, G=2 the groups are {0, 2} and {1, 3}
    x = torch.randn(4, 6, 2, 2)
    y = minibatch_stddev(x, group_size=2)
    assert y.shape == (4, 7, 2, 2)
    for members in ((0, 2), (1, 3)):
        std = (x[list(members)].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in members:
            torch.testing.assert_close(y[i, 6], torch.full((2, 2), std.item()))
    two = minibatch_stddev(x, group_size=4, num_channels=2)
    assert two.shape == (4, 8, 2, 2)
    torch.testing.assert_close(two[0, 6:], two[3, 6:])


def test_freeze_layers():
    torch.manual_seed(0)
    d = _small_d(32, freeze_layers=3)
    assert d.frozen_layer_names() == ["b32.fromrgb", "b32.conv0", "b32.conv1"]
    frozen = d.frozen_parameter_names()
    assert frozen == [
        "b32.fromrgb.weight", "b32.fromrgb.bias", "b32.conv0.weight",
        "b32.conv0.bias", "b32.conv1.weight", "b32.conv1.bias",
    ]  # fmt: skip
    params = dict(d.named_parameters())
    buffers = dict(d.named_buffers())
    assert all(k in buffers and k not in params for k in frozen)
    assert "b32.skip.weight" in params and "b16.conv0.weight" in params
    assert set(d.state_dict()) == set(_small_d(32).state_dict())

    before = {k: v.detach().clone() for k, v in d.state_dict().items()}
    opt = torch.optim.SGD(d.parameters(), lr=0.1)
    d(_images(4, 32), None).square().sum().backward()
    opt.step()
    after = d.state_dict()
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    for key in params:
        assert not torch.equal(before[key], after[key]), key


def test_autocast_bf16_cpu():
    torch.manual_seed(0)
    d = _small_d(32, c_dim=2, num_fp16_res=2)
    img, c = _images(4, 32), torch.eye(2).repeat(2, 1)
    ref = d(img, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(img, c)
        exact = d(img, c, force_fp32=True)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    assert torch.equal(exact, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d(img, c).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in d.parameters())


def test_conv_clamp_none_and_state_dict_unchanged():
    d = _small_d(16, conv_clamp=None)
    assert d.b16.conv0.conv_clamp is None
    assert set(d.state_dict()) == set(_small_d(16).state_dict())


@pytest.mark.parametrize("path", network_fixtures("stylegan2.Discriminator"), ids=lambda p: p.stem)
def test_state_dict_layout_matches_fixture(path):
    from safetensors import safe_open

    meta = json.loads(path.read_text())
    d = build_published(meta["network"], meta["init"])
    with safe_open(str(path.with_suffix(".safetensors")), "pt") as fh:
        shapes = {k[len("param.") :]: tuple(fh.get_slice(k).get_shape()) for k in fh.keys() if k.startswith("param.")}
    ours = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert ours == shapes
    assert len(ours) == meta["state_dict_keys"]


def test_compat_mapping_and_errors():
    init = {
        "c_dim": 3,
        "img_resolution": 16,
        "img_channels": 3,
        "channel_base": 256,
        "channel_max": 16,
        "architecture": "skip",
        "conv_clamp": None,
        "num_fp16_res": 0,
        "cmap_dim": 4,
        "block_kwargs": {"freeze_layers": 2, "fp16_channels_last": False},
        "mapping_kwargs": {"num_layers": 2},
        "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 1},
    }
    d = build_published("stylegan2.Discriminator", init)
    assert (d.architecture, d.cmap_dim, d.freeze_layers, d.mapping.num_layers) == ("skip", 4, 2, 2)
    assert d.b16.conv0.conv_clamp is None and d.b4.mbstd_group_size == 4
    with pytest.raises(ValueError, match="bogus"):
        build_published("stylegan2.Discriminator", {**init, "bogus": 1})
    with pytest.raises(ValueError, match="wild"):
        build_published("stylegan2.Discriminator", {**init, "epilogue_kwargs": {"wild": 0}})
    with pytest.raises(ValueError, match="activation"):
        build_published("stylegan2.Discriminator", {**init, "block_kwargs": {"activation": "relu"}})
