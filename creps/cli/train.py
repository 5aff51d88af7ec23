"""`creps train` / `train.py`: the published flags, validated, resolved, then the loop, in one
process, in --gpus local processes, or in torchrun's workers on one or more machines."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

from creps import launch
from creps.cli.common import Parser, parse_bool, parse_list, run_cli
from creps.config import AUG_MODES, DatasetInfo, TrainConfig, TrainOptions, check_options, resolve
from creps.errors import RunFailure, UserError
from creps.metrics import Detectors, metric_families
from creps.nets.registry import CONFIG_NAMES
from creps.parallel import SINGLE, PeerLost, World, broadcast_object, together
from creps.train.resume import ResumePlan, check_transfer, plan_resume, transfer_config

EXAMPLES = """examples:
  # Train CREPS for AFHQv2 using 8 GPUs.
  python train.py --outdir=~/training-runs --cfg=creps --data=~/datasets/afhqv2-512x512.zip \\
      --gpus=8 --batch=32 --gamma=8.2 --mirror=1

  # Small CREPS on the CPU, no metrics, snapshots every tick.
  python train.py --outdir=runs --cfg=creps --data=data.zip --gpus=1 --batch=8 --gamma=1 \\
      --cbase=4096 --cmax=128 --map-depth=2 --aug=noaug --metrics=none --kimg=20 --tick=1 --snap=5

  # Two machines of 8 GPUs: the same line on each (HOST0: the first one's address).
  creps torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST0:29400 \\
      --rdzv-id=run1 train.py --outdir=~/training-runs --cfg=creps --data=~/datasets/afhqv2-512x512.zip \\
      --gpus=16 --batch=32 --gamma=8.2 --mirror=1

environment:
  CREPS_DIST_TIMEOUT=SECONDS  how long a process waits for the others before the run ends with one
                              line (default 600)
"""


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Train CREPS, StyleGAN3-T/R or StyleGAN2 on an image dataset.",
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    req = p.add_argument_group("required")
    req.add_argument("--outdir", required=True, metavar="DIR", help="where to save the results")
    req.add_argument("--cfg", required=True, choices=CONFIG_NAMES, help="base configuration")
    req.add_argument("--data", required=True, metavar="[ZIP|DIR]", help="training data")
    req.add_argument("--gpus", type=int, default=1, metavar="INT", help="number of GPUs to use (default: 1)")
    req.add_argument("--batch", type=int, required=True, metavar="INT", help="total batch size")
    req.add_argument("--gamma", type=float, required=True, metavar="FLOAT", help="R1 regularization weight")
    opt = p.add_argument_group("optional features")
    opt.add_argument("--cond", type=parse_bool, default=False, metavar="BOOL", help="train conditional model")
    opt.add_argument("--mirror", type=parse_bool, default=False, metavar="BOOL", help="enable dataset x-flips")
    opt.add_argument("--aug", choices=AUG_MODES, default="ada", help="augmentation mode (default: ada)")
    opt.add_argument("--resume", metavar="[PATH|URL]", help="resume from given network snapshot")
    opt.add_argument("--freezed", type=int, default=0, metavar="INT", help="freeze first layers of D (default: 0)")
    hyper = p.add_argument_group("hyperparameters")
    hyper.add_argument("--p", type=float, default=0.2, metavar="FLOAT", help="probability for --aug=fixed (default: 0.2)")
    hyper.add_argument("--target", type=float, default=0.6, metavar="FLOAT", help="target value for --aug=ada (default: 0.6)")
    hyper.add_argument("--batch-gpu", type=int, metavar="INT", help="limit batch size per GPU (gradient accumulation)")
    hyper.add_argument("--cbase", type=int, default=32768, metavar="INT", help="capacity multiplier (default: 32768)")
    hyper.add_argument("--cmax", type=int, default=512, metavar="INT", help="max. feature maps (default: 512)")
    hyper.add_argument("--glr", type=float, metavar="FLOAT", help="G learning rate (default: varies)")
    hyper.add_argument("--dlr", type=float, default=0.002, metavar="FLOAT", help="D learning rate (default: 0.002)")
    hyper.add_argument("--map-depth", type=int, metavar="INT", help="mapping network depth (default: varies)")
    hyper.add_argument("--mbstd-group", type=int, default=4, metavar="INT", help="minibatch std group size (default: 4)")
    misc = p.add_argument_group("settings")
    misc.add_argument("--desc", metavar="STR", help="string to include in result dir name")
    misc.add_argument("--metrics", type=parse_list, default=("fid50k_full",), metavar="[NAME|A,B,C|none]",
                      help="quality metrics (default: fid50k_full)")
    misc.add_argument("--kimg", type=float, default=25000, metavar="KIMG", help="total training duration (default: 25000)")
    misc.add_argument("--tick", type=float, default=4, metavar="KIMG", help="how often to print progress (default: 4)")
    misc.add_argument("--snap", type=int, default=50, metavar="TICKS", help="how often to save snapshots (default: 50)")
    misc.add_argument("--seed", type=int, default=0, metavar="INT", help="random seed (default: 0)")
    misc.add_argument("--fp32", type=parse_bool, default=False, metavar="BOOL", help="disable mixed-precision")
    misc.add_argument("--nobench", type=parse_bool, default=False, metavar="BOOL", help="disable cuDNN benchmarking")
    misc.add_argument("--recompute", type=parse_bool, default=None, metavar="BOOL",
                      help="CREPS: recompute per-pixel layers in backward instead of storing them "
                           "(same gradients, about a third of the activation memory; default: 1 with CUDA, 0 on CPUs)")
    misc.add_argument("--compile", type=parse_bool, default=None, metavar="BOOL",
                      help="run the main phases (G main, D main) through torch.compile; a failure to compile "
                           "falls back to plain PyTorch (default: 1 with CUDA, 0 on CPUs)")
    misc.add_argument("--workers", type=int, default=3, metavar="INT", help="DataLoader worker processes (default: 3)")
    misc.add_argument("--grid", metavar="WxH", help="images per row and rows of reals.png/fakes*.png "
                      "(default: the published size, up to 32x32)")
    misc.add_argument("-n", "--dry-run", action="store_true", help="print training options and exit")
    return p


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(**vars(args))


def dataset_info(path: str, use_labels: bool) -> DatasetInfo:
    """What the configuration needs to know of the data (labels read only when used)."""
    from creps.data.dataset import open_dataset

    ds = open_dataset(path, use_labels=use_labels)
    return DatasetInfo(path=path, name=ds.name, resolution=ds.resolution, channels=ds.num_channels,
                       size=len(ds), has_labels=ds.has_labels, label_dim=ds.label_dim)


def summary_lines(cfg, run_dir_hint: str) -> list[str]:
    return [
        f"Output directory:    {run_dir_hint}",
        f"Number of GPUs:      {cfg.num_gpus}",
        f"Batch size:          {cfg.batch_size} images ({cfg.batch_gpu} per GPU per pass)",
        f"Training duration:   {cfg.total_kimg} kimg",
        f"Dataset path:        {cfg.data.path}",
        f"Dataset size:        {cfg.data.size} images",
        f"Dataset resolution:  {cfg.data.resolution}",
        f"Dataset labels:      {cfg.data.use_labels}",
        f"Dataset x-flips:     {cfg.data.xflip}",
        f"Compiled phases:     {compile_summary(cfg.compile)}",
    ]


def compile_summary(compile: Optional[bool]) -> str:
    if compile is None:
        return "auto (G main and D main compiled with CUDA, plain on CPUs)"
    return "G main and D main compiled (torch.compile)" if compile else "off"


@dataclasses.dataclass
class Prepared:
    """A checked run, ready to start: the options it was started with, its config, this
    process's dataset, how it resumes, and the metrics' detector (loaded where the run was
    decided; it stays in that process: the others load their own)."""

    options: TrainOptions
    cfg: TrainConfig
    info: DatasetInfo
    plan: ResumePlan
    detector: Optional[Detectors] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "detector": None}


def parse_options(argv: Optional[Sequence[str]], prog: str, world: World) -> TrainOptions:
    args = build_parser(prog).parse_args(argv)
    args.outdir = os.path.expanduser(args.outdir)
    args.data = os.path.expanduser(args.data)
    options = options_from_args(args)
    if world.enabled and options.gpus != world.size:
        raise UserError(f"--gpus={options.gpus}, but torchrun started {world.size} processes; "
                        f"pass --gpus={world.size}")
    check_options(options)
    return options


def local_dataset_info(options: TrainOptions) -> DatasetInfo:
    return dataset_info(options.data, options.cond)


def prepare(options: TrainOptions, world: World = SINGLE) -> Optional[Prepared]:
    """Where the run is decided (the only process, or rank 0): resolve the options and plan the
    resume once, print the options, fetch the metrics' detector. None after a dry run."""
    from creps.train.rundir import check_outdir, next_run_dir

    check_outdir(options.outdir)
    info = local_dataset_info(options)
    cfg = resolve(options, info)
    plan, resume_note = ResumePlan(), None
    if options.resume is not None:
        try:
            plan = plan_resume(options.resume, options.outdir, cfg.run_desc)
            cfg = plan.config(cfg)
        except UserError as err:
            if not options.dry_run:
                raise
            resume_note = str(err)
            cfg = transfer_config(cfg)  # the published meaning of --resume: start from those weights
        if plan.snapshot is not None:
            for note in check_transfer(cfg, plan.snapshot):
                print(f"note: {note}")
    run_dir = plan.run_dir or next_run_dir(options.outdir, cfg.run_desc)
    print("\nTraining options:")
    print(cfg.to_json())
    print()
    for line in summary_lines(cfg, str(run_dir)):
        print(line)
    if plan.state is not None:
        print(f"Resuming:            {plan.state.path} ({plan.state.progress['cur_nimg'] / 1e3:.1f} kimg)")
    print()
    warnings = gpu_warnings(cfg.num_gpus, world)
    if options.dry_run:
        for w in warnings:
            print(f"warning: {w}")
        if resume_note:
            print(f"note: {resume_note}; a real run stops here")
        print("Dry run; exiting.")
        return None
    if cfg.num_gpus > 1 and not world.enabled and 0 < torch_cuda_count() < cfg.num_gpus:
        raise UserError(f"--gpus={cfg.num_gpus}, but only {torch_cuda_count()} CUDA device(s) are present")
    # The detector is fetched before the run directory exists: offline, this is the
    # one-line error that says where to get it (or to pass --metrics=none).
    detector = Detectors("cpu").require(metric_families(cfg.metrics)) if cfg.metrics else None
    return Prepared(options, cfg, info, plan, detector)


# Options that may differ between the hosts of one run: paths and resources of each host.
HOST_LOCAL_OPTIONS = ("outdir", "data", "resume", "workers")


def follow_rank0(options: TrainOptions, decided: Prepared) -> Prepared:
    """A torchrun rank other than 0: check that it was started with rank 0's command on the
    same dataset, and take rank 0's config (with this host's --data) and training state."""
    mine, theirs = dataclasses.asdict(options), dataclasses.asdict(decided.options)
    differ = [f"--{k.replace('_', '-')}={_flag(mine[k])} (rank 0: {_flag(theirs[k])})"
              for k in mine if k not in HOST_LOCAL_OPTIONS and mine[k] != theirs[k]]
    if differ:
        raise UserError(f"started with other options than rank 0: {'; '.join(differ[:4])}; run the same command "
                        "on every host (only --outdir, --data, --resume and --workers may differ)")
    info = local_dataset_info(options)
    have, want = (info.size, info.resolution, info.channels, info.label_dim), \
        (decided.info.size, decided.info.resolution, decided.info.channels, decided.info.label_dim)
    if have != want:
        raise UserError(f"--data={options.data} holds {_dataset_text(info)}, rank 0's dataset "
                        f"{_dataset_text(decided.info)}; every host needs the same dataset")
    cfg = dataclasses.replace(decided.cfg, data=dataclasses.replace(decided.cfg.data, path=options.data))
    return dataclasses.replace(decided, options=options, cfg=cfg, info=info)


def _flag(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return ",".join(value) or "none"
    return "(default)" if value is None else str(value)


def _dataset_text(info: DatasetInfo) -> str:
    labels = f", {info.label_dim} classes" if info.label_dim else ""
    return f"{info.size} images of {info.resolution}x{info.resolution}x{info.channels}{labels}"


def work(world: World, job: Prepared) -> None:
    """Every process: rank 0 opens the run directory (a new one, or the resumed run's), all train."""
    run_dir, log = together(lambda: open_run_dir(job.cfg, job.plan) if world.is_main else (None, quiet_log()), world)
    run_dir = Path(broadcast_object(str(run_dir) if world.is_main else None, world))
    train_in_run_dir(job.cfg, job.plan, run_dir, log, job.detector, world)


def train(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> int:
    """Every process runs this (under torchrun, --gpus=N spawns the others); only rank 0 prints
    and writes."""
    command = launch.Command(what="training", check=lambda world: parse_options(argv, prog, world),
                             prepare=prepare, follow=follow_rank0, work=work,
                             processes=lambda job: job.cfg.num_gpus)
    with quiet_unless(launch.is_main()):
        return run_cli(lambda: launch.run(command))


@contextlib.contextmanager
def quiet_unless(main: bool):
    """Non-zero ranks print no progress (rank 0 speaks for the run); their errors still show."""
    if main:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_warnings(gpus: int, world: World = SINGLE) -> list[str]:
    have = torch_cuda_count()
    if have >= gpus:
        return []
    if have == 0:
        if gpus > 1:
            return [f"--gpus={gpus} but no CUDA device is present: {gpus} CPU processes would train (gloo)"]
        return [f"--gpus={gpus} requested but no CUDA device is present; training would run on the CPU"]
    return [f"--gpus={gpus} requested but only {have} CUDA device(s) are present"]


def open_run_dir(cfg, plan: ResumePlan):
    """(run_dir, log) for rank 0: the resumed run's directory, or a new one."""
    from creps.train.rundir import RunLog, create_run_dir

    if plan.run_dir is not None:
        log = RunLog(plan.run_dir / "log.txt")
        log(f"Continuing run {plan.run_dir} from {plan.state.path.name}")
        return plan.run_dir, log
    run_dir = create_run_dir(cfg.outdir, cfg.run_desc, cfg.to_json())
    log = RunLog(run_dir / "log.txt")
    log(f"Run directory: {run_dir}")
    return run_dir, log


def quiet_log():
    from creps.train.rundir import RunLog

    return RunLog(None, stream=open(os.devnull, "w"))


def train_in_run_dir(cfg, plan: ResumePlan, run_dir, log, detector=None, world: World = SINGLE) -> int:
    from creps.train.loop import run

    try:
        run(cfg, run_dir, log, resume_state=plan.state, transfer_from=plan.snapshot, detector=detector, world=world)
    except KeyboardInterrupt:
        log(f"Stopped. Continue this run with --resume={run_dir}")
        raise
    except PeerLost as err:
        hosts = "the same command on every host with " if len(set(world.hosts)) > 1 else ""
        failure = RunFailure(f"{err}; the run directory is intact: continue with {hosts}--resume={run_dir}")
        log.to_file(f"error: {failure}")
        raise failure from None
    finally:
        log.close()
    return 0



def main(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> int:
    """The command line (train.py, creps ...)."""
    return launch.exit_code(lambda: train(argv, prog=prog))
