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

from creps.checkpoint import Snapshot, is_pickle, load_snapshot, read_header, snapshot_from_published
from creps.compat.published import published_file
from creps.config import TrainConfig
from creps.errors import UserError
from creps.nets.registry import build
from creps.train.state import FORMAT as STATE_FORMAT
from creps.train.state import TrainingState, load_training_state, newest_valid_state


@dataclass
class ResumePlan:
    run_dir: Optional[Path] = None  # continue in this run directory ...
    state: Optional[TrainingState] = None  # ... from this state
    snapshot: Optional[Snapshot] = None  # or start a new run from these weights

    def config(self, fresh: TrainConfig) -> TrainConfig:
        """What this plan trains with, given the config a new run of the same flags would have:
        the run's own config (continuing), the published transfer settings (from a snapshot),
        or the new run's (nothing to resume from)."""
        if self.state is not None:
            return continued_config(self.state.config, fresh)
        if self.snapshot is not None:
            return transfer_config(fresh)
        return dataclasses.replace(fresh, resume=None)


def transfer_config(cfg: TrainConfig) -> TrainConfig:
    """A run that starts from trained weights, as the published train.py sets it up: no EMA
    ramp-up, ADA adjusting 5x faster, no D input blur."""
    return dataclasses.replace(cfg, ema_rampup=None, augment=dataclasses.replace(cfg.augment, ada_kimg=100),
                               loss=dataclasses.replace(cfg.loss, blur_init_sigma=0.0))


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
    read_header(path)  # a clear error for files that are neither
    return ResumePlan(snapshot=load_snapshot(path))


# Options that may change when a run continues; everything else must match ...
CONTINUABLE = {"total_kimg", "kimg_per_tick", "snapshot_ticks", "metrics", "outdir", "run_desc", "grid",
               "data.workers", "data.path", "compile"}
# ... except what was fixed when the run started (by starting from trained weights or not).
STARTED_WITH = {"resume", "ema_rampup", "augment.ada_kimg", "loss.blur_init_sigma"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def continued_config(stored: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The stored run's config with the options that may change taken from `requested` (the
    config a new run of the flags given now would have); differences in anything that shapes
    training are an error listing them."""
    a, b = _flat(stored.to_dict()), _flat(requested.to_dict())
    fixed = [k for k in sorted(set(a) | set(b)) if k not in CONTINUABLE | STARTED_WITH
             and k.split(".")[0] not in CONTINUABLE and a.get(k) != b.get(k)]
    diffs = [f"{k}: run has {a.get(k)!r}, now {b.get(k)!r}" for k in fixed]
    if diffs:
        raise UserError("--resume: the options differ from the run's (" + "; ".join(diffs[:6]) +
                        "); pass the run's own options, or start a new run")
    return dataclasses.replace(
        stored, total_kimg=requested.total_kimg, kimg_per_tick=requested.kimg_per_tick,
        snapshot_ticks=requested.snapshot_ticks, metrics=requested.metrics, grid=requested.grid,
        compile=requested.compile,
        data=dataclasses.replace(stored.data, workers=requested.data.workers, path=requested.data.path),
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


def transfer_source(snap: Snapshot, name: str) -> Optional[torch.nn.Module]:
    """The snapshot's network that starts `name` of a new run: a file without G starts G from G_ema."""
    return getattr(snap, name) or (snap.G_ema if name == "G" else None)


def transfer_weights(snap: Snapshot, nets: dict[str, torch.nn.Module], log) -> None:
    """Start a new run's networks from the snapshot's (see copy_matching); logs what starts fresh."""
    for name, net in nets.items():
        source = transfer_source(snap, name)
        if source is not None:
            t = copy_matching(source, net)
            if t.fresh or t.dropped:
                log(f"{name}: {len(t.copied)} tensors from the file, {len(t.fresh)} fresh, {len(t.dropped)} unused")


def check_transfer(cfg: TrainConfig, snap: Snapshot) -> list[str]:
    """Stop with a clear line when the snapshot's networks cannot start a run of `cfg` (another
    --cfg, another capacity, or at the same resolution anything that differs); returns notes
    on what a change of resolution leaves fresh."""
    have, want = snap.G_ema.config, cfg.G
    source_desc = f"{snap.preset}, {have.img_resolution}x{have.img_resolution}"
    if snap.preset != cfg.preset:
        raise UserError(f"--resume: the network is {snap.preset} ({source_desc}) but --cfg={cfg.preset}; "
                        f"pass --cfg={snap.preset} to fine-tune it")
    if (have.z_dim, have.w_dim) != (want.z_dim, want.w_dim):
        raise UserError(f"--resume: the network has z_dim {have.z_dim} and w_dim {have.w_dim} ({source_desc}); "
                        f"train.py builds {want.z_dim} and {want.w_dim}, so it cannot fine-tune this network")
    if (have.c_dim, have.img_channels) != (want.c_dim, want.img_channels):
        raise UserError(f"--resume: the network takes {have.c_dim} classes and makes {have.img_channels}-channel "
                        f"images, the data has {want.c_dim} classes and {want.img_channels} channels "
                        f"({cfg.data.path})")
    same_res = have.img_resolution == want.img_resolution
    problems, notes = [], []
    wanted = {"G": build(cfg.G), "D": build(cfg.D)}
    for name, net in wanted.items():
        source = transfer_source(snap, name)
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
                        f" (network: --cfg={snap.preset}, {have.img_resolution}px, {capacity(snap)}; "
                        f"now: {want.img_resolution}px, cbase {cfg.D.channel_base}, cmax {cfg.D.channel_max}); "
                        "pass the network's --cbase/--cmax/--map-depth")
    if not same_res:
        notes.insert(0, f"fine-tuning a {have.img_resolution}x{have.img_resolution} network on "
                        f"{want.img_resolution}x{want.img_resolution} data")
    return notes


def capacity(snap: Snapshot) -> str:
    """The --cbase/--cmax a snapshot's networks were built with, as far as the file says."""
    if snap.D is not None:
        return f"cbase {snap.D.config.channel_base}, cmax {snap.D.config.channel_max}"
    return f"G cbase {snap.G_ema.config.channel_base}, cmax {snap.G_ema.config.channel_max}"
