"""Latent-interpolation videos: seeds -> keyframe latents -> a looping spline of w -> frames.

The seeds and latents follow the published `gen_video.py`: the seed list is repeated to fill
grid_h * grid_w * num_keyframes entries (then optionally shuffled), read as
[grid_h, grid_w, num_keyframes] (each grid cell takes consecutive seeds), each seed's
z is `np.random.RandomState(seed).randn(z_dim)`, and keyframe k sits at time k with
`w_frames` frames per keyframe, frame i at time i / w_frames.

Interpolation is a *periodic* cubic spline through the keyframes (C2, closing the loop
exactly). The published script instead fits scipy's `interp1d(kind='cubic')` (a not-a-knot
spline) through the keyframes tiled five times, which approximates this periodic spline;
both pass through every keyframe, and in between they differ by at most about
(2 - sqrt(3)) ** (2 * num_keyframes - 1) times the keyframes' spread (max - min): identical
for one keyframe; measured 9e-3 for two, 3e-5 for four, 6e-10 for eight (tests/test_gen_video.py).
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from creps.generate import image_grid, synthesize, to_uint8

Grid = tuple[int, int]  # (width, height) in images, as --grid=WxH
Size = Union[int, Sequence[int]]


def keyframe_count(num_seeds: int, grid: Grid, num_keyframes: Optional[int] = None) -> int:
    """Keyframes per grid cell: given, or as many as the seeds fill (they must fill the grid evenly)."""
    cells = grid[0] * grid[1]
    if num_keyframes is not None:
        if num_keyframes < 1:
            raise ValueError(f"the number of keyframes must be at least 1, got {num_keyframes}")
        return num_keyframes
    if num_seeds == 0 or num_seeds % cells != 0:
        raise ValueError(f"{num_seeds} seeds do not fill a {grid[0]}x{grid[1]} grid evenly ({cells} cells); "
                         f"give a multiple of {cells} seeds or a number of keyframes")
    return num_seeds // cells


def arrange_seeds(seeds: Sequence[int], grid: Grid, num_keyframes: int,
                  shuffle_seed: Optional[int] = None) -> np.ndarray:
    """Seeds of each cell's keyframes, int64 [grid_h, grid_w, num_keyframes]: the list repeated
    to fill the grid, shuffled by RandomState(shuffle_seed) when given (published order)."""
    grid_w, grid_h = grid
    total = grid_w * grid_h * num_keyframes
    filled = np.asarray([seeds[i % len(seeds)] for i in range(total)], dtype=np.int64)
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(filled)
    return filled.reshape(grid_h, grid_w, num_keyframes)


def keyframe_zs(seeds: np.ndarray, z_dim: int) -> torch.Tensor:
    """z of each seed, float64 [*seeds.shape, z_dim]: RandomState(seed).randn(z_dim)."""
    flat = [np.random.RandomState(int(seed)).randn(z_dim) for seed in np.ravel(seeds)]
    return torch.from_numpy(np.stack(flat).reshape(*np.shape(seeds), z_dim))


@torch.no_grad()
def keyframe_ws(G: torch.nn.Module, seeds: np.ndarray, c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None) -> torch.Tensor:
    """Mapped latents of each seed, float32 on G's device, [*seeds.shape, num_ws, w_dim].
    `c`: one label row [1, c_dim] used for every seed (conditional networks), or None."""
    device = next(G.parameters()).device
    zs = keyframe_zs(seeds, G.z_dim).reshape(-1, G.z_dim).to(device)
    labels = None if c is None else c.to(device).expand(zs.shape[0], -1)
    ws = G.mapping(zs, labels, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    return ws.float().reshape(*np.shape(seeds), *ws.shape[1:])


class LoopSpline:
    """The periodic cubic spline through values[k] at t = k (k = 0..K-1), period K.

    Unit knot spacing: with second derivatives m, continuity of the first derivative at
    each knot reads m[k-1] + 4 m[k] + m[k+1] = 6 (y[k-1] - 2 y[k] + y[k+1]) (indices mod K),
    a circulant system, solved in the Fourier basis where it is diagonal (4 + 2 cos(2 pi j / K)).
    """

    def __init__(self, values: np.ndarray):
        y = np.asarray(values, dtype=np.float64)
        if y.ndim < 1 or y.shape[0] < 1:
            raise ValueError("a loop spline needs at least one keyframe")
        self.values = y
        self.period = y.shape[0]
        self.second = periodic_second_derivatives(y)

    def __call__(self, t: Union[float, np.ndarray]) -> np.ndarray:
        """Spline values at times t (scalar -> values[0].shape; array [T] -> [T, ...])."""
        t = np.asarray(t, dtype=np.float64)
        base = np.floor(t)
        u = (t - base).reshape(t.shape + (1,) * (self.values.ndim - 1))
        k0 = base.astype(np.int64) % self.period
        k1 = (k0 + 1) % self.period
        return cubic_segment(self.values[k0], self.values[k1], self.second[k0], self.second[k1], u)


def periodic_second_derivatives(y: np.ndarray) -> np.ndarray:
    """Second derivatives at the knots of the C2 periodic cubic spline through y (unit spacing)."""
    count = y.shape[0]
    rhs = 6.0 * (np.roll(y, 1, axis=0) - 2.0 * y + np.roll(y, -1, axis=0))
    freq = np.arange(count // 2 + 1)
    diagonal = 4.0 + 2.0 * np.cos(2.0 * math.pi * freq / count)
    spectrum = np.fft.rfft(rhs, axis=0) / diagonal.reshape((-1,) + (1,) * (y.ndim - 1))
    return np.fft.irfft(spectrum, n=count, axis=0)


def cubic_segment(y0: np.ndarray, y1: np.ndarray, m0: np.ndarray, m1: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Cubic on [0, 1] with end values y0, y1 and end second derivatives m0, m1, at u."""
    v = 1.0 - u
    return v * y0 + u * y1 + ((v ** 3 - v) * m0 + (u ** 3 - u) * m1) / 6.0


def interpolate_loop(keyframes: np.ndarray, t: Union[float, np.ndarray]) -> np.ndarray:
    """Values of the periodic cubic spline through keyframes[k] at t = k, at times t."""
    return LoopSpline(keyframes)(t)


def frame_times(num_keyframes: int, w_frames: int) -> np.ndarray:
    """Time of every frame: frame i at i / w_frames, num_keyframes * w_frames frames in all."""
    return np.arange(num_keyframes * w_frames, dtype=np.float64) / w_frames


@torch.no_grad()
def grid_frames(G: torch.nn.Module, ws: torch.Tensor, w_frames: int, noise_mode: str = "const",
                scale: Optional[float] = None, size: Optional[Size] = None, batch_size: Optional[int] = 1,
                progress: bool = True) -> Iterator[np.ndarray]:
    """The video's frames, uint8 HWC, for keyframe latents ws [grid_h, grid_w, K, num_ws, w_dim]:
    each cell loops through its K keyframes; cells laid out row-major (cell [0, 0] top left).
    `batch_size`: images per synthesis call (None: a whole frame at once)."""
    grid_h, grid_w, count = ws.shape[:3]
    cells = grid_h * grid_w
    splines = LoopSpline(ws.detach().cpu().double().numpy().reshape(cells, count, -1).swapaxes(0, 1))
    step = cells if batch_size is None else max(1, batch_size)
    times = frame_times(count, w_frames)
    for t in tqdm(times, desc="rendering", unit="frame", disable=not progress, dynamic_ncols=True):
        frame_ws = torch.from_numpy(splines(t)).reshape(cells, *ws.shape[3:]).to(ws.device, torch.float32)
        images = [to_uint8(synthesize(G, frame_ws[i:i + step], noise_mode, scale, size))
                  for i in range(0, cells, step)]
        yield image_grid(np.concatenate(images).transpose(0, 3, 1, 2), (grid_w, grid_h))
