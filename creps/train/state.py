"""Training state checkpoints: everything needed to continue a run exactly.

A state file holds G, D, G_ema, both optimizers, the path-length mean, the augmentation
probability and its statistics, the progress counters (images, ticks, iterations, the
position in the data order) and every random generator's state. It is one safetensors
file (tensors) whose JSON metadata carries the rest and a SHA-256 of every tensor, checked
on load, so a truncated or corrupt file is refused instead of resuming from garbage.
Files are written whole or not at all (creps.atomic), so a crash at any instant leaves the
previous state intact.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from creps.atomic import atomic_write_bytes
from creps.config import TrainConfig
from creps.errors import UserError
from creps.nets.registry import check_tensors

FORMAT = "creps.training-state"
FORMAT_VERSION = "2"  # 2: configs of each network family (1: a flat generator config; still read)
READABLE_VERSIONS = ("1", "2")
STATE_GLOB = "training-state-*.safetensors"


def state_file_name(cur_nimg: int) -> str:
    return f"training-state-{cur_nimg // 1000:06d}.safetensors"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --- optimizer state <-> flat tensors + JSON ------------------------------------------


def flatten_optimizer(prefix: str, opt_state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move an optimizer state_dict's tensors into `tensors`; return the JSON-able rest."""
    rest: dict[str, Any] = {"param_groups": opt_state["param_groups"], "scalars": {}}
    for idx, entry in opt_state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().to("cpu").clone().contiguous()
            else:
                rest["scalars"][f"{idx}.{name}"] = value
    return rest


def unflatten_optimizer(prefix: str, rest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in rest["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


# --- random generators ----------------------------------------------------------------


def capture_rng(tensors: dict[str, torch.Tensor], prefix: str = "") -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python random states: tensors into `tensors`
    (names under `prefix`), the rest returned as JSON-able metadata."""
    tensors[f"{prefix}rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors[f"{prefix}rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    return {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [py_version, list(py_state), py_gauss]}


def restore_rng(meta: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    torch.set_rng_state(tensors[f"{prefix}rng.torch"])
    if torch.cuda.is_available():
        cuda = f"{prefix}rng.cuda."
        states = [tensors[k] for k in sorted((k for k in tensors if k.startswith(cuda)), key=lambda k: int(k[len(cuda):]))]
        if states:
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors[f"{prefix}rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_py = meta["python"]
    random.setstate((version, tuple(state), gauss_py))


def rank_state(extra_tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What one process of a many-process run carries of its own: its random states and its
    per-process training tensors (label sampler, path-length mean, ADA partial sums)."""
    tensors: dict[str, torch.Tensor] = {}
    rng = capture_rng(tensors)
    for key, value in extra_tensors.items():
        tensors[f"extra.{key}"] = value.detach().to("cpu").clone().contiguous()
    return {"tensors": tensors, "rng": rng}


# --- whole state ----------------------------------------------------------------------


def save_training_state(path: Path, config: TrainConfig, nets: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer], extra_tensors: dict[str, torch.Tensor],
                        progress: dict[str, Any], ranks: Optional[list[dict[str, Any]]] = None) -> int:
    """Write a training state atomically; returns its size in bytes. `ranks`: every process's
    `rank_state` in a many-process run (stored as rank<r>.*, so each process resumes its own)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").clone().contiguous()
    opt_meta = {name: flatten_optimizer(f"opt.{name}", opt.state_dict(), tensors) for name, opt in optimizers.items()}
    for key, value in extra_tensors.items():
        tensors[f"extra.{key}"] = value.detach().to("cpu").clone().contiguous()
    rng_meta = capture_rng(tensors)
    for rank, own in enumerate(ranks or []):
        tensors.update({f"rank{rank}.{key}": value for key, value in own["tensors"].items()})
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "progress": json.dumps(progress),
        "optimizers": json.dumps(opt_meta),
        "rng": json.dumps(rng_meta),
        "networks": ",".join(nets),
        "ranks": json.dumps([own["rng"] for own in ranks or []]),
        "sha256": tensors_digest(tensors),
    }
    data = safetensors_save(tensors, metadata=metadata)
    atomic_write_bytes(path, data)
    return len(data)


class TrainingState:
    """A loaded, verified training state."""

    def __init__(self, path: Path, config: TrainConfig, progress: dict[str, Any], tensors: dict[str, torch.Tensor],
                 optimizers: dict[str, Any], rng: dict[str, Any], networks: list[str],
                 rank_rng: Optional[list[dict[str, Any]]] = None):
        self.path, self.config, self.progress = path, config, progress
        self.tensors, self.optimizers, self.rng, self.networks = tensors, optimizers, rng, networks
        self.rank_rng = rank_rng or []  # per-process random states of a many-process run

    @property
    def process_count(self) -> int:
        """How many processes' own states the file holds (0: a single-process run's file)."""
        return len(self.rank_rng)

    def network_state(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def optimizer_state(self, name: str) -> dict[str, Any]:
        return unflatten_optimizer(f"opt.{name}", self.optimizers[name], self.tensors)

    def extra(self, key: str, rank: Optional[int] = None) -> Optional[torch.Tensor]:
        """A training tensor of the run (rank 0's), or of process `rank` of a many-process run."""
        return self.tensors.get(f"extra.{key}" if rank is None else f"rank{rank}.extra.{key}")

    def restore_rng(self, rank: Optional[int] = None) -> None:
        if rank is None:
            restore_rng(self.rng, self.tensors)
        else:
            restore_rng(self.rank_rng[rank], self.tensors, prefix=f"rank{rank}.")


def load_training_state(path: str | Path) -> TrainingState:
    """Read and verify a state file; UserError when it is not one, truncated or corrupt."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # truncated/corrupt files raise several exception types
        raise UserError(f"{path}: unreadable training state ({type(err).__name__}); it may be truncated — "
                        "resume from an earlier training-state-*.safetensors") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a creps training state")
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise UserError(f"{path}: training state version {metadata.get('format_version')} is not supported "
                        "by this creps; upgrade creps")
    if tensors_digest(tensors) != metadata.get("sha256"):
        raise UserError(f"{path}: checksum mismatch, the file is corrupt; resume from an earlier "
                        "training-state-*.safetensors")
    try:
        config = TrainConfig.from_dict(json.loads(metadata["config"]))
        for name in ("G", "D", "G_ema"):
            shapes = {k[len(name) + 1:]: tuple(v.shape) for k, v in tensors.items() if k.startswith(name + ".")}
            check_tensors(config.D if name == "D" else config.G, shapes, name)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: the recorded configuration does not fit the file ({err})") from None
    return TrainingState(
        path=path, config=config,
        progress=json.loads(metadata["progress"]), tensors=tensors,
        optimizers=json.loads(metadata["optimizers"]), rng=json.loads(metadata["rng"]),
        networks=metadata.get("networks", "").split(","), rank_rng=json.loads(metadata.get("ranks") or "[]"),
    )


def newest_valid_state(run_dir: Path, log=print) -> Optional[TrainingState]:
    """The most advanced training state in a run directory that loads and verifies."""
    def kimg(p: Path) -> int:
        digits = p.stem.rsplit("-", 1)[-1]
        return int(digits) if digits.isdigit() else -1

    for path in sorted(run_dir.glob(STATE_GLOB), key=lambda p: (kimg(p), p.stat().st_mtime), reverse=True):
        try:
            return load_training_state(path)
        except UserError as err:
            log(f"warning: skipping {path.name}: {err}")
    return None
