"""The training loop: setup, then one loop of "fetch batch, run phases, update EMA,
maybe tick / snapshot"."""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from creps.checkpoint import save_snapshot
from creps.config import TrainConfig
from creps.data.dataset import ImageDataset, open_dataset
from creps.generate import grid_shape, image_grid, write_png
from creps.train.feed import LabelSampler, minibatches
from creps.train.rundir import RunLog
from creps.train.stats import StatsCollector
from creps.train.step import Networks, Trainer, build_networks


def pick_device(log: RunLog) -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        log(f"Device: CUDA ({torch.cuda.get_device_name(device)})")
    else:
        device = torch.device("cpu")
        log(f"Device: CPU ({torch.get_num_threads()} threads); no CUDA device found, training on the CPU")
    return device


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_backends(cfg: TrainConfig) -> None:
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    tf32 = not cfg.fp32  # --fp32 asks for exact float32 arithmetic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())


@dataclass
class Grid:
    size: tuple[int, int]
    z: torch.Tensor
    c: torch.Tensor
    reals: np.ndarray


def setup_grid(dataset: ImageDataset, cfg: TrainConfig) -> Grid:
    """The fixed images and latents of reals.png / fakes*.png (one class per row if labelled)."""
    gw, gh = grid_shape(dataset.resolution)
    rnd = np.random.RandomState(cfg.seed)
    if cfg.data.use_labels:
        by_label: dict[tuple, list[int]] = {}
        for i in range(len(dataset)):
            by_label.setdefault(tuple(dataset.get_label(i).tolist()), []).append(i)
        classes = sorted(by_label)
        for idx in by_label.values():
            rnd.shuffle(idx)
        indices = [by_label[classes[y % len(classes)]][x % len(by_label[classes[y % len(classes)]])]
                   for y in range(gh) for x in range(gw)]
    else:
        order = rnd.permutation(len(dataset))
        indices = [int(order[i % len(order)]) for i in range(gw * gh)]
    reals = np.stack([dataset[i][0] for i in indices])
    labels = np.stack([dataset.get_label(i) for i in indices]).astype(np.float32)
    z = torch.from_numpy(rnd.randn(len(indices), cfg.G.z_dim).astype(np.float32))
    return Grid(size=(gw, gh), z=z, c=torch.from_numpy(labels), reals=reals)


@torch.no_grad()
def render_grid(G: torch.nn.Module, grid: Grid, batch: int, device: torch.device) -> np.ndarray:
    images = []
    c_dim = grid.c.shape[1]
    for z, c in zip(grid.z.split(batch), grid.c.split(batch)):
        img = G(z.to(device), c.to(device) if c_dim else None, noise_mode="const")
        images.append(img.float().cpu().numpy())
    return image_grid(np.concatenate(images), grid.size, drange=(-1, 1))


def memory_line(device: torch.device) -> tuple[str, dict[str, float]]:
    cpu_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS, KiB -> GiB
    fields = {"Resources/peak_cpu_mem_gb": cpu_gb}
    text = f"cpumem {cpu_gb:<6.2f}"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        fields.update({"Resources/peak_gpu_mem_gb": peak, "Resources/peak_gpu_mem_reserved_gb": reserved})
        text += f" gpumem {peak:<6.2f} reserved {reserved:<6.2f}"
    else:
        text += " gpumem -"
    return text, fields


def format_time(seconds: float) -> str:
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


class TickWriter:
    """stats.jsonl (one line per tick) and TensorBoard events when tensorboard is installed."""

    def __init__(self, run_dir: Path, log: RunLog):
        self.jsonl = open(run_dir / "stats.jsonl", "a", encoding="utf-8")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir))
        except Exception:  # tensorboard is optional
            log("TensorBoard events off (pip install tensorboard to enable)")

    def write(self, stats: dict, kimg: float, timestamp: float) -> None:
        self.jsonl.write(json.dumps(dict(stats, timestamp=timestamp)) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            step = int(kimg * 1e3)
            for name, value in stats.items():
                self.tb.add_scalar(name, value["mean"], global_step=step, walltime=timestamp)
            self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def run(cfg: TrainConfig, run_dir: Path, log: Optional[RunLog] = None) -> Networks:
    """Train according to `cfg`, writing everything into `run_dir`. Returns the networks."""
    log = log or RunLog(run_dir / "log.txt")
    start_time = time.time()
    device = pick_device(log)
    seed_everything(cfg.seed)
    configure_backends(cfg)

    dataset = open_dataset(cfg.data.path, use_labels=cfg.data.use_labels, xflip=cfg.data.xflip,
                           random_seed=cfg.seed)
    log(f"Dataset: {cfg.data.path}: {len(dataset)} images (x-flips {'on' if cfg.data.xflip else 'off'}), "
        f"{dataset.resolution}x{dataset.resolution}x{dataset.num_channels}, labels {cfg.data.label_dim or 'none'}")
    workers = cfg.data.workers if device.type == "cuda" or os.cpu_count() and os.cpu_count() > 2 else 0
    batches = minibatches(dataset, cfg.batch_gpu * (cfg.batch_size // (cfg.batch_gpu * cfg.num_gpus)),
                          cfg.seed, workers, pin_memory=device.type == "cuda")

    nets = build_networks(cfg, device)
    log(f"Networks: G {count_params(nets.G):,} numbers, D {count_params(nets.D):,} numbers")
    stats = StatsCollector()
    trainer = Trainer(cfg, nets, device, LabelSampler(dataset.raw_labels if cfg.data.use_labels
                                                      else np.zeros((1, 0)), cfg.seed), stats)

    grid = setup_grid(dataset, cfg)
    write_png(run_dir / "reals.png", image_grid(grid.reals, grid.size))
    write_png(run_dir / "fakes_init.png", render_grid(nets.G_ema, grid, cfg.batch_gpu, device))

    writer = TickWriter(run_dir, log)
    log(f"Training for {cfg.total_kimg} kimg...")
    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    tick_start_nimg, tick_start_time = 0, time.time()
    maintenance = tick_start_time - start_time
    try:
        while True:
            real_img, real_c = next(batches)
            trainer.step(real_img, real_c, batch_idx, cur_nimg)
            cur_nimg += cfg.batch_size
            batch_idx += 1

            done = cur_nimg >= cfg.total_kimg * 1000
            if not done and cur_tick != 0 and cur_nimg < tick_start_nimg + cfg.kimg_per_tick * 1000:
                continue

            # Tick: progress line and statistics.
            tick_end_time = time.time()
            tick_time = tick_end_time - tick_start_time
            tick_kimg = (cur_nimg - tick_start_nimg) / 1e3
            mem_text, mem_fields = memory_line(device)
            log(f"tick {cur_tick:<5d} kimg {cur_nimg / 1e3:<8.1f} time {format_time(tick_end_time - start_time):<12s} "
                f"sec/tick {tick_time:<7.1f} sec/kimg {tick_time / tick_kimg:<7.2f} "
                f"maintenance {maintenance:<6.1f} {mem_text}")
            stats.report_scalar("Progress/tick", cur_tick)
            stats.report_scalar("Progress/kimg", cur_nimg / 1e3)
            stats.report_scalar("Timing/total_sec", tick_end_time - start_time)
            stats.report_scalar("Timing/sec_per_tick", tick_time)
            stats.report_scalar("Timing/sec_per_kimg", tick_time / tick_kimg)
            stats.report_scalar("Timing/maintenance_sec", maintenance)
            for name, value in mem_fields.items():
                stats.report_scalar(name, value)

            # Snapshot: image grid and networks.
            if done or cur_tick % cfg.snapshot_ticks == 0:
                kimg_tag = f"{cur_nimg // 1000:06d}"
                write_png(run_dir / f"fakes{kimg_tag}.png", render_grid(nets.G_ema, grid, cfg.batch_gpu, device))
                save_snapshot(run_dir / f"network-snapshot-{kimg_tag}.safetensors", cfg,
                              {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema},
                              meta={"cur_nimg": cur_nimg, "cur_tick": cur_tick})
            writer.write(stats.collect(), cur_nimg / 1e3, time.time())

            cur_tick += 1
            tick_start_nimg = cur_nimg
            tick_start_time = time.time()
            maintenance = tick_start_time - tick_end_time
            if done:
                break
    finally:
        writer.close()
    log("Exiting...")
    return nets
