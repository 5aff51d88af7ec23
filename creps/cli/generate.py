"""`creps generate` / `gen_images.py`: images for seeds, or for the ws of a projection
(`--projected-w=projected_w.npz`, as projector.py writes it), at any scale for CREPS networks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from creps.cli.common import (Parser, add_network_option, check_scale_or_size, class_label, load_renderer, parse_size,
                              positive_float, rows_cols, run_cli, seed_list)
from creps.errors import UserError


def _pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        x, y = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y, got {text!r}") from None
    return x, y


def build_parser(prog: str = "gen_images.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Generate images using a pretrained network snapshot.",
               epilog="example: python gen_images.py --network=run/network-snapshot-000100.safetensors "
                      "--seeds=0-3,7 --trunc=0.7 --scale=2 --outdir=out")
    add_network_option(p)
    p.add_argument("--seeds", type=seed_list, metavar="LIST", help="list of random seeds, e.g. 0-3,7")
    p.add_argument("--projected-w", metavar="FILE", help="projection result file (projected_w.npz): render its ws "
                                                          "as proj00.png, ... instead of seeds")
    p.add_argument("--trunc", type=float, default=1.0, metavar="FLOAT", help="truncation psi (default: 1)")
    p.add_argument("--class", dest="class_idx", type=int, metavar="INT", help="class label (conditional networks)")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), default="const", help="noise mode")
    p.add_argument("--outdir", required=True, metavar="DIR", help="where to save the output images")
    p.add_argument("--scale", type=positive_float, metavar="FLOAT", help="output scale for CREPS networks, e.g. 2")
    p.add_argument("--size", type=parse_size, metavar="N|WxH", help="explicit output size for CREPS networks")
    p.add_argument("--translate", type=_pair, metavar="X,Y", help="translate StyleGAN3 output (image units)")
    p.add_argument("--rotate", type=float, metavar="DEG", help="rotate StyleGAN3 output by DEG degrees")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if present)")
    return p


def generate(argv: Optional[Sequence[str]] = None, prog: str = "gen_images.py") -> int:
    def body() -> int:
        from creps.generate import render, set_transform, to_uint8, write_png, z_from_seed

        args = build_parser(prog).parse_args(argv)
        seeds = args.seeds
        if seeds is None and args.projected_w is None:
            raise UserError("give --seeds=LIST (e.g. 0-3) or --projected-w=FILE.npz (see --help)")
        check_scale_or_size(args.scale, args.size)
        outdir = Path(os.path.expanduser(args.outdir))
        if outdir.exists() and not outdir.is_dir():
            raise UserError(f"--outdir={args.outdir}: exists and is not a directory; pick another --outdir")
        size = rows_cols(args.size)
        snap = load_renderer(args.network, args.device, args.scale, size)
        G = snap.G_ema
        if args.translate is not None or args.rotate is not None:
            try:
                set_transform(G, args.translate or (0.0, 0.0), args.rotate or 0.0)
            except ValueError as err:
                raise UserError(str(err)) from None
        if args.projected_w is not None:
            if seeds is not None:
                print("warning: --seeds is ignored when using --projected-w")
            return _render_projected_w(G, args, outdir)
        c = class_label(args.class_idx, G.c_dim)
        outdir.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            print(f"Generating image for seed {seed} ({seeds.index(seed) + 1}/{len(seeds)}) ...")
            img = render(G, z_from_seed(seed, G.z_dim), c, truncation_psi=args.trunc, noise_mode=args.noise_mode,
                         scale=args.scale, size=size)
            write_png(outdir / f"seed{seed:04d}.png", to_uint8(img)[0])
        return 0

    return run_cli(body)


def _render_projected_w(G, args, outdir: Path) -> int:
    """proj00.png, proj01.png, ...: one image per row of the file's ws (with its noise maps, if any)."""
    from creps.generate import to_uint8, write_png
    from creps.project import load_projected_w, render_ws

    ws, noise = load_projected_w(os.path.expanduser(args.projected_w), G)
    print(f'Generating images from projected W "{args.projected_w}"')
    if args.trunc != 1.0 or args.class_idx is not None:
        print("warning: --trunc and --class are ignored when using --projected-w (the ws are rendered as stored)")
    outdir.mkdir(parents=True, exist_ok=True)
    for idx in range(ws.shape[0]):
        img = render_ws(G, ws[idx:idx + 1], noise, noise_mode=args.noise_mode, scale=args.scale,
                        size=rows_cols(args.size))
        write_png(outdir / f"proj{idx:02d}.png", to_uint8(img)[0])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return generate(argv)
