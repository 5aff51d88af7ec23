"""`creps demo`: make the built-in synthetic dataset, train a small CREPS on it, render at 2x."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from creps.cli.common import Parser, run_cli


def build_parser(prog: str = "creps demo") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Train a small CREPS on a built-in synthetic dataset (a few minutes on a CPU).")
    p.add_argument("--outdir", default="demo-runs", help="where the dataset and run go (default: demo-runs)")
    p.add_argument("--kimg", type=int, default=6, help="training length in kimg (default: 6)")
    p.add_argument("--resolution", type=int, default=32, help="dataset resolution (default: 32)")
    return p


def demo(argv: Optional[Sequence[str]] = None, prog: str = "creps demo") -> int:
    def body() -> int:
        from creps.cli.generate import generate
        from creps.cli.train import train
        from creps.data.synthetic import make_synthetic_dataset

        args = build_parser(prog).parse_args(argv)

        outdir = Path(args.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        data = outdir / f"shapes-{args.resolution}x{args.resolution}.zip"
        if not data.exists():
            print(f"Writing the built-in dataset to {data} ...")
            make_synthetic_dataset(str(data), num_images=2000, resolution=args.resolution, seed=0)
        runs = outdir / "runs"
        code = train([
            f"--outdir={runs}", "--cfg=creps", f"--data={data}", "--gpus=1", "--batch=16", "--gamma=0.5",
            "--cbase=2048", "--cmax=64", "--map-depth=2", "--mbstd-group=4", "--aug=noaug", "--metrics=none",
            "--mirror=1", f"--kimg={args.kimg}", "--tick=1", "--snap=3", "--glr=0.0025", "--dlr=0.0025", "--grid=16x12",
        ], prog="creps train")
        if code:
            return code
        run_dir = sorted(p for p in runs.iterdir() if p.is_dir())[-1]
        snapshot = sorted(run_dir.glob("network-snapshot-*.safetensors"))[-1]
        for scale, sub in (("1", "images-1x"), ("2", "images-2x")):
            code = generate([f"--network={snapshot}", "--seeds=0-7", f"--scale={scale}",
                             f"--outdir={run_dir / sub}"], prog="creps generate")
            if code:
                return code
        print(f"\nDone. Run directory: {run_dir}\n  snapshots, fakes*.png, stats.jsonl, log.txt;"
              f" images at 1x and 2x in {run_dir / 'images-1x'} and {run_dir / 'images-2x'}")
        return 0

    return run_cli(body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return demo(argv)
