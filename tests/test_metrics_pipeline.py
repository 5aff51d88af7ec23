"""Metrics end to end on tiny things: a thin random-weight Inception saved in the published
.pth layout and read by the real loader, a tiny CREPS snapshot in a run directory, a folder
of 16x16 images. Covers the loader (hashes, weights_only, downloads, offline error), the
feature cache (reuse, invalidation), calc_metrics.py and the jsonl lines it appends."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import creps.download as download
import creps.metrics.inception as inception
from creps.checkpoint import load_snapshot, save_snapshot
from creps.cli.metrics import calc_metrics
from creps.config import DatasetInfo, TrainOptions, resolve
from creps.data.dataset import open_dataset
from creps.errors import UserError
from creps.metrics.features import POOL, dataset_features, generator_batch_size, latents, to_uint8
from creps.metrics.inception import InceptionV3, load_detector
from creps.metrics.registry import append_metric_jsonl, compute_metric
from creps.train.step import build_networks
from tiny_vgg16 import lin_state, vgg_state

RES = 16
NUM_REALS = 20
WIDTH = 1 / 16  # 128-d features


# ---------------------------------------------------------------------------------------
# Helpers and fixtures.


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a thin FID Inception, in the published layout (no num_batches_tracked)."""
    torch.manual_seed(seed)
    net = InceptionV3(width=WIDTH)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # keeps activations O(1)
    return {k: v.contiguous() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def write_images(folder: Path, count: int, seed: int, labels: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 256, [1, RES, RES, 3])
    for i in range(count):
        img = np.clip(base + rng.randint(-60, 60, [RES, RES, 3]), 0, 255).astype(np.uint8)[0]
        PIL.Image.fromarray(img).save(folder / f"img{i:03d}.png")
    if labels:
        pairs = [[f"img{i:03d}.png", i % labels] for i in range(count)]
        (folder / "dataset.json").write_text(json.dumps({"labels": pairs}))
    return folder


def make_snapshot(run_dir: Path, data: Path, cond: bool = False) -> Path:
    """A CREPS snapshot (untrained) in a run directory, as the trainer writes it."""
    options = TrainOptions(outdir=str(run_dir.parent), cfg="creps", data=str(data), gpus=1, batch=4, gamma=1,
                           cond=cond, cbase=128, cmax=16, map_depth=1, mbstd_group=2, aug="noaug", metrics=())
    info = DatasetInfo(path=str(data), name=data.name, resolution=RES, channels=3, size=NUM_REALS,
                       has_labels=cond, label_dim=3 if cond else 0)
    cfg = resolve(options, info)
    nets = build_networks(cfg, torch.device("cpu"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "training_options.json").write_text(cfg.to_json())
    path = run_dir / "network-snapshot-000000.safetensors"
    save_snapshot(path, {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema}, training=cfg)
    return path


def call(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = calc_metrics(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CREPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CREPS_DETECTOR", raising=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    data = write_images(root / "reals", NUM_REALS, seed=1)
    detector_path = root / "tiny-inception.pth"
    torch.save(tiny_state(), detector_path)
    torch.save(vgg_state(), root / "tiny-vgg16.pth")
    torch.save(lin_state(), root / "tiny-lpips.pth")
    snapshot = make_snapshot(root / "runs" / "00000-creps-reals", data)
    return {"root": root, "data": data, "detector": detector_path, "snapshot": snapshot,
            "vgg16": root / "tiny-vgg16.pth", "lpips": root / "tiny-lpips.pth"}


class CountingDetector(torch.nn.Module):
    """Wraps a detector and counts its forward calls and the images it embeds."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls, self.images = inner, 0, 0
        self.identity = inner.identity

    def forward(self, images, logits=False):
        self.calls += 1
        self.images += images.shape[0]
        return self.inner(images, logits=logits)


def independent_fid(detector_path: Path, data: Path, snapshot: Path, count: int) -> float:
    """FID computed without the metrics pipeline: our own image loading and statistics, and a
    trace of sqrt(S1 S2) from the eigenvalues of the (non-symmetric) product."""
    det = InceptionV3(width=WIDTH)
    det.load_state_dict(torch.load(detector_path, weights_only=True), strict=True)
    files = sorted(data.glob("*.png"))
    reals = torch.from_numpy(np.stack([np.asarray(PIL.Image.open(f).convert("RGB")) for f in files]))
    G = load_snapshot(snapshot, networks=("G_ema",)).G_ema
    fakes = []
    with torch.no_grad():
        real_feats = det(reals.permute(0, 3, 1, 2).contiguous()).double().numpy()
        for z, c in latents(G, count, generator_batch_size(G, 64, None), seed=0, labels=None):
            fakes.append((G(z, c, noise_mode="random") * 127.5 + 128).clamp(0, 255).to(torch.uint8))
        fake_feats = det(torch.cat(fakes)).double().numpy()
    mu1, mu2 = real_feats.mean(0), fake_feats.mean(0)
    s1, s2 = np.cov(real_feats, rowvar=False, bias=True), np.cov(fake_feats, rowvar=False, bias=True)
    eig = np.linalg.eigvals(s1 @ s2)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


# ---------------------------------------------------------------------------------------
# The loader.


def test_loader_reads_published_layout_strictly(world, tmp_path):
    det = load_detector(str(world["detector"]))
    assert det.feature_dim == 128 and det.identity.startswith("tiny-inception-sha256-")
    state = tiny_state()
    del state["Mixed_6b.branch1x1.conv.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="not FID Inception-v3 weights"):
        load_detector(str(tmp_path / "partial.pth"))


def test_loader_never_unpickles_code(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(CountingDetector, protocol=2))  # a class reference: refused by weights_only
    with pytest.raises(UserError, match="not a readable weights file"):
        load_detector(str(path))
    with pytest.raises(UserError, match="no such file"):
        load_detector(str(tmp_path / "missing.pth"))


def test_loader_checks_published_hash(world, tmp_path):
    """A local file under the published name must have the published SHA-256."""
    fake = tmp_path / inception.PUBLISHED_NAME
    fake.write_bytes(world["detector"].read_bytes())
    with pytest.raises(UserError, match="SHA-256"):
        load_detector(str(fake))


def test_download_is_cached_and_checked(world, tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, dest, timeout=60.0):
        fetched.append(url)
        Path(dest).write_bytes(world["detector"].read_bytes())

    monkeypatch.setattr(download, "download_file", fake_download)
    digest = download.sha256_of(world["detector"])
    url = f"https://example.invalid/weights/tiny-inception-{digest[:8]}.pth"  # torch hub naming
    assert load_detector(url).feature_dim == 128
    assert load_detector(url).feature_dim == 128
    assert fetched == [url]
    cached = tmp_path / "cache" / "detectors"
    assert [p.name for p in cached.iterdir()] == [f"tiny-inception-{digest[:8]}.pth"]
    # Bytes that do not match the hash their name promises are refused and not cached.
    for bad in ("https://example.invalid/weights/tiny-deadbeef.pth", inception.PUBLISHED_URL):
        with pytest.raises(UserError, match="SHA-256"):
            load_detector(bad)
    assert [p.name for p in cached.iterdir()] == [f"tiny-inception-{digest[:8]}.pth"]


def test_offline_error_is_one_line(world, tmp_path, monkeypatch):
    def offline(url, dest, timeout=60.0):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "download_file", offline)
    code, out, err = call([f"--network={world['snapshot']}", "--metrics=fid20_full", "--verbose=0",
                           "--workers=0", "--device=cpu"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    target = tmp_path / "cache" / "detectors" / inception.PUBLISHED_NAME
    assert lines[0].startswith("error: cannot download the Inception detector")
    assert str(target) in lines[0] and "--detector" in lines[0] and "CREPS_DETECTOR" in lines[0]
    assert not target.exists()


# ---------------------------------------------------------------------------------------
# Features and their cache.


def test_feature_cache_reuse_and_invalidation(world, tmp_path):
    data = write_images(tmp_path / "reals", 6, seed=2)
    det = CountingDetector(load_detector(str(world["detector"])))
    cache = tmp_path / "features"

    def features(xflip=False, max_items=None):
        with open_dataset(str(data), xflip=xflip) as ds:
            return dataset_features(ds, det, POOL, keep_all=True, max_items=max_items, device=torch.device("cpu"),
                                    batch_size=4, cache_dir=cache, progress=False)

    first = features()
    assert det.calls == 2 and first.count == 6 and first.values.shape == (6, 128)
    again = features()
    assert det.calls == 2, "the second call must come from the cache"
    np.testing.assert_array_equal(again.values, first.values)
    np.testing.assert_array_equal(again.cov, first.cov)
    assert len(list(cache.glob("*.npz"))) == 1
    with open_dataset(str(data)) as ds:  # mean/cov only (FID): served by the entry with every row
        moments = dataset_features(ds, det, POOL, keep_all=False, max_items=None, device=torch.device("cpu"),
                                   batch_size=4, cache_dir=cache, progress=False)
    assert det.calls == 2 and moments.values is None
    np.testing.assert_array_equal(moments.mean, first.mean)

    features(max_items=4)  # another item count: another entry
    assert det.calls == 3
    mirrored = features(xflip=True)  # x-flips: another entry, with the flipped copies
    assert det.calls == 6 and mirrored.count == 12
    assert len(list(cache.glob("*.npz"))) == 3

    # New content under the same file name: a new key, recomputed, different features.
    img = np.asarray(PIL.Image.open(data / "img000.png"))
    PIL.Image.fromarray(255 - img).save(data / "img000.png")
    os.utime(data / "img000.png", ns=(1, 1))
    changed = features()
    assert det.calls == 8
    assert not np.array_equal(changed.values[0], first.values[0])
    np.testing.assert_array_equal(changed.values[1:], first.values[1:])
    assert len(list(cache.glob("*.npz"))) == 4


def test_to_uint8_rounds_like_published():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 0.999, 1.0, 3.0])
    expected = torch.tensor([0, 0, 64, 128, 166, 255, 255, 255], dtype=torch.uint8)
    assert torch.equal(to_uint8(x), expected)


# ---------------------------------------------------------------------------------------
# calc_metrics.py end to end.


def test_calc_metrics_end_to_end(world):
    snapshot, run_dir = world["snapshot"], world["snapshot"].parent
    names = ["fid20_full", "kid20_full", "pr203_full", "ppl2_wend8", "eqs8"]
    code, out, err = call([f"--network={snapshot}", f"--metrics={','.join(names)}",
                           f"--detector={world['detector']}", f"--vgg16={world['vgg16']}", f"--lpips={world['lpips']}",
                           "--workers=0", "--verbose=0", "--device=cpu"])
    assert code == 0, err
    printed = [json.loads(line) for line in out.strip().splitlines()]
    assert [p["metric"] for p in printed] == names
    ppl_value, eqs_value = printed[3]["results"]["ppl2_wend8"], printed[4]["results"]["eqs8"]
    assert math.isfinite(ppl_value) and ppl_value >= 0 and math.isfinite(eqs_value)

    lines = (run_dir / "metric-fid20_full.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry) == ["results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl",
                           "timestamp"]
    assert entry["snapshot_pkl"] == snapshot.name and entry["num_gpus"] == 1
    fid = entry["results"]["fid20_full"]
    assert fid == pytest.approx(independent_fid(world["detector"], world["data"], snapshot, 20), rel=1e-5)
    assert fid > 0

    kid_entry = json.loads((run_dir / "metric-kid20_full.jsonl").read_text())
    assert set(kid_entry["results"]) == {"kid20_full"} and np.isfinite(kid_entry["results"]["kid20_full"])
    pr = json.loads((run_dir / "metric-pr203_full.jsonl").read_text())["results"]
    assert set(pr) == {"pr203_full_precision", "pr203_full_recall"}
    assert all(0 <= v <= 1 for v in pr.values())


def test_calc_metrics_with_data_outside_a_run_dir(world, tmp_path):
    alone = tmp_path / "net.safetensors"
    alone.write_bytes(world["snapshot"].read_bytes())
    code, out, err = call([f"--network={alone}", "--metrics=fid8", f"--data={world['data']}", "--mirror=1",
                           f"--detector={world['detector']}", "--workers=0", "--verbose=0", "--device=cpu"])
    assert code == 0, err
    entry = json.loads(out.strip().splitlines()[-1])
    assert entry["metric"] == "fid8" and entry["snapshot_pkl"] == str(alone)
    assert not list(tmp_path.glob("metric-*.jsonl"))  # not a run dir: printed only


@pytest.mark.parametrize("argv,message", [
    (["--metrics=fid50q"], "unknown metric 'fid50q'"),
    (["--metrics=eqt8_int"], "StyleGAN3"),
    (["--metrics=eqt8"], "needs _int or _frac"),
    (["--gpus=0"], "--gpus must be at least 1"),
    (["--data={root}/nowhere.zip"], "no such file or folder"),
    (["--data={root}/small"], "images are 8x8"),
])
def test_calc_metrics_user_errors(world, argv, message):
    (world["root"] / "small").mkdir(exist_ok=True)
    for i in range(2):
        PIL.Image.new("RGB", (8, 8)).save(world["root"] / "small" / f"img{i}.png")
    argv = [a.replace("{root}", str(world["root"])) for a in argv]
    code, out, err = call([f"--network={world['snapshot']}", f"--detector={world['detector']}", "--verbose=0",
                           "--workers=0", "--device=cpu", "--metrics=fid8", *argv])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_compute_metric_conditional_inception_score(world, tmp_path):
    data = write_images(tmp_path / "labelled", 6, seed=4, labels=3)
    snapshot = make_snapshot(tmp_path / "runs" / "00000-cond", data, cond=True)
    G = load_snapshot(snapshot, networks=("G_ema",)).G_ema
    assert G.c_dim == 3
    result = compute_metric("is10", G, str(data), mirror=False, device="cpu",
                            detector=str(world["detector"]), progress=False)
    mean, std = result["results"]["is10_mean"], result["results"]["is10_std"]
    assert mean >= 1 - 1e-9 and std >= 0
    assert set(result) == {"results", "metric", "total_time", "total_time_str", "num_gpus"}
    line = json.loads(append_metric_jsonl(tmp_path, result, tmp_path / "runs" / "x.safetensors"))
    assert line["snapshot_pkl"] == os.path.join("runs", "x.safetensors")
    assert (tmp_path / "metric-is10.jsonl").read_text().count("\n") == 1
