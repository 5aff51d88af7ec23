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
from dataclasses import dataclass, field
from typing import Any, Optional

from creps.errors import UserError

CONFIGS = ("creps", "stylegan3-t", "stylegan3-r", "stylegan2")
AUG_MODES = ("noaug", "ada", "fixed")

# Metric names of the published code; the numbered family (fid1k_full, kid10k_full, ...)
# is accepted too. creps.metrics computes them (and says which are not implemented yet).
PUBLISHED_METRICS = (
    "fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "eqt50k_int", "eqt50k_frac", "eqr50k",
    "fid50k", "kid50k", "pr50k3", "is50k", "eqs50k",
)
_METRIC_FAMILY = re.compile(r"^(fid|kid|is)\d+k?(_full)?$|^pr\d+k?3(_full)?$|^eqt\d+k?_(int|frac)$|^eq[rs]\d+k?$"
                            r"|^(ppl2_wend|ppl_[zw](full|end))(\d+k?)?$")


def is_valid_metric(name: str) -> bool:
    return name in PUBLISHED_METRICS or bool(_METRIC_FAMILY.match(name))


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
    recompute: bool = True
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
class GeneratorConfig:
    arch: str  # one of CONFIGS
    z_dim: int
    w_dim: int
    c_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int
    channel_max: int
    mapping_layers: int
    clamp: Optional[float] = 256  # fc/conv output clamp; None disables (--fp32)
    magnitude_ema_beta: Optional[float] = None  # StyleGAN3 only
    conv_kernel: int = 3  # StyleGAN3-R uses 1
    use_radial_filters: bool = False  # StyleGAN3-R


@dataclass(frozen=True)
class DiscriminatorConfig:
    c_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int
    channel_max: int
    mbstd_group_size: int
    freeze_layers: int
    conv_clamp: Optional[float] = 256


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
    cfg: str
    data: DataConfig
    G: GeneratorConfig
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
    grid: Optional[tuple[int, int]] = None  # None: the published grid size for the resolution
    recompute: bool = True  # CREPS: per-pixel layers recomputed in backward (less memory, same gradients)
    compile: Optional[bool] = None  # main phases through torch.compile; None: on with CUDA, off on CPUs
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(TrainConfig, d)


def _from_dict(cls, d: dict[str, Any]):
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        sub = _NESTED.get(f.name)
        if sub is not None and isinstance(value, dict) and cls is TrainConfig:
            value = _from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


_NESTED = {
    "data": DataConfig, "G": GeneratorConfig, "D": DiscriminatorConfig, "G_opt": OptimizerConfig,
    "D_opt": OptimizerConfig, "loss": LossConfig, "augment": AugmentConfig,
}


# ---------------------------------------------------------------------------------------
# Presets and rules.


@dataclass(frozen=True)
class Preset:
    """Per --cfg defaults of the published train.py."""

    mapping_layers: int
    glr: float
    g_capacity_factor: int = 1  # creps and stylegan3-r double cbase/cmax for G
    lazy_g_reg: bool = False  # path-length regularisation every 4 minibatches
    pl_weight: float = 0.0
    style_mixing_prob: float = 0.0
    pl_no_weight_grad: bool = False
    stylegan3: bool = False
    conv_kernel: int = 3
    use_radial_filters: bool = False
    blur_init_sigma: float = 0.0


PRESETS: dict[str, Preset] = {
    "creps": Preset(mapping_layers=8, glr=0.002, g_capacity_factor=2, lazy_g_reg=True, pl_weight=2),
    "stylegan2": Preset(mapping_layers=8, glr=0.002, lazy_g_reg=True, pl_weight=2, style_mixing_prob=0.9,
                        pl_no_weight_grad=True),
    "stylegan3-t": Preset(mapping_layers=2, glr=0.0025, stylegan3=True),
    "stylegan3-r": Preset(mapping_layers=2, glr=0.0025, stylegan3=True, g_capacity_factor=2, conv_kernel=1,
                          use_radial_filters=True, blur_init_sigma=10),
}

D_REG_INTERVAL = 16
G_REG_INTERVAL = 4


def ema_kimg_for_batch(batch_size: int) -> float:
    """Half-life of the generator EMA in kimg: 10 kimg at batch 32, proportional to batch."""
    return batch_size * 10 / 32


def magnitude_ema_beta_for_batch(batch_size: int) -> float:
    """StyleGAN3 magnitude EMA decay per minibatch: half-life of 20 kimg."""
    return 0.5 ** (batch_size / (20 * 1e3))


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
    if o.cfg not in CONFIGS:
        raise UserError(f"--cfg: unknown config {o.cfg!r}; choose one of {', '.join(CONFIGS)}")
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
    bad = [m for m in o.metrics if not is_valid_metric(m)]
    if bad:
        raise UserError(f"--metrics: unknown metric {bad[0]!r}; valid names: {', '.join(PUBLISHED_METRICS)}, "
                        "none (or another sample count, e.g. fid1k_full)")
    for name in o.metrics:
        if re.match(r"^eq[tr]\d", name) and o.cfg not in ("stylegan3-t", "stylegan3-r"):
            raise UserError(f"--metrics={name}: translation/rotation equivariance is a StyleGAN3 metric; "
                            f"--cfg={o.cfg} does not take a user transform (for creps use eqs50k)")
        if re.match(r"^eqs\d", name) and o.cfg != "creps":
            raise UserError(f"--metrics={name}: scale consistency needs a network that renders at any scale "
                            f"(--cfg=creps), not --cfg={o.cfg}")
    if o.grid is not None:
        parse_grid(o.grid)
    if o.desc is not None and not re.fullmatch(r"[A-Za-z0-9._+=-]+", o.desc):
        raise UserError(f"--desc={o.desc!r}: use letters, digits and . _ + = - only (it becomes part of a directory name)")


def resolve(o: TrainOptions, dataset: DatasetInfo) -> TrainConfig:
    """Flags + dataset facts -> the full training configuration."""
    check_options(o)
    if o.cond and not dataset.has_labels:
        raise UserError(f"--cond=1 needs labels, but {dataset.path} has none; add a dataset.json "
                        "(dataset_tool.py writes one from class subfolders) or use --cond=0")
    preset = PRESETS[o.cfg]
    batch_gpu = o.batch_gpu or o.batch // o.gpus
    c_dim = dataset.label_dim if o.cond else 0
    g_factor = preset.g_capacity_factor
    clamp = None if o.fp32 else 256.0
    G = GeneratorConfig(
        arch=o.cfg, z_dim=512, w_dim=512, c_dim=c_dim, img_resolution=dataset.resolution,
        img_channels=dataset.channels, channel_base=o.cbase * g_factor, channel_max=o.cmax * g_factor,
        mapping_layers=preset.mapping_layers if o.map_depth is None else o.map_depth, clamp=clamp,
        magnitude_ema_beta=magnitude_ema_beta_for_batch(o.batch) if preset.stylegan3 else None,
        conv_kernel=preset.conv_kernel, use_radial_filters=preset.use_radial_filters,
    )
    D = DiscriminatorConfig(
        c_dim=c_dim, img_resolution=dataset.resolution, img_channels=dataset.channels, channel_base=o.cbase,
        channel_max=o.cmax, mbstd_group_size=o.mbstd_group, freeze_layers=o.freezed, conv_clamp=clamp,
    )
    resuming = o.resume is not None
    loss = LossConfig(
        r1_gamma=o.gamma, pl_weight=preset.pl_weight, pl_no_weight_grad=preset.pl_no_weight_grad,
        style_mixing_prob=preset.style_mixing_prob,
        blur_init_sigma=0.0 if resuming else preset.blur_init_sigma,
        blur_fade_kimg=o.batch * 200 / 32 if preset.blur_init_sigma else 0.0,
    )
    if o.aug == "noaug":
        augment = AugmentConfig(mode="noaug")
    elif o.aug == "fixed":
        augment = AugmentConfig(mode="fixed", p=o.p)
    else:
        augment = AugmentConfig(mode="ada", p=0.0, target=o.target, ada_kimg=100 if resuming else 500)
    data = DataConfig(
        path=dataset.path, name=dataset.name, resolution=dataset.resolution, channels=dataset.channels,
        size=dataset.size, use_labels=o.cond, label_dim=c_dim, xflip=o.mirror, workers=o.workers,
    )
    return TrainConfig(
        cfg=o.cfg, data=data, G=G, D=D,
        G_opt=OptimizerConfig(lr=preset.glr if o.glr is None else o.glr,
                              reg_interval=G_REG_INTERVAL if preset.lazy_g_reg else None),
        D_opt=OptimizerConfig(lr=o.dlr, reg_interval=D_REG_INTERVAL),
        loss=loss, augment=augment, num_gpus=o.gpus, batch_size=o.batch, batch_gpu=batch_gpu,
        ema_kimg=ema_kimg_for_batch(o.batch), ema_rampup=None if resuming else 0.05,
        total_kimg=o.kimg, kimg_per_tick=o.tick, snapshot_ticks=o.snap, metrics=tuple(o.metrics), seed=o.seed,
        fp32=o.fp32, cudnn_benchmark=not o.nobench, recompute=o.recompute, compile=o.compile, resume=o.resume,
        run_desc=run_description(o.cfg, dataset.name, o.gpus, o.batch, o.gamma, o.desc), outdir=o.outdir,
        grid=parse_grid(o.grid) if o.grid is not None else None,
    )
