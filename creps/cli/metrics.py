"""`creps metrics` / `calc_metrics.py`: quality metrics of a network snapshot.

With a snapshot inside a run directory, the dataset and its options come from the snapshot's
training config and each result is appended to <run_dir>/metric-<name>.jsonl (as published);
with --data, that dataset is used instead.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from creps.cli.common import Parser, add_network_option, parse_bool, parse_list, positive_float, run_cli
from creps.errors import UserError
from creps import launch
from creps.parallel import SINGLE, World, device_for

EXAMPLES = """examples:
  # a training run: dataset options looked up, results appended to metric-<name>.jsonl
  python calc_metrics.py --metrics=fid50k_full,kid50k_full \\
      --network=~/training-runs/00000-creps-mydataset/network-snapshot-000000.safetensors
  # any snapshot: name the dataset
  python calc_metrics.py --metrics=fid50k_full --data=~/datasets/ffhq-256x256.zip --mirror=1 \\
      --network=network-snapshot-000000.safetensors

recommended metrics: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, eqt50k_frac,
eqr50k (StyleGAN3), eqs50k (CREPS scale consistency); legacy: fid50k, kid50k, pr50k3, is50k;
other counts: fid1k_full, pr1k3_full, ppl2_wend1k, eqt1k_int, ...
Detector weights (downloaded once into $CREPS_CACHE_DIR/detectors, default ~/.cache/creps/detectors,
when not given): FID/KID/IS Inception from --detector or $CREPS_DETECTOR; precision/recall and
PPL VGG16 from --vgg16 or $CREPS_VGG16 and LPIPS weights from --lpips or $CREPS_LPIPS."""


def build_parser(prog: str = "calc_metrics.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Calculate quality metrics for a training run or a network snapshot.",
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_option(p)
    p.add_argument("--metrics", type=parse_list, default=("fid50k_full",), metavar="[NAME|A,B,C|none]",
                   help="quality metrics (default: fid50k_full)")
    p.add_argument("--data", metavar="[ZIP|DIR]", help="dataset to evaluate against (default: look up)")
    p.add_argument("--mirror", type=parse_bool, metavar="BOOL", help="dataset x-flips (default: look up)")
    p.add_argument("--gpus", type=int, default=1, metavar="INT", help="number of GPUs (default: 1)")
    p.add_argument("--verbose", type=parse_bool, default=True, metavar="BOOL", help="print progress (default: 1)")
    p.add_argument("--detector", metavar="PATH|URL",
                   help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: $CREPS_DETECTOR "
                        "or the published URL, cached")
    p.add_argument("--vgg16", metavar="PATH|URL",
                   help="VGG16 weights (torchvision vgg16-397923af.pth) for PR and PPL; default: $CREPS_VGG16 or the "
                        "published URL, cached")
    p.add_argument("--lpips", metavar="PATH|URL",
                   help="LPIPS v0.1 vgg.pth linear weights for PPL; default: $CREPS_LPIPS or the published URL, cached")
    p.add_argument("--scale", type=positive_float, metavar="FLOAT", help="render CREPS networks at this scale, e.g. 2")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if present)")
    p.add_argument("--workers", type=int, default=3, metavar="INT", help="dataset loader processes (default: 3)")
    return p


def find_run_dir(network: Path) -> Optional[Path]:
    """The snapshot's directory when it is a run directory (holds training_options.json)."""
    parent = network.parent
    return parent if (parent / "training_options.json").is_file() else None


@dataclass
class Job:
    """What every process of a metrics run computes: the network (loaded once, where the run
    is decided, and sent to the other processes) and plain settings. Loaded detectors stay in
    the process that loaded them (each process loads its own)."""

    metrics: tuple[str, ...]
    G: Any  # the snapshot's G_ema, on the CPU
    network: str  # local path of the snapshot or pickle
    shown_network: str  # as the user gave it
    data_path: str
    mirror: bool
    scale: Optional[float]
    device: Optional[str]
    detector: Optional[str]
    vgg16: Optional[str]
    lpips: Optional[str]
    workers: int
    verbose: bool
    gpus: int
    detectors: Any = None  # Detectors, loaded in this process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "detectors": None}

    def load_detectors(self, device) -> Any:
        """This process's detectors for the job's metrics (fetched into the cache when missing)."""
        from creps.metrics.detectors import Detectors
        from creps.metrics.registry import metric_families

        if self.detectors is None:
            self.detectors = Detectors("cpu", inception=self.detector, vgg16=self.vgg16, lpips=self.lpips).require(
                metric_families(self.metrics))
        return self.detectors.to(device)


def checked_args(argv: Optional[Sequence[str]], prog: str, world: World) -> argparse.Namespace:
    from creps.metrics.registry import check_metrics

    args = build_parser(prog).parse_args(argv)
    check_metrics(args.metrics)
    if args.gpus < 1:
        raise UserError("--gpus must be at least 1")
    if args.workers < 0:
        raise UserError("--workers must be at least 0")
    if world.enabled and args.gpus != world.size:
        raise UserError(f"--gpus={args.gpus}, but torchrun started {world.size} processes; "
                        f"pass --gpus={world.size}")
    return args


def prepare(args: argparse.Namespace, world: World = SINGLE) -> Optional[Job]:
    """Check everything and load every file (network, detectors) once, before any work; None
    when there is no metric to compute."""
    from creps.checkpoint import load_snapshot
    from creps.cli.common import check_renders_at
    from creps.compat.published import published_file

    if not args.metrics:
        return None
    if args.verbose:
        print(f'Loading network from "{args.network}"...')
    network = published_file(args.network)  # a URL is downloaded into the cache first
    snap = load_snapshot(network, device="cpu", networks=("G_ema",))
    check_renders_at(snap.G_ema, args.scale)
    if args.data is not None:
        data_path, mirror = os.path.expanduser(args.data), False
    elif snap.data is None:
        raise UserError(f"{args.network} records no training dataset; please specify --data=ZIP|DIR")
    else:
        data_path, mirror = os.path.expanduser(snap.data.path), snap.data.xflip
        if not os.path.exists(data_path):
            raise UserError(f"the snapshot's training dataset {data_path} is not there; "
                            "please specify --data=ZIP|DIR")
    if args.mirror is not None:
        mirror = args.mirror
    job = Job(metrics=tuple(args.metrics), G=snap.G_ema, network=str(network), shown_network=args.network,
              data_path=data_path, mirror=mirror, scale=args.scale, device=args.device, detector=args.detector,
              vgg16=args.vgg16, lpips=args.lpips, workers=args.workers, verbose=args.verbose, gpus=args.gpus)
    job.load_detectors("cpu")
    return job


def follow(args: argparse.Namespace, job: Job) -> Job:
    """A torchrun rank other than 0: rank 0's job, with this host's dataset and detectors."""
    if args.data is not None:
        job.data_path = os.path.expanduser(args.data)
    if not os.path.exists(job.data_path):
        raise UserError(f"the dataset {job.data_path} is not on this host; please specify --data=ZIP|DIR")
    job.load_detectors("cpu")
    return job


def run_job(world: World, job: Job) -> None:
    """Every process: compute its share of each metric on its device; rank 0 prints each
    result (and appends it to the run directory's jsonl)."""
    import torch

    from creps.metrics.registry import append_metric_jsonl, compute_metric, metric_jsonl_line

    say = print if job.verbose and world.is_main else (lambda *a, **k: None)
    device = torch.device(job.device) if job.device else device_for(world)
    if device.type == "cpu" and job.device is None:
        say("No CUDA device: computing on the CPU (slow).")
    G = job.G.to(device)
    say("Dataset options:")
    say(json.dumps({"path": job.data_path, "xflip": job.mirror, "use_labels": G.c_dim != 0,
                    "resolution": G.img_resolution}, indent=2))
    detectors = job.load_detectors(device)
    run_dir = find_run_dir(Path(job.network))
    for name in job.metrics:
        say(f"Calculating {name}...")
        result = compute_metric(name, G, job.data_path, mirror=job.mirror, device=device,
                                detector=detectors, scale=job.scale, progress=job.verbose and world.is_main,
                                workers=job.workers, world=world)
        if world.is_main:
            if run_dir is not None:
                print(append_metric_jsonl(run_dir, result, job.network), flush=True)
            else:
                print(metric_jsonl_line(result, job.shown_network), flush=True)
        say()
    say("Exiting...")


def calc_metrics(argv: Optional[Sequence[str]] = None, prog: str = "calc_metrics.py") -> int:
    command = launch.Command(what="metrics", check=lambda world: checked_args(argv, prog, world), prepare=prepare,
                             follow=follow, work=run_job, processes=lambda job: job.gpus)
    return run_cli(lambda: launch.run(command))


def main(argv: Optional[Sequence[str]] = None, prog: str = "calc_metrics.py") -> int:
    """The command line (calc_metrics.py, creps ...)."""
    return launch.exit_code(lambda: calc_metrics(argv, prog=prog))
