"""`creps video` / `gen_video.py`: latent-interpolation videos, at any output scale for CREPS networks.

Outputs: .mp4 (through imageio-ffmpeg, when installed), animated .gif and .webp
(Pillow), or a folder of PNG frames (--output ending in / or an existing folder). Files
appear whole or not at all; each PNG frame is written whole.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from creps.cli.common import (Parser, add_network_option, check_scale_or_size, class_label, load_renderer, parse_size,
                              positive_float, positive_int, rows_cols, run_cli, seed_list)
from creps.errors import UserError

MP4_HINT = "pip install imageio-ffmpeg (or creps[video]), or use --output=NAME.gif, NAME.webp or a folder NAME/"
FORMATS = (".mp4", ".gif", ".webp")
MP4_BITRATE = "12M"  # as the published gen_video.py
PILLOW_MEMORY_NOTE_BYTES = 1 << 30


def _grid(text: str) -> tuple[int, int]:
    """'4x2' or '4,2' -> (4, 2): grid width and height in images."""
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*", text.lower())
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected WxH with sides >= 1, e.g. 4x2, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser(prog: str = "gen_video.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Render a latent-vector interpolation video (a looping cubic spline "
                                      "through one keyframe per seed and grid cell).",
               epilog="example: python gen_video.py --output=lerp.mp4 --trunc=1 --seeds=0-31 --grid=4x2 "
                      "--network=run/network-snapshot-000100.safetensors [--scale=2]")
    add_network_option(p)
    p.add_argument("--seeds", type=seed_list, required=True, metavar="LIST", help="list of random seeds, e.g. 0-31")
    p.add_argument("--shuffle-seed", type=int, metavar="INT", help="random seed for shuffling the seed order")
    p.add_argument("--grid", type=_grid, default=(1, 1), metavar="WxH", help="grid width x height (default: 1x1)")
    p.add_argument("--num-keyframes", type=positive_int, metavar="INT",
                   help="keyframes per grid cell (default: number of seeds / (W*H); seeds repeat to fill)")
    p.add_argument("--w-frames", type=positive_int, default=120, metavar="INT",
                   help="frames from one keyframe to the next (default: 120)")
    p.add_argument("--trunc", type=float, default=1.0, metavar="FLOAT", help="truncation psi (default: 1)")
    p.add_argument("--class", dest="class_idx", type=int, metavar="INT", help="class label (conditional networks)")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), default="const",
                   help="noise mode (default: const)")
    p.add_argument("--output", required=True, metavar="FILE|DIR/",
                   help="output .mp4 (needs imageio-ffmpeg), .gif, .webp, or a folder for PNG frames")
    p.add_argument("--fps", type=positive_float, default=60.0, metavar="FLOAT", help="frames per second (default: 60)")
    p.add_argument("--scale", type=positive_float, metavar="FLOAT", help="output scale for CREPS networks, e.g. 2")
    p.add_argument("--size", type=parse_size, metavar="N|WxH", help="explicit output size for CREPS networks")
    p.add_argument("--batch", type=positive_int, default=1, metavar="INT",
                   help="images per synthesis call (default: 1; more is faster on a GPU, needs more memory)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if present)")
    return p


def output_kind(text: str) -> str:
    """'frames' for a folder (ending in / or existing), else the file suffix: '.mp4', '.gif', '.webp'."""
    if text.endswith(("/", os.sep)) or Path(os.path.expanduser(text)).is_dir():
        return "frames"
    suffix = Path(text).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--output={text}: cannot write {suffix or 'a file without suffix'}; "
                        f"use .mp4, .gif, .webp or a folder ending in / for PNG frames")
    return suffix


def mp4_writer_module():
    """imageio-ffmpeg (the ffmpeg that imageio writes videos with), or a UserError saying how to get it."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError(f"writing .mp4 needs imageio-ffmpeg: {MP4_HINT}") from None
    return imageio_ffmpeg


def check_pillow_format(kind: str) -> None:
    from PIL import features

    if kind == ".webp" and not features.check("webp"):
        raise UserError("this Pillow was built without WebP support; use --output=NAME.gif, .mp4 or a folder NAME/")


def gif_duration_ms(fps: float) -> int:
    """GIF frame delays are whole centiseconds, and players slow delays under 2 cs to 10 cs."""
    return 10 * max(2, round(100 / fps))


def pillow_image(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray(frame[:, :, 0] if frame.shape[2] == 1 else frame)


def write_pillow_animation(frames: Iterable[np.ndarray], path: Path, kind: str, fps: float) -> None:
    """Animated .gif or .webp (looping forever), written whole or not at all."""
    from creps.atomic import atomic_path

    frames = iter(frames)
    first = pillow_image(next(frames))
    rest = (pillow_image(frame) for frame in frames)
    if kind == ".gif":
        options = {"format": "GIF", "duration": gif_duration_ms(fps)}
    else:
        options = {"format": "WEBP", "duration": max(1, round(1000 / fps)), "quality": 90}
    with atomic_path(path) as tmp:
        first.save(tmp, save_all=True, append_images=rest, loop=0, **options)


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float) -> None:
    """H.264 .mp4 as the published gen_video.py writes it (libx264, 12 Mbit/s), whole or not at all."""
    from creps.atomic import atomic_path

    ffmpeg = mp4_writer_module()
    frames = iter(frames)
    first = next(frames)
    rows, cols, channels = first.shape
    with atomic_path(path) as tmp:
        writer = ffmpeg.write_frames(str(tmp), (cols, rows), pix_fmt_in="gray" if channels == 1 else "rgb24",
                                     fps=fps, codec="libx264", bitrate=MP4_BITRATE,
                                     output_params=["-f", "mp4"])  # the temporary name has no .mp4 suffix
        writer.send(None)
        try:
            for frame in itertools.chain([first], frames):
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()


def write_frame_folder(frames: Iterable[np.ndarray], folder: Path) -> int:
    """frame000000.png, frame000001.png, ... (each file whole); returns the number written."""
    from creps.generate import write_png

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, frame in enumerate(frames):
        write_png(folder / f"frame{index:06d}.png", frame)
        written = index + 1
    return written


def frame_bytes(G, grid: tuple[int, int], scale: Optional[float], size) -> int:
    """Bytes of one uint8 frame of the video."""
    from creps.nets.creps import resolve_size

    if scale is None and size is None:
        rows = cols = G.img_resolution
    else:
        rows, cols = resolve_size(G.img_resolution, scale, size)
    return rows * cols * G.img_channels * grid[0] * grid[1]


def write_video(frames: Iterator[np.ndarray], output: str, kind: str, fps: float) -> None:
    path = Path(os.path.expanduser(output))
    if kind == "frames":
        write_frame_folder(frames, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".mp4":
        write_mp4(frames, path, fps)
    else:
        write_pillow_animation(frames, path, kind, fps)


def gen_video(argv: Optional[Sequence[str]] = None, prog: str = "gen_video.py") -> int:
    def body() -> int:
        from creps.video import arrange_seeds, grid_frames, keyframe_count, keyframe_ws

        args = build_parser(prog).parse_args(argv)
        seeds = args.seeds
        try:
            num_keyframes = keyframe_count(len(seeds), args.grid, args.num_keyframes)
        except ValueError as err:
            raise UserError(f"--seeds: {err} with --num-keyframes") from None
        check_scale_or_size(args.scale, args.size)
        kind = output_kind(args.output)
        if kind == ".mp4":
            mp4_writer_module()
        elif kind != "frames":
            check_pillow_format(kind)
        size = rows_cols(args.size)
        snap = load_renderer(args.network, args.device, args.scale, size)
        G = snap.G_ema
        c = class_label(args.class_idx, G.c_dim)
        if kind == ".gif" and args.fps > 50:
            print(f"note: GIF frame delays are whole centiseconds of at least 2; playing at "
                  f"{1000 / gif_duration_ms(args.fps):g} fps instead of {args.fps:g}")
        count = num_keyframes * args.w_frames
        if kind in (".gif", ".webp") and count * frame_bytes(G, args.grid, args.scale, size) > \
                PILLOW_MEMORY_NOTE_BYTES:
            print(f"note: Pillow keeps all {count} frames of a {kind} in memory; "
                  "use .mp4 or a folder for long or large videos")
        cells = arrange_seeds(seeds, args.grid, num_keyframes, args.shuffle_seed)
        ws = keyframe_ws(G, cells, c, truncation_psi=args.trunc)
        print(f"Rendering {count} frames ({num_keyframes} keyframes x {args.w_frames}) of a "
              f"{args.grid[0]}x{args.grid[1]} grid to {args.output} ...")
        frames = grid_frames(G, ws, args.w_frames, noise_mode=args.noise_mode, scale=args.scale, size=size,
                             batch_size=args.batch)
        write_video(frames, args.output, kind, args.fps)
        return 0

    return run_cli(body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return gen_video(argv)
