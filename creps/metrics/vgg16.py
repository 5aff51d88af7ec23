"""VGG16 for the perceptual metrics, in plain PyTorch, and its weights loader.

Two uses, as in the published metrics:
- perceptual path length: LPIPS distances (Zhang et al. 2018, "lin" v0.1 on VGG16). The
  activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 are scaled to unit length
  over channels at every pixel; the distance of two images is, summed over those five layers,
  the spatial mean of the channel-weighted squared differences. `lpips_features` packs each
  layer as unit_features * sqrt(weight) / sqrt(height * width), flattened, so that the squared
  Euclidean distance of two packed vectors is exactly that distance.
- precision/recall: the 4096-d activations of the second fully connected layer, after its
  ReLU, of images resized to 224x224 (TF1 bilinear rule, like the Inception detector).

Input contract: NCHW RGB pixels in 0..255 (uint8, or float and unclamped as PPL feeds them).
They are mapped to ImageNet statistics, (x / 255 - mean) / std, which is the same affine map
as LPIPS's ScalingLayer applied to x / 127.5 - 1.

Weights come from two widely available files, loaded with a strict `load_state_dict` of their
union: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`; keys `features.N.*` and
`classifier.{0,3,6}.*`) and the LPIPS v0.1 linear weights (`vgg.pth`; keys
`lin{0..4}.model.1.weight`, shape [1, C, 1, 1]). All sizes are read from the files, so tests
can use thin random copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Optional, Union

import torch

from creps.download import locate
from creps.errors import UserError
from creps.metrics.inception import resize_like_tf1, scaled

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_NAME = "vgg16-397923af.pth"
LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
VGG16_ENV = "CREPS_VGG16"
LPIPS_ENV = "CREPS_LPIPS"

# What the file names promise about their SHA-256 (torch hub names carry its first 8 hex digits).
KNOWN_SHA256_PREFIX = {VGG16_NAME: "397923af"}

# The VGG16 "D" configuration: output channels of the 3x3 convolutions of each stage; every
# stage ends with a 2x2 max pool. LPIPS taps the last ReLU of each stage.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_INPUT_SIZE = 224
POOLED_SIZE = 7  # the grid the first fully connected layer reads (7x7 at 224x224 input)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_EPS = 1e-10  # LPIPS adds this to the channel norm before dividing

Source = Optional[str]


# ---------------------------------------------------------------------------------------
# Formulas.


def imagenet_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 RGB -> ImageNet-standardised input: (x / 255 - mean) / std (= LPIPS ScalingLayer on [-1, 1])."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels / 255 - mean) / std


def unit_normalise(x: torch.Tensor, eps: float = UNIT_EPS) -> torch.Tensor:
    """Each pixel's channel vector scaled to unit length: x / (||x||_2 over channels + eps)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def packed_layer(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One tapped layer [N, C, H, W] -> [N, C*H*W] whose squared distances are that layer's
    LPIPS term: unit features * sqrt(channel weight) / sqrt(H * W)."""
    h, w = x.shape[-2:]
    scale = weights.reshape(1, -1, 1, 1).sqrt() / (h * w) ** 0.5
    return (unit_normalise(x) * scale).flatten(1)


def lpips_from_packed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS distance of two packed feature batches: squared Euclidean distance per row."""
    return (a - b).square().sum(dim=1)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """No mixed precision while the detector runs (devices without autocast need nothing)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """NCHW images (uint8 or float, 0..255; 1 or 3 channels) -> float32 RGB."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"VGG16 takes NCHW images with 1 or 3 channels, got shape {list(images.shape)}")
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images.to(torch.float32)


# ---------------------------------------------------------------------------------------
# The network.


class VGG16(torch.nn.Module):
    """VGG16 in torchvision's parameter layout plus LPIPS's per-layer weights.

    `width` thins every convolution and `fc_features` / `num_classes` size the classifier
    (1, 4096 and 1000 for the real network; tests use thin random copies).
    """

    def __init__(self, width: float = 1.0, fc_features: int = 4096, num_classes: int = 1000):
        super().__init__()
        layers: list[torch.nn.Module] = []
        self.taps: list[int] = []  # index in `features` of the ReLU that ends each stage
        self.tap_channels: list[int] = []
        channels = 3
        for stage in STAGES:
            for out in stage:
                out = scaled(out, width)
                layers += [torch.nn.Conv2d(channels, out, 3, padding=1), torch.nn.ReLU()]
                channels = out
            self.taps.append(len(layers) - 1)
            self.tap_channels.append(channels)
            layers.append(torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(*layers)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(POOLED_SIZE)
        # fc6, ReLU, dropout, fc7, ReLU, dropout, fc8: the indices 0, 3, 6 of the published keys.
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(channels * POOLED_SIZE * POOLED_SIZE, fc_features), torch.nn.ReLU(), torch.nn.Dropout(),
            torch.nn.Linear(fc_features, fc_features), torch.nn.ReLU(), torch.nn.Dropout(),
            torch.nn.Linear(fc_features, num_classes),
        )
        # LPIPS's 1x1 weighting of each tapped layer, at its published key lin{k}.model.1.weight
        # (index 0 there is a dropout without parameters). All ones = the unweighted baseline.
        for k, c in enumerate(self.tap_channels):
            lin = torch.nn.Module()
            lin.model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Conv2d(c, 1, 1, bias=False))
            torch.nn.init.ones_(lin.model[1].weight)
            self.add_module(f"lin{k}", lin)
        self.feature_dim = fc_features
        self.identity: Optional[str] = None  # what the weights are (set by the loader; keys caches)
        self.eval().requires_grad_(False)
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPUs

    def train(self, mode: bool = True) -> "VGG16":
        return super().train(False)  # dropout always off

    def layer_weights(self, k: int) -> torch.Tensor:
        """LPIPS's channel weights of tapped layer k, shape [C]."""
        return self.get_submodule(f"lin{k}").model[1].weight.reshape(-1)

    def _device(self) -> torch.device:
        return self.classifier[0].weight.device

    def tapped(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Standardised input -> the five tapped ReLU outputs (relu1_2 ... relu5_3)."""
        x = x.contiguous(memory_format=torch.channels_last)
        taps = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                taps.append(x)
        return taps

    def _input(self, images: torch.Tensor, resize: bool) -> torch.Tensor:
        """Images (0..255) on this network's device, standardised; `resize`: first to 224x224 (TF1 bilinear)."""
        x = as_pixels(images.to(self._device()))
        if resize:
            x = resize_like_tf1(x, FC_INPUT_SIZE)
        return imagenet_normalise(x)

    def lpips_features(self, images: torch.Tensor, resize: bool = False) -> torch.Tensor:
        """Images (0..255) -> packed LPIPS features [N, D]: `lpips_from_packed(a, b)` is the
        LPIPS distance. `resize` first resizes to 224x224 (TF1 bilinear)."""
        with autocast_off(self._device()):
            taps = self.tapped(self._input(images, resize))
            return torch.cat([packed_layer(t, self.layer_weights(k)) for k, t in enumerate(taps)], dim=1)

    def fc_features(self, images: torch.Tensor, resize: bool = True) -> torch.Tensor:
        """Images (0..255) -> the 4096-d fc7 activations after ReLU [N, fc_features], of the
        images resized to 224x224 (TF1 bilinear) unless `resize` is False."""
        with autocast_off(self._device()):
            x = self.features(self._input(images, resize).contiguous(memory_format=torch.channels_last))
            x = self.avgpool(x).flatten(1)
            return self.classifier[:5](x)  # fc6, ReLU, dropout (off), fc7, ReLU

    def lpips(self, a: torch.Tensor, b: torch.Tensor, resize: bool = False) -> torch.Tensor:
        """LPIPS distance of image batches a and b (0..255), one value per pair; the same as
        packing both, layer by layer, without holding every packed feature at once."""
        with autocast_off(self._device()):
            total = 0
            for k, t in enumerate(self.tapped(self._input(torch.cat([a, b]), resize))):
                packed_a, packed_b = packed_layer(t, self.layer_weights(k)).chunk(2)
                total = total + lpips_from_packed(packed_a, packed_b)
            return total

    def forward(self, images: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        """The published detector's call: `return_lpips` -> packed LPIPS features; otherwise
        (`return_features`, or no flag) -> the 4096-d fc features."""
        del return_features  # the fc features are what this detector returns without return_lpips
        if return_lpips:
            return self.lpips_features(images, resize=resize_images)
        return self.fc_features(images, resize=resize_images)


# ---------------------------------------------------------------------------------------
# From state dicts.


def lin_key(k: int) -> str:
    return f"lin{k}.model.1.weight"


def from_state_dicts(vgg: dict[str, torch.Tensor], lin: dict[str, torch.Tensor], where: str = "VGG16 weights",
                     lin_where: str = "LPIPS weights") -> VGG16:
    """Build the network that fits the torchvision VGG16 state dict `vgg` and the LPIPS
    weights `lin` (other keys there are ignored), and load their union strictly."""

    def not_vgg16(err: Exception) -> UserError:
        detail = " ".join(str(err).split()).removeprefix("Error(s) in loading state_dict for VGG16: ")
        return UserError(f"{where}: not VGG16 weights in torchvision's {VGG16_NAME} layout "
                         f"({(detail or type(err).__name__)[:200]}); "
                         f"use the file from {VGG16_URL}")

    try:
        net = VGG16(width=vgg["features.0.weight"].shape[0] / STAGES[0][0],
                    fc_features=vgg["classifier.0.weight"].shape[0], num_classes=vgg["classifier.6.weight"].shape[0])
    except (KeyError, AttributeError, IndexError, TypeError) as err:
        raise not_vgg16(err) from None
    weights = {}
    for k, channels in enumerate(net.tap_channels):
        weight = lin.get(lin_key(k))
        if weight is None or tuple(weight.shape) != (1, channels, 1, 1):
            found = "missing" if weight is None else f"of shape {list(weight.shape)}"
            raise UserError(f"{lin_where}: {lin_key(k)} is {found}, expected [1, {channels}, 1, 1] to fit the "
                            f"VGG16 weights; use the LPIPS v0.1 vgg.pth from {LPIPS_URL}")
        if (weight < 0).any():
            # LPIPS clamps these at zero after every training step; a squared distance cannot
            # carry a negative weight, so such a file is not LPIPS weights.
            raise UserError(f"{lin_where}: {lin_key(k)} has negative entries, which LPIPS weights never have; "
                            f"use the LPIPS v0.1 vgg.pth from {LPIPS_URL}")
        weights[lin_key(k)] = weight
    try:
        net.load_state_dict({**vgg, **weights}, strict=True)
    except RuntimeError as err:
        raise not_vgg16(err) from None
    return net


# ---------------------------------------------------------------------------------------
# Loading the weights: an argument, else an environment variable, else the published URL.


def read_state(path: Path, what: str, url: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pth (torch.load with weights_only: never runs code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types for files they cannot read
        raise UserError(f"{what} {path}: not a readable weights file ({type(err).__name__}); "
                        f"use the file from {url}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} {path}: holds a {type(state).__name__} that is not a state dict of tensors; "
                        f"use the file from {url}")
    return state


def load_weights(source: str, what: str, env: str, url: str) -> tuple[dict[str, torch.Tensor], str, Path]:
    path, digest = locate(source, f"the {what}", "detectors", missing=f"give the path of the file from {url} "
                          f"(set {env}=PATH)", hint=f"set {env}=PATH", known=KNOWN_SHA256_PREFIX, origin=url)
    return read_state(path, what, url), digest, path


def resolve_sources(vgg16_source: Source = None, lpips_source: Source = None) -> tuple[str, str]:
    """Each file: the argument, else its environment variable, else the published URL."""
    return (vgg16_source or os.environ.get(VGG16_ENV) or VGG16_URL,
            lpips_source or os.environ.get(LPIPS_ENV) or LPIPS_URL)


def load_vgg16(path_or_url: Source = None, lpips_path_or_url: Source = None,
               device: Union[str, torch.device] = "cpu") -> VGG16:
    """VGG16 with LPIPS weights from two local files or URLs (see `resolve_sources`), on `device`.

    Files are .pth (read with `torch.load(weights_only=True)`) or .safetensors. A download is
    cached under $CREPS_CACHE_DIR/detectors. `net.identity` names both files' contents.
    """
    vgg_source, lpips_source = resolve_sources(path_or_url, lpips_path_or_url)
    vgg_state, vgg_digest, vgg_path = load_weights(vgg_source, "VGG16 weights", VGG16_ENV, VGG16_URL)
    lin_state, lin_digest, lin_path = load_weights(lpips_source, "LPIPS weights", LPIPS_ENV, LPIPS_URL)
    net = from_state_dicts(vgg_state, lin_state, where=f"VGG16 weights {vgg_path}",
                           lin_where=f"LPIPS weights {lin_path}")
    both = hashlib.sha256(f"{vgg_digest}:{lin_digest}".encode()).hexdigest()
    net.identity = f"vgg16-lpips-sha256-{both}"
    net.weights_sha256 = {"vgg16": vgg_digest, "lpips": lin_digest}
    return net.to(device)
