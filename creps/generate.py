"""Rendering API used by the CLI, the training loop (image grids) and metrics.

Seeds become latents exactly as the published `gen_images.py` does
(`np.random.RandomState(seed).randn(1, z_dim)`), so the same weights and seed give the same
image. Networks that can (CREPS) render at any scale or explicit output size; networks that
take a user transform (StyleGAN3) render translated and rotated.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from creps.atomic import atomic_write_bytes
from creps.data.tool import png_bytes
from creps.nets.registry import Capability, family_of
from creps.nets.stylegan3 import make_transform


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"seed range {part!r} runs backwards")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise ValueError(f"cannot read seed {part!r}; use e.g. 0-3,7")
    return seeds


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The published gen_images.py latent for a seed: float64 normal draws, shape [1, z_dim]."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def one_hot(class_idx: Optional[int], c_dim: int, batch: int = 1) -> Optional[torch.Tensor]:
    if c_dim == 0:
        return None
    if class_idx is None:
        raise ValueError(f"this is a conditional network: pick a class with --class (0 to {c_dim - 1})")
    if not 0 <= class_idx < c_dim:
        raise ValueError(f"--class={class_idx} is out of range for a network with {c_dim} classes")
    c = torch.zeros(batch, c_dim)
    c[:, class_idx] = 1
    return c


def describe(G: torch.nn.Module) -> str:
    """'a stylegan2 network (32x32)': what a user is told a network is."""
    return f"a {family_of(G).name} network ({G.img_resolution}x{G.img_resolution})"


def supports_any_scale(G: torch.nn.Module) -> bool:
    """Whether G renders at any scale or output size, and any window of it (CREPS)."""
    return family_of(G).can(Capability.ANY_SCALE)


def supports_user_transform(G: torch.nn.Module) -> bool:
    """Whether G takes a user translate / rotate of its output (StyleGAN3)."""
    return family_of(G).can(Capability.USER_TRANSFORM)


def has_noise_inputs(G: torch.nn.Module) -> bool:
    """Whether G's images depend on the noise mode (per-layer noise inputs: StyleGAN2)."""
    return family_of(G).can(Capability.NOISE_INPUTS)


def has_w_space(G: torch.nn.Module) -> bool:
    """Whether G is a generator with a mapping network into W and a synthesis network reading
    ws [N, num_ws, w_dim] (every generator family)."""
    try:
        return family_of(G).role == "G"
    except TypeError:  # not a network of any family
        return False


NOISE_BUFFER_SUFFIX = "noise_const"


def noise_buffers(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """G's stored per-pixel noise maps (what noise_mode='const' reads), by buffer name; empty
    for networks without noise inputs (CREPS, StyleGAN3)."""
    return {name: buf for name, buf in G.named_buffers() if name.endswith(NOISE_BUFFER_SUFFIX)}


@contextlib.contextmanager
def swapped_noise(G: torch.nn.Module, maps: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """G with the given tensors as its stored noise maps (by the names of `noise_buffers`),
    put back afterwards. The tensors themselves become the buffers, so gradients reach them."""
    stored = noise_buffers(G)
    unknown = sorted(set(maps) - set(stored))
    if unknown:
        raise KeyError(f"G has no noise maps named {unknown[:3]}")
    for name, value in maps.items():
        if tuple(value.shape) != tuple(stored[name].shape):
            raise ValueError(f"noise map {name} has shape {list(value.shape)}, G's has {list(stored[name].shape)}")
    owners = {name: G.get_submodule(name.rpartition(".")[0]) for name in maps}
    attr = {name: name.rpartition(".")[2] for name in maps}
    try:
        for name, value in maps.items():
            setattr(owners[name], attr[name], value)
        yield
    finally:
        for name in maps:
            setattr(owners[name], attr[name], stored[name])


def scale_kwargs(G: torch.nn.Module, scale: Optional[float] = None, size: Optional[Union[int, Sequence[int]]] = None,
                 region: Optional[Sequence[int]] = None) -> dict:
    """The synthesis arguments of a render at `scale` x native or at an explicit `size`, of the
    window `region` (top, left, height, width) of it; a ValueError naming the network when it
    renders at its native size only."""
    if scale in (None, 1, 1.0) and size is None and region is None:
        return {}
    if not supports_any_scale(G):
        raise ValueError(f"--scale/--size: this is {describe(G)}, which renders at its native "
                         f"{G.img_resolution}x{G.img_resolution} only (CREPS networks render at any size)")
    kwargs: dict = {"scale": scale} if size is None else {"size": size}
    if region is not None:
        kwargs["region"] = tuple(region)
    return kwargs


def output_size(G: torch.nn.Module, scale: Optional[float] = None,
                size: Optional[Union[int, Sequence[int]]] = None) -> tuple[int, int]:
    """(rows, cols) of G's images at `scale` or `size` (another than the native one: CREPS only)."""
    if scale_kwargs(G, scale, size):
        return G.synthesis.output_size(size, scale)
    return G.img_resolution, G.img_resolution


def transform_buffer(G: torch.nn.Module) -> torch.Tensor:
    """The 3x3 user-transform buffer of a network that takes one (StyleGAN3); ValueError otherwise."""
    family = family_of(G)
    if not family.can(Capability.USER_TRANSFORM):
        raise ValueError(f"--translate/--rotate: this is {describe(G)}; only StyleGAN3 networks take a user transform")
    return family.transform_buffer(G)


def set_transform(G: torch.nn.Module, translate: Sequence[float] = (0.0, 0.0), angle_deg: float = 0.0) -> None:
    """Render G translated by `translate` (image units: the image spans 1, +x moves the content
    right) and rotated by `angle_deg` degrees from now on, as the published gen_images.py sets
    it: the input takes inv(make_transform(...))."""
    buffer = transform_buffer(G)
    with torch.no_grad():
        buffer.copy_(torch.linalg.inv(make_transform(translate, angle_deg)).to(buffer))


@contextlib.contextmanager
def transformed(G: torch.nn.Module, translate: Sequence[float] = (0.0, 0.0), angle_deg: float = 0.0) -> Iterator[None]:
    """G renders translated and rotated inside the block; its previous transform is put back after."""
    buffer = transform_buffer(G)
    saved = buffer.detach().clone()
    try:
        set_transform(G, translate, angle_deg)
        yield
    finally:
        with torch.no_grad():
            buffer.copy_(saved)


@torch.no_grad()
def synthesize(G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const", scale: Optional[float] = None,
               size: Optional[Union[int, Sequence[int]]] = None, region: Optional[Sequence[int]] = None,
               **kwargs) -> torch.Tensor:
    """Images of ws [N, num_ws, w_dim], float32 NCHW in about [-1, 1] (unclamped); at any scale
    or size, or just the window `region` of it, for networks that can. `kwargs` go to the
    synthesis network (e.g. force_fp32)."""
    return G.synthesis(ws, noise_mode=noise_mode, **scale_kwargs(G, scale, size, region), **kwargs).float()


@torch.no_grad()
def render(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
           noise_mode: str = "const", scale: Optional[float] = None,
           size: Optional[Union[int, Sequence[int]]] = None, truncation_cutoff: Optional[int] = None,
           region: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Images of latents z (and labels c) as `synthesize` returns them."""
    ws = mapped_ws(G, z, c, truncation_psi, truncation_cutoff)
    return synthesize(G, ws, noise_mode=noise_mode, scale=scale, size=size, region=region)


@torch.no_grad()
def mapped_ws(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
              truncation_cutoff: Optional[int] = None) -> torch.Tensor:
    """The intermediate latents ws [N, num_ws, w_dim] of z (and labels c), truncated toward the
    average w by psi in the first `truncation_cutoff` rows (all rows when None)."""
    device = next(G.parameters()).device
    return G.mapped_ws(z.to(device), None if c is None else c.to(device), truncation_psi, truncation_cutoff)


def mix_styles(ws: torch.Tensor, donor: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """Style mixing: ws with its rows `layers` taken from `donor` (as the published
    style_mixing.py does for its column seeds)."""
    num_ws = ws.shape[1]
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise ValueError(f"style layers {bad} are out of range for a network with {num_ws} (0 to {num_ws - 1})")
    mixed = ws.clone()
    mixed[:, list(layers)] = donor.to(ws)[:, list(layers)]
    return mixed


def interpolate_ws(w0: torch.Tensor, w1: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` latents [steps, num_ws, w_dim] evenly spaced on the line from w0 to w1 ([1, num_ws,
    w_dim] each), both ends included."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=w0.dtype, device=w0.device).reshape(-1, 1, 1)
    return w0 + (w1.to(w0) - w0) * t


@torch.no_grad()
def render_tiles(G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const", scale: Optional[float] = None,
                 size: Optional[Union[int, Sequence[int]]] = None, region: Optional[Sequence[int]] = None,
                 tile: int = 256, max_pixels: int = 2**18,
                 before_each: Optional[Callable[[], None]] = None) -> np.ndarray:
    """The images of ws as uint8 NHWC, rendered piece by piece so that memory stays bounded:
    CREPS networks render `region` (default: the whole output at `scale` / `size`) in tiles of
    at most tile x tile pixels, as many images at a time as fit `max_pixels`; other networks
    render whole images, as many at a time as fit `max_pixels`. `before_each()` runs before
    every piece (raise from it to stop early). Equal to to_uint8 of the whole render."""
    if supports_any_scale(G):
        rows, cols = output_size(G, scale, size)
        window = region if region is not None else (0, 0, rows, cols)
        out = np.zeros((ws.shape[0], window[2], window[3], G.img_channels), dtype=np.uint8)
        per_call = max(1, max_pixels // (min(tile, window[2]) * min(tile, window[3])))
        for start in range(0, ws.shape[0], per_call):
            pieces = G.synthesis.tiles(ws[start: start + per_call], size=size, scale=scale, region=window, tile=tile)
            while True:
                if before_each is not None:
                    before_each()
                try:
                    placed, img = next(pieces)
                except StopIteration:
                    break
                top, left = placed.top - window[0], placed.left - window[1]
                out[start: start + per_call, top: top + placed.height, left: left + placed.width] = to_uint8(img)
        return out
    scale_kwargs(G, scale, size, region)  # native size and whole images only
    per_call = max(1, max_pixels // (G.img_resolution ** 2))
    parts = []
    for start in range(0, ws.shape[0], per_call):
        if before_each is not None:
            before_each()
        parts.append(to_uint8(synthesize(G, ws[start: start + per_call], noise_mode=noise_mode)))
    return np.concatenate(parts)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[-1, 1] float NCHW -> uint8 NHWC, rounding as the published gen_images.py does."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def write_png(path: Union[str, Path], array: np.ndarray) -> None:
    """uint8 HWC (C = 1 or 3) -> a PNG file, whole or not at all."""
    atomic_write_bytes(path, png_bytes(array))


# At most this many images (width, height) in the CPU's snapshot grids: the published grid of a
# 32x32 run holds 1024 images, minutes of rendering on a CPU at every snapshot.
CPU_GRID = (8, 4)


def grid_shape(resolution: int, device_type: str = "cuda") -> tuple[int, int]:
    """Grid (width, height) in images of the training grids: the published size on a GPU (about
    7680x4320 px, 7x4 to 32x32 images), at most CPU_GRID on a CPU."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if device_type != "cuda":
        gw, gh = min(gw, CPU_GRID[0]), min(gh, CPU_GRID[1])
    return gw, gh


def image_grid(images: np.ndarray, grid: tuple[int, int], drange: tuple[float, float] = (-1, 1)) -> np.ndarray:
    """N images (float NCHW in `drange`, or uint8 NCHW) -> one uint8 HWC grid, row-major."""
    gw, gh = grid
    if images.dtype != np.uint8:
        lo, hi = drange
        images = np.rint((images.astype(np.float32) - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    n, ch, h, w = images.shape
    if n < gw * gh:
        pad = np.zeros((gw * gh - n, ch, h, w), dtype=np.uint8)
        images = np.concatenate([images, pad])
    grid_img = images[: gw * gh].reshape(gh, gw, ch, h, w).transpose(0, 3, 1, 4, 2)
    return grid_img.reshape(gh * h, gw * w, ch)
