"""Rendering API used by the CLI, the training loop (image grids) and metrics.

Seeds become latents exactly as the published `gen_images.py` does
(`np.random.RandomState(seed).randn(1, z_dim)`), so the same weights and seed give the same
image. CREPS generators render at any scale or explicit output size.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from creps.atomic import atomic_write_bytes
from creps.data.tool import png_bytes as encode_png


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


def supports_any_scale(G: torch.nn.Module) -> bool:
    """Whether G renders at any scale or output size, and any window of it (CREPS)."""
    return callable(getattr(getattr(G, "synthesis", None), "tiles", None))


def supports_user_transform(G: torch.nn.Module) -> bool:
    """Whether G takes a user translate / rotate of its output (StyleGAN3)."""
    synthesis_input = getattr(getattr(G, "synthesis", None), "input", None)
    return isinstance(getattr(synthesis_input, "transform", None), torch.Tensor)


def has_noise_inputs(G: torch.nn.Module) -> bool:
    """Whether G's images depend on the noise mode (per-layer noise inputs: StyleGAN2)."""
    return any(name.endswith("noise_const") for name, _ in G.named_buffers())


def set_user_transform(G: torch.nn.Module, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> None:
    """From now on G renders its output translated by `translate` (image units: the image spans
    1, +x moves the content right) and rotated by `rotate` degrees. ValueError for networks
    without a user transform (see supports_user_transform)."""
    if not supports_user_transform(G):
        raise ValueError("only StyleGAN3 networks take a translate/rotate transform")
    from creps.nets.stylegan3 import set_user_transform as store_transform

    store_transform(G, translate, rotate)


@contextlib.contextmanager
def user_transform(G: torch.nn.Module, translate: Sequence[float] = (0.0, 0.0),
                   rotate: float = 0.0) -> Iterator[None]:
    """G renders translated and rotated inside the block; its previous transform is put back after."""
    if not supports_user_transform(G):
        raise ValueError("only StyleGAN3 networks take a translate/rotate transform")
    buffer = G.synthesis.input.transform
    saved = buffer.detach().clone()
    try:
        set_user_transform(G, translate, rotate)
        yield
    finally:
        with torch.no_grad():
            buffer.copy_(saved)


def output_size(G: torch.nn.Module, scale: Optional[float] = None,
                size: Optional[Union[int, Sequence[int]]] = None) -> tuple[int, int]:
    """(rows, cols) of G's images at `scale` or `size` (another than the native one: CREPS only)."""
    if supports_any_scale(G):
        return G.synthesis.output_size(size, scale)
    if scale not in (None, 1, 1.0) or size is not None:
        raise ValueError("only CREPS networks render at another scale or size")
    return G.img_resolution, G.img_resolution


@torch.no_grad()
def render(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
           noise_mode: str = "const", scale: Optional[float] = None,
           size: Optional[Union[int, Sequence[int]]] = None, truncation_cutoff: Optional[int] = None,
           region: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Images in [-1, 1]-ish float32 NCHW (unclamped), as G computes them. `region` (top, left,
    height, width; CREPS only) renders just that window of the output at `scale` / `size`."""
    device = next(G.parameters()).device
    kwargs = {"noise_mode": noise_mode}
    if scale not in (None, 1, 1.0) or size is not None or region is not None:
        if not supports_any_scale(G):
            raise ValueError("only CREPS networks render at another scale or size, or a region")
        kwargs.update({"scale": scale} if size is None else {"size": size})
        if region is not None:
            kwargs["region"] = tuple(region)
    return G(z.to(device), None if c is None else c.to(device), truncation_psi=truncation_psi,
             truncation_cutoff=truncation_cutoff, **kwargs).float()


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
    if region is not None:
        raise ValueError("only CREPS networks render a region of their output")
    output_size(G, scale, size)  # native only
    per_call = max(1, max_pixels // (G.img_resolution ** 2))
    parts = []
    for start in range(0, ws.shape[0], per_call):
        if before_each is not None:
            before_each()
        parts.append(to_uint8(G.synthesis(ws[start: start + per_call], noise_mode=noise_mode).float()))
    return np.concatenate(parts)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[-1, 1] float NCHW -> uint8 NHWC, rounding as the published gen_images.py does."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 HWC (C = 1 or 3) -> PNG file contents."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return encode_png(Image.fromarray(array))


def write_png(path: Union[str, Path], array: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(array))


def grid_shape(resolution: int, n_max: Optional[int] = None) -> tuple[int, int]:
    """Grid (width, height) in images of the published training grids: about 7680x4320 px."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
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
