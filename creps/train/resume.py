"""What `--resume` means: continue a run exactly, or start a new run from a snapshot.

- `--resume=<run dir>` or `--resume=<training-state file>`: continue that run in its own
  directory from its newest valid training state (exact resume).
- `--resume=auto`: the same for the newest run in `--outdir` with the same description, or
  a fresh run when there is none.
- `--resume=<network snapshot or published .pkl, path or URL>`: a new run starting from those
  weights (transfer learning). The networks must be of the same `--cfg` and capacity; at
  another resolution (the published recipe fine-tunes a 512x512 network on 1024x1024 data)
  every tensor whose name and shape agree is copied and the layers the new resolution adds
  start fresh.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from creps.checkpoint import Snapshot, is_pickle, load_snapshot, read_snapshot_config, snapshot_from_published
from creps.compat.published import published_file
from creps.config import TrainConfig
from creps.errors import UserError
from creps.nets.registry import build_discriminator, build_generator
from creps.train.state import FORMAT as STATE_FORMAT
from creps.train.state import TrainingState, load_training_state, newest_valid_state


@dataclass
class ResumePlan:
    run_dir: Optional[Path] = None  # continue in this run directory ...
    state: Optional[TrainingState] = None  # ... from this state
    snapshot: Optional[Snapshot] = None  # or start a new run from these weights


def _file_format(path: Path) -> Optional[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:
        return None


def _state_in(run_dir: Path, log) -> TrainingState:
    state = newest_valid_state(run_dir, log)
    if state is None:
        raise UserError(f"--resume={run_dir}: no valid training-state-*.safetensors in that run directory")
    return state


def plan_resume(resume: str, outdir: str | Path, run_desc: str, log=print) -> ResumePlan:
    if re.match(r"^[a-z]+://", resume):  # a network file by URL: downloaded into the cache first
        path = published_file(resume)
        return ResumePlan(snapshot=snapshot_from_published(path) if is_pickle(path) else load_snapshot(path))
    if resume == "auto":
        runs = [p for p in Path(outdir).glob(f"*-{run_desc}") if p.is_dir() and re.match(r"^\d+-", p.name)]
        for run_dir in sorted(runs, reverse=True):
            state = newest_valid_state(run_dir, log)
            if state is not None:
                return ResumePlan(run_dir=run_dir, state=state)
        log(f"--resume=auto: no earlier run of {run_desc} in {outdir}; starting a new run")
        return ResumePlan()
    path = Path(resume).expanduser()
    if path.is_dir():
        return ResumePlan(run_dir=path, state=_state_in(path, log))
    if not path.exists():
        raise UserError(f"--resume={resume}: no such file or run directory")
    if is_pickle(path):
        return ResumePlan(snapshot=snapshot_from_published(path))
    if _file_format(path) == STATE_FORMAT:
        return ResumePlan(run_dir=path.parent, state=load_training_state(path))
    read_snapshot_config(path)  # a clear error for files that are neither
    return ResumePlan(snapshot=load_snapshot(path))


# Options that may change when a run continues; everything else must match.
CONTINUABLE = {"total_kimg", "kimg_per_tick", "snapshot_ticks", "metrics", "resume", "outdir", "run_desc", "extra",
               "grid", "compile"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def continued_config(stored: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The stored run's config with the options that may change taken from `requested`;
    differences in anything that shapes training are an error listing them."""
    a = _flat(dataclasses.asdict(stored))
    b = _flat(dataclasses.asdict(dataclasses.replace(requested, resume=stored.resume, ema_rampup=stored.ema_rampup,
                                                     augment=stored.augment, loss=dataclasses.replace(
                                                         requested.loss, blur_init_sigma=stored.loss.blur_init_sigma))))
    ignored = {"data.workers", "data.path"}
    diffs = [f"{k}: run has {a[k]!r}, now {b.get(k)!r}" for k in sorted(a)
             if k.split(".")[0] not in CONTINUABLE and k not in ignored and a[k] != b.get(k)]
    if requested.augment.mode != stored.augment.mode or requested.augment.target != stored.augment.target:
        diffs.append(f"augment: run has {stored.augment.mode}, now {requested.augment.mode}")
    if diffs:
        raise UserError("--resume: the options differ from the run's (" + "; ".join(diffs[:6]) +
                        "); pass the run's own options, or start a new run")
    return dataclasses.replace(
        stored, total_kimg=requested.total_kimg, kimg_per_tick=requested.kimg_per_tick,
        snapshot_ticks=requested.snapshot_ticks, metrics=requested.metrics, grid=requested.grid,
        compile=requested.compile, data=dataclasses.replace(stored.data, workers=requested.data.workers, path=requested.data.path),
    )


@dataclass
class Transfer:
    """How the tensors of a source network map onto a destination network, by state-dict name."""

    copied: list[str]  # same name and shape
    fresh: list[str]  # only in the destination, or a shape that depends on the resolution
    dropped: list[str]  # only in the source
    conflicts: list[str]  # same name, another shape, and a learned weight: "name (src) vs (dst)"


# Tensors by these names are learned (or frozen learned) weights; any other tensor is a buffer the
# network computes from its options (e.g. the CREPS coordinate grid), which may start fresh.
LEARNED_SUFFIXES = (".weight", ".bias", ".const", ".w_avg", ".magnitude_ema")


def match_tensors(source: dict[str, torch.Tensor], dest: dict[str, torch.Tensor]) -> Transfer:
    t = Transfer(copied=[], fresh=[], dropped=[k for k in source if k not in dest], conflicts=[])
    for key, value in dest.items():
        if key not in source:
            t.fresh.append(key)
        elif source[key].shape == value.shape:
            t.copied.append(key)
        elif key.endswith(LEARNED_SUFFIXES):
            t.conflicts.append(f"{key} {tuple(source[key].shape)} vs {tuple(value.shape)}")
        else:
            t.fresh.append(key)
    return t


def copy_matching(source: torch.nn.Module, dest: torch.nn.Module) -> Transfer:
    """Copy every tensor of `source` into `dest` whose name and shape agree; the rest of `dest`
    keeps its values. Conflicts (see match_tensors) are a bug here: check_transfer stops them."""
    state = source.state_dict()
    t = match_tensors(state, dest.state_dict())
    if t.conflicts:
        raise ValueError(f"cannot transfer: {t.conflicts[0]}")
    dest.load_state_dict({k: state[k] for k in t.copied}, strict=False)
    return t


def check_transfer(cfg: TrainConfig, snap: Snapshot) -> list[str]:
    """Stop with a clear line when the snapshot's networks cannot start a run of `cfg` (another
    --cfg, another capacity, or at the same resolution anything that differs); returns notes
    on what a change of resolution leaves fresh."""
    have, want = snap.config, cfg
    source_desc = f"{have.cfg}, {have.G.img_resolution}x{have.G.img_resolution}"
    if have.G.arch != want.G.arch:
        raise UserError(f"--resume: the network is {have.G.arch} ({source_desc}) but --cfg={want.G.arch}; "
                        f"pass --cfg={have.G.arch} to fine-tune it")
    if (have.G.z_dim, have.G.w_dim) != (want.G.z_dim, want.G.w_dim):
        raise UserError(f"--resume: the network has z_dim {have.G.z_dim} and w_dim {have.G.w_dim} ({source_desc}); "
                        f"train.py builds {want.G.z_dim} and {want.G.w_dim}, so it cannot fine-tune this network")
    if (have.G.c_dim, have.G.img_channels) != (want.G.c_dim, want.G.img_channels):
        raise UserError(f"--resume: the network takes {have.G.c_dim} classes and makes {have.G.img_channels}-channel "
                        f"images, the data has {want.G.c_dim} classes and {want.G.img_channels} channels "
                        f"({want.data.path})")
    same_res = have.G.img_resolution == want.G.img_resolution
    problems, notes = [], []
    wanted = {"G": build_generator(cfg.G), "D": build_discriminator(cfg.D)}
    for name, net in wanted.items():
        source = getattr(snap, name) if name != "G" else (snap.G or snap.G_ema)
        if source is None:
            notes.append(f"the file has no {name}: it starts fresh")
            continue
        t = match_tensors(source.state_dict(), net.state_dict())
        problems += [f"{name}.{c}" for c in t.conflicts]
        problems += [f"{name}.{k} missing" for k in t.fresh if k.startswith("mapping.") and not same_res]
        problems += [f"{name}.{k} unexpected" for k in t.dropped if k.startswith("mapping.") and not same_res]
        if same_res:
            problems += [f"{name}.{k} missing" for k in t.fresh] + [f"{name}.{k} unexpected" for k in t.dropped]
        elif t.fresh or t.dropped:
            notes.append(f"{name}: {len(t.copied)} tensors copied, {len(t.fresh)} start fresh, "
                         f"{len(t.dropped)} of the file unused")
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise UserError("--resume: the network does not fit these options: " + "; ".join(problems[:8]) + more +
                        f" (network: --cfg={have.cfg}, {have.G.img_resolution}px, cbase {have.D.channel_base}, "
                        f"cmax {have.D.channel_max}; now: {want.G.img_resolution}px, cbase {want.D.channel_base}, "
                        f"cmax {want.D.channel_max}); pass the network's --cbase/--cmax/--map-depth")
    if not same_res:
        notes.insert(0, f"fine-tuning a {have.G.img_resolution}x{have.G.img_resolution} network on "
                        f"{want.G.img_resolution}x{want.G.img_resolution} data")
    return notes
