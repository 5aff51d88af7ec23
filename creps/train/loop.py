"""The training loop: setup, then one loop of "fetch batch, run phases, update EMA,
maybe tick / snapshot"."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from creps.checkpoint import Snapshot, save_snapshot
from creps.config import TrainConfig
from creps.data.dataset import ImageDataset, open_dataset
from creps.generate import grid_shape, image_grid, write_png
from creps.metrics import Detectors, evaluate_snapshot, metric_families
from creps.timefmt import format_time
from creps.parallel import SINGLE, World, all_sum, barrier, broadcast_module, device_for, gather_objects, roster
from creps.parallel import backend_for_devices as dist_backend
from creps.train.feed import LabelSampler, minibatches
from creps.train.rundir import RunLog
from creps.train.resume import transfer_weights
from creps.train.state import TrainingState, rank_state, save_training_state, state_file_name
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


def setup_grid(dataset: ImageDataset, cfg: TrainConfig, device: torch.device) -> Grid:
    """The fixed images and latents of reals.png / fakes*.png (one class per row if labelled)."""
    gw, gh = cfg.grid or grid_shape(dataset.resolution, device.type)
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
def render_grid(G: torch.nn.Module, grid: Grid, batch: int, device: torch.device,
                stop: Callable[[], bool] = lambda: False) -> Optional[np.ndarray]:
    """The grid's fakes as one image; None when `stop()` turns true between batches."""
    images = []
    c_dim = grid.c.shape[1]
    for z, c in zip(grid.z.split(batch), grid.c.split(batch)):
        if stop():
            return None
        img = G(z.to(device), c.to(device) if c_dim else None, noise_mode="const")
        images.append(img.float().cpu().numpy())
    return image_grid(np.concatenate(images), grid.size, drange=(-1, 1))


def write_fakes(path: Path, G: torch.nn.Module, grid: Grid, batch: int, device: torch.device, stop: "GracefulStop",
                log: RunLog) -> None:
    """fakes*.png, unless a stop request interrupts the rendering (the state is written first)."""
    # Grid rendering must not consume the training random streams (exact resume).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        image = render_grid(G, grid, batch, device, stop=lambda: stop.requested is not None)
    if image is None:
        log(f"{stop.requested} received: {path.name} not rendered")
    else:
        write_png(path, image)


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


@dataclass
class Progress:
    """Counters that place a run in its schedule (saved with every training state)."""

    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0
    elapsed_sec: float = 0.0  # training time spent in earlier sessions of this run


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to write a training state and stop after the current step."""

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stop_requested(stop: GracefulStop, world: World) -> bool:
    """Whether any rank was asked to stop (all ranks must stop at the same step)."""
    if not world.enabled:
        return stop.requested is not None
    return bool(all_sum(torch.tensor([1.0 if stop.requested else 0.0]), world).item() > 0)


class StopPoll:
    """`stop_requested` once per step, without waiting for the device: each call adds this rank's
    request to a sum over ranks that stays on the device, and answers with the previous call's sum
    (done by then: it was queued a whole step earlier). Every rank gets the same answer at the same
    step; a stop lands one step after it is asked for."""

    def __init__(self, stop: GracefulStop, world: World, device: torch.device):
        self.stop, self.world, self.device = stop, world, device
        self.pending: Optional[tuple[torch.Tensor, Optional[torch.cuda.Event]]] = None

    def __call__(self) -> bool:
        if not self.world.enabled:
            return self.stop.requested is not None
        previous, self.pending = self.pending, self._ask()
        if previous is None:
            return False
        total, done = previous
        if done is not None:
            done.synchronize()
        return bool(total.item() > 0)

    def _ask(self) -> tuple[torch.Tensor, Optional[torch.cuda.Event]]:
        # torch.full, not torch.tensor: no copy from the host, which would wait for the device
        total = all_sum(torch.full([1], 1.0 if self.stop.requested else 0.0, device=self.device), self.world)
        if total.device.type != "cuda":
            return total, None
        host = torch.empty(1, pin_memory=True)
        host.copy_(total, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done


def save_state(run_dir: Path, cfg: TrainConfig, nets: Networks, trainer: Trainer, progress: Progress,
               log: RunLog, world: World = SINGLE) -> Optional[Path]:
    """Every rank calls this: each hands rank 0 its own random states and per-process tensors,
    rank 0 writes the training state."""
    ranks = gather_objects(rank_state(trainer.extra_state()), world) if world.enabled else None
    if not world.is_main:
        return None
    path = run_dir / state_file_name(progress.cur_nimg)
    t0 = time.time()
    size = save_training_state(path, cfg, {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema}, trainer.optimizers(),
                               trainer.extra_state(), dataclasses.asdict(progress), ranks=ranks)
    log(f"Saved {path.name} ({size / 2**20:.1f} MB in {time.time() - t0:.1f} s)")
    return path


def restore_state(state: TrainingState, nets: Networks, trainer: Trainer, world: World, log: RunLog) -> Progress:
    """Weights, optimizers and progress of the run; each process's own random streams and
    per-process tensors when the state was written by as many processes as now."""
    for name in ("G", "D", "G_ema"):
        getattr(nets, name).load_state_dict(state.network_state(name), strict=True)
    for name, opt in trainer.optimizers().items():
        opt.load_state_dict(state.optimizer_state(name))
    progress = Progress(**state.progress)
    own = world.enabled and state.process_count == world.size
    trainer.load_extra_state({key: state.extra(key, world.rank if own else None) for key in trainer.extra_state()})
    if own:
        state.restore_rng(world.rank)
    elif world.enabled:
        log(f"The state was written by {state.process_count or 1} process(es), this run has {world.size}: "
            "each process continues on a fresh random stream (not bit-identical to an uninterrupted run)")
        seed_everything(state.config.seed * world.size + world.rank + progress.cur_nimg)
    else:
        state.restore_rng()
    return progress


def snapshot(run_dir: Path, cfg: TrainConfig, nets: Networks, trainer: Trainer, grid: Grid, progress: Progress,
             device: torch.device, log: RunLog, detector: Optional[Detectors], stop: "GracefulStop",
             world: World = SINGLE) -> None:
    """Image grid, network snapshot, its metrics and the training state at the current point.
    Every rank calls this: rank 0 writes, all ranks share the metrics' work."""
    kimg_tag = f"{progress.cur_nimg // 1000:06d}"
    snapshot_path = run_dir / f"network-snapshot-{kimg_tag}.safetensors"
    if world.is_main:
        write_fakes(run_dir / f"fakes{kimg_tag}.png", nets.G_ema, grid, cfg.batch_gpu, device, stop, log)
    # Snapshot work must not consume the training random streams (exact resume).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if world.is_main:
            save_snapshot(snapshot_path, {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema}, training=cfg,
                          meta={"cur_nimg": progress.cur_nimg, "cur_tick": progress.cur_tick})
        if cfg.metrics and stop_requested(stop, world):
            log(f"A stop was requested: no metrics for {snapshot_path.name} (calc_metrics.py computes them later)")
        elif cfg.metrics:
            values = evaluate_snapshot(cfg.metrics, nets.G_ema, cfg.data.path, mirror=cfg.data.xflip,
                                       device=device, run_dir=run_dir, snapshot_path=snapshot_path,
                                       detector=detector, log=log, world=world)
            for key, value in values.items():
                trainer.stats.report_scalar(f"Metrics/{key}", value)
    save_state(run_dir, cfg, nets, trainer, progress, log, world)


def run(cfg: TrainConfig, run_dir: Path, log: Optional[RunLog] = None,
        resume_state: Optional[TrainingState] = None, transfer_from: Optional[Snapshot] = None,
        detector: Optional[Detectors] = None, world: World = SINGLE) -> Networks:
    """Train according to `cfg`, writing into `run_dir`; continue from `resume_state` if
    given (same run, exactly), or start from the weights of `transfer_from`. Under
    torch.distributed every rank calls this; rank 0 alone writes."""
    log = log or RunLog(run_dir / "log.txt")
    session_start = time.time()
    device = pick_device(log) if not world.enabled else device_for(world)
    if world.enabled:
        log(f"Data-parallel: {world.size} processes ({dist_backend()}), device {device}"
            + (f"; {roster(world)}" if len(set(world.hosts)) > 1 else ""))
    seed_everything(cfg.seed * world.size + world.rank)
    configure_backends(cfg)

    dataset = open_dataset(cfg.data.path, use_labels=cfg.data.use_labels, xflip=cfg.data.xflip,
                           random_seed=cfg.seed)
    log(f"Dataset: {cfg.data.path}: {len(dataset)} images (x-flips {'on' if cfg.data.xflip else 'off'}), "
        f"{dataset.resolution}x{dataset.resolution}x{dataset.num_channels}, labels {cfg.data.label_dim or 'none'}")
    nets = build_networks(cfg, device)
    log(f"Networks: G {count_params(nets.G):,} numbers, D {count_params(nets.D):,} numbers")
    labels = dataset.raw_labels if cfg.data.use_labels else np.zeros((1, 0))
    trainer = Trainer(cfg, nets, device, LabelSampler(labels, cfg.seed * world.size + world.rank), StatsCollector(),
                      world=world, log=log)
    if trainer.compiled:
        log("G main and D main run through torch.compile (the first iterations compile them; --compile=0 to skip)")
    progress = Progress()
    if resume_state is not None:
        progress = restore_state(resume_state, nets, trainer, world, log)
        log(f"Resumed from {resume_state.path.name} at {progress.cur_nimg / 1e3:.1f} kimg")
    elif transfer_from is not None:
        transfer_weights(transfer_from, {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema}, log)
        log(f"Starting from the weights of {cfg.resume}")
    for net in (nets.G, nets.D, nets.G_ema):
        broadcast_module(net, world)

    if cfg.metrics:  # every rank embeds its share; rank 0 has fetched the weights into the cache already
        barrier(world)
        detector = (detector if detector is not None else Detectors("cpu")).require(metric_families(cfg.metrics))
        detector.to(device)
    per_rank_batch = cfg.batch_size // world.size
    workers = cfg.data.workers if device.type == "cuda" or (os.cpu_count() or 1) > 2 else 0
    batches = minibatches(dataset, per_rank_batch, cfg.seed, workers, pin_memory=device.type == "cuda",
                          start=progress.cur_nimg, rank=world.rank, world_size=world.size)
    grid = setup_grid(dataset, cfg, device)
    stop = GracefulStop()
    poll = StopPoll(stop, world, device)
    writer = TickWriter(run_dir, log) if world.is_main else None
    try:
        with stop:
            if resume_state is None and world.is_main:
                write_png(run_dir / "reals.png", image_grid(grid.reals, grid.size))
                write_fakes(run_dir / "fakes_init.png", nets.G_ema, grid, cfg.batch_gpu, device, stop, log)
            log(f"Training for {cfg.total_kimg} kimg...")
            tick_start_time = time.time()
            maintenance = tick_start_time - session_start
            while True:
                real_img, real_c = next(batches)
                trainer.step(real_img, real_c, progress.batch_idx, progress.cur_nimg)
                progress.cur_nimg += cfg.batch_size
                progress.batch_idx += 1

                if poll():
                    progress.elapsed_sec += time.time() - session_start
                    log(f"{stop.requested or 'A stop'} received at {progress.cur_nimg / 1e3:.1f} kimg: "
                        "saving training state")
                    save_state(run_dir, cfg, nets, trainer, progress, log, world)
                    barrier(world)  # no rank ends (which may end the others) before the state is written
                    raise KeyboardInterrupt
                done = progress.cur_nimg >= cfg.total_kimg * 1000
                due = progress.cur_nimg >= progress.tick_start_nimg + cfg.kimg_per_tick * 1000
                if not done and progress.cur_tick != 0 and not due:
                    continue

                tick_end_time = time.time()
                report_tick(trainer.stats, progress, tick_end_time - tick_start_time, maintenance,
                            progress.elapsed_sec + tick_end_time - session_start, device, log, trainer.augment_p())
                snapshot_due = done or progress.cur_tick % cfg.snapshot_ticks == 0
                progress.cur_tick += 1
                progress.tick_start_nimg = progress.cur_nimg
                if snapshot_due:
                    for net in (nets.G, nets.G_ema):  # running statistics (w_avg, magnitude EMAs) from rank 0
                        broadcast_module(net, world)
                    elapsed = progress.elapsed_sec + time.time() - session_start
                    snapshot(run_dir, cfg, nets, trainer, grid, dataclasses.replace(progress, elapsed_sec=elapsed),
                             device, log, detector, stop, world)
                stats = trainer.stats.collect(reduce=(lambda t: all_sum(t, world)) if world.enabled else None)
                if writer is not None:
                    writer.write(stats, progress.cur_nimg / 1e3, time.time())
                tick_start_time = time.time()
                maintenance = tick_start_time - tick_end_time
                if done:
                    break
    finally:
        if writer is not None:
            writer.close()
    log("Exiting...")
    return nets


def report_tick(stats: StatsCollector, progress: Progress, tick_time: float, maintenance: float, total_time: float,
                device: torch.device, log: RunLog, augment_p: float) -> None:
    """The progress line of a tick, and the same figures into the tick's statistics."""
    tick_kimg = max(progress.cur_nimg - progress.tick_start_nimg, 1) / 1e3  # before the tick advances
    mem_text, mem_fields = memory_line(device)
    log(f"tick {progress.cur_tick:<5d} kimg {progress.cur_nimg / 1e3:<8.1f} time {format_time(total_time):<12s} "
        f"sec/tick {tick_time:<7.1f} sec/kimg {tick_time / tick_kimg:<7.2f} "
        f"maintenance {maintenance:<6.1f} {mem_text} augment {augment_p:.3f}")
    for name, value in {
        "Progress/tick": progress.cur_tick, "Progress/kimg": progress.cur_nimg / 1e3,
        "Timing/total_sec": total_time, "Timing/sec_per_tick": tick_time,
        "Timing/sec_per_kimg": tick_time / tick_kimg, "Timing/maintenance_sec": maintenance,
        "Progress/augment": augment_p, **mem_fields,
    }.items():
        stats.report_scalar(name, value)
