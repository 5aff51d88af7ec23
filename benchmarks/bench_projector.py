"""Projector speed and fit, printed as one JSON line.

Speed: seconds per 1000 optimisation steps, per config, of full-size networks built from the
same flags as train.py (random weights) against the full-size VGG16/LPIPS architecture
(random weights): speed does not depend on the values. Each config runs --warmup + --steps
steps of the real loop (creps.project.project); the time between the callbacks of the timed
steps is scaled to 1000 steps; the rest (setup with the 10,000 mapped latents for w_avg, the
first step, the final render) is reported apart. CPU time is given beside the wall time: on
shared cores the wall time grows, the CPU time much less.

Fit: the final LPIPS distance of the round-trip test setup (tests/test_projector.py): a tiny
untrained CREPS (16x16), the image it renders for seed 5 as the target, and the thin
random-weight VGG16/LPIPS files of the tests (tests/tiny_vgg16.py, a quarter of the width),
in W and W+, after each of --fit-steps.

  python benchmarks/bench_projector.py --res=256 --steps=3
  python benchmarks/bench_projector.py --cfgs=creps --steps=2 --fit-steps=100
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from creps.config import DatasetInfo, TrainOptions, resolve
from creps.generate import z_from_seed
from creps.metrics.vgg16 import VGG16, from_state_dicts
from creps.project import ProjectionSettings, project, render_ws, w_statistics
from creps.train.step import build_networks
from common import add_device_options, device_from  # benchmarks/common.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_vgg16 import lin_state, vgg_state  # noqa: E402  (the tests' random VGG16/LPIPS files)

FIT_RES, FIT_VGG_WIDTH, FIT_SEED = 16, 1 / 4, 5


def generator(cfg: str, res: int, device: torch.device, **options) -> torch.nn.Module:
    """G_ema as train.py builds it for --cfg at res x res, random weights."""
    opts = TrainOptions(outdir="-", cfg=cfg, data="-", gpus=1, batch=4, gamma=1, aug="noaug", metrics=(), **options)
    info = DatasetInfo(path="-", name="random", resolution=res, channels=3, size=1000, has_labels=False, label_dim=0)
    torch.manual_seed(0)
    return build_networks(resolve(opts, info), device).G_ema.eval().requires_grad_(False)


def seconds_per_1000_steps(cfg: str, res: int, steps: int, warmup: int, device: torch.device, **options) -> dict:
    G = generator(cfg, res, device, **options)
    vgg = VGG16().to(device)
    target = torch.randint(0, 256, (3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    stamps = []

    def stamp(report) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append((time.perf_counter(), time.process_time()))

    start = time.perf_counter()
    project(G, target, vgg=vgg, settings=ProjectionSettings(num_steps=warmup + steps), callback=stamp,
            progress=False)
    total = time.perf_counter() - start
    wall, cpu = ((stamps[-1][i] - stamps[warmup - 1][i]) / steps for i in (0, 1))
    # cpu: this process's CPU time (all threads); wall > cpu / threads means the cores were shared.
    return {"sec_per_1000_steps": round(1000 * wall, 1), "cpu_sec_per_1000_steps": round(1000 * cpu, 1),
            "timed_steps": steps, "setup_first_step_final_render_s": round(total - (stamps[-1][0] - stamps[0][0]), 2)}


def round_trip_fit(fit_steps: list[int], device: torch.device) -> dict:
    """Final LPIPS (and PSNR) of the tests' round-trip setup, W and W+."""
    G = generator("creps", FIT_RES, device, cbase=128, cmax=16, map_depth=1, mbstd_group=2)
    vgg = from_state_dicts(vgg_state(width=FIT_VGG_WIDTH), lin_state(width=FIT_VGG_WIDTH)).to(device)
    with torch.no_grad():
        w = G.mapping(z_from_seed(FIT_SEED, G.z_dim).to(device), None)
        target = (render_ws(G, w) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]
    out = {}
    for steps in fit_steps:
        for w_plus in (False, True):
            fit = project(G, target, vgg=vgg, settings=ProjectionSettings(num_steps=steps, w_plus=w_plus),
                          progress=False)
            out[f"{'w_plus' if w_plus else 'w'}_{steps}_steps"] = {
                "initial_lpips": round(fit.initial_lpips, 4), "lpips": round(fit.lpips, 5),
                "psnr_db": round(fit.psnr, 2), "seconds": round(fit.seconds, 1)}
    w_avg, _ = w_statistics(G, 10_000)
    start = (render_ws(G, w_avg.expand(-1, G.num_ws, -1)) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]
    out["start_psnr_db"] = round(10 * torch.log10(255 ** 2 / (start.float() - target.float()).square().mean()).item(), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfgs", default="creps,stylegan2,stylegan3-t", help="configs to time (comma-separated; none: skip)")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--cbase", type=int, default=32768)
    p.add_argument("--cmax", type=int, default=512)
    p.add_argument("--map-depth", type=int, default=None)
    p.add_argument("--steps", type=int, default=3, help="timed steps per config")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    p.add_argument("--fit-steps", default="100,1000", help="steps of the round-trip fits (comma-separated; none: skip)")
    add_device_options(p)
    a = p.parse_args()
    device = device_from(a)
    if a.warmup < 1 or a.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    cfgs = [c for c in a.cfgs.split(",") if c and c != "none"]
    fit_steps = [int(s) for s in a.fit_steps.split(",") if s and s != "none"]
    net = dict(cbase=a.cbase, cmax=a.cmax, map_depth=a.map_depth)
    speed = {cfg: seconds_per_1000_steps(cfg, a.res, a.steps, a.warmup, device, **net) for cfg in cfgs}
    print(json.dumps({
        "benchmark": "projector",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads, {platform.machine()})",
        "torch": torch.__version__, "res": a.res,
        **({"speed_note": f"G from train.py flags (cbase {a.cbase}, cmax {a.cmax}) and full-size VGG16, random "
                          f"weights; {a.steps} timed steps after {a.warmup} warm-up, scaled to 1000", "speed": speed} if cfgs else {}),
        **({"fit_note": "tests' round trip: tiny untrained CREPS 16x16, its image of seed 5, random VGG16/LPIPS at "
                        "1/4 width", "fit": round_trip_fit(fit_steps, device)} if fit_steps else {}),
    }))


if __name__ == "__main__":
    main()
