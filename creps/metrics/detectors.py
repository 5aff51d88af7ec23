"""The feature networks the metrics read, by kind, each loaded once.

    detectors = Detectors(device)                  # defaults: $CREPS_DETECTOR / $CREPS_VGG16 ...
    detectors.require(["fid50k_full", "pr50k3"])   # load what these need now (fails early, offline)
    detectors.get("vgg16")

FID, KID and IS read the Inception-v3 pool features / logits; precision/recall and PPL the
VGG16 (its fc7 features, its LPIPS distance), as the published metrics do; the equivariance
metrics need no detector.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from creps.metrics.inception import load_detector
from creps.metrics.vgg16 import load_vgg16

INCEPTION = "inception"
VGG16 = "vgg16"
FAMILY_DETECTOR: dict[str, Optional[str]] = {
    "fid": INCEPTION, "kid": INCEPTION, "is": INCEPTION, "pr": VGG16, "ppl": VGG16, "eq": None,
}

Source = Union[str, torch.nn.Module, None]


class Detectors:
    """Detectors by kind: given as a module, or a path/URL, or None for the default source
    (environment variable, else the published URL, downloaded into the cache)."""

    def __init__(self, device: Union[str, torch.device] = "cpu", inception: Source = None, vgg16: Source = None,
                 lpips: Optional[str] = None):
        self.device = torch.device(device)
        self.sources: dict[str, Source] = {INCEPTION: inception, VGG16: vgg16}
        self.lpips = lpips  # the LPIPS linear weights that go with a VGG16 given by path/URL
        self.loaded: dict[str, torch.nn.Module] = {}

    def get(self, kind: str) -> torch.nn.Module:
        if kind not in self.loaded:
            source = self.sources[kind]
            if isinstance(source, torch.nn.Module):
                self.loaded[kind] = source.to(self.device)
            elif kind == INCEPTION:
                self.loaded[kind] = load_detector(source, device=self.device)
            else:
                self.loaded[kind] = load_vgg16(source, self.lpips, device=self.device)
        return self.loaded[kind]

    def require(self, families: Sequence[str]) -> "Detectors":
        """Load now every detector the metric families need (a missing file stops here)."""
        for family in families:
            self.for_family(family)
        return self

    def to(self, device: Union[str, torch.device]) -> "Detectors":
        self.device = torch.device(device)
        self.loaded = {kind: net.to(self.device) for kind, net in self.loaded.items()}
        return self

    def for_family(self, family: str) -> Optional[torch.nn.Module]:
        kind = FAMILY_DETECTOR[family]
        return None if kind is None else self.get(kind)
