"""What the networks keep for backward, per image: the activation memory that grows with the batch.

Runs G's synthesis and D's forward pass under autograd's saved-tensor hooks and counts the
bytes of the distinct storages kept for the backward pass, at two batch sizes; the difference
is the cost of one more image (weights and other per-call tensors cancel out). Works on any
device, including CPUs, so memory work can be checked without a GPU. Prints one JSON line.

    python benchmarks/bench_saved.py --cfg=creps --res=256
    python benchmarks/bench_saved.py --cfg=stylegan3-t --res=128 --recompute=0
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import torch

from creps.config import DatasetInfo, TrainOptions, resolve
from creps.train.step import build_networks
from common import add_device_options, device_from  # benchmarks/common.py


def saved_bytes(run: Callable[[], object]) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="creps")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--cbase", type=int, default=32768)
    p.add_argument("--cmax", type=int, default=512)
    p.add_argument("--batch", type=int, default=1, help="the smaller of the two batches (the other is one more)")
    p.add_argument("--fp32", type=int, default=0, help="1: float32; 0: bfloat16 autocast, as training on a GPU")
    p.add_argument("--recompute", type=int, default=1, help="CREPS per-pixel recomputation (train.py --recompute)")
    add_device_options(p)
    a = p.parse_args()
    device = device_from(a)
    options = TrainOptions(outdir="-", cfg=a.cfg, data="-", gpus=1, batch=8, gamma=1.0, aug="noaug",
                           cbase=a.cbase, cmax=a.cmax, metrics=(), fp32=bool(a.fp32), recompute=bool(a.recompute))
    info = DatasetInfo(path="-", name="random", resolution=a.res, channels=3, size=1000, has_labels=False,
                       label_dim=0)
    cfg = resolve(options, info)
    torch.manual_seed(0)
    nets = build_networks(cfg, device)
    nets.G.requires_grad_(True)
    nets.D.requires_grad_(True)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=not a.fp32)

    def generator(n: int) -> int:
        ws = nets.G.mapping(torch.randn(n, cfg.G.z_dim, device=device), None).detach()

        def run():
            with autocast():
                nets.G.synthesis(ws)
        return saved_bytes(run)

    def discriminator(n: int) -> int:
        img = torch.randn(n, 3, a.res, a.res, device=device, requires_grad=True)

        def run():
            with autocast():
                nets.D(img, None)
        return saved_bytes(run)

    mib = 2**20
    per_image = {name: (fn(a.batch + 1) - fn(a.batch)) / mib for name, fn in (("G", generator), ("D", discriminator))}
    print(json.dumps({
        "cfg": a.cfg, "res": a.res, "cbase": a.cbase, "cmax": a.cmax, "dtype": "float32" if a.fp32 else "bfloat16",
        "recompute": cfg.recompute, "device": str(device),
        "G_saved_mb_per_image": round(per_image["G"], 1), "D_saved_mb_per_image": round(per_image["D"], 1),
    }))


if __name__ == "__main__":
    main()
