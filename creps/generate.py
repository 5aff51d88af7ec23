"""Rendering API used by the CLI, the training loop (image grids) and metrics.

Seeds become latents exactly as the published `gen_images.py` does
(`np.random.RandomState(seed).randn(1, z_dim)`), so the same weights and seed give the same
image. CREPS generators render at any scale or explicit output size.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from creps.atomic import atomic_write_bytes
from creps.data.tool import png_bytes as encode_png
from creps.nets.generator import MappedGenerator


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
    """True when G's synthesis renders at another scale or size (CREPS): it takes `scale`."""
    synthesis = getattr(G, "synthesis", None)
    return synthesis is not None and "scale" in inspect.signature(synthesis.forward).parameters


def has_w_space(G: torch.nn.Module) -> bool:
    """True for a generator with a mapping network into W and a synthesis network reading ws
    [N, num_ws, w_dim] (every family here)."""
    return isinstance(G, MappedGenerator)


NOISE_BUFFER_SUFFIX = "noise_const"


def noise_buffers(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """G's stored per-pixel noise maps (what noise_mode='const' reads), by buffer name; empty
    for networks without noise inputs (CREPS, StyleGAN3)."""
    return {name: buf for name, buf in G.named_buffers() if name.endswith(NOISE_BUFFER_SUFFIX)}


def has_noise_inputs(G: torch.nn.Module) -> bool:
    """True when G adds per-pixel noise (StyleGAN2)."""
    return bool(noise_buffers(G))


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


@torch.no_grad()
def render(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
           noise_mode: str = "const", scale: Optional[float] = None,
           size: Optional[Union[int, Sequence[int]]] = None) -> torch.Tensor:
    """Images in [-1, 1]-ish float32 NCHW (unclamped), as G computes them."""
    device = next(G.parameters()).device
    kwargs = {"noise_mode": noise_mode}
    if scale not in (None, 1, 1.0) or size is not None:
        if not supports_any_scale(G):
            raise ValueError("only CREPS networks render at another scale or size")
        kwargs.update({"scale": scale} if size is None else {"size": size})
    return G(z.to(device), None if c is None else c.to(device), truncation_psi=truncation_psi, **kwargs).float()


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
