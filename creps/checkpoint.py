"""Network snapshots: safetensors weights + the JSON configs needed to rebuild the networks.

Loading never unpickles and never runs code from the file: each network's recorded config
names a family of our registry, the tensors fill its state dict. Before anything is built,
the recorded configs are checked against the tensors the file holds (names and shapes, read
from its header), so no file makes us allocate more than its own tensors hold. Published
network pickles (`.pkl` of the StyleGAN2-ADA / StyleGAN3 / CREPS code) load too, through the
restricted reader of `creps.compat.published`, and `convert_published` turns one into a
snapshot. A source may be a path or a URL (downloaded once into the cache folder).

Format 2 (metadata): `networks` ("G,D,G_ema"), `G` and `D` (each config with its family's
name; G_ema shares G's), `data` (the dataset, when known), `training` (the run's TrainConfig,
when the networks come from a creps run) and `meta`. Format 1 files (one TrainConfig in
`config`) still load.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from creps.atomic import atomic_write_bytes
from creps.compat.published import PublishedNetworks, published_file, read_published
from creps.config import DataConfig, TrainConfig
from creps.errors import UserError
from creps.nets.registry import build, check_tensors, config_from_record, config_record, family_of

FORMAT = "creps.snapshot"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
NETWORKS = ("G", "D", "G_ema")


@dataclass
class Snapshot:
    G: Optional[torch.nn.Module]
    D: Optional[torch.nn.Module]
    G_ema: torch.nn.Module
    data: Optional[DataConfig]  # the dataset the networks were trained on, when the file says
    training: Optional[TrainConfig]  # how they were trained (creps runs; None for published pickles)
    meta: dict[str, Any]

    @property
    def preset(self) -> str:
        """The train.py --cfg that builds networks like G_ema (else the name of its family)."""
        family = family_of(self.G_ema)
        preset = family.preset_of(self.G_ema.config)
        return family.name if preset is None else preset.name


def save_snapshot(path: str | Path, nets: dict[str, torch.nn.Module], training: Optional[TrainConfig] = None,
                  data: Optional[DataConfig] = None, meta: Optional[dict[str, Any]] = None) -> None:
    """Write G, D, G_ema (any subset containing G_ema), their configs and what is known of the
    data and the training, atomically."""
    tensors = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").clone().contiguous()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "networks": ",".join(nets),
                "G": json.dumps(config_record(nets["G_ema"].config)), "meta": json.dumps(meta or {})}
    if "D" in nets:
        metadata["D"] = json.dumps(config_record(nets["D"].config))
    data = data or (training.data if training is not None else None)
    if data is not None:
        metadata["data"] = json.dumps(dataclasses.asdict(data))
    if training is not None:
        metadata["training"] = training.to_json()
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


@dataclass
class SnapshotHeader:
    """What a snapshot file says, read from its header alone (no tensor data)."""

    configs: dict[str, Any]  # network name -> its config
    shapes: dict[str, tuple[int, ...]]  # every tensor by name
    data: Optional[DataConfig]
    training: Optional[TrainConfig]
    meta: dict[str, Any]


def read_header(path: str | Path) -> SnapshotHeader:
    """The configs, tensor shapes and records of a snapshot file; a UserError names anything
    that is not a readable creps snapshot."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such network file; give the path of a network-snapshot-*.safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as err:  # safetensors raises several types for a non-safetensors file
        raise UserError(f"{path}: not a creps network snapshot ({type(err).__name__}: {err}); "
                        "give a network-snapshot-*.safetensors written by creps") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: a safetensors file, but not a creps network snapshot (no creps metadata)")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path}: snapshot format version {version} is not supported by this creps "
                        f"(reads {', '.join(READABLE_VERSIONS)}); upgrade creps")
    stored = [name for name in metadata.get("networks", "").split(",") if name]
    try:
        meta = json.loads(metadata.get("meta", "{}"))
        if version == "1":
            training = TrainConfig.from_dict(json.loads(metadata["config"]))
            data, g_config, d_config = training.data, training.G, training.D
        else:
            training = TrainConfig.from_dict(json.loads(metadata["training"])) if "training" in metadata else None
            data = DataConfig(**json.loads(metadata["data"])) if "data" in metadata else None
            g_config = config_from_record(json.loads(metadata["G"]), "G")
            d_config = config_from_record(json.loads(metadata["D"]), "D") if "D" in metadata else None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: the recorded configuration is not one creps can build ({err})") from None
    configs = {name: d_config if name == "D" else g_config for name in stored}
    if any(config is None for config in configs.values()) or "G_ema" not in configs:
        raise UserError(f"{path}: the snapshot holds no G_ema network (or a network without its config)")
    for name, config in configs.items():
        if family_of(config).role != ("D" if name == "D" else "G"):
            raise UserError(f"{path}: {name} is recorded as a {family_of(config).name} network")
    return SnapshotHeader(configs=configs, shapes=shapes, data=data, training=training, meta=meta)


def load_snapshot(source: str | Path, device: str | torch.device = "cpu",
                  networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    """Rebuild the networks of a snapshot (or a published pickle) and load their weights
    (strictly). `source`: a path, ~/path, or URL."""
    path = published_file(source)
    if is_pickle(path):
        return snapshot_from_published(path, device, networks)
    header = read_header(path)
    built: dict[str, Optional[torch.nn.Module]] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in networks:
            config = header.configs.get(name)
            if config is None:
                built[name] = None
                continue
            prefix = f"{name}."
            shapes = {k[len(prefix):]: v for k, v in header.shapes.items() if k.startswith(prefix)}
            try:
                check_tensors(config, shapes, f"{path}: {name}")
            except ValueError as err:
                raise UserError(str(err)) from None
            net = build(config)
            net.load_state_dict({key: f.get_tensor(prefix + key) for key in shapes}, strict=True)
            built[name] = net.to(device).eval().requires_grad_(False)
    return Snapshot(G=built.get("G"), D=built.get("D"), G_ema=built["G_ema"], data=header.data,
                    training=header.training, meta=header.meta)


def snapshot_from_published(source: str | Path, device: str | torch.device = "cpu",
                            networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    """A Snapshot of a published network pickle: its networks as ours, the dataset it records;
    no training config (the file has none)."""
    return _published_snapshot(read_published(source), Path(source).name, device, networks)


def _published_snapshot(pub: PublishedNetworks, filename: str, device: str | torch.device = "cpu",
                        networks: tuple[str, ...] = NETWORKS) -> Snapshot:
    if pub.G_ema is None:
        raise UserError(f"{filename}: the network pickle holds no G_ema network")
    built = {name: getattr(pub, name) if name in networks else None for name in NETWORKS}
    built = {name: None if net is None else net.to(device) for name, net in built.items()}
    meta = {"source": "published pickle", "file": filename, "sha256": pub.sha256, "networks": pub.kinds,
            "notes": pub.notes}
    return Snapshot(G=built["G"], D=built["D"], G_ema=built["G_ema"], data=published_data(pub), training=None,
                    meta=meta)


def published_data(pub: PublishedNetworks) -> Optional[DataConfig]:
    """The dataset a published pickle records (`training_set_kwargs`), or None."""
    kwargs = pub.training_set_kwargs or {}
    path = kwargs.get("path")
    if not isinstance(path, str) or not path:
        return None
    G = pub.G_ema
    return DataConfig(path=path, name=Path(path).stem, resolution=G.img_resolution, channels=G.img_channels,
                      size=int(kwargs.get("max_size") or 0), use_labels=G.c_dim > 0, label_dim=G.c_dim,
                      xflip=bool(kwargs.get("xflip", False)), workers=3)


def convert_published(source: str | Path, dest: str | Path) -> Snapshot:
    """Write the networks of a published pickle as a creps snapshot at `dest` (atomically)."""
    path = published_file(source)
    snap = _published_snapshot(read_published(path), path.name)
    meta = dict(snap.meta, note="converted from a published pickle: the networks and the dataset are the file's; "
                "it records no training options")
    nets = {name: getattr(snap, name) for name in NETWORKS if getattr(snap, name) is not None}
    save_snapshot(dest, nets, data=snap.data, meta=meta)
    return snap
