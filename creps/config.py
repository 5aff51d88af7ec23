"""Typed training configuration, and the one place where flags become a TrainConfig.

`TrainOptions` mirrors the published `train.py` flags. `resolve(options, dataset)` applies
the presets of each `--cfg` and the published derivation rules (learning rates, mapping
depth, capacity doubling, EMA length, lazy regularisation, ...) and returns a frozen
`TrainConfig`, which is also what `training_options.json` holds. Networks and the training
loop only ever read a TrainConfig.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from creps.errors import UserError
from creps.metrics.spec import check_network_can, parse_metric_name
from creps.nets.discriminator import DiscriminatorConfig
from creps.nets.family import GeneratorOptions, Preset
from creps.nets.registry import CONFIG_NAMES, PRESET_FAMILY, PRESETS, config_from_record, config_record

AUG_MODES = ("noaug", "ada", "fixed")


# ---------------------------------------------------------------------------------------
# What the user asked for.


@dataclass(frozen=True)
class TrainOptions:
    """The flags of `train.py`, with the published defaults."""

    outdir: str
    cfg: str
    data: str
    gpus: int
    batch: int
    gamma: float
    cond: bool = False
    mirror: bool = False
    aug: str = "ada"
    resume: Optional[str] = None
    freezed: int = 0
    p: float = 0.2
    target: float = 0.6
    batch_gpu: Optional[int] = None
    cbase: int = 32768
    cmax: int = 512
    glr: Optional[float] = None
    dlr: float = 0.002
    map_depth: Optional[int] = None
    mbstd_group: int = 4
    desc: Optional[str] = None
    metrics: tuple[str, ...] = ("fid50k_full",)
    kimg: float = 25000
    tick: float = 4
    snap: int = 50
    seed: int = 0
    fp32: bool = False
    nobench: bool = False
    recompute: Optional[bool] = None  # None: on with CUDA, off on CPUs
    compile: Optional[bool] = None  # None: on with CUDA, off on CPUs
    workers: int = 3
    dry_run: bool = False
    grid: Optional[str] = None  # WxH images in reals.png / fakes*.png (default: published size)


@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset (read by the CLI from the data)."""

    path: str
    name: str
    resolution: int
    channels: int
    size: int
    has_labels: bool
    label_dim: int


# ---------------------------------------------------------------------------------------
# What the trainer runs.


@dataclass(frozen=True)
class DataConfig:
    path: str
    name: str
    resolution: int
    channels: int
    size: int  # images on disk, before x-flips
    use_labels: bool
    label_dim: int  # 0 unless use_labels
    xflip: bool
    workers: int


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    reg_interval: Optional[int] = None  # lazy regularisation every N minibatches


@dataclass(frozen=True)
class LossConfig:
    r1_gamma: float
    pl_weight: float = 0.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    pl_no_weight_grad: bool = False
    style_mixing_prob: float = 0.0
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    mode: str  # noaug | ada | fixed
    p: float = 0.0  # initial (ada) or fixed probability
    target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500


@dataclass(frozen=True)
class TrainConfig:
    preset: str  # the train.py --cfg it was resolved from
    data: DataConfig
    G: Any  # the config of G's family (creps.nets.creps.CrepsConfig, ...)
    D: DiscriminatorConfig
    G_opt: OptimizerConfig
    D_opt: OptimizerConfig
    loss: LossConfig
    augment: AugmentConfig
    num_gpus: int
    batch_size: int
    batch_gpu: int
    ema_kimg: float
    ema_rampup: Optional[float]
    total_kimg: float
    kimg_per_tick: float
    snapshot_ticks: int
    metrics: tuple[str, ...]
    seed: int
    fp32: bool
    cudnn_benchmark: bool
    resume: Optional[str]
    run_desc: str
    outdir: str
    grid: Optional[tuple[int, int]] = None  # None: the default grid size for the resolution and device
    # Per-pixel layers recomputed in backward where the family can (less memory, more time);
    # None: on with CUDA, off on CPUs (where memory is plentiful and it costs ~15% of a step).
    recompute: Optional[bool] = None
    compile: Optional[bool] = None  # main phases through torch.compile; None: on with CUDA, off on CPUs

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), G=config_record(self.G), D=config_record(self.D))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        """The config of a file (snapshot, training state, training_options.json), of this
        format or format 1; ValueError naming what does not fit."""
        if "cfg" in d and "preset" not in d:
            d = upgrade_format1(d)
        kwargs = {}
        for f in dataclasses.fields(TrainConfig):
            if f.name not in d:
                continue
            value = d[f.name]
            if f.name in ("G", "D"):
                value = config_from_record(value, f"the recorded {f.name}")
            elif f.name in _NESTED:
                value = _NESTED[f.name](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        return TrainConfig(**kwargs)


_NESTED = {"data": DataConfig, "G_opt": OptimizerConfig, "D_opt": OptimizerConfig, "loss": LossConfig,
           "augment": AugmentConfig}


# ---------------------------------------------------------------------------------------
# Presets and rules.


D_REG_INTERVAL = 16
G_REG_INTERVAL = 4


def ema_kimg_for_batch(batch_size: int) -> float:
    """Half-life of the generator EMA in kimg: 10 kimg at batch 32, proportional to batch."""
    return batch_size * 10 / 32


def run_description(cfg: str, dataset_name: str, gpus: int, batch: int, gamma: float, desc: Optional[str]) -> str:
    """`<cfg>-<dataset>-gpus<G>-batch<B>-gamma<g>[-<desc>]`, as the published run directories."""
    text = f"{cfg}-{dataset_name}-gpus{gpus:d}-batch{batch:d}-gamma{gamma:g}"
    return f"{text}-{desc}" if desc else text


def parse_grid(text: str) -> tuple[int, int]:
    """'8x4' -> (8, 4): images per row and rows of the snapshot grids."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserError(f"--grid={text!r}: expected WxH in images, e.g. --grid=8x4")
    return int(m.group(1)), int(m.group(2))


def check_options(o: TrainOptions) -> None:
    """Validation that needs no dataset. Raises UserError naming the flag and the fix."""
    if o.cfg not in CONFIG_NAMES:
        raise UserError(f"--cfg: unknown config {o.cfg!r}; choose one of {', '.join(CONFIG_NAMES)}")
    if o.aug not in AUG_MODES:
        raise UserError(f"--aug: unknown mode {o.aug!r}; choose one of {', '.join(AUG_MODES)}")
    for name in ("gpus", "batch", "cbase", "cmax", "mbstd_group", "snap", "workers"):
        if getattr(o, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if o.kimg <= 0 or o.tick <= 0:
        raise UserError("--kimg and --tick must be positive")
    if o.batch_gpu is not None and o.batch_gpu < 1:
        raise UserError("--batch-gpu must be at least 1")
    if o.map_depth is not None and o.map_depth < 1:
        raise UserError("--map-depth must be at least 1")
    if o.gamma < 0 or o.dlr < 0 or (o.glr is not None and o.glr < 0):
        raise UserError("--gamma, --glr and --dlr must be non-negative")
    if not 0 <= o.p <= 1 or not 0 <= o.target <= 1:
        raise UserError("--p and --target must lie in [0, 1]")
    if o.freezed < 0 or o.seed < 0:
        raise UserError("--freezed and --seed must be non-negative")
    if o.batch % o.gpus != 0:
        raise UserError(f"--batch={o.batch} must be a multiple of --gpus={o.gpus}")
    batch_gpu = o.batch_gpu or o.batch // o.gpus
    if o.batch % (o.gpus * batch_gpu) != 0:
        raise UserError(f"--batch={o.batch} must be a multiple of --gpus times --batch-gpu ({o.gpus}x{batch_gpu})")
    if batch_gpu < o.mbstd_group:
        raise UserError(f"--batch-gpu={batch_gpu} cannot be smaller than --mbstd-group={o.mbstd_group}; "
                        "lower --mbstd-group or raise --batch-gpu")
    if batch_gpu % o.mbstd_group != 0:
        raise UserError(f"--batch-gpu={batch_gpu} must be a multiple of --mbstd-group={o.mbstd_group}")
    for name in o.metrics:
        try:
            parse_metric_name(name)
            check_network_can(name, PRESET_FAMILY[o.cfg], f"--cfg={o.cfg}")
        except UserError as err:
            raise UserError(f"--metrics: {err}") from None
    if o.grid is not None:
        parse_grid(o.grid)
    if o.desc is not None and not re.fullmatch(r"[A-Za-z0-9._+=-]+", o.desc):
        raise UserError(f"--desc={o.desc!r}: use letters, digits and . _ + = - only (it becomes part of a directory name)")


def generator_options(o: TrainOptions, preset: Preset, dataset: DatasetInfo) -> GeneratorOptions:
    """What train.py decides for G: z and w of 512, the data's size, channels and classes, the
    capacity (times the preset's factor), the mapping depth and the clamp (none with --fp32)."""
    return GeneratorOptions(
        z_dim=512, w_dim=512, c_dim=dataset.label_dim if o.cond else 0, img_resolution=dataset.resolution,
        img_channels=dataset.channels, channel_base=o.cbase * preset.capacity_factor,
        channel_max=o.cmax * preset.capacity_factor,
        mapping_layers=preset.mapping_layers if o.map_depth is None else o.map_depth,
        clamp=None if o.fp32 else 256.0, batch_size=o.batch,
    )


def resolve(o: TrainOptions, dataset: DatasetInfo) -> TrainConfig:
    """Flags + dataset facts -> the configuration of a new run (what --resume changes is
    creps.train.resume's business)."""
    check_options(o)
    if o.cond and not dataset.has_labels:
        raise UserError(f"--cond=1 needs labels, but {dataset.path} has none; add a dataset.json "
                        "(dataset_tool.py writes one from class subfolders) or use --cond=0")
    preset = PRESETS[o.cfg]
    g = generator_options(o, preset, dataset)
    D = DiscriminatorConfig(
        c_dim=g.c_dim, img_resolution=dataset.resolution, img_channels=dataset.channels, channel_base=o.cbase,
        channel_max=o.cmax, mbstd_group_size=o.mbstd_group, freeze_layers=o.freezed, conv_clamp=g.clamp,
    )
    loss = LossConfig(
        r1_gamma=o.gamma, pl_weight=preset.pl_weight, pl_no_weight_grad=preset.pl_no_weight_grad,
        style_mixing_prob=preset.style_mixing_prob, blur_init_sigma=preset.blur_init_sigma,
        blur_fade_kimg=o.batch * 200 / 32 if preset.blur_init_sigma else 0.0,
    )
    if o.aug == "noaug":
        augment = AugmentConfig(mode="noaug")
    elif o.aug == "fixed":
        augment = AugmentConfig(mode="fixed", p=o.p)
    else:
        augment = AugmentConfig(mode="ada", p=0.0, target=o.target)
    data = DataConfig(
        path=dataset.path, name=dataset.name, resolution=dataset.resolution, channels=dataset.channels,
        size=dataset.size, use_labels=o.cond, label_dim=g.c_dim, xflip=o.mirror, workers=o.workers,
    )
    return TrainConfig(
        preset=o.cfg, data=data, G=preset.generator(g), D=D,
        G_opt=OptimizerConfig(lr=preset.glr if o.glr is None else o.glr,
                              reg_interval=G_REG_INTERVAL if preset.lazy_g_reg else None),
        D_opt=OptimizerConfig(lr=o.dlr, reg_interval=D_REG_INTERVAL),
        loss=loss, augment=augment, num_gpus=o.gpus, batch_size=o.batch, batch_gpu=o.batch_gpu or o.batch // o.gpus,
        ema_kimg=ema_kimg_for_batch(o.batch), ema_rampup=0.05,
        total_kimg=o.kimg, kimg_per_tick=o.tick, snapshot_ticks=o.snap, metrics=tuple(o.metrics), seed=o.seed,
        fp32=o.fp32, cudnn_benchmark=not o.nobench, recompute=o.recompute, compile=o.compile, resume=o.resume,
        run_desc=run_description(o.cfg, dataset.name, o.gpus, o.batch, o.gamma, o.desc), outdir=o.outdir,
        grid=parse_grid(o.grid) if o.grid is not None else None,
    )


# ---------------------------------------------------------------------------------------
# Configs written by format 1 (a flat GeneratorConfig with `arch` and one `clamp`, the
# --cfg in `cfg`): the same networks, as the presets of that time built them.

_FORMAT1_G_SIZES = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
                    "mapping_layers")


def upgrade_format1(d: dict[str, Any]) -> dict[str, Any]:
    """A format-1 TrainConfig dict in today's layout."""
    old_g = d["G"]
    if old_g.get("arch") not in PRESETS:
        raise ValueError(f"the recorded network {old_g.get('arch')!r} is not one creps builds")
    preset = PRESETS[old_g["arch"]]
    options = GeneratorOptions(**{k: old_g[k] for k in _FORMAT1_G_SIZES}, clamp=old_g.get("clamp"),
                               batch_size=d.get("batch_size", 32))
    G = preset.generator(options)
    kept = {k: old_g[k] for k in ("magnitude_ema_beta", "conv_kernel", "use_radial_filters")
            if old_g.get(k) is not None and k in {f.name for f in dataclasses.fields(G)}}
    G = dataclasses.replace(G, **kept)
    new = {k: v for k, v in d.items() if k not in ("cfg", "extra")}
    return dict(new, preset=d["cfg"], G=config_record(G), D={"family": "stylegan2-discriminator", **d["D"]})
