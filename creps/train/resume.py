"""What `--resume` means: continue a run exactly, or start a new run from a snapshot.

- `--resume=<run dir>` or `--resume=<training-state file>`: continue that run in its own
  directory from its newest valid training state (exact resume).
- `--resume=auto`: the same for the newest run in `--outdir` with the same description, or
  a fresh run when there is none.
- `--resume=<network snapshot>`: a new run starting from those weights (transfer learning).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from creps.checkpoint import Snapshot, load_snapshot, read_snapshot_config
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
    if re.match(r"^[a-z]+://", resume):
        raise UserError(f"--resume={resume}: resuming from a URL is not implemented yet; download the file first")
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
    if path.suffix == ".pkl":
        raise UserError(f"--resume={resume}: published .pkl networks are not supported yet (not implemented yet); "
                        "use a creps run directory or network-snapshot-*.safetensors")
    if _file_format(path) == STATE_FORMAT:
        return ResumePlan(run_dir=path.parent, state=load_training_state(path))
    read_snapshot_config(path)  # a clear error for files that are neither
    return ResumePlan(snapshot=load_snapshot(path))


# Options that may change when a run continues; everything else must match.
CONTINUABLE = {"total_kimg", "kimg_per_tick", "snapshot_ticks", "metrics", "resume", "outdir", "run_desc", "extra",
               "grid"}


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
        data=dataclasses.replace(stored.data, workers=requested.data.workers, path=requested.data.path),
    )


def check_transfer_shapes(cfg: TrainConfig, snap: Snapshot) -> None:
    """Stop with a list of what differs when the snapshot's networks do not fit `cfg`'s."""
    problems = []
    wanted = {"G": build_generator(cfg.G), "D": build_discriminator(cfg.D)}
    for name, net in wanted.items():
        source = getattr(snap, name) if name != "G" else (snap.G or snap.G_ema)
        if source is None:
            continue
        have = {k: tuple(v.shape) for k, v in source.state_dict().items()}
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        problems += [f"{name}.{k} missing" for k in sorted(want.keys() - have.keys())]
        problems += [f"{name}.{k} unexpected" for k in sorted(have.keys() - want.keys())]
        problems += [f"{name}.{k} {have[k]} vs {want[k]}" for k in sorted(want.keys() & have.keys())
                     if have[k] != want[k]]
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise UserError("--resume: the snapshot's networks do not fit these options: " + "; ".join(problems[:8]) +
                        more + f" (snapshot: --cfg={snap.config.cfg}, {snap.config.G.img_resolution}px, "
                        f"cbase {snap.config.D.channel_base}, cmax {snap.config.D.channel_max})")
