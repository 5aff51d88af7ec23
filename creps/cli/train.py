"""`creps train` / `train.py`: the published flags, validated, resolved, then the loop."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from creps.cli.common import Parser, parse_bool, parse_list, run_cli
from creps.config import AUG_MODES, CONFIGS, DatasetInfo, TrainConfig, TrainOptions, check_options, resolve
from creps.errors import RunFailure, UserError
from creps.metrics import Detectors, metric_families, not_implemented_reason
from creps.parallel import (SINGLE, PeerLost, World, broadcast_object, env_world, joined, launched_by_torchrun,
                            leave_process, spawn, together)
from creps.train.resume import ResumePlan, check_transfer, continued_config, plan_resume

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
    req.add_argument("--cfg", required=True, choices=CONFIGS, help="base configuration")
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
    misc.add_argument("--recompute", type=parse_bool, default=True, metavar="BOOL",
                      help="CREPS: recompute per-pixel layers in backward instead of storing them "
                           "(same gradients, about a third of the activation memory; default: 1)")
    misc.add_argument("--workers", type=int, default=3, metavar="INT", help="DataLoader worker processes (default: 3)")
    misc.add_argument("--grid", metavar="WxH", help="images per row and rows of reals.png/fakes*.png "
                      "(default: the published size, up to 32x32)")
    misc.add_argument("-n", "--dry-run", action="store_true", help="print training options and exit")
    return p


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(**vars(args))


def dataset_info(path: str) -> DatasetInfo:
    from creps.data.dataset import open_dataset

    ds = open_dataset(path)
    return DatasetInfo(path=path, name=ds.name, resolution=ds.resolution, channels=ds.num_channels,
                       size=len(ds), has_labels=ds.has_labels, label_dim=ds.label_dim if ds.has_labels else 0)


def _label_dim(path: str) -> int:
    from creps.data.dataset import open_dataset

    return open_dataset(path, use_labels=True).label_dim


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
    ]


@dataclasses.dataclass
class Prepared:
    """A checked run, ready to start: its config, how it resumes, the detector of its metrics."""

    cfg: TrainConfig
    info: DatasetInfo  # of this process's --data
    plan: ResumePlan
    detector: Optional[Detectors] = None


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
    info = dataset_info(options.data)
    if options.cond and info.has_labels:
        info = DatasetInfo(**{**info.__dict__, "label_dim": _label_dim(options.data)})
    return info


def prepare(options: TrainOptions, world: World = SINGLE) -> Optional[Prepared]:
    """Everything before training, where the run is decided (the only process, or rank 0):
    resolve the options, plan the resume, print the options, fetch the metrics' detector.
    None after a dry run."""
    from creps.train.rundir import check_outdir, next_run_dir

    check_outdir(options.outdir)
    info = local_dataset_info(options)
    cfg = resolve(options, info)
    plan, resume_note = ResumePlan(), None
    if options.resume is not None:
        try:
            plan = plan_resume(options.resume, options.outdir, cfg.run_desc)
        except UserError as err:
            if not options.dry_run:
                raise
            resume_note = str(err)
        if plan.state is not None:
            cfg = continued_config(plan.state.config, resolve(dataclasses.replace(options, resume=None), info))
        elif plan.snapshot is not None:
            for note in check_transfer(cfg, plan.snapshot):
                print(f"note: {note}")
        elif resume_note is None:  # --resume=auto found nothing: a fresh run
            cfg = resolve(dataclasses.replace(options, resume=None), info)
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
    reasons = [resume_note] if resume_note else []
    reasons += [r for r in (not_implemented_reason(m) for m in cfg.metrics) if r]
    if options.dry_run:
        for w in warnings:
            print(f"warning: {w}")
        for r in reasons:
            print(f"note: {r}; a real run stops here")
        print("Dry run; exiting.")
        return None
    if reasons:
        raise UserError(reasons[0])
    if cfg.num_gpus > 1 and not world.enabled and 0 < torch_cuda_count() < cfg.num_gpus:
        raise UserError(f"--gpus={cfg.num_gpus}, but only {torch_cuda_count()} CUDA device(s) are present")
    # The detector is fetched before the run directory exists: offline, this is the
    # one-line error that says where to get it (or to pass --metrics=none).
    detector = Detectors("cpu").require(metric_families(cfg.metrics)) if cfg.metrics else None
    return Prepared(cfg, info, plan, detector)


def train(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> int:
    """Under torchrun every process runs this; only rank 0 prints and writes."""
    world = env_world() if launched_by_torchrun() else SINGLE
    with quiet_unless(world.is_main):
        if world.enabled:
            return run_cli(lambda: train_ranks(argv, prog, world))
        return run_cli(lambda: train_here(argv, prog))


def train_here(argv: Optional[Sequence[str]], prog: str) -> int:
    """One process, or --gpus=N local processes that it starts."""
    prepared = prepare(parse_options(argv, prog, SINGLE))
    if prepared is None:
        return 0
    if prepared.cfg.num_gpus > 1:
        return launch_spawn(prepared.cfg, prepared.plan)
    return launch(prepared.cfg, prepared.plan, prepared.detector)


# Options that may differ between the hosts of one run: paths and resources of each host.
HOST_LOCAL_OPTIONS = ("outdir", "data", "resume", "workers")


def train_ranks(argv: Optional[Sequence[str]], prog: str, world: World) -> int:
    """Every torchrun process. They join first, so a problem that any of them finds stops all
    of them at once. Rank 0 decides the run (options, resume, run directory) and sends the
    others its config and training state over the process group: other hosts need the dataset
    (at their own --data), never rank 0's files."""
    with joined(world) as world:
        options = together(lambda: parse_options(argv, prog, world), world)
        prepared = together(lambda: prepare(options, world) if world.is_main else None, world)
        decided = None
        if world.is_main and prepared is not None:
            decided = (prepared.cfg.to_json(), options, prepared.info, prepared.plan.state)
        decided = broadcast_object(decided, world)
        if decided is None:  # a dry run
            return 0
        if not world.is_main:
            prepared = together(lambda: follow_rank0(options, *decided), world)
        else:
            together(lambda: None, world)
        run_dir, log = together(lambda: open_run_dir(prepared.cfg, prepared.plan) if world.is_main
                                else (None, quiet_log()), world)
        run_dir = Path(broadcast_object(str(run_dir) if world.is_main else None, world))
        return train_in_run_dir(prepared.cfg, prepared.plan, run_dir, log, prepared.detector, world)


def follow_rank0(options: TrainOptions, cfg_json: str, main_options: TrainOptions, main_info: DatasetInfo,
                 state) -> Prepared:
    """A rank other than 0: check that it was started with rank 0's command on the same
    dataset, and take rank 0's config (with this host's --data) and training state."""
    mine, theirs = dataclasses.asdict(options), dataclasses.asdict(main_options)
    differ = [f"--{k.replace('_', '-')}={_flag(mine[k])} (rank 0: {_flag(theirs[k])})"
              for k in mine if k not in HOST_LOCAL_OPTIONS and mine[k] != theirs[k]]
    if differ:
        raise UserError(f"started with other options than rank 0: {'; '.join(differ[:4])}; run the same command "
                        "on every host (only --outdir, --data, --resume and --workers may differ)")
    info = local_dataset_info(options)
    have, want = (info.size, info.resolution, info.channels, info.label_dim), \
        (main_info.size, main_info.resolution, main_info.channels, main_info.label_dim)
    if have != want:
        raise UserError(f"--data={options.data} holds {_dataset_text(info)}, rank 0's dataset "
                        f"{_dataset_text(main_info)}; every host needs the same dataset")
    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=options.data))
    detector = Detectors("cpu").require(metric_families(cfg.metrics)) if cfg.metrics else None
    return Prepared(cfg, info, ResumePlan(state=state), detector)


def _flag(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return ",".join(value) or "none"
    return "(default)" if value is None else str(value)


def _dataset_text(info: DatasetInfo) -> str:
    labels = f", {info.label_dim} classes" if info.label_dim else ""
    return f"{info.size} images of {info.resolution}x{info.resolution}x{info.channels}{labels}"


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


def launch(cfg, plan: ResumePlan, detector=None) -> int:
    run_dir, log = open_run_dir(cfg, plan)
    return train_in_run_dir(cfg, plan, run_dir, log, detector)


def launch_spawn(cfg, plan: ResumePlan) -> int:
    """--gpus=N without torchrun: N local processes (NCCL on GPUs, gloo on CPUs)."""
    import tempfile

    run_dir, log = open_run_dir(cfg, plan)
    log.close()
    state = str(plan.state.path) if plan.state is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        spawn(_spawned_rank, cfg.num_gpus, tmp, args=(cfg.to_json(), str(run_dir), state, plan.snapshot is not None),
              what="training")
    return 0


def _spawned_rank(world: World, cfg_json: str, run_dir: str, state_path: Optional[str], transfer: bool) -> None:
    from creps.checkpoint import load_snapshot
    from creps.train.rundir import RunLog
    from creps.train.state import load_training_state

    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    plan = ResumePlan(run_dir=Path(run_dir) if state_path else None,
                      state=load_training_state(state_path) if state_path else None,
                      snapshot=load_snapshot(cfg.resume) if transfer else None)
    log = RunLog(Path(run_dir) / "log.txt") if world.is_main else quiet_log()
    detector = Detectors("cpu").require(metric_families(cfg.metrics)) if cfg.metrics and world.is_main else None
    train_in_run_dir(cfg, plan, Path(run_dir), log, detector, world)


def main(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> int:
    """The command line (train.py, creps ...): train(), and a torchrun worker ends its process here."""
    if not (launched_by_torchrun() and env_world().size > 1):
        return train(argv, prog=prog)
    try:
        code = train(argv, prog=prog)
    except SystemExit as stop:  # --help
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    leave_process(code)  # see creps.parallel.leave_process
    return code
