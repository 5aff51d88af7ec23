"""Network snapshots: safetensors weights + the JSON config needed to rebuild the networks.

Loading never unpickles and never runs code from the file: the config names an
architecture from our registry, the tensors fill its state dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from creps.atomic import atomic_write_bytes
from creps.config import TrainConfig
from creps.errors import UserError
from creps.nets.registry import build_discriminator, build_generator

FORMAT = "creps.snapshot"
FORMAT_VERSION = "1"
NETWORKS = ("G", "D", "G_ema")


@dataclass
class Snapshot:
    G: Optional[torch.nn.Module]
    D: Optional[torch.nn.Module]
    G_ema: torch.nn.Module
    config: TrainConfig
    meta: dict[str, Any]


def save_snapshot(path: str | Path, config: TrainConfig, nets: dict[str, torch.nn.Module],
                  meta: Optional[dict[str, Any]] = None) -> None:
    """Write G, D, G_ema (any subset containing G_ema) and the config, atomically."""
    tensors = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").clone().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "networks": ",".join(nets),
        "meta": json.dumps(meta or {}),
    }
    atomic_write_bytes(path, safetensors_save(tensors, metadata=metadata))


def read_snapshot_config(path: str | Path) -> tuple[TrainConfig, dict[str, Any], list[str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such network file; give the path of a network-snapshot-*.safetensors")
    if path.suffix == ".pkl":
        raise UserError(f"{path}: published .pkl networks are not supported yet (not implemented yet); "
                        "use a creps network-snapshot-*.safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises several types for a non-safetensors file
        raise UserError(f"{path}: not a creps network snapshot ({type(err).__name__}: {err}); "
                        "give a network-snapshot-*.safetensors written by creps") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: a safetensors file, but not a creps network snapshot (no creps metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: snapshot format version {metadata.get('format_version')} is not supported "
                        f"by this creps (expects {FORMAT_VERSION}); upgrade creps")
    config = TrainConfig.from_dict(json.loads(metadata["config"]))
    return config, json.loads(metadata.get("meta", "{}")), metadata.get("networks", "").split(",")


def load_snapshot(path: str | Path, device: str | torch.device = "cpu", networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    """Rebuild the networks of a snapshot and load their weights (strictly)."""
    config, meta, stored = read_snapshot_config(path)
    built: dict[str, Optional[torch.nn.Module]] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = list(f.keys())
        for name in networks:
            if name not in stored:
                built[name] = None
                continue
            net = build_generator(config.G) if name != "D" else build_discriminator(config.D)
            prefix = f"{name}."
            state = {k[len(prefix):]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise UserError(f"{path}: the weights of {name} do not fit its recorded config "
                                f"({str(err).splitlines()[0]})") from None
            built[name] = net.to(device).eval().requires_grad_(False)
    if built.get("G_ema") is None:
        raise UserError(f"{path}: the snapshot holds no G_ema network")
    return Snapshot(G=built.get("G"), D=built.get("D"), G_ema=built["G_ema"], config=config, meta=meta)

