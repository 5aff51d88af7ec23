"""Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture"), as the
published StyleGAN3 metric ppl2_wend computes it.

Each sample is a pair of nearby points on a path through latent space: two latents z0, z1 (and,
for conditional networks, one label for both), a position t on the path between them (t = 0
for 'end' sampling, uniform in [0, 1) for 'full') and t + epsilon. The path runs in W (linear
interpolation of the mapped ws) or in Z (spherical interpolation of the latents, then mapping).
Both points are rendered with the stored noise maps ('const', redrawn for every batch) in
float32; images above 256x256 are box-filtered down to 256, mapped to 0..255 without clamping
or rounding, and compared with LPIPS (VGG16). A sample's path length is that distance divided
by epsilon^2; the metric is the mean of the samples between the 1st and 99th percentiles.

ppl2_wend: W space, 'end' sampling, epsilon 1e-4, no crop. The older ppl_zfull, ppl_wfull,
ppl_zend and ppl_wend names crop to the centre of the image first, as published.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from creps.generate import noise_buffers, supports_any_scale
from creps.metrics.features import (Evaluation, eval_mode, full_precision, generator_batch_size, progress_bar,
                                    random_labels)
from creps.metrics.spec import MetricSpec
from creps.metrics.vgg16 import VGG16, load_vgg16, lpips_from_packed
from creps.parallel import SINGLE, World, gather_objects, owns

EPSILON = 1e-4
LPIPS_RESOLUTION = 256  # images larger than this are box-filtered down to it
LOW_PERCENTILE, HIGH_PERCENTILE = 1, 99


@dataclass(frozen=True)
class PPLSettings:
    space: str = "w"  # 'w': lerp the mapped ws; 'z': slerp the latents, then map
    sampling: str = "end"  # 'end': t = 0; 'full': t uniform in [0, 1)
    crop: bool = False  # centre crop before LPIPS (the older ppl_* metrics)
    epsilon: float = EPSILON


_SUFFIX = re.compile(r"_(?P<space>[zw])(?P<sampling>full|end)")


def settings_for(name: str) -> PPLSettings:
    """ppl2_wend (and numbered variants) -> W, end, no crop; ppl_{z,w}{full,end} -> those, cropped."""
    m = _SUFFIX.search(name)
    if m is None:
        return PPLSettings()
    return PPLSettings(space=m.group("space"), sampling=m.group("sampling"), crop=name.startswith("ppl_"))


# ---------------------------------------------------------------------------------------
# Formulas.


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation a + t (b - a), with torch.lerp's rounding as published."""
    return torch.lerp(a, b, t)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of a and b (last axis): the unit vector
    at angle t * angle(a, b) from a/|a|, towards b/|b|."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos_angle = (a * b).sum(dim=-1, keepdim=True)
    towards_b = b - cos_angle * a  # the part of b orthogonal to a
    towards_b = towards_b / towards_b.norm(dim=-1, keepdim=True)
    turned = t * torch.acos(cos_angle)
    out = a * torch.cos(turned) + towards_b * torch.sin(turned)
    return out / out.norm(dim=-1, keepdim=True)


def path_positions(count: int, sampling: str, generator: torch.Generator) -> torch.Tensor:
    """Positions t on the paths: drawn uniform in [0, 1) and zeroed for 'end' sampling."""
    return torch.rand([count], generator=generator) * (1.0 if sampling == "full" else 0.0)


def centre_crop(img: torch.Tensor) -> torch.Tensor:
    """The published face crop of a square image: rows 3/8 .. 7/8, columns 2/8 .. 6/8."""
    if img.shape[2] != img.shape[3]:
        raise ValueError(f"the PPL centre crop needs square images, got {list(img.shape[2:])}")
    eighth = img.shape[2] // 8
    return img[:, :, eighth * 3: eighth * 7, eighth * 2: eighth * 6]


def box_downsample(img: torch.Tensor, size: int = LPIPS_RESOLUTION) -> torch.Tensor:
    """Images larger than `size` -> mean over factor x factor blocks, factor = side // size."""
    factor = img.shape[2] // size
    return F.avg_pool2d(img, factor) if factor > 1 else img


def to_lpips_range(img: torch.Tensor) -> torch.Tensor:
    """G's [-1, 1] images -> 0..255, unclamped and unrounded: (x + 1) * 255 / 2."""
    return (img + 1) * (255 / 2)


def path_length(lpips_distance: torch.Tensor, epsilon: float) -> torch.Tensor:
    """A sample's path length: the LPIPS distance of its two points over epsilon^2."""
    return lpips_distance / epsilon ** 2


def filtered_mean(values: np.ndarray) -> float:
    """Mean of the values between the 1st percentile (rounded down to a sample) and the 99th
    (rounded up to a sample), both kept."""
    values = np.asarray(values)
    lo = np.percentile(values, LOW_PERCENTILE, method="lower")
    hi = np.percentile(values, HIGH_PERCENTILE, method="higher")
    kept = values[(values >= lo) & (values <= hi)]
    return float(kept.astype(np.float64).mean())


# ---------------------------------------------------------------------------------------
# Sampling.


@contextlib.contextmanager
def redrawn_const_noise(G: torch.nn.Module) -> Iterator[Callable[[torch.Generator], None]]:
    """Yields redraw(generator), which fills G's stored noise maps with fresh normal draws;
    the maps are put back afterwards."""
    buffers = list(noise_buffers(G).values())
    saved = [buf.detach().clone() for buf in buffers]

    def redraw(generator: torch.Generator) -> None:
        for buf in buffers:
            buf.copy_(torch.randn(buf.shape, generator=generator).to(buf.device, buf.dtype))

    try:
        yield redraw
    finally:
        with torch.no_grad():
            for buf, value in zip(buffers, saved):
                buf.copy_(value)


def endpoint_ws(G: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor, c: Optional[torch.Tensor],
                t: torch.Tensor, settings: PPLSettings) -> torch.Tensor:
    """ws of both path points, stacked [points at t; points at t + eps], each [N, num_ws, w_dim]."""
    c2 = None if c is None else torch.cat([c, c])
    if settings.space == "w":
        w0, w1 = G.mapping(torch.cat([z0, z1]), c2).chunk(2)
        tw = t.view(-1, 1, 1)
        return torch.cat([lerp(w0, w1, tw), lerp(w0, w1, tw + settings.epsilon)])
    zt = torch.cat([slerp(z0, z1, t.view(-1, 1)), slerp(z0, z1, t.view(-1, 1) + settings.epsilon)])
    return G.mapping(zt, c2)


def lpips_distances(vgg: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
    """LPIPS distance between the first and second half of a batch of 0..255 images. Any
    module with the published detector's call works; ours skips packing every layer at once."""
    if isinstance(vgg, VGG16):
        return vgg.lpips(*img.chunk(2))
    return lpips_from_packed(*vgg(img, resize_images=False, return_lpips=True).chunk(2))


def lpips_input(img: torch.Tensor, crop: bool) -> torch.Tensor:
    """Rendered [-1, 1] images -> what LPIPS reads: cropped (optionally), at most 256 px, 0..255, RGB."""
    if crop:
        img = centre_crop(img)
    img = to_lpips_range(box_downsample(img))
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img


@torch.no_grad()
def sample_path_lengths(G: torch.nn.Module, vgg: torch.nn.Module, count: int, settings: PPLSettings = PPLSettings(),
                        *, device: torch.device, labels: Optional[np.ndarray] = None, batch_size: int = 64,
                        seed: int = 0, scale: Optional[float] = None, progress: bool = True,
                        world: World = SINGLE) -> np.ndarray:
    """`count` path-length samples of G (float32 [count]). Latents, positions and noise maps are
    drawn from torch.Generator().manual_seed(seed) on the CPU (the same on every device);
    labels of random dataset items from np.random.RandomState(seed). `vgg` is our VGG16 or any
    module called as the published detector: vgg(images_0_255, resize_images=False, return_lpips=True).
    Under many processes each rank measures its turn of the batches (the draws are the same for
    any number of processes) and every rank gets every sample, in order."""
    if G.c_dim and labels is None:
        raise ValueError("a conditional generator needs dataset labels to sample from")
    synthesis_kwargs = {"noise_mode": "const", "force_fp32": True}
    if scale not in (None, 1, 1.0) and supports_any_scale(G):
        synthesis_kwargs["scale"] = scale
    gen = torch.Generator().manual_seed(seed)
    label_rng = np.random.RandomState(seed)
    pairs = max(1, generator_batch_size(G, batch_size, scale) // 2)
    out = []
    with eval_mode(G), redrawn_const_noise(G) as redraw, full_precision(), \
            progress_bar(count, "ppl sampling", progress) as bar:
        for index, start in enumerate(range(0, count, pairs)):
            n = min(pairs, count - start)
            t = path_positions(n, settings.sampling, gen)
            z0, z1 = torch.randn([2 * n, G.z_dim], generator=gen).chunk(2)
            c = random_labels(labels, n, label_rng).to(device) if G.c_dim else None
            redraw(gen)
            if not owns(index, world):
                continue
            ws = endpoint_ws(G, z0.to(device), z1.to(device), c, t.to(device), settings)
            img = lpips_input(G.synthesis(ws, **synthesis_kwargs).float(), settings.crop)
            out.append((start, path_length(lpips_distances(vgg, img), settings.epsilon).cpu()))
            bar.update(n * world.size)
    everything = sorted((part for parts in gather_objects(out, world) for part in parts), key=lambda part: part[0])
    return torch.cat([values for _, values in everything]).numpy()


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    """{spec.name: PPL} of ev.G over spec.num_gen samples; the detector is ev.detector when it
    is a VGG16, else the default VGG16 weights ($CREPS_VGG16, $CREPS_LPIPS or the URLs)."""
    vgg = ev.detector if isinstance(ev.detector, VGG16) else load_vgg16(device=ev.device)
    values = sample_path_lengths(ev.G, vgg, spec.num_gen, settings_for(spec.name), device=ev.device,
                                 labels=ev.labels(), batch_size=ev.batch_size, seed=ev.seed, scale=ev.scale,
                                 progress=ev.progress, world=ev.world)
    return {spec.name: filtered_mean(values)}
