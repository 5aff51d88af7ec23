"""`creps convert IN.pkl OUT.safetensors`: a published network pickle as a creps snapshot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from creps.cli.common import Parser, run_cli
from creps.errors import UserError


def build_parser(prog: str = "creps convert") -> Parser:
    p = Parser(prog=prog, description="Convert a network pickle of the published StyleGAN2-ADA / StyleGAN3 / CREPS "
                                      "code into a creps network snapshot. Nothing in the pickle is executed.",
               epilog="example: creps convert stylegan3-t-ffhq-1024x1024.pkl stylegan3-t-ffhq-1024x1024.safetensors")
    p.add_argument("source", metavar="IN", help="published network pickle: path or URL (downloaded to the cache)")
    p.add_argument("dest", metavar="OUT", help="creps snapshot to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    return p


def convert(argv: Optional[Sequence[str]] = None, prog: str = "creps convert") -> int:
    def body() -> int:
        from creps.checkpoint import convert_published

        args = build_parser(prog).parse_args(argv)
        dest = Path(os.path.expanduser(args.dest))
        if dest.suffix != ".safetensors":
            raise UserError(f"{args.dest}: the output must be a .safetensors file, e.g. {dest.stem}.safetensors")
        if dest.is_dir() or (dest.exists() and not args.force):
            raise UserError(f"{args.dest} already exists; choose another name or pass --force to overwrite it")
        if not dest.parent.is_dir():
            raise UserError(f"{args.dest}: the folder {dest.parent} does not exist; create it first")
        snap = convert_published(args.source, dest)
        G = snap.G_ema
        networks = ", ".join(f"{name} ({kind})" for name, kind in snap.meta["networks"].items())
        print(f"Wrote {dest}: {networks}; --cfg={snap.preset}, {G.img_resolution}x{G.img_resolution}, "
              f"{G.img_channels} channels, {G.c_dim} classes")
        for note in snap.meta["notes"]:
            print(f"note: {note}")
        return 0

    return run_cli(body)
