"""Network snapshots: safetensors weights + the JSON config needed to rebuild the networks.

Loading never unpickles and never runs code from the file: the config names an
architecture from our registry, the tensors fill its state dict. Published network pickles
(`.pkl` of the StyleGAN2-ADA / StyleGAN3 / CREPS code) load too, through the restricted
reader of `creps.compat.published`, and `convert_published` turns one into a snapshot.
A source may be a path or a URL (downloaded once into the cache folder).
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
from creps.compat.published import PublishedNetworks, published_file, read_published
from creps.compat.published_config import check_reproduces, train_config
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


def is_pickle(path: str | Path) -> bool:
    """True for a pickle of protocol 2 to 5 (a published network pickle): it starts with the
    PROTO opcode. A safetensors file (an 8-byte header length, then a JSON header) is not one,
    even when its first byte happens to be the same."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= path.stat().st_size:
        return False
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read_snapshot_config(path: str | Path) -> tuple[TrainConfig, dict[str, Any], list[str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such network file; give the path of a network-snapshot-*.safetensors")
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


def load_snapshot(source: str | Path, device: str | torch.device = "cpu",
                  networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    """Rebuild the networks of a snapshot (or a published pickle) and load their weights
    (strictly). `source`: a path, ~/path, or URL."""
    path = published_file(source)
    if is_pickle(path):
        return snapshot_from_published(path, device, networks)
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



def snapshot_from_published(source: str | Path, device: str | torch.device = "cpu",
                            networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    """A Snapshot of a published network pickle: its networks as ours, and a config derived
    from what the file records (see creps.compat.published_config)."""
    return _published_snapshot(read_published(source), Path(source).name, device, networks)


def _published_snapshot(pub: PublishedNetworks, filename: str, device: str | torch.device = "cpu",
                        networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    if pub.G_ema is None:
        raise UserError(f"{filename}: the network pickle holds no G_ema network")
    built = {name: getattr(pub, name) if name in networks else None for name in NETWORKS}
    built = {name: None if net is None else net.to(device) for name, net in built.items()}
    meta = {"source": "published pickle", "file": filename, "sha256": pub.sha256, "networks": pub.kinds,
            "notes": pub.notes}
    return Snapshot(G=built["G"], D=built["D"], G_ema=built["G_ema"], config=train_config(pub), meta=meta)


def convert_published(source: str | Path, dest: str | Path) -> Snapshot:
    """Write the networks of a published pickle as a creps snapshot at `dest` (atomically),
    after checking that the snapshot's config rebuilds networks that compute the same."""
    path = published_file(source)
    pub = read_published(path)
    snap = _published_snapshot(pub, path.name)
    try:
        check_reproduces(snap.config, pub)
    except ValueError as err:
        raise UserError(f"{source}: cannot be written as a creps snapshot: {err}") from None
    meta = dict(snap.meta, note="converted from a published pickle: the network and dataset options are the "
                "file's; training options (gamma, batch, learning rates) are presets, the file has none")
    nets = {name: getattr(snap, name) for name in NETWORKS if getattr(snap, name) is not None}
    save_snapshot(dest, snap.config, nets, meta=meta)
    return snap
