"""The projector on tiny networks: the formulas, the fit (an image a network made from a known
w is found again), W+ against W, noise maps of StyleGAN2, every config, projected_w.npz through
gen_images.py --projected-w (CREPS at 2x), targets of any kind, folders, and bad inputs.

The LPIPS distance runs on random-weight VGG16/LPIPS files in the published layouts, read by
the real loader, a quarter as wide as the real network (16 to 128 channels). That is still a
perceptual-style distance (unit-normalised deep features of fixed convolutions, compared
layer by layer); the thinner copy the metric tests use (4 channels in the first stage) keeps
too little of each pixel's colour after the per-pixel normalisation, and fits looser in pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import creps.cli.video as cli_video
from creps.checkpoint import save_snapshot
from creps.cli.generate import generate
from creps.cli.main import main as creps_main
from creps.cli.project import output_names, run_projection
from creps.config import DatasetInfo, TrainOptions, resolve
from creps.errors import UserError
from creps.generate import has_noise_inputs, noise_buffers, supports_any_scale, z_from_seed
from creps.metrics.vgg16 import load_vgg16
from creps.project import (ProjectionSettings, learning_rate, load_projected_w, noise_autocorrelation_penalty,
                           normalise_noise_, prepare_target, project, psnr, render_ws, save_projected_w,
                           w_noise_scale, w_statistics)
from creps.train.step import build_networks
from tiny_vgg16 import lin_state, vgg_state

REPO = Path(__file__).resolve().parents[1]
RES = 16
VGG_WIDTH = 1 / 4
CONFIGS = ("creps", "stylegan2", "stylegan3-t", "stylegan3-r")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is several times faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CREPS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vgg")
    torch.save(vgg_state(width=VGG_WIDTH), root / "vgg16.pth")
    torch.save(lin_state(width=VGG_WIDTH), root / "lpips.pth")
    return root / "vgg16.pth", root / "lpips.pth"


@pytest.fixture(scope="module")
def vgg(vgg_files):
    return load_vgg16(*map(str, vgg_files))


def build_config(cfg: str, channels: int = 3, cond: bool = False):
    options = TrainOptions(outdir="runs", cfg=cfg, data="tiny", gpus=1, batch=4, gamma=1, cond=cond,
                           cbase=256 if cfg.startswith("stylegan3") else 128, cmax=16, map_depth=1, mbstd_group=2,
                           aug="noaug", metrics=())
    info = DatasetInfo(path="tiny", name="tiny", resolution=RES, channels=channels, size=8, has_labels=cond,
                       label_dim=3 if cond else 0)
    return resolve(options, info)


def build_g(cfg: str, channels: int = 3, cond: bool = False, noise_strength: float = 0.0) -> torch.nn.Module:
    """An untrained tiny generator (16x16); StyleGAN2 noise inputs at `noise_strength`."""
    torch.manual_seed(0)
    G = build_networks(build_config(cfg, channels, cond), torch.device("cpu")).G_ema
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(noise_strength)
    return G.eval().requires_grad_(False)


def write_snapshot(path: Path, cfg: str, **kwargs) -> Path:
    save_snapshot(path, {"G_ema": build_g(cfg, **kwargs)},
                  training=build_config(cfg, kwargs.get("channels", 3), kwargs.get("cond", False)))
    return path


def made_image(G, seed: int = 5) -> torch.Tensor:
    """What G renders for the w of a seed, as a uint8 [C, H, W] target."""
    with torch.no_grad():
        w = G.mapping(z_from_seed(seed, G.z_dim), None)
        return uint8(render_ws(G, w))[0]


def uint8(img: torch.Tensor) -> torch.Tensor:
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def pixel_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return psnr((a.float() - b.float()).square().mean().item())


def call(fn, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fn(argv)
    return code, out.getvalue(), err.getvalue()


def png(path: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


# ---------------------------------------------------------------------------------------
# Formulas.


def test_learning_rate_ramps_up_then_down_by_half_a_cosine():
    s = ProjectionSettings()
    assert learning_rate(0.0, s) == 0.0
    assert learning_rate(0.025, s) == pytest.approx(0.05)  # half way up the 5 % ramp
    assert learning_rate(0.05, s) == pytest.approx(0.1) and learning_rate(0.5, s) == pytest.approx(0.1)
    assert learning_rate(0.75, s) == pytest.approx(0.1)
    assert learning_rate(0.875, s) == pytest.approx(0.05)  # half way down: 0.5 - 0.5 cos(pi / 2)
    assert learning_rate(1 - 0.25 / 3, s) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi / 3)))
    assert learning_rate(0.999, s) < 1e-5


def test_w_noise_falls_quadratically_to_zero_at_three_quarters():
    s = ProjectionSettings()
    assert w_noise_scale(0.0, 2.0, s) == pytest.approx(2.0 * 0.05)
    assert w_noise_scale(0.375, 2.0, s) == pytest.approx(2.0 * 0.05 * 0.25)
    assert w_noise_scale(0.75, 2.0, s) == 0.0 and w_noise_scale(0.9, 2.0, s) == 0.0


def test_noise_penalty_sums_squared_autocorrelations_over_a_pyramid():
    ones = torch.ones(16, 16)  # correlation 1 across and down, at 16x16 and 8x8
    assert noise_autocorrelation_penalty({"a": ones}).item() == pytest.approx(4.0)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1  # -1 at 16x16, 0 once pooled
    assert noise_autocorrelation_penalty({"a": checker}).item() == pytest.approx(2.0)
    assert noise_autocorrelation_penalty({"a": ones[:4, :4], "b": checker}).item() == pytest.approx(4.0)
    gen = torch.Generator().manual_seed(0)
    assert noise_autocorrelation_penalty({"a": torch.randn(64, 64, generator=gen)}).item() < 1e-3


def test_noise_maps_normalise_to_zero_mean_unit_power():
    maps = {"a": torch.randn(8, 8) * 3 + 2, "b": torch.rand(4, 4)}
    normalise_noise_(maps)
    for m in maps.values():
        assert abs(m.mean().item()) < 1e-6 and m.square().mean().item() == pytest.approx(1.0, abs=1e-6)


def test_w_statistics_match_a_direct_computation():
    G = build_g("creps")
    w_avg, w_std = w_statistics(G, 2500)  # spans three mapping batches
    z = torch.from_numpy(np.random.RandomState(123).randn(2500, G.z_dim)).float()
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0].double()
    assert w_avg.shape == (1, 1, G.w_dim)
    assert torch.allclose(w_avg[0, 0].double(), w.mean(0), atol=1e-5)
    assert w_std == pytest.approx(((w - w.mean(0)).square().sum() / 2500).sqrt().item(), rel=1e-5)


def test_targets_are_centre_cropped_resized_and_in_the_networks_channels():
    gen = np.random.RandomState(0)
    rgba = PIL.Image.fromarray(gen.randint(0, 256, (24, 40, 4), dtype=np.uint8), "RGBA")  # 40 wide, 24 high
    out = prepare_target(rgba, RES, 3)
    expected = np.asarray(rgba.convert("RGB").crop((8, 0, 32, 24)).resize((RES, RES), PIL.Image.LANCZOS))
    assert out.dtype == np.uint8 and out.shape == (3, RES, RES)
    assert np.array_equal(out, expected.transpose(2, 0, 1))
    gray = PIL.Image.fromarray(gen.randint(0, 256, (32, 32), dtype=np.uint8), "L")
    as_rgb = prepare_target(gray, RES, 3)
    assert np.array_equal(as_rgb[0], as_rgb[1]) and np.array_equal(as_rgb[0], as_rgb[2])
    assert prepare_target(rgba, RES, 1).shape == (1, RES, RES)


def test_supports_any_scale_and_noise_inputs_per_family():
    assert supports_any_scale(build_g("creps"))
    for cfg in ("stylegan2", "stylegan3-t"):
        assert not supports_any_scale(build_g(cfg))
    assert has_noise_inputs(build_g("stylegan2")) and not has_noise_inputs(build_g("creps"))
    assert not has_noise_inputs(build_g("stylegan3-r"))


# ---------------------------------------------------------------------------------------
# The fit.


@pytest.fixture(scope="module")
def creps_fits(vgg):
    """CREPS, 100 steps, W and W+ on the same target (an image the network made)."""
    G = build_g("creps")
    target = made_image(G)
    fits = {mode: project(G, target, vgg=vgg, settings=ProjectionSettings(num_steps=100, w_plus=mode == "w+"),
                          progress=False) for mode in ("w", "w+")}
    return G, target, fits


def test_projection_finds_an_image_the_network_made(creps_fits):
    G, target, fits = creps_fits
    fit = fits["w"]
    w_avg, _ = w_statistics(G, 10_000)
    start_psnr = pixel_psnr(uint8(render_ws(G, w_avg.expand(-1, G.num_ws, -1)))[0], target)
    # Measured: LPIPS 1.370 -> 0.0234 (59x), PSNR 8.1 -> 22.7 dB (benchmarks/bench_projector.py).
    assert fit.initial_lpips / fit.lpips > 25, (fit.initial_lpips, fit.lpips)
    assert start_psnr < 12 and fit.psnr > 20, (start_psnr, fit.psnr)
    assert fit.psnr == pytest.approx(pixel_psnr(uint8(fit.image)[0], target))
    assert fit.w.shape == (1, G.num_ws, G.w_dim) and fit.w.dtype == torch.float32
    assert torch.equal(fit.w, fit.w[:, :1].expand_as(fit.w))  # W: one w for every layer
    assert len(fit.history) == 100 and fit.noise == {}


def test_w_plus_fits_at_least_as_well_as_w(creps_fits):
    G, _, fits = creps_fits
    # Measured: LPIPS 0.0184 (W+) against 0.0234 (W), PSNR 23.6 against 22.7 dB.
    assert fits["w+"].lpips <= fits["w"].lpips and fits["w+"].psnr >= fits["w"].psnr - 0.5
    assert not torch.equal(fits["w+"].w[:, 0], fits["w+"].w[:, -1])  # layers got their own w


def test_projection_leaves_the_network_as_it_was(vgg):
    G = build_g("stylegan2", noise_strength=0.1)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    project(G, made_image(G), vgg=vgg, settings=ProjectionSettings(num_steps=3, w_avg_samples=100), progress=False)
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not G.training


def test_stylegan2_noise_maps_are_regularised_and_stay_normalised(vgg):
    G = build_g("stylegan2", noise_strength=0.1)
    target = made_image(G)
    seen = []

    def settings(weight):
        return ProjectionSettings(num_steps=40, w_avg_samples=1000, regularize_noise_weight=weight)

    fit = project(G, target, vgg=vgg, settings=settings(1e5), progress=False, callback=lambda r: seen.append(r.loss))
    free = project(G, target, vgg=vgg, settings=settings(0.0), progress=False)
    assert sorted(fit.noise) == sorted(noise_buffers(G)) and len(seen) == 40
    for name, m in fit.noise.items():
        assert m.shape == noise_buffers(G)[name].shape
        assert abs(m.mean().item()) < 1e-5 and m.square().mean().item() == pytest.approx(1.0, abs=1e-5)
        assert not torch.equal(m, noise_buffers(G)[name])
    # Measured: penalty 0.0012 with the weight, 0.14 without (fresh draws: about 0.11); LPIPS 0.607 -> 0.258.
    penalty, free_penalty = noise_autocorrelation_penalty(fit.noise), noise_autocorrelation_penalty(free.noise)
    assert penalty < 0.01 and free_penalty > 20 * penalty, (penalty, free_penalty)
    assert fit.lpips < fit.initial_lpips / 2


@pytest.mark.parametrize("cfg,channels", [(cfg, 3) for cfg in CONFIGS] + [("creps", 1)])
def test_every_config_projects(cfg, channels, vgg):
    G = build_g(cfg, channels=channels, noise_strength=0.1)
    fit = project(G, made_image(G), vgg=vgg, settings=ProjectionSettings(num_steps=8, w_avg_samples=1000),
                  progress=False)
    assert fit.w.shape == (1, G.num_ws, G.w_dim) and fit.image.shape == (1, channels, RES, RES)
    assert math.isfinite(fit.lpips) and fit.lpips < fit.initial_lpips, (fit.initial_lpips, fit.lpips)
    assert bool(fit.noise) == (cfg == "stylegan2")


def test_conditional_network_projects_with_a_label_and_not_a_non_generator(vgg):
    G = build_g("creps", cond=True)
    c = torch.eye(G.c_dim)[1:2]
    with torch.no_grad():
        target = uint8(render_ws(G, G.mapping(z_from_seed(1, G.z_dim), c)))[0]
    fit = project(G, target, vgg=vgg, c=c, settings=ProjectionSettings(num_steps=8, w_avg_samples=500),
                  progress=False)
    assert fit.lpips < fit.initial_lpips
    with pytest.raises(ValueError, match="conditional"):
        project(G, target, vgg=vgg, settings=ProjectionSettings(num_steps=1), progress=False)
    with pytest.raises(UserError, match="not a generator with a W space"):
        project(torch.nn.Linear(2, 2), target, vgg=vgg, progress=False)


# ---------------------------------------------------------------------------------------
# The command line and projected_w.npz.


@pytest.fixture(scope="module")
def creps_run(tmp_path_factory, vgg_files):
    """projector.py on a CREPS snapshot and an image it made: 20 steps, with the video."""
    root = tmp_path_factory.mktemp("creps-run")
    snap = write_snapshot(root / "creps.safetensors", "creps")
    G = build_g("creps")
    target = root / "face.png"
    PIL.Image.fromarray(made_image(G).permute(1, 2, 0).numpy()).save(target)
    code, out, err = call(run_projection, [f"--network={snap}", f"--target={target}", f"--outdir={root / 'out'}",
                                           "--num-steps=20", f"--vgg16={vgg_files[0]}", f"--lpips={vgg_files[1]}"])
    assert code == 0, err
    return snap, G, root / "out"


def test_cli_writes_the_published_files(creps_run):
    _, G, out = creps_run
    assert sorted(p.name for p in out.iterdir()) == ["proj.mp4", "proj.png", "projected_w.npz", "projection.jsonl",
                                                     "target.png"]
    with np.load(out / "projected_w.npz") as npz:
        assert npz.files == ["w"]
        assert npz["w"].shape == (1, G.num_ws, G.w_dim) and npz["w"].dtype == np.float32
    line = json.loads((out / "projection.jsonl").read_text())
    assert line["steps"] == 20 and line["seed"] == 303 and line["w_plus"] is False and line["outdir"] == "."
    assert line["lpips"] < line["initial_lpips"] / 5 and line["psnr"] > 12
    target, proj = png(out / "target.png"), png(out / "proj.png")
    assert target.shape == proj.shape == (RES, RES, 3)
    assert line["mse"] == pytest.approx(np.square(target.astype(float) - proj.astype(float)).mean(), rel=1e-5)
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    reader = imageio_ffmpeg.read_frames(str(out / "proj.mp4"))
    meta = next(reader)
    assert meta["fps"] == 10 and meta["size"] == (2 * RES, RES) and len(list(reader)) == 20


def test_projected_w_round_trips_through_gen_images_and_renders_at_2x(creps_run, tmp_path):
    snap, G, out = creps_run
    code, _, err = call(generate, [f"--network={snap}", f"--projected-w={out / 'projected_w.npz'}",
                                   f"--outdir={tmp_path / 'x1'}"])
    assert code == 0, err
    assert np.array_equal(png(tmp_path / "x1" / "proj00.png"), png(out / "proj.png"))
    code, out_text, err = call(generate, [f"--network={snap}", f"--projected-w={out / 'projected_w.npz'}",
                                          "--seeds=1", "--scale=2", f"--outdir={tmp_path / 'x2'}"])
    assert code == 0, err
    assert "--seeds is ignored" in out_text
    big = png(tmp_path / "x2" / "proj00.png")
    assert big.shape == (2 * RES, 2 * RES, 3)
    w = torch.from_numpy(np.load(out / "projected_w.npz")["w"])
    assert np.array_equal(big, uint8(render_ws(G, w, scale=2))[0].permute(1, 2, 0).numpy())


def test_stylegan2_projection_round_trips_with_its_noise_maps(tmp_path, vgg_files):
    snap = write_snapshot(tmp_path / "sg2.safetensors", "stylegan2", noise_strength=0.1)
    G = build_g("stylegan2", noise_strength=0.1)
    PIL.Image.fromarray(made_image(G).permute(1, 2, 0).numpy()).save(tmp_path / "t.png")
    code, _, err = call(run_projection, [f"--network={snap}", f"--target={tmp_path / 't.png'}",
                                         f"--outdir={tmp_path / 'out'}", "--num-steps=5", "--save-video=0",
                                         "--w-plus=1", f"--vgg16={vgg_files[0]}", f"--lpips={vgg_files[1]}"])
    assert code == 0, err
    npz_path = tmp_path / "out" / "projected_w.npz"
    ws, noise = load_projected_w(npz_path, G)
    assert sorted(noise) == sorted(noise_buffers(G)) and ws.shape == (1, G.num_ws, G.w_dim)
    assert json.loads((tmp_path / "out" / "projection.jsonl").read_text())["w_plus"] is True
    code, _, err = call(generate, [f"--network={snap}", f"--projected-w={npz_path}", f"--outdir={tmp_path / 'g'}"])
    assert code == 0, err
    assert np.array_equal(png(tmp_path / "g" / "proj00.png"), png(tmp_path / "out" / "proj.png"))
    save_projected_w(tmp_path / "w-only.npz", ws)  # without the maps: the network's own noise
    call(generate, [f"--network={snap}", f"--projected-w={tmp_path / 'w-only.npz'}", f"--outdir={tmp_path / 'h'}"])
    assert not np.array_equal(png(tmp_path / "h" / "proj00.png"), png(tmp_path / "out" / "proj.png"))
    code, _, err = call(generate, [f"--network={snap}", f"--projected-w={npz_path}", "--scale=2",
                                   f"--outdir={tmp_path / 'i'}"])
    assert code == 2 and err.count("\n") == 1 and "renders at its native 16x16 only" in err


def test_a_folder_of_targets(tmp_path, vgg_files):
    snap = write_snapshot(tmp_path / "creps.safetensors", "creps", channels=1)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    gen = np.random.RandomState(1)
    PIL.Image.fromarray(gen.randint(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / "a.png")
    PIL.Image.fromarray(gen.randint(0, 256, (24, 24), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    PIL.Image.fromarray(gen.randint(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA").save(folder / "c.webp")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, text, err = call(run_projection, [f"--network={snap}", f"--target={folder}", f"--outdir={out}",
                                            "--num-steps=3", "--save-video=0", f"--vgg16={vgg_files[0]}",
                                            f"--lpips={vgg_files[1]}"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a", "c", "projection.jsonl", "sub"]
    for sub in ("a", "sub/b", "c"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["proj.png", "projected_w.npz", "target.png"]
        assert png(out / sub / "target.png").shape == (RES, RES)  # a 1-channel network: gray targets
    lines = [json.loads(line) for line in (out / "projection.jsonl").read_text().splitlines()]
    assert [line["target"] for line in lines] == ["a.png", "c.webp", "sub/b.jpg"]
    assert [line["outdir"] for line in lines] == ["a", "c", "sub/b"]


def test_a_broken_image_in_a_folder_fails_alone(tmp_path, vgg_files):
    snap = write_snapshot(tmp_path / "creps.safetensors", "creps")
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "good.png")
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    code, text, err = call(run_projection, [f"--network={snap}", f"--target={folder}", f"--outdir={out}",
                                            "--num-steps=2", "--save-video=0", f"--vgg16={vgg_files[0]}",
                                            f"--lpips={vgg_files[1]}"])
    assert code == 2 and err.count("\n") == 1 and "1 of 2 images could not be projected (first: bad.png)" in err
    assert "bad.png: cannot decode image" in text
    assert sorted(p.name for p in out.iterdir()) == ["good", "projection.jsonl"]


def test_a_failure_while_writing_leaves_none_of_the_images_files(tmp_path, vgg_files, monkeypatch):
    snap = write_snapshot(tmp_path / "creps.safetensors", "creps")
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "t.png")

    def broken_writer(frames, path, fps):
        Path(path).write_bytes(b"half a video")
        raise RuntimeError("disk full")

    monkeypatch.setattr(cli_video, "write_mp4", broken_writer)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        run_projection([f"--network={snap}", f"--target={tmp_path / 't.png'}", f"--outdir={out}", "--num-steps=2",
                        f"--vgg16={vgg_files[0]}", f"--lpips={vgg_files[1]}"])
    assert list(out.iterdir()) == []


def test_output_folders_of_images_that_share_a_name():
    assert output_names(["a.png", "a.jpg", "b.png", "x/a.png"]) == ["a_png", "a_jpg", "b", "x/a"]


# ---------------------------------------------------------------------------------------
# Bad inputs: one line, exit code 2.


@pytest.fixture(scope="module")
def small_snapshot(tmp_path_factory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snap") / "creps.safetensors", "creps")


def _bad_target_cases(root: Path) -> list[tuple[str, str]]:
    (root / "empty").mkdir()
    (root / "fake.png").write_text("not a png")
    return [(str(root / "missing.png"), "no such file or folder"), (str(root / "empty"), "no images in it"),
            (str(root / "fake.png"), "not a readable image")]


def test_bad_targets_are_one_line_errors(tmp_path, small_snapshot, vgg_files):
    for target, message in _bad_target_cases(tmp_path):
        code, _, err = call(run_projection, [f"--network={small_snapshot}", f"--target={target}",
                                             f"--outdir={tmp_path / 'out'}", "--num-steps=1", "--save-video=0",
                                             f"--vgg16={vgg_files[0]}", f"--lpips={vgg_files[1]}"])
        assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, (target, err)
    assert not (tmp_path / "out" / "projected_w.npz").exists()


@pytest.mark.parametrize("argv,message", [
    (["--num-steps=0"], "must be at least 1"),
    (["--network={root}/notes.txt"], "not a creps network snapshot"),
    (["--network={root}/cond.safetensors"], "conditional network"),
    (["--outdir={root}/notes.txt"], "exists and is not a directory"),
    (["--vgg16={root}/nowhere.pth"], "VGG16 weights"),
])
def test_bad_flags_are_one_line_errors(tmp_path, small_snapshot, vgg_files, argv, message):
    (tmp_path / "notes.txt").write_text("hello")
    write_snapshot(tmp_path / "cond.safetensors", "creps", cond=True)
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "t.png")
    base = [f"--network={small_snapshot}", f"--target={tmp_path / 't.png'}", f"--outdir={tmp_path / 'out'}",
            "--num-steps=1", "--save-video=0", f"--vgg16={vgg_files[0]}", f"--lpips={vgg_files[1]}"]
    extra = [a.format(root=tmp_path) for a in argv]
    flags = {a.split("=")[0] for a in extra}
    code, _, err = call(run_projection, [a for a in base if a.split("=")[0] not in flags] + extra)
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_save_video_without_imageio_ffmpeg_is_a_one_line_error(tmp_path, small_snapshot, monkeypatch):
    def missing():
        raise UserError("no ffmpeg")

    monkeypatch.setattr(cli_video, "mp4_writer_module", missing)
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "t.png")
    code, _, err = call(run_projection, [f"--network={small_snapshot}", f"--target={tmp_path / 't.png'}",
                                         f"--outdir={tmp_path / 'out'}"])
    assert code == 2 and err.count("\n") == 1 and "imageio-ffmpeg" in err and "--save-video=0" in err


def test_bad_projected_w_files_are_one_line_errors(tmp_path, small_snapshot):
    G = build_g("creps")
    np.savez(tmp_path / "key.npz", latents=np.zeros((1, G.num_ws, G.w_dim), np.float32))
    np.savez(tmp_path / "shape.npz", w=np.zeros((1, G.num_ws + 1, G.w_dim), np.float32))
    np.savez(tmp_path / "flat.npz", w=np.zeros((G.num_ws, G.w_dim), np.float32))
    np.savez(tmp_path / "objects.npz", w=np.array([None, 1], dtype=object))
    (tmp_path / "text.npz").write_text("hello")
    cases = [("missing.npz", "no such file"), ("text.npz", "not a readable .npz file"), ("key.npz", "has no array 'w'"),
             ("shape.npz", f"needs floats of shape [N, {G.num_ws}, {G.w_dim}]"), ("flat.npz", "needs floats"),
             ("objects.npz", "not a readable .npz file")]
    for name, message in cases:
        code, _, err = call(generate, [f"--network={small_snapshot}", f"--projected-w={tmp_path / name}",
                                       f"--outdir={tmp_path / 'out'}"])
        assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, (name, err)
    code, _, err = call(generate, [f"--network={small_snapshot}", f"--outdir={tmp_path / 'out'}"])
    assert code == 2 and "--seeds" in err and "--projected-w" in err


def test_many_ws_render_one_image_each(tmp_path, small_snapshot):
    G = build_g("creps")
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    save_projected_w(tmp_path / "three.npz", ws)
    code, _, err = call(generate, [f"--network={small_snapshot}", f"--projected-w={tmp_path / 'three.npz'}",
                                   f"--outdir={tmp_path / 'out'}"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["proj00.png", "proj01.png", "proj02.png"]
    assert np.array_equal(png(tmp_path / "out" / "proj02.png"),
                          uint8(render_ws(G, ws[2:3]))[0].permute(1, 2, 0).numpy())
    code, _, err = call(generate, [f"--network={small_snapshot}", f"--projected-w={tmp_path / 'three.npz'}",
                                   "--size=24x16", f"--outdir={tmp_path / 'wide'}"])  # WxH, as for seeds
    assert code == 0, err
    assert np.array_equal(png(tmp_path / "wide" / "proj01.png"),
                          uint8(render_ws(G, ws[1:2], size=(16, 24)))[0].permute(1, 2, 0).numpy())


def test_shim_and_creps_project_are_wired():
    proc = subprocess.run([sys.executable, str(REPO / "projector.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--w-plus" in proc.stdout and "--num-steps" in proc.stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        creps_main(["project", "--help"])
    assert exited.value.code == 0 and "usage: creps project" in out.getvalue()
