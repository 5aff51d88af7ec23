"""The FID Inception-v3 (TF graph of 2015-12-05) in plain PyTorch, and its weights loader.

Module and parameter names follow the converted weights `pt_inception-2015-12-05-6726825d.pth`
(published with pytorch-fid), so that file loads with a strict `load_state_dict`. The network
is described by tables: each mixed block lists its convolutions (name, output channels,
kernel, stride, padding) and its branches as sequences of steps; channel counts flow from
those tables, scaled by `width` (1 for the real detector; tests use thin random copies).

Input contract: uint8 NCHW RGB images of any size. They are resized to 299x299 with the
TF1 `resize_bilinear` rule (no half-pixel centres), mapped to [-1, 1) by (x - 128) / 128 and
run through the network. Outputs: the 2048-d pool features (FID, KID, precision/recall), and
on request the 1008 logits without bias (Inception Score) and with bias.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from creps.download import locate
from creps.errors import UserError

__all__ = ["InceptionV3", "from_state_dict", "load_detector"]

PUBLISHED_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
PUBLISHED_NAME = "pt_inception-2015-12-05-6726825d.pth"
# SHA-256 of the published file (95,628,359 bytes); torch-fidelity ships the same bytes as
# weights-inception-2015-12-05-6726825d.pth. Its name carries the first 8 hex digits.
PUBLISHED_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KNOWN_SHA256 = {PUBLISHED_NAME: PUBLISHED_SHA256, "weights-inception-2015-12-05-6726825d.pth": PUBLISHED_SHA256}

INPUT_SIZE = 299
NUM_LOGITS = 1008
BN_EPS = 1e-3


# ---------------------------------------------------------------------------------------
# Input: TF1-style bilinear resize and scaling.


def _tf1_sample_points(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (lo, hi) and blend weight for each output position of TF1 resize_bilinear
    without half-pixel centres: src = j * (n_in / n_out), all in float32."""
    step = torch.tensor(n_in / n_out, dtype=torch.float32, device=device)
    src = torch.arange(n_out, dtype=torch.float32, device=device) * step
    lo = src.long()
    hi = torch.clamp(lo + 1, max=n_in - 1)
    return lo, hi, src - lo.to(torch.float32)


def resize_like_tf1(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of float NCHW images to size x size as TF1 resize_bilinear
    (align_corners=False, no half-pixel centres): blend along x (a + (b - a) * t), then along y."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    ry0, ry1, ty = _tf1_sample_points(h, size, x.device)
    rx0, rx1, tx = _tf1_sample_points(w, size, x.device)

    def along_x(rows: torch.Tensor) -> torch.Tensor:
        left = rows.index_select(3, rx0)
        return rows.index_select(3, rx1).sub_(left).mul_(tx).add_(left)

    # Blending along x acts on each row alone, so it may run before or after picking the rows;
    # do it on whichever is smaller. The values are the same either way.
    if h <= size:
        blended = along_x(x)
        top, bottom = blended.index_select(2, ry0), blended.index_select(2, ry1)
    else:
        top, bottom = along_x(x.index_select(2, ry0)), along_x(x.index_select(2, ry1))
    return bottom.sub_(top).mul_(ty[:, None]).add_(top)


def prepare_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW RGB of any size -> float32 [N, 3, 299, 299] in [-1, 1)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"the Inception detector takes uint8 images (0..255), got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"the Inception detector takes NCHW RGB images, got shape {list(images.shape)}")
    return resize_like_tf1(images.to(torch.float32)).sub_(128).div_(128)  # a fresh tensor: in place is safe


# ---------------------------------------------------------------------------------------
# Network description.


@dataclass(frozen=True)
class Conv:
    """One conv -> BatchNorm -> ReLU unit: output channels, kernel (kh, kw), stride, padding (ph, pw)."""

    out: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    pad: tuple[int, int] = (0, 0)


def _c(out: int, kh: int = 1, kw: Optional[int] = None, stride: int = 1, same: bool = True) -> Conv:
    """A kh x kw conv unit with `out` channels; `same` pads so that stride 1 keeps the size."""
    kw = kh if kw is None else kw
    return Conv(out, (kh, kw), stride, ((kh - 1) // 2, (kw - 1) // 2) if same else (0, 0))


# Pooling steps, named by what they do.
MAX_3x3_S2 = "max3x3/2"  # max pool 3x3, stride 2, no padding
MAX_3x3_S1 = "max3x3/1"  # max pool 3x3, stride 1, padding 1
AVG_3x3_S1 = "avg3x3/1"  # average pool 3x3, stride 1, padding 1, padded zeros not counted


def _pool(step: str, x: torch.Tensor) -> torch.Tensor:
    if step == MAX_3x3_S2:
        return F.max_pool2d(x, 3, stride=2)
    if step == MAX_3x3_S1:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    if step == AVG_3x3_S1:
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    raise KeyError(step)


# A branch is a list of steps: a conv name, a pooling step, or a tuple of conv names that all
# read the same input and whose outputs are concatenated (the split branches of Mixed_7b/7c).
Step = Union[str, tuple[str, ...]]


@dataclass(frozen=True)
class BlockSpec:
    convs: dict[str, Conv]  # in state-dict order
    branches: tuple[tuple[Step, ...], ...]  # outputs concatenated in this order


def _block_a(pool_out: int) -> BlockSpec:  # Mixed_5b/5c/5d: 35x35 grid
    return BlockSpec(
        {"branch1x1": _c(64), "branch5x5_1": _c(48), "branch5x5_2": _c(64, 5), "branch3x3dbl_1": _c(64),
         "branch3x3dbl_2": _c(96, 3), "branch3x3dbl_3": _c(96, 3), "branch_pool": _c(pool_out)},
        (("branch1x1",), ("branch5x5_1", "branch5x5_2"), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
         (AVG_3x3_S1, "branch_pool")),
    )


def _block_b() -> BlockSpec:  # Mixed_6a: 35x35 -> 17x17
    return BlockSpec(
        {"branch3x3": _c(384, 3, stride=2, same=False), "branch3x3dbl_1": _c(64), "branch3x3dbl_2": _c(96, 3),
         "branch3x3dbl_3": _c(96, 3, stride=2, same=False)},
        (("branch3x3",), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), (MAX_3x3_S2,)),
    )


def _block_c(mid: int) -> BlockSpec:  # Mixed_6b..6e: 17x17 grid, factorised 7x7
    return BlockSpec(
        {"branch1x1": _c(192), "branch7x7_1": _c(mid), "branch7x7_2": _c(mid, 1, 7), "branch7x7_3": _c(192, 7, 1),
         "branch7x7dbl_1": _c(mid), "branch7x7dbl_2": _c(mid, 7, 1), "branch7x7dbl_3": _c(mid, 1, 7),
         "branch7x7dbl_4": _c(mid, 7, 1), "branch7x7dbl_5": _c(192, 1, 7), "branch_pool": _c(192)},
        (("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
         ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"),
         (AVG_3x3_S1, "branch_pool")),
    )


def _block_d() -> BlockSpec:  # Mixed_7a: 17x17 -> 8x8
    return BlockSpec(
        {"branch3x3_1": _c(192), "branch3x3_2": _c(320, 3, stride=2, same=False), "branch7x7x3_1": _c(192),
         "branch7x7x3_2": _c(192, 1, 7), "branch7x7x3_3": _c(192, 7, 1),
         "branch7x7x3_4": _c(192, 3, stride=2, same=False)},
        (("branch3x3_1", "branch3x3_2"), ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"),
         (MAX_3x3_S2,)),
    )


def _block_e(pool: str) -> BlockSpec:  # Mixed_7b (average pool) / Mixed_7c (max pool): 8x8 grid
    return BlockSpec(
        {"branch1x1": _c(320), "branch3x3_1": _c(384), "branch3x3_2a": _c(384, 1, 3), "branch3x3_2b": _c(384, 3, 1),
         "branch3x3dbl_1": _c(448), "branch3x3dbl_2": _c(384, 3), "branch3x3dbl_3a": _c(384, 1, 3),
         "branch3x3dbl_3b": _c(384, 3, 1), "branch_pool": _c(192)},
        (("branch1x1",), ("branch3x3_1", ("branch3x3_2a", "branch3x3_2b")),
         ("branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")), (pool, "branch_pool")),
    )


# The stem: named convs at the top level, with two max pools in between.
STEM: tuple[tuple[str, Optional[Conv]], ...] = (
    ("Conv2d_1a_3x3", _c(32, 3, stride=2, same=False)),
    ("Conv2d_2a_3x3", _c(32, 3, same=False)),
    ("Conv2d_2b_3x3", _c(64, 3)),
    (MAX_3x3_S2, None),
    ("Conv2d_3b_1x1", _c(80)),
    ("Conv2d_4a_3x3", _c(192, 3, same=False)),
    (MAX_3x3_S2, None),
)

MIXED: tuple[tuple[str, BlockSpec], ...] = (
    ("Mixed_5b", _block_a(32)), ("Mixed_5c", _block_a(64)), ("Mixed_5d", _block_a(64)),
    ("Mixed_6a", _block_b()),
    ("Mixed_6b", _block_c(128)), ("Mixed_6c", _block_c(160)), ("Mixed_6d", _block_c(160)), ("Mixed_6e", _block_c(192)),
    ("Mixed_7a", _block_d()),
    ("Mixed_7b", _block_e(AVG_3x3_S1)), ("Mixed_7c", _block_e(MAX_3x3_S1)),
)


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


# ---------------------------------------------------------------------------------------
# Modules.


class ConvUnit(torch.nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

    def __init__(self, in_channels: int, spec: Conv, width: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, scaled(spec.out, width), spec.kernel, spec.stride, spec.pad,
                                    bias=False)
        self.bn = torch.nn.BatchNorm2d(scaled(spec.out, width), eps=BN_EPS)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MixedBlock(torch.nn.Module):
    """Parallel branches whose outputs are concatenated along channels."""

    def __init__(self, in_channels: int, spec: BlockSpec, width: float):
        super().__init__()
        self.branches = spec.branches
        # Build the units in table order (= state-dict order); each unit's input width is the
        # width of what precedes it in its branch.
        reads = {}
        self.out_channels = 0
        for branch in spec.branches:
            channels = in_channels
            for step in branch:
                names = step if isinstance(step, tuple) else (step,) if step in spec.convs else ()
                for name in names:
                    reads[name] = channels
                if names:
                    channels = sum(scaled(spec.convs[n].out, width) for n in names)
            self.out_channels += channels
        for name, conv in spec.convs.items():
            self.add_module(name, ConvUnit(reads[name], conv, width))

    def _run(self, branch: tuple[Step, ...], x: torch.Tensor) -> torch.Tensor:
        for step in branch:
            if isinstance(step, tuple):
                x = torch.cat([self.get_submodule(name)(x) for name in step], dim=1)
            elif step in self._modules:
                x = self.get_submodule(step)(x)
            else:
                x = _pool(step, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._run(branch, x) for branch in self.branches], dim=1)


class InceptionV3(torch.nn.Module):
    """FID Inception-v3. `width` thins every layer (1 = the published network)."""

    def __init__(self, width: float = 1.0, num_logits: int = NUM_LOGITS):
        super().__init__()
        self.width = width
        channels = 3
        self.stem: list[str] = []
        for name, conv in STEM:
            if conv is not None:
                unit = ConvUnit(channels, conv, width)
                self.add_module(name, unit)
                channels = unit.out_channels
            self.stem.append(name)
        for name, spec in MIXED:
            block = MixedBlock(channels, spec, width)
            self.add_module(name, block)
            channels = block.out_channels
        self.feature_dim = channels
        self.fc = torch.nn.Linear(channels, num_logits)
        self.identity: Optional[str] = None  # what the weights are (set by the loader; keys caches)
        self.eval().requires_grad_(False)
        self.to(memory_format=torch.channels_last)  # about 1.4x faster convolutions on CPUs

    def train(self, mode: bool = True) -> "InceptionV3":
        return super().train(False)  # always uses its running statistics

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared images [N, 3, 299, 299] -> pool features [N, feature_dim]."""
        x = x.contiguous(memory_format=torch.channels_last)
        for name in self.stem:
            x = self.get_submodule(name)(x) if name in self._modules else _pool(name, x)
        for name, _ in MIXED:
            x = self.get_submodule(name)(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor, logits: bool = False):
        """uint8 NCHW RGB images -> pool features [N, 2048]; with `logits`, the tuple
        (pool features, logits without bias [N, 1008], logits with bias [N, 1008])."""
        images = images.to(self.fc.weight.device)
        with torch.autocast(device_type=images.device.type, enabled=False):
            features = self.pool_features(prepare_images(images))
            if not logits:
                return features
            unbiased = features @ self.fc.weight.t()
            return features, unbiased, unbiased + self.fc.bias


def width_of(state: dict[str, torch.Tensor]) -> float:
    """The `width` a state dict was made for, read from its first conv (32 channels at width 1)."""
    return state["Conv2d_1a_3x3.conv.weight"].shape[0] / 32


def from_state_dict(state: dict[str, torch.Tensor], where: str = "detector") -> InceptionV3:
    """Build the network that fits `state` and load it strictly (a file in the published layout)."""
    try:
        net = InceptionV3(width=width_of(state), num_logits=state["fc.weight"].shape[0])
        net.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, AttributeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{where}: not FID Inception-v3 weights in the {PUBLISHED_NAME} layout ({first[:200]}); "
                        f"use the published file from {PUBLISHED_URL}") from None
    return net


# ---------------------------------------------------------------------------------------
# Loading the weights: --detector, $CREPS_DETECTOR, or the published URL (downloaded once).


def resolve_source(source: Optional[str] = None) -> str:
    """--detector, else $CREPS_DETECTOR, else the published URL."""
    return source or os.environ.get("CREPS_DETECTOR") or PUBLISHED_URL


def load_detector(source: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> InceptionV3:
    """The FID Inception-v3 from a local .pth or a URL (see `resolve_source`), on `device`.

    The file is read with `torch.load(weights_only=True)` (never unpickled freely) and loaded
    strictly. `detector.identity` names the weights (their SHA-256) for feature caches.
    """
    path, digest = locate(resolve_source(source), "the Inception detector", "detectors",
                          missing=f"give the path of {PUBLISHED_NAME} (from {PUBLISHED_URL}) with --detector or "
                                  "CREPS_DETECTOR", hint="pass --detector=PATH (or set CREPS_DETECTOR=PATH)",
                          known=KNOWN_SHA256, origin=PUBLISHED_URL)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files it cannot read
        raise UserError(f"detector {path}: not a readable weights file ({type(err).__name__}); "
                        f"use {PUBLISHED_NAME} from {PUBLISHED_URL}") from None
    if not isinstance(state, dict):
        raise UserError(f"detector {path}: holds a {type(state).__name__}, expected a state dict; "
                        f"use {PUBLISHED_NAME} from {PUBLISHED_URL}")
    net = from_state_dict(state, where=f"detector {path}")
    net.identity = f"{path.stem}-sha256-{digest}"
    return net.to(device)
