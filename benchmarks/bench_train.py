"""Training speed and memory of one configuration, on random data, printed as one JSON line.

Networks, optimizers, loss and the per-iteration phases are built exactly as `train.py`
builds them (config.resolve -> build_networks -> Trainer.step), so the figure is the
trainer's own: G main, G path length every 4, D main, D R1 every 16 iterations.

  python benchmarks/bench_train.py --cfg=creps --res=32 --batch=8 --cbase=4096 --cmax=128 --map-depth=2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import resource
import sys
import time

import numpy as np
import torch

from creps.config import DatasetInfo, TrainOptions, resolve
from creps.train.compiled import on_device
from creps.train.feed import LabelSampler
from creps.train.step import Trainer, build_networks
from common import add_device_options, device_from  # benchmarks/common.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="creps")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batch-gpu", type=int, default=None)
    p.add_argument("--cbase", type=int, default=32768)
    p.add_argument("--cmax", type=int, default=512)
    p.add_argument("--map-depth", type=int, default=None)
    p.add_argument("--mbstd-group", type=int, default=4)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--fp32", type=int, default=0)
    p.add_argument("--recompute", type=int, default=None,
                   help="1/0: CREPS per-pixel recomputation in backward (train.py --recompute; default: on with CUDA only)")
    p.add_argument("--compile", type=int, default=None,
                   help="1/0: main phases through torch.compile (train.py --compile; default: on with CUDA only)")
    p.add_argument("--fused-modconv", type=int, default=None,
                   help="StyleGAN2/3: 1 trains with the grouped (fused) modulated conv, 0 the shared one (default: as train.py)")
    p.add_argument("--iters", type=int, default=16, help="timed iterations (a multiple of 16 covers every phase)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--profile", action="store_true",
                   help="run the timed iterations under torch.profiler and print the top ops to stderr (slower)")
    add_device_options(p)
    a = p.parse_args()
    device = device_from(a)

    options = TrainOptions(outdir="-", cfg=a.cfg, data="-", gpus=1, batch=a.batch, gamma=a.gamma, aug="noaug",
                           batch_gpu=a.batch_gpu, cbase=a.cbase, cmax=a.cmax, map_depth=a.map_depth,
                           mbstd_group=a.mbstd_group, metrics=(), fp32=bool(a.fp32),
                           recompute=None if a.recompute is None else bool(a.recompute), compile=None if a.compile is None else bool(a.compile))
    info = DatasetInfo(path="-", name="random", resolution=a.res, channels=3, size=1000, has_labels=False,
                       label_dim=0)
    cfg = resolve(options, info)
    if a.fused_modconv is not None:
        try:
            cfg = dataclasses.replace(cfg, G=dataclasses.replace(cfg.G, fused_modconv=bool(a.fused_modconv)))
        except TypeError:
            raise SystemExit(f"--fused-modconv: --cfg={a.cfg} has no modulated convolutions") from None
    torch.manual_seed(0)
    nets = build_networks(cfg, device)
    trainer = Trainer(cfg, nets, device, LabelSampler(np.zeros((1, 0)), 0))
    reals = torch.randint(0, 256, (a.batch, 3, a.res, a.res), dtype=torch.uint8)
    labels = torch.zeros(a.batch, 0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    batch_idx = 0
    for _ in range(a.warmup):
        trainer.step(reals, labels, batch_idx, batch_idx * a.batch)
        batch_idx += 1
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch_idx = 0  # timed window starts at a phase boundary: every interval is represented
    profiler = contextlib.nullcontext()
    if a.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities, record_shapes=True)
    t0 = time.perf_counter()
    with profiler as prof:
        for _ in range(a.iters):
            trainer.step(reals, labels, batch_idx, 10_000 + batch_idx * a.batch)
            batch_idx += 1
        sync()
    elapsed = time.perf_counter() - t0
    if a.profile:
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=40), file=sys.stderr)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sec_per_iter = elapsed / a.iters
    print(json.dumps({
        "cfg": a.cfg, "res": a.res, "batch": a.batch, "batch_gpu": cfg.batch_gpu, "cbase": a.cbase, "cmax": a.cmax,
        "map_depth": cfg.G.mapping_layers, "fp32": bool(a.fp32), "recompute": on_device(cfg.recompute, device), "compile": trainer.compiled, "fused_modconv": a.fused_modconv, "iters": a.iters, "warmup": a.warmup,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "sec_per_iter": round(sec_per_iter, 4), "sec_per_kimg": round(sec_per_iter / a.batch * 1000, 2),
        "peak_mem_mb": round(peak_mb, 1), "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss",
    }))


if __name__ == "__main__":
    main()
