"""VGG16 (LPIPS distances, fc features) and perceptual path length on tiny things: thin
random-weight VGG16 files written in torchvision's and LPIPS's layouts and read by the real
loader (paths, environment variables, file:// and http:// URLs, cache, hashes, offline), LPIPS
checked against a direct computation written here, and PPL end to end on a tiny StyleGAN2."""

from __future__ import annotations

import functools
import http.server
import math
import pickle
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import creps.download as download
from creps.errors import UserError
from creps.metrics import ppl, vgg16
from creps.metrics.features import Evaluation
from creps.metrics.spec import MetricSpec
from creps.metrics.vgg16 import VGG16, load_vgg16
from creps.nets import creps as creps_net
from creps.nets.stylegan2 import Generator, StyleGAN2Config
from tiny_vgg16 import CONV_INDICES, FC, lin_state, vgg_state
TAP_RELUS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer, for inputs in [-1, 1]
LPIPS_SCALE = (0.458, 0.448, 0.450)


# ---------------------------------------------------------------------------------------
# Weights files in the published layouts.


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CREPS_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("CREPS_VGG16", "CREPS_LPIPS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg")
    torch.save(vgg_state(), root / "tiny-vgg16.pth")
    torch.save(lin_state(), root / "tiny-lpips.pth")
    return root


@pytest.fixture(scope="module")
def net(files) -> VGG16:
    return load_vgg16(str(files / "tiny-vgg16.pth"), str(files / "tiny-lpips.pth"))


def images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------
# Independent references, written from the definitions.


def reference_taps(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> list[torch.Tensor]:
    """LPIPS's input scaling on [-1, 1], then VGG16 conv/ReLU/max-pool with F ops; the tapped ReLUs."""
    x = pixels.double() / 127.5 - 1
    shift = torch.tensor(LPIPS_SHIFT, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - shift) / torch.tensor(LPIPS_SCALE, dtype=x.dtype).view(1, 3, 1, 1)
    taps = []
    for i in range(max(TAP_RELUS) + 1):
        if i in CONV_INDICES:
            x = F.conv2d(x, state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double(), padding=1)
        elif i in (4, 9, 16, 23):
            x = F.max_pool2d(x, 2)
        else:
            x = F.relu(x)
            if i in TAP_RELUS:
                taps.append(x)
    return taps


def reference_lpips(state, lins, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per layer: unit-normalise over channels, squared difference, 1x1 conv with the lin
    weights, spatial mean; summed over layers."""
    total = 0
    for k, (fa, fb) in enumerate(zip(reference_taps(state, a), reference_taps(state, b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weighted = F.conv2d((na - nb) ** 2, lins[f"lin{k}.model.1.weight"].double())
        total = total + weighted.mean(dim=(2, 3))[:, 0]
    return total


def tf1_resize_by_grid_sample(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 resize_bilinear (no half-pixel centres): sample source position j * in / out, edges
    clamped, written as a shifted affine grid."""
    n, _, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / size], [0.0, 1.0, 1 / h - 1 / size]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------------------
# The network.


def test_full_size_layout_matches_torchvision_and_lpips():
    with torch.device("meta"):
        full = VGG16()
        shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
        x = torch.zeros(2, 3, 100, 100, dtype=torch.uint8)
        assert full.fc_features(x).shape == (2, 4096)
        assert full(x, return_features=True).shape == (2, 4096)
    expected = {}
    channels = 3
    for idx, out in zip(CONV_INDICES, [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]):
        expected[f"features.{idx}.weight"], expected[f"features.{idx}.bias"] = (out, channels, 3, 3), (out,)
        channels = out
    for idx, shape in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
        expected[f"classifier.{idx}.weight"], expected[f"classifier.{idx}.bias"] = shape, shape[:1]
    for k, c in enumerate((64, 128, 256, 512, 512)):
        expected[f"lin{k}.model.1.weight"] = (1, c, 1, 1)
    assert shapes == expected


def test_normalisation_equals_lpips_scaling_layer():
    pixels = torch.rand(2, 3, 5, 5, dtype=torch.float64) * 255
    lpips_form = (pixels / 127.5 - 1 - torch.tensor(LPIPS_SHIFT, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(LPIPS_SCALE, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg16.imagenet_normalise(pixels), lpips_form, rtol=1e-12, atol=1e-12)


def test_lpips_matches_direct_computation(net):
    a, b = images(3, 32, seed=1), images(3, 32, seed=2)
    ours = net.lpips(a, b)
    want = reference_lpips(vgg_state(), lin_state(), a, b)
    torch.testing.assert_close(ours.double(), want, rtol=1e-4, atol=1e-7)
    assert (ours > 0).all()
    # A float, unrounded input (as PPL feeds it) is taken as is.
    a_float = a.float() + 0.3
    torch.testing.assert_close(net.lpips(a_float, b).double(), reference_lpips(vgg_state(), lin_state(), a_float, b),
                               rtol=1e-4, atol=1e-7)


def test_lpips_identity_symmetry_and_packing(net):
    a, b = images(2, 16, seed=3), images(2, 16, seed=4)
    assert torch.equal(net.lpips(a, a), torch.zeros(2))
    torch.testing.assert_close(net.lpips(a, b), net.lpips(b, a), rtol=1e-6, atol=0)
    fa, fb = net.lpips_features(a), net(b, resize_images=False, return_lpips=True)
    sizes = sum(c * (16 >> k) ** 2 for k, c in enumerate(net.tap_channels))
    assert fa.shape == (2, sizes)
    torch.testing.assert_close(((fa - fb) ** 2).sum(1), net.lpips(a, b))
    # Gray images are taken as RGB with equal channels.
    gray = a[:, :1]
    torch.testing.assert_close(net.lpips_features(gray), net.lpips_features(gray.repeat(1, 3, 1, 1)))


def test_lpips_layer_weights_act_linearly(files, tmp_path):
    """The lin weights multiply each layer's term: zeros drop a layer, a factor scales it;
    negative weights (which LPIPS training never leaves) are refused."""
    a, b = images(2, 16, seed=5), images(2, 16, seed=6)
    state = vgg_state()
    lins = lin_state()
    only_first = {k: (v if k.startswith("lin0") else torch.zeros_like(v)) for k, v in lins.items()}
    scaled = {k: v * 4 for k, v in only_first.items()}
    torch.save(only_first, tmp_path / "first.pth")
    torch.save(scaled, tmp_path / "scaled.pth")
    vgg_path = str(files / "tiny-vgg16.pth")
    d_first = load_vgg16(vgg_path, str(tmp_path / "first.pth")).lpips(a, b)
    torch.testing.assert_close(d_first.double(), reference_lpips(state, only_first, a, b), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(load_vgg16(vgg_path, str(tmp_path / "scaled.pth")).lpips(a, b), 4 * d_first)

    negative = dict(lins)
    negative["lin2.model.1.weight"] = -negative["lin2.model.1.weight"]
    torch.save(negative, tmp_path / "negative.pth")
    with pytest.raises(UserError, match="lin2.model.1.weight has negative entries"):
        load_vgg16(vgg_path, str(tmp_path / "negative.pth"))


def test_fc_features_match_direct_computation(net):
    state = vgg_state()
    x = images(3, 224, seed=7)
    feats = net.fc_features(x)
    assert feats.shape == (3, FC) and (feats >= 0).all()
    # Direct: all five stages with F ops, flatten the 7x7 grid, fc6 + ReLU, fc7 + ReLU.
    h = reference_taps(state, x)[-1]
    h = F.max_pool2d(h, 2).flatten(1)
    h = F.relu(F.linear(h, state["classifier.0.weight"].double(), state["classifier.0.bias"].double()))
    h = F.relu(F.linear(h, state["classifier.3.weight"].double(), state["classifier.3.bias"].double()))
    torch.testing.assert_close(feats.double(), h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(x), feats)  # the published default call: features


def test_fc_features_resize_like_tf1_to_224(net):
    x = images(2, 40, seed=8)
    resized = tf1_resize_by_grid_sample(x.double(), 224)
    torch.testing.assert_close(net.fc_features(x), net.fc_features(resized.float()), rtol=1e-4, atol=1e-5)
    assert net.fc_features(x, resize=False).shape == (2, FC)  # no resize: the 7x7 grid comes from pooling


# ---------------------------------------------------------------------------------------
# The loader.


def test_loader_paths_env_vars_file_urls_and_safetensors(files, tmp_path, monkeypatch):
    vgg_path, lin_path = files / "tiny-vgg16.pth", files / "tiny-lpips.pth"
    first = load_vgg16(str(vgg_path), str(lin_path))
    assert first.identity.startswith("vgg16-lpips-sha256-")
    assert first.weights_sha256 == {"vgg16": download.sha256_of(vgg_path), "lpips": download.sha256_of(lin_path)}
    assert [c for c in first.tap_channels] == [4, 8, 16, 32, 32] and first.feature_dim == FC

    monkeypatch.setenv("CREPS_VGG16", f"file://{vgg_path}")
    monkeypatch.setenv("CREPS_LPIPS", str(lin_path))
    assert load_vgg16().identity == first.identity

    save_file(vgg_state(), str(tmp_path / "vgg.safetensors"))
    save_file(lin_state(), str(tmp_path / "lin.safetensors"))
    other = load_vgg16(str(tmp_path / "vgg.safetensors"), str(tmp_path / "lin.safetensors"))
    x = images(1, 16, seed=9)
    torch.testing.assert_close(other.lpips_features(x), first.lpips_features(x), rtol=0, atol=0)
    assert other.identity != first.identity  # names the bytes, not the values


def test_loader_refuses_bad_files(files, tmp_path):
    vgg_path, lin_path = str(files / "tiny-vgg16.pth"), str(files / "tiny-lpips.pth")
    partial = vgg_state()
    del partial["features.14.bias"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="not VGG16 weights in torchvision's vgg16-397923af.pth layout.*features.14"):
        load_vgg16(str(tmp_path / "partial.pth"), lin_path)
    torch.save(lin_state(width=1 / 8), tmp_path / "wide-lin.pth")
    with pytest.raises(UserError, match=r"lin0.model.1.weight is of shape \[1, 8, 1, 1\], expected \[1, 4, 1, 1\]"):
        load_vgg16(vgg_path, str(tmp_path / "wide-lin.pth"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "empty-lin.pth")
    with pytest.raises(UserError, match="lin0.model.1.weight is missing"):
        load_vgg16(vgg_path, str(tmp_path / "empty-lin.pth"))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Evaluation, protocol=2))  # a class: refused by weights_only
    with pytest.raises(UserError, match="not a readable weights file"):
        load_vgg16(str(tmp_path / "evil.pth"), lin_path)
    with pytest.raises(UserError, match="no such file.*CREPS_LPIPS"):
        load_vgg16(vgg_path, str(tmp_path / "missing.pth"))
    # A local file under the published name must have the SHA-256 its name promises.
    (tmp_path / vgg16.VGG16_NAME).write_bytes((files / "tiny-vgg16.pth").read_bytes())
    with pytest.raises(UserError, match="SHA-256"):
        load_vgg16(str(tmp_path / vgg16.VGG16_NAME), lin_path)


@pytest.fixture()
def http_server(files):
    """A local HTTP server over the weights folder, counting requests."""
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(files)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_download_is_cached_and_checked(files, tmp_path, http_server):
    base, hits = http_server
    digest = download.sha256_of(files / "tiny-vgg16.pth")
    hub_name = f"tiny-vgg16-{digest[:8]}.pth"  # torch hub naming: the name carries the hash prefix
    (files / hub_name).write_bytes((files / "tiny-vgg16.pth").read_bytes())
    (files / "tiny-vgg16-deadbeef.pth").write_bytes((files / "tiny-vgg16.pth").read_bytes())
    lin_url = f"{base}/tiny-lpips.pth"
    first = load_vgg16(f"{base}/{hub_name}", lin_url)
    again = load_vgg16(f"{base}/{hub_name}", lin_url)
    assert first.identity == again.identity
    assert sorted(hits) == sorted([f"/{hub_name}", "/tiny-lpips.pth"])  # the second load used the cache
    cached = tmp_path / "cache" / "detectors"
    assert sorted(p.name for p in cached.iterdir()) == sorted([hub_name, "tiny-lpips.pth"])
    with pytest.raises(UserError, match="SHA-256"):
        load_vgg16(f"{base}/tiny-vgg16-deadbeef.pth", lin_url)
    assert sorted(p.name for p in cached.iterdir()) == sorted([hub_name, "tiny-lpips.pth"])


def test_offline_error_is_one_line(tmp_path, monkeypatch):
    def offline(url, dest, timeout=60.0):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "download_file", offline)
    with pytest.raises(UserError) as err:
        load_vgg16()
    message = str(err.value)
    target = tmp_path / "cache" / "detectors" / vgg16.VGG16_NAME
    assert "\n" not in message and message.startswith("cannot download the VGG16 weights")
    assert vgg16.VGG16_URL in message and str(target) in message and "CREPS_VGG16=PATH" in message
    assert not target.exists()
    monkeypatch.setenv("CREPS_VGG16", str(tmp_path / "nowhere.pth"))
    with pytest.raises(UserError, match="no such file"):
        load_vgg16()


def test_default_lpips_weights_are_downloaded(files, tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, dest, timeout=60.0):
        fetched.append(url)
        Path(dest).write_bytes((files / "tiny-lpips.pth").read_bytes())

    monkeypatch.setattr(download, "download_file", fake_download)
    load_vgg16(str(files / "tiny-vgg16.pth"))
    assert fetched == [vgg16.LPIPS_URL]
    assert (tmp_path / "cache" / "detectors" / "vgg.pth").is_file()


# ---------------------------------------------------------------------------------------
# PPL formulas.


def test_lerp_and_slerp():
    a, b = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    for t in (0.0, 0.25, 0.5, 1.0):
        tt = torch.tensor([[t]])
        torch.testing.assert_close(ppl.lerp(a, b, tt), a + t * (b - a))
        # Orthogonal directions: the point at angle t * 90 degrees on the unit circle.
        expected = torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2), 0.0]])
        torch.testing.assert_close(ppl.slerp(a, b, tt), expected, rtol=1e-6, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    mid = ppl.slerp(z0, z1, torch.full([4, 1], 0.5))
    u0, u1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    torch.testing.assert_close(mid, (u0 + u1) / (u0 + u1).norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ppl.slerp(z0, z1, torch.zeros(4, 1)), u0, rtol=1e-5, atol=1e-6)


def test_filtered_mean_drops_outside_1st_and_99th_percentile():
    rng = np.random.RandomState(0)
    for n in (7, 100, 201, 1000):
        values = rng.lognormal(size=n).astype(np.float32)
        ordered = np.sort(values)
        lo = ordered[int(math.floor(0.01 * (n - 1)))]  # 'lower': the sample at or below the exact rank
        hi = ordered[int(math.ceil(0.99 * (n - 1)))]  # 'higher': the sample at or above it
        kept = [v for v in values if lo <= v <= hi]
        assert ppl.filtered_mean(values) == pytest.approx(sum(float(v) for v in kept) / len(kept), rel=1e-12)
    values = np.array([1e9] + [1.0] * 198 + [-1e9], dtype=np.float32)
    assert ppl.filtered_mean(values) == 1.0


def test_crop_downsample_and_range():
    img = torch.arange(2 * 1 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    torch.testing.assert_close(ppl.centre_crop(img), img[:, :, 6:14, 4:12])
    big = torch.randn(1, 3, 512, 512)
    blocks = big.reshape(1, 3, 256, 2, 256, 2).mean(dim=(3, 5))
    torch.testing.assert_close(ppl.box_downsample(big), blocks)
    assert ppl.box_downsample(img) is img
    torch.testing.assert_close(ppl.to_lpips_range(torch.tensor([-1.5, -1.0, 0.0, 1.0])),
                               torch.tensor([-63.75, 0.0, 127.5, 255.0]))
    assert ppl.settings_for("ppl2_wend") == ppl.PPLSettings("w", "end", False, 1e-4)
    assert ppl.settings_for("ppl_zfull") == ppl.PPLSettings("z", "full", True, 1e-4)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(ppl.path_positions(5, "end", gen), torch.zeros(5))
    t = ppl.path_positions(1000, "full", gen)
    assert 0 <= t.min() and t.max() < 1 and 0.4 < t.mean() < 0.6


# ---------------------------------------------------------------------------------------
# PPL end to end.


def tiny_g(channels: int = 3, res: int = 16) -> Generator:
    torch.manual_seed(0)
    g = Generator(StyleGAN2Config(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=channels, channel_base=256,
                  channel_max=16, mapping_layers=2))
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return g.eval()


def run_ppl(G, net, count=24, seed=0, name="ppl2_wend", batch_size=8) -> float:
    ev = Evaluation(G=G, data_path="unused", mirror=False, device=torch.device("cpu"), detector=net, progress=False,
                    batch_size=batch_size, seed=seed)
    result = ppl.evaluate(ev, MetricSpec(name=name, family="ppl", num_gen=count))
    assert list(result) == [name]
    return result[name]


def test_ppl_end_to_end_on_tiny_stylegan2(net):
    G = tiny_g()
    noise_before = {k: v.clone() for k, v in G.named_buffers() if k.endswith("noise_const")}
    value = run_ppl(G, net)
    assert math.isfinite(value) and value > 0
    assert run_ppl(G, net) == value  # deterministic for a seed
    assert run_ppl(G, net, seed=1) != value
    for k, v in G.named_buffers():  # the stored noise maps are put back
        if k.endswith("noise_const"):
            assert torch.equal(v, noise_before[k])
    # The older published variants run too (Z space with slerp, full sampling, centre crop to
    # half the side: LPIPS needs at least 16x16).
    zfull = run_ppl(tiny_g(res=32), net, count=8, name="ppl_zfull")
    assert math.isfinite(zfull) and zfull > 0


def test_ppl_matches_a_direct_computation(net):
    """One batch by hand: the same draws (t, then z, then noise maps), W lerp at t = 0 and
    t = eps, const noise, images to 0..255, LPIPS / eps^2."""
    G = tiny_g()
    count = 6
    gen = torch.Generator().manual_seed(3)
    t = torch.rand([count], generator=gen) * 0
    z = torch.randn([2 * count, 16], generator=gen)
    saved = {k: v.clone() for k, v in G.named_buffers() if k.endswith("noise_const")}
    with torch.no_grad():
        for k, buf in G.named_buffers():
            if k.endswith("noise_const"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
        w0, w1 = G.mapping(z, None).chunk(2)
        ws = torch.cat([w0 + t.view(-1, 1, 1) * (w1 - w0), w0 + (t.view(-1, 1, 1) + 1e-4) * (w1 - w0)])
        img = (G.synthesis(ws, noise_mode="const", force_fp32=True) + 1) * 127.5
        dist = net.lpips(img[:count], img[count:]) / 1e-8
        for k, buf in G.named_buffers():
            if k.endswith("noise_const"):
                buf.copy_(saved[k])
    values = ppl.sample_path_lengths(G, net, count, device=torch.device("cpu"), batch_size=2 * count, seed=3,
                                     progress=False)
    np.testing.assert_allclose(values, dist.numpy(), rtol=1e-3)

    class PublishedCall(torch.nn.Module):
        """Any detector with the published call signature (as NVIDIA's vgg16.pkl is called)."""

        def forward(self, img, resize_images=True, return_lpips=False):
            assert not resize_images and return_lpips
            return net.lpips_features(img)

    via_call = ppl.sample_path_lengths(G, PublishedCall(), count, device=torch.device("cpu"), batch_size=2 * count,
                                       seed=3, progress=False)
    np.testing.assert_allclose(via_call, values, rtol=1e-4)


def test_ppl_is_zero_when_output_ignores_w(net):
    class Flat(torch.nn.Module):
        """A generator whose image does not depend on its latent."""

        z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels = 8, 0, 8, 3, 16, 1

        def __init__(self):
            super().__init__()
            self.image = torch.nn.Parameter(torch.rand(1, 1, 16, 16) * 2 - 1)

        def mapping(self, z, c):
            return z.unsqueeze(1).repeat(1, self.num_ws, 1)

        def synthesis(self, ws, noise_mode="random", force_fp32=False):
            return self.image.expand(ws.shape[0], -1, -1, -1) + 0 * ws.sum()

    assert run_ppl(Flat(), net, count=10) == 0.0


def test_ppl_on_gray_generator(net):
    value = run_ppl(tiny_g(channels=1), net, count=8)
    assert math.isfinite(value) and value > 0


def test_ppl_on_conditional_stylegan2_and_creps(net):
    torch.manual_seed(0)
    cond = Generator(StyleGAN2Config(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                     channel_max=16, mapping_layers=2)).eval()
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    values = ppl.sample_path_lengths(cond, net, 6, device=torch.device("cpu"), labels=labels, batch_size=4,
                                     progress=False)
    assert values.shape == (6,) and np.isfinite(values).all() and (values > 0).all()
    with pytest.raises(ValueError, match="needs dataset labels"):
        ppl.sample_path_lengths(cond, net, 2, device=torch.device("cpu"), progress=False)
    G = creps_net.Generator(creps_net.CrepsConfig(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                            channel_max=16, mapping_layers=2)).eval()
    value = run_ppl(G, net, count=6)
    assert math.isfinite(value) and value > 0
