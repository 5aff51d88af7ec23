"""gen_video.py: the looping spline, the published seed -> keyframe rules, grid layout, and the
command end to end on a tiny CREPS snapshot (.gif at --scale=2, PNG frames, .webp, .mp4),
with files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import creps.video as video
from creps.checkpoint import load_snapshot, save_snapshot
from creps.cli.video import gen_video, gif_duration_ms
from creps.config import DatasetInfo, TrainOptions, resolve
from creps.generate import render, to_uint8, z_from_seed
from creps.train.step import build_networks
from creps.video import (LoopSpline, arrange_seeds, frame_times, grid_frames, interpolate_loop, keyframe_count,
                         keyframe_ws, keyframe_zs)

REPO = Path(__file__).resolve().parents[1]
RES = 16


def call(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = gen_video(argv)
    return code, out.getvalue(), err.getvalue()


def make_snapshot(path: Path, cond: bool = False) -> Path:
    """An untrained tiny CREPS generator (16x16) saved as a creps snapshot."""
    options = TrainOptions(outdir=str(path.parent), cfg="creps", data="tiny", gpus=1, batch=4, gamma=1, cond=cond,
                           cbase=128, cmax=16, map_depth=1, mbstd_group=2, aug="noaug", metrics=())
    info = DatasetInfo(path="tiny", name="tiny", resolution=RES, channels=3, size=8, has_labels=cond,
                       label_dim=3 if cond else 0)
    cfg = resolve(options, info)
    torch.manual_seed(0)
    nets = build_networks(cfg, torch.device("cpu"))
    save_snapshot(path, {"G_ema": nets.G_ema}, training=cfg)
    return path


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return make_snapshot(tmp_path_factory.mktemp("net") / "network-snapshot-000000.safetensors")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------
# The looping spline.


def test_spline_passes_through_every_keyframe_and_closes_the_loop():
    keys = np.random.RandomState(1).randn(5, 3, 4)
    spline = LoopSpline(keys)
    assert np.array_equal(spline(np.arange(5.0)), keys)
    assert np.array_equal(spline(5.0), keys[0])  # the frame after the last is frame 0
    assert np.array_equal(spline(-1.0), keys[4])
    t = np.linspace(0, 5, 37)
    np.testing.assert_allclose(spline(t + 5), spline(t), rtol=0, atol=1e-12)
    assert not np.allclose(spline(0.5), (keys[0] + keys[1]) / 2)  # a cubic, not a straight line


def test_spline_is_smooth_at_keyframes_including_the_wrap():
    keys = np.random.RandomState(2).randn(4, 6)
    spline = LoopSpline(keys)
    h = 1e-5
    for k in range(5):  # k = 4 is the joint where the loop wraps back to keyframe 0
        left = (spline(k) - spline(k - h)) / h
        right = (spline(k + h) - spline(k)) / h
        np.testing.assert_allclose(left, right, rtol=0, atol=1e-3)
        curv_left = (spline(k) - 2 * spline(k - h) + spline(k - 2 * h)) / h**2
        curv_right = (spline(k + 2 * h) - 2 * spline(k + h) + spline(k)) / h**2
        np.testing.assert_allclose(curv_left, curv_right, rtol=0, atol=5e-2)  # C2 as well
    # Between keyframes the slope is not continuous for a piecewise-linear path: make sure
    # the check above would catch one.
    def lerp(t):
        return np.interp(t, np.arange(5), np.concatenate([keys[:, 0], keys[:1, 0]]))

    assert abs((lerp(1) - lerp(1 - h)) / h - (lerp(1 + h) - lerp(1)) / h) > 1e-3


def test_spline_reproduces_constants_and_approximates_a_smooth_loop():
    np.testing.assert_array_equal(interpolate_loop(np.full((1, 3), 2.5), np.linspace(0, 1, 9)), 2.5)
    np.testing.assert_allclose(interpolate_loop(np.full((6, 2), -1.0), np.linspace(0, 6, 25)), -1.0, atol=1e-14)
    count = 12
    keys = np.sin(2 * np.pi * np.arange(count) / count)[:, None]
    t = np.linspace(0, count, 301)
    np.testing.assert_allclose(interpolate_loop(keys, t)[:, 0], np.sin(2 * np.pi * t / count), atol=5e-4)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 8])
def test_spline_matches_the_published_scipy_construction(count):
    """The published script: interp1d(kind='cubic') over the keyframes tiled 5x, x = -2K .. 3K-1."""
    interpolate = pytest.importorskip("scipy.interpolate")
    keys = np.random.RandomState(count).randn(count, 5)
    x = np.arange(-2 * count, 3 * count)
    published = interpolate.interp1d(x, np.tile(keys, [5, 1]), kind="cubic", axis=0)
    t = frame_times(count, 20)
    diff = np.abs(published(t) - LoopSpline(keys)(t)).max()
    bound = (2 - np.sqrt(3)) ** (2 * count - 1) * np.ptp(keys) + 1e-12
    assert diff <= bound, (diff, bound)


# ---------------------------------------------------------------------------------------
# Seeds -> keyframes.


def test_keyframe_count_follows_the_seeds_and_grid():
    assert keyframe_count(32, (4, 2)) == 4
    assert keyframe_count(3, (1, 1)) == 3
    assert keyframe_count(5, (4, 2), num_keyframes=7) == 7
    with pytest.raises(ValueError, match="do not fill a 2x2 grid"):
        keyframe_count(6, (2, 2))


def test_seeds_fill_cells_in_the_published_order():
    cells = arrange_seeds(list(range(8)), (2, 2), 2)
    assert cells.shape == (2, 2, 2)  # [grid_h, grid_w, keyframes]
    assert cells[0, 0].tolist() == [0, 1] and cells[0, 1].tolist() == [2, 3] and cells[1, 0].tolist() == [4, 5]
    repeated = arrange_seeds([10, 11, 12], (1, 1), 5)
    assert repeated[0, 0].tolist() == [10, 11, 12, 10, 11]
    shuffled = arrange_seeds(list(range(8)), (2, 2), 2, shuffle_seed=3)
    expected = np.arange(8, dtype=np.int64)
    np.random.RandomState(3).shuffle(expected)
    assert shuffled.ravel().tolist() == expected.tolist()


def test_keyframe_latents_are_the_seeds_randomstate_draws(snapshot):
    zs = keyframe_zs(np.array([[3, 7]]), 5)
    assert zs.shape == (1, 2, 5) and zs.dtype == torch.float64
    assert np.array_equal(zs[0, 1].numpy(), np.random.RandomState(7).randn(5))
    G = load_snapshot(snapshot, networks=("G_ema",)).G_ema
    seeds = np.array([[[4, 9]]])
    ws = keyframe_ws(G, seeds, truncation_psi=0.5)
    assert ws.shape == (1, 1, 2, G.num_ws, G.w_dim)
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in (4, 9)]))
    torch.testing.assert_close(ws[0, 0], G.mapping(z, None, truncation_psi=0.5), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# Frames, with a stand-in generator whose image is filled with ws[:, 0, 0].


class FlatSynthesis(torch.nn.Module):
    def forward(self, ws, noise_mode="const"):
        return ws[:, 0, 0].reshape(-1, 1, 1, 1).expand(-1, 3, 4, 6).float()


class FlatG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.synthesis = FlatSynthesis()
        self.anchor = torch.nn.Parameter(torch.zeros(1))


def test_grid_layout_puts_cell_0_top_left():
    ws = torch.zeros(2, 2, 1, 2, 3)  # [grid_h=2, grid_w=2, K=1, num_ws, w_dim]
    for cell, level in enumerate([-1.0, 1.0, -0.5, 0.5]):
        ws[cell // 2, cell % 2] = level
    frames = list(grid_frames(FlatG(), ws, w_frames=2, progress=False))
    assert len(frames) == 2 and frames[0].shape == (8, 12, 3) and frames[0].dtype == np.uint8
    frame = frames[0]
    assert (frame[:4, :6] == 0).all() and (frame[:4, 6:] == 255).all()  # row 0: cell 0 left, cell 1 right
    assert (frame[4:, :6] == 64).all() and (frame[4:, 6:] == 191).all()


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_frame_count_and_keyframes_land_on_frames(batch_size):
    levels = np.array([-0.8, 0.2, 0.6])
    ws = torch.from_numpy(levels).float().reshape(1, 1, 3, 1, 1).expand(2, 2, 3, 2, 3).contiguous()
    frames = list(grid_frames(FlatG(), ws, w_frames=4, batch_size=batch_size, progress=False))
    assert len(frames) == 3 * 4  # num_keyframes * w_frames
    for k, level in enumerate(levels):
        assert (frames[4 * k] == int(level * 127.5 + 128)).all()
    assert len({f[0, 0, 0] for f in frames}) > 3  # in-between frames differ from the keyframes


# ---------------------------------------------------------------------------------------
# The command.


def test_seeds_that_do_not_fill_the_grid_are_one_line_errors(tmp_path, snapshot):
    code, out, err = call([f"--network={snapshot}", "--seeds=0-4", "--grid=2x2", f"--output={tmp_path / 'a.gif'}"])
    assert code == 2 and err.count("\n") == 1 and "do not fill a 2x2 grid" in err and "--num-keyframes" in err
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--output=x.avi"], "use .mp4, .gif, .webp"),
    (["--grid=0x2", "--output=x.gif"], "--grid"),
    (["--w-frames=0", "--output=x.gif"], "--w-frames"),
    (["--scale=2", "--size=32", "--output=x.gif"], "not both"),
    (["--output=x.gif", "--network=missing.safetensors"], "no such network file"),
])
def test_bad_flags_are_one_line_errors(tmp_path, snapshot, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = call([f"--network={snapshot}", "--seeds=0-1", *argv])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert files_in(tmp_path) == []


def test_gif_at_scale_2(tmp_path, snapshot):
    out_path = tmp_path / "sub" / "lerp.gif"
    code, out, err = call([f"--network={snapshot}", "--seeds=0-3", "--grid=2x1", "--w-frames=3", "--scale=2",
                           f"--output={out_path}", "--trunc=0.7"])
    assert code == 0, err
    assert files_in(out_path.parent) == ["lerp.gif"]
    with PIL.Image.open(out_path) as gif:
        assert gif.format == "GIF" and gif.size == (2 * 2 * RES, 2 * RES)  # a 2x1 grid of 32x32 images
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == 2 * 3 * gif_duration_ms(60)  # identical neighbours may merge; time adds up
    assert "note: GIF" in out


def test_png_frames_folder_matches_gen_images_at_keyframes(tmp_path, snapshot):
    outdir = tmp_path / "frames"
    code, out, err = call([f"--network={snapshot}", "--seeds=5,6,7,8", "--grid=2x1", "--w-frames=2",
                           "--size=24x20", f"--output={outdir}/"])
    assert code == 0, err
    assert files_in(outdir) == [f"frame{i:06d}.png" for i in range(4)]
    G = load_snapshot(snapshot, networks=("G_ema",)).G_ema
    frame0 = np.asarray(PIL.Image.open(outdir / "frame000000.png"))
    frame2 = np.asarray(PIL.Image.open(outdir / "frame000002.png"))
    assert frame0.shape == (20, 48, 3)  # --size=WxH per image, two across
    # Cell 0 (left) holds seeds 5, 6; cell 1 (right) seeds 7, 8: keyframes are those seeds' images.
    for frame, left, right in [(frame0, 5, 7), (frame2, 6, 8)]:
        for seed, half in [(left, frame[:, :24]), (right, frame[:, 24:])]:
            expected = to_uint8(render(G, z_from_seed(seed, G.z_dim), None, size=(20, 24)))[0]
            assert np.abs(half.astype(int) - expected.astype(int)).max() <= 1


def test_existing_folder_gets_png_frames_and_webp_works(tmp_path, snapshot):
    folder = tmp_path / "existing"
    folder.mkdir()
    assert call([f"--network={snapshot}", "--seeds=1,2", "--w-frames=1", f"--output={folder}"])[0] == 0
    assert files_in(folder) == ["frame000000.png", "frame000001.png"]
    webp = tmp_path / "loop.webp"
    code, out, err = call([f"--network={snapshot}", "--seeds=1,2", "--w-frames=2", f"--output={webp}"])
    assert code == 0, err
    with PIL.Image.open(webp) as img:
        assert img.format == "WEBP" and img.n_frames == 4 and img.size == (RES, RES)


def test_conditional_network_needs_a_class(tmp_path):
    snap = make_snapshot(tmp_path / "cond.safetensors", cond=True)
    code, out, err = call([f"--network={snap}", "--seeds=0,1", "--w-frames=1", f"--output={tmp_path / 'c.gif'}"])
    assert code == 2 and "--class" in err and not (tmp_path / "c.gif").exists()
    code, out, err = call([f"--network={snap}", "--seeds=0,1", "--w-frames=1", "--class=2",
                           f"--output={tmp_path / 'c.gif'}"])
    assert code == 0, err
    assert (tmp_path / "c.gif").is_file()


def fail_after(monkeypatch, calls: int) -> None:
    real = video.synthesize
    seen = []

    def flaky(*args, **kwargs):
        seen.append(1)
        if len(seen) > calls:
            raise RuntimeError("renderer failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "synthesize", flaky)


@pytest.mark.parametrize("name", ["lerp.gif", "lerp.webp", "lerp.mp4"])
def test_no_partial_file_when_rendering_fails_midway(tmp_path, snapshot, monkeypatch, name):
    if name.endswith(".mp4"):
        pytest.importorskip("imageio_ffmpeg")
    target = tmp_path / name
    target.write_bytes(b"the previous video")
    fail_after(monkeypatch, calls=2)  # one image per frame: fails on the third frame
    with pytest.raises(RuntimeError, match="renderer failed"):
        call([f"--network={snapshot}", "--seeds=0,1", "--w-frames=4", f"--output={target}"])
    assert files_in(tmp_path) == [name] and target.read_bytes() == b"the previous video"


def test_mp4_without_imageio_ffmpeg_is_a_one_line_error(tmp_path, snapshot, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import imageio_ffmpeg -> ImportError
    code, out, err = call([f"--network={snapshot}", "--seeds=0,1", f"--output={tmp_path / 'lerp.mp4'}"])
    assert code == 2 and err.count("\n") == 1
    assert "pip install imageio-ffmpeg" in err and ".gif" in err
    assert files_in(tmp_path) == []


def test_mp4_when_imageio_ffmpeg_is_installed(tmp_path, snapshot):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    target = tmp_path / "lerp.mp4"
    code, out, err = call([f"--network={snapshot}", "--seeds=0-3", "--grid=2x1", "--w-frames=3", "--scale=2",
                           f"--output={target}"])
    assert code == 0, err
    assert files_in(tmp_path) == ["lerp.mp4"]
    reader = imageio_ffmpeg.read_frames(str(target))
    meta = next(reader)
    frames = list(reader)
    assert meta["fps"] == 60 and meta["codec"].startswith("h264") and meta["size"] == (2 * 2 * RES, 2 * RES)
    assert len(frames) == 2 * 3


def test_gen_video_shim_runs(tmp_path, snapshot):
    proc = subprocess.run([sys.executable, str(REPO / "gen_video.py"), f"--network={snapshot}", "--seeds=0-x",
                           f"--output={tmp_path / 'a.gif'}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument --seeds: cannot read seed") and "Traceback" not in proc.stderr
