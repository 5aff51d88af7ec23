"""`creps project` / `projector.py`: invert images into a network's W (or W+) space.

    python projector.py --network=SNAPSHOT --target=photo.png --outdir=out [--w-plus=1]
    python projector.py --network=SNAPSHOT --target=photos/ --outdir=out --save-video=0

Per image: `target.png` (the image as the network sees it: centre-cropped, resized, in the
network's channels), `proj.png` (the projection), `projected_w.npz` (key `w`, float32
[1, num_ws, w_dim], as published, plus the optimised noise maps of StyleGAN2 networks) and,
with --save-video (default on), `proj.mp4` (target beside the projection at every step).
One JSON line per image goes to `<outdir>/projection.jsonl`. A single --target writes into
--outdir itself, as published; a folder or ZIP writes each image into `<outdir>/<name>/`.
An image's files appear together when it is done, each whole; a failure leaves none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from creps.cli.common import Parser, add_network_option, class_label, load_renderer, parse_bool, positive_int, run_cli
from creps.errors import UserError

VIDEO_FPS = 10  # as the published projector
VIDEO_BATCH = 8  # frames rendered per synthesis call
JSONL_NAME = "projection.jsonl"


def build_parser(prog: str = "projector.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Project given images to the latent space of a network.",
               epilog="example: python projector.py --outdir=out --target=~/mytargetimg.png "
                      "--network=run/network-snapshot-000100.safetensors")
    add_network_option(p)
    p.add_argument("--target", required=True, metavar="FILE|DIR|ZIP",
                   help="target image, or a folder or ZIP of images (each projected into OUTDIR/<name>/)")
    p.add_argument("--outdir", required=True, metavar="DIR", help="where to save the output images")
    p.add_argument("--num-steps", type=positive_int, default=1000, metavar="INT",
                   help="number of optimization steps (default: 1000)")
    p.add_argument("--seed", type=int, default=303, metavar="INT", help="random seed (default: 303)")
    p.add_argument("--save-video", type=parse_bool, default=True, metavar="BOOL",
                   help="save an mp4 video of optimization progress (default: 1; needs imageio-ffmpeg)")
    p.add_argument("--w-plus", type=parse_bool, default=False, metavar="BOOL",
                   help="optimize one w per layer (W+) instead of one w for all (default: 0)")
    p.add_argument("--class", dest="class_idx", type=int, metavar="INT", help="class label (conditional networks)")
    p.add_argument("--vgg16", metavar="PATH|URL",
                   help="VGG16 weights (torchvision vgg16-397923af.pth); default: $CREPS_VGG16 or the published "
                        "URL, cached")
    p.add_argument("--lpips", metavar="PATH|URL",
                   help="LPIPS v0.1 vgg.pth linear weights; default: $CREPS_LPIPS or the published URL, cached")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if present)")
    return p


# ---------------------------------------------------------------------------------------
# Targets.


@dataclass(frozen=True)
class Target:
    name: str  # what the JSON line and messages call it
    subdir: Optional[str]  # output folder under --outdir (None: --outdir itself)
    read: Callable[[], object]  # -> decoded PIL image (UserError when it cannot be read)


def is_collection(path: str) -> bool:
    """A folder, or a ZIP file (not an image file), holds many targets."""
    from creps.data.dataset import is_image_name

    return os.path.isdir(path) or (os.path.isfile(path) and not is_image_name(os.path.basename(path))
                                   and zipfile.is_zipfile(path))


def output_names(names: Sequence[str]) -> list[str]:
    """Output folder of each image of a collection: its path without the extension, or with
    it (dot -> underscore) where two images would share a folder (a.png, a.jpg)."""
    stems = [os.path.splitext(name)[0] for name in names]
    counts = {stem: stems.count(stem) for stem in stems}
    return [stem if counts[stem] == 1 else name.replace(".", "_") for stem, name in zip(stems, names)]


def list_targets(text: str) -> list[Target]:
    """--target as a list of images: one file, or every image of a folder or ZIP (sorted)."""
    from creps.data.dataset import NO_IMAGES_HINT, FileSource, decode_image, decode_image_file

    path = os.path.expanduser(text)
    if not os.path.exists(path):
        raise UserError(f"--target={text}: no such file or folder; give an image, or a folder or ZIP of images")
    if not is_collection(path):
        return [Target(name=text, subdir=None, read=lambda: decode_image_file(path, "--target"))]
    source = FileSource(path, what="--target")
    names = source.image_names()
    if not names:
        raise UserError(f"--target={text}: no images in it ({NO_IMAGES_HINT})")
    return [Target(name=name, subdir=subdir, read=lambda name=name: decode_image(source, name))
            for name, subdir in zip(names, output_names(names))]


# ---------------------------------------------------------------------------------------
# Outputs.


@contextlib.contextmanager
def staged_outputs(final_dir: Path) -> Iterator[Path]:
    """A hidden folder inside `final_dir` to write one image's files into; when the block
    succeeds they move into `final_dir` together (each whole), otherwise none of them appear."""
    from creps.atomic import fsync_dir

    final_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".projection-", suffix=".tmp", dir=final_dir))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, final_dir / path.name)
        fsync_dir(final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def video_frames(G, steps_ws: Sequence, noise: dict, target_hwc: np.ndarray) -> Iterator[np.ndarray]:
    """One frame per step: the target beside the projection of that step's w, uint8 HWC."""
    import torch
    from tqdm import tqdm

    from creps.generate import to_uint8
    from creps.project import render_ws

    with tqdm(total=len(steps_ws), desc="video", unit="frame", dynamic_ncols=True, leave=False) as bar:
        for start in range(0, len(steps_ws), VIDEO_BATCH):
            images = to_uint8(render_ws(G, torch.cat(list(steps_ws[start:start + VIDEO_BATCH])), noise))
            for image in images:
                yield np.concatenate([target_hwc, image], axis=1)
            bar.update(len(images))


def json_number(value: float) -> Optional[float]:
    """A float for a JSON line (None for infinity: a perfect match has no finite PSNR)."""
    return None if not np.isfinite(value) else round(float(value), 6)


def project_target(G, target: Target, args, vgg, c, outdir: Path) -> dict:
    """Project one image and write its files; returns its JSON line (as a dict)."""
    import torch

    from creps.cli.video import write_mp4
    from creps.generate import to_uint8, write_png
    from creps.project import ProjectionSettings, prepare_target, project, save_projected_w

    target_chw = prepare_target(target.read(), G.img_resolution, G.img_channels)
    steps_ws: list[torch.Tensor] = []
    settings = ProjectionSettings(num_steps=args.num_steps, w_plus=args.w_plus, seed=args.seed)
    result = project(G, torch.from_numpy(target_chw), vgg=vgg, settings=settings, c=c,
                     callback=(lambda report: steps_ws.append(report.w.cpu())) if args.save_video else None)
    print(f"  LPIPS {result.initial_lpips:.4f} -> {result.lpips:.4f}, PSNR {result.psnr:.2f} dB, "
          f"{result.seconds:.1f} s")
    final_dir = outdir if target.subdir is None else outdir / target.subdir
    target_hwc = target_chw.transpose(1, 2, 0)
    with staged_outputs(final_dir) as stage:
        write_png(stage / "target.png", target_hwc)
        write_png(stage / "proj.png", to_uint8(result.image)[0])
        save_projected_w(stage / "projected_w.npz", result.w, result.noise)
        if args.save_video:
            write_mp4(video_frames(G, steps_ws, result.noise, target_hwc), stage / "proj.mp4", VIDEO_FPS)
    return {"target": target.name, "outdir": "." if target.subdir is None else target.subdir,
            "network": args.network, "w_plus": args.w_plus, "steps": result.steps, "seed": args.seed,
            "lpips": json_number(result.lpips), "initial_lpips": json_number(result.initial_lpips),
            "mse": json_number(result.mse), "psnr": json_number(result.psnr),
            "seconds": round(result.seconds, 3), "timestamp": time.time()}


# ---------------------------------------------------------------------------------------
# The command.


def run_projection(argv: Optional[Sequence[str]] = None, prog: str = "projector.py") -> int:
    def body() -> int:
        from creps.atomic import append_line
        from creps.generate import has_w_space
        from creps.metrics.vgg16 import load_vgg16

        args = build_parser(prog).parse_args(argv)
        targets = list_targets(args.target)
        if args.save_video:
            from creps.cli.video import mp4_writer_module

            try:
                mp4_writer_module()
            except UserError:
                raise UserError("--save-video writes proj.mp4, which needs imageio-ffmpeg: pip install imageio-ffmpeg "
                                "(or creps[video]), or pass --save-video=0") from None
        outdir = Path(os.path.expanduser(args.outdir))
        if outdir.exists() and not outdir.is_dir():
            raise UserError(f"--outdir={args.outdir}: exists and is not a directory; pick another --outdir")
        print(f'Loading networks from "{args.network}"...')
        snap = load_renderer(args.network, args.device)
        G = snap.G_ema
        if not has_w_space(G):
            raise UserError(f"--network={args.network}: {type(G).__name__} has no W space to project into; "
                            "give a generator snapshot")
        device = next(G.parameters()).device
        if device.type == "cpu" and args.device is None:
            print("No CUDA device: projecting on the CPU (slow).")
        c = class_label(args.class_idx, G.c_dim)
        vgg = load_vgg16(args.vgg16, args.lpips, device=device)
        outdir.mkdir(parents=True, exist_ok=True)
        failed = []
        for index, target in enumerate(targets):
            print(f"Projecting {target.name} ({index + 1}/{len(targets)}) ...")
            try:
                line = project_target(G, target, args, vgg, c, outdir)
            except UserError as err:
                if len(targets) == 1:
                    raise
                print(f"error: {err}")
                failed.append(target.name)
                continue
            append_line(outdir / JSONL_NAME, json.dumps(line))
        if failed:
            raise UserError(f"--target={args.target}: {len(failed)} of {len(targets)} images could not be projected "
                            f"(first: {failed[0]}); fix or remove them and run again")
        return 0

    return run_cli(body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_projection(argv)
