"""Projection: find the latent w that makes a generator reproduce a given image.

The method of StyleGAN2-ADA's projector (Karras et al. 2020): start from the mean w of the
mapping network, optimise w with Adam against the LPIPS (VGG16) distance between the render
and the target, both box-filtered to 256x256 when larger, with a learning rate that ramps up
over the first 5 % of the steps and down (half a cosine) over the last 25 %, and Gaussian
noise added to w whose size falls quadratically to zero at 75 % of the steps. Networks with
per-pixel noise inputs (StyleGAN2) get their noise maps optimised too, from fresh normal
draws, under a penalty on their spatial autocorrelation at every scale down to 8x8, and
are renormalised to zero mean and unit variance after every step. In W (the default) one w
drives every layer; with `w_plus` each layer gets its own (W+), which fits closer.

    result = project(G, target_uint8_chw, vgg=load_vgg16(device=device), settings=ProjectionSettings(w_plus=True))
    save_projected_w("projected_w.npz", result.w, result.noise)   # key 'w': [1, num_ws, w_dim]

Everything runs in float32. CREPS renders the projected w at any scale afterwards.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from tqdm import tqdm

from creps.atomic import atomic_write_bytes
from creps.data.dataset import to_mode
from creps.data.tool import center_crop
from creps.errors import UserError
from creps.generate import has_w_space, noise_buffers, swapped_noise, to_uint8
from creps.metrics.ppl import LPIPS_RESOLUTION, to_lpips_range
from creps.metrics.vgg16 import VGG16, lpips_from_packed
from creps.video import synthesize

W_STATS_SEED = 123  # the published projector draws the latents for w_avg / w_std from RandomState(123)
W_STATS_BATCH = 1000
NOISE_REG_MIN_SIZE = 8  # the noise penalty stops at maps of 8x8
NOISE_KEY_PREFIX = "noise."  # projected_w.npz: optimised noise maps beside 'w' (published readers ignore them)


@dataclass(frozen=True)
class ProjectionSettings:
    """The published projector's constants (StyleGAN2-ADA projector.py) and our two switches."""

    num_steps: int = 1000
    w_avg_samples: int = 10_000
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    adam_betas: tuple[float, float] = (0.9, 0.999)
    w_plus: bool = False  # one w per layer (W+) instead of one w for all
    seed: int = 303


@dataclass
class StepReport:
    """What the callback gets after each optimisation step."""

    step: int  # steps done, 1 .. num_steps
    num_steps: int
    w: torch.Tensor  # [1, num_ws, w_dim] after this step, detached
    distance: float  # LPIPS distance of this step's render (with its w noise)
    loss: float  # distance + weighted noise penalty
    learning_rate: float


@dataclass
class Projection:
    w: torch.Tensor  # [1, num_ws, w_dim] float32, on the CPU
    noise: dict[str, torch.Tensor]  # the optimised noise maps by buffer name (empty without noise inputs)
    image: torch.Tensor  # the final render [1, C, H, W], float32 in about [-1, 1], on the CPU
    lpips: float  # LPIPS distance of the final render (w without noise) to the target
    mse: float  # mean squared error of the uint8 render against the uint8 target (0..255 units)
    psnr: float  # 10 log10(255^2 / mse), dB
    steps: int
    seconds: float
    initial_lpips: float  # LPIPS distance of the starting point (w_avg) to the target
    history: list[float] = field(default_factory=list)  # distance at every step


# ---------------------------------------------------------------------------------------
# Formulas.


@torch.no_grad()
def w_statistics(G: torch.nn.Module, samples: int, c: Optional[torch.Tensor] = None,
                 seed: int = W_STATS_SEED) -> tuple[torch.Tensor, float]:
    """Mean of the mapped ws of `samples` latents [1, 1, w_dim], and their RMS distance from it
    (w_std: the root of the summed per-channel variances), as the projector starts from."""
    device = next(G.parameters()).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).float()
    ws = []
    for start in range(0, samples, W_STATS_BATCH):
        zb = z[start:start + W_STATS_BATCH].to(device)
        cb = None if c is None else c.to(device).expand(zb.shape[0], -1)
        ws.append(G.mapping(zb, cb)[:, 0].float())
    w = torch.cat(ws)
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = ((w - w_avg).square().sum() / samples).sqrt().item()
    return w_avg.unsqueeze(1), w_std


def learning_rate(t: float, s: ProjectionSettings) -> float:
    """Adam's step size at progress t in [0, 1): half-cosine ramp down over the last
    lr_rampdown_length, linear ramp up over the first lr_rampup_length, times the initial rate."""
    down = min(1.0, (1.0 - t) / s.lr_rampdown_length)
    down = 0.5 - 0.5 * math.cos(down * math.pi)
    up = min(1.0, t / s.lr_rampup_length)
    return s.initial_learning_rate * down * up


def w_noise_scale(t: float, w_std: float, s: ProjectionSettings) -> float:
    """Std of the noise added to w at progress t: w_std * factor * (1 - t / ramp)^2, zero after the ramp."""
    return w_std * s.initial_noise_factor * max(0.0, 1.0 - t / s.noise_ramp_length) ** 2


def noise_autocorrelation_penalty(maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the maps and their 2x box-filtered pyramids (down to 8x8) of the squared mean
    product of each map with itself shifted one pixel (with wrap-around), across and down."""
    total = 0.0
    for noise in maps.values():
        x = noise[None, None]
        while True:
            across = (x * torch.roll(x, shifts=1, dims=3)).mean()
            down = (x * torch.roll(x, shifts=1, dims=2)).mean()
            total = total + across.square() + down.square()
            if x.shape[2] <= NOISE_REG_MIN_SIZE:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return torch.as_tensor(total)


@torch.no_grad()
def normalise_noise_(maps: Mapping[str, torch.Tensor]) -> None:
    """Each noise map in place to zero mean and unit mean square."""
    for noise in maps.values():
        noise -= noise.mean()
        noise *= noise.square().mean().rsqrt()


def at_most_256(pixels: torch.Tensor) -> torch.Tensor:
    """NCHW images larger than 256x256 area-resized to 256x256 (what VGG16 reads best); others as they are."""
    if pixels.shape[2] > LPIPS_RESOLUTION:
        return F.interpolate(pixels, size=(LPIPS_RESOLUTION, LPIPS_RESOLUTION), mode="area")
    return pixels


def psnr(mse: float, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error: 10 log10(peak^2 / mse)."""
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def broadcast_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """w [1, 1, w_dim] (W) -> [1, num_ws, w_dim]; a W+ w [1, num_ws, w_dim] is returned as is."""
    return w.expand(-1, num_ws, -1) if w.shape[1] == 1 else w


# ---------------------------------------------------------------------------------------
# Targets.


def prepare_target(img: PIL.Image.Image, resolution: int, channels: int) -> np.ndarray:
    """A decoded image -> the target: 8-bit gray (1 channel) or RGB (alpha dropped), the largest
    centred square resized to resolution x resolution (Lanczos), uint8 [C, H, W]."""
    img = center_crop(to_mode(img, channels), (resolution, resolution))
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------
# The optimisation.


def lpips_distance(G: torch.nn.Module, vgg: VGG16, target_features: torch.Tensor,
                   ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(LPIPS distance of G's render of ws to the target, summed over the batch; the render)."""
    image = G.synthesis(broadcast_ws(ws, G.num_ws), noise_mode="const").float()
    return lpips_from_packed(target_features, vgg.lpips_features(at_most_256(to_lpips_range(image)))).sum(), image


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def project(G: torch.nn.Module, target: torch.Tensor, *, vgg: VGG16, settings: ProjectionSettings = ProjectionSettings(),
            c: Optional[torch.Tensor] = None, callback: Optional[Callable[[StepReport], None]] = None,
            progress: bool = True) -> Projection:
    """Project `target` (uint8 [C, H, W], G's channels and resolution) into G's W (or W+) space.

    G is left as it was (its noise maps are swapped for the optimised ones only while this
    runs). `c`: the label [1, c_dim] of a conditional network. `callback(report)` runs after
    every step (progress, video frames)."""
    if not has_w_space(G):
        raise UserError(f"{type(G).__name__} is not a generator with a W space (mapping + synthesis); "
                        "give a generator network")
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if tuple(target.shape) != expected:
        raise ValueError(f"the target must have shape {list(expected)} (uint8 C, H, W), got {list(target.shape)}")
    if G.c_dim and c is None:
        raise ValueError(f"a conditional network needs a label c of shape [1, {G.c_dim}]")
    s = settings
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    start_time = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(s.seed)
    try:
        w_avg, w_std = w_statistics(G, s.w_avg_samples, c)
        target_features = vgg.lpips_features(at_most_256(target.to(device)[None].float()))
        w_opt = w_avg.repeat(1, G.num_ws if s.w_plus else 1, 1).clone().requires_grad_(True)
        maps = {name: torch.randn(buf.shape, generator=gen, device=device, dtype=torch.float32).requires_grad_(True)
                for name, buf in noise_buffers(G).items()}
        optimizer = torch.optim.Adam([w_opt, *maps.values()], betas=s.adam_betas, lr=s.initial_learning_rate)

        history = []
        with swapped_noise(G, maps):
            with torch.no_grad():
                initial = lpips_distance(G, vgg, target_features, w_opt)[0].item()
            for step in tqdm(range(s.num_steps), desc="projecting", unit="step", disable=not progress,
                             dynamic_ncols=True, leave=False):
                t = step / s.num_steps
                lr = learning_rate(t, s)
                set_learning_rate(optimizer, lr)
                w_noise = torch.randn(w_opt.shape, generator=gen, device=device) * w_noise_scale(t, w_std, s)
                dist, _ = lpips_distance(G, vgg, target_features, w_opt + w_noise)
                loss = dist + noise_autocorrelation_penalty(maps) * s.regularize_noise_weight if maps else dist
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                normalise_noise_(maps)
                history.append(dist.item())
                if callback is not None:
                    callback(StepReport(step + 1, s.num_steps, broadcast_ws(w_opt.detach(), G.num_ws).clone(),
                                        history[-1], loss.item(), lr))
            with torch.no_grad():
                final_dist, image = lpips_distance(G, vgg, target_features, w_opt)
    finally:
        G.train(was_training)
    mse = float(np.square(to_uint8(image)[0].astype(np.float64) - target.cpu().numpy().transpose(1, 2, 0)).mean())
    return Projection(w=broadcast_ws(w_opt.detach(), G.num_ws).cpu().clone(),
                      noise={name: m.detach().cpu().clone() for name, m in maps.items()},
                      image=image.cpu(), lpips=final_dist.item(), mse=mse, psnr=psnr(mse), steps=s.num_steps,
                      seconds=time.perf_counter() - start_time, initial_lpips=initial, history=history)


@torch.no_grad()
def render_ws(G: torch.nn.Module, ws: torch.Tensor, noise: Optional[Mapping[str, torch.Tensor]] = None,
              noise_mode: str = "const", scale: Optional[float] = None, size=None) -> torch.Tensor:
    """Images of ws [N, num_ws, w_dim] (float32 NCHW, about [-1, 1]), with the given noise maps
    in place of G's stored ones (what noise_mode='const' reads); CREPS at any scale or size."""
    with projected_noise(G, noise):
        return synthesize(G, ws.to(next(G.parameters()).device), noise_mode, scale, size)


@contextlib.contextmanager
def projected_noise(G: torch.nn.Module, noise: Optional[Mapping[str, torch.Tensor]] = None) -> Iterator[None]:
    """G with a projection's noise maps (moved to G's device) in place of its stored ones inside
    the block, so that any render there (render_ws, or the studio's tiles) reads them."""
    device = next(G.parameters()).device
    with swapped_noise(G, {name: m.to(device) for name, m in (noise or {}).items()}):
        yield


# ---------------------------------------------------------------------------------------
# projected_w.npz: the published layout (key 'w', float32 [N, num_ws, w_dim]) plus, for
# networks with noise inputs, the optimised noise maps under 'noise.<buffer name>'.


def projected_w_bytes(w: torch.Tensor, noise: Optional[Mapping[str, torch.Tensor]] = None) -> bytes:
    arrays = {"w": w.detach().cpu().float().numpy()}
    arrays.update({NOISE_KEY_PREFIX + name: m.detach().cpu().float().numpy() for name, m in (noise or {}).items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_projected_w(path: Union[str, Path], w: torch.Tensor,
                     noise: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Write projected_w.npz whole or not at all."""
    atomic_write_bytes(path, projected_w_bytes(w, noise))


def load_projected_w(path: Union[str, Path], G: torch.nn.Module,
                     name: Optional[str] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ws [N, num_ws, w_dim] (float32) and the noise maps stored with them (only those G has),
    from a projected_w.npz; anything else is a one-line UserError that starts with `name`
    (default: --projected-w=PATH)."""
    path = Path(path)
    name = name or f"--projected-w={path}"
    if not path.is_file():
        raise UserError(f"{name}: no such file; give the projected_w.npz that projector.py wrote")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # numpy raises several types for a file it cannot read
        raise UserError(f"{name}: not a readable .npz file ({type(err).__name__}); "
                        "give the projected_w.npz that projector.py wrote") from None
    if "w" not in arrays:
        raise UserError(f"{name}: has no array 'w' (it has {sorted(arrays)[:5]}); "
                        "give the projected_w.npz that projector.py wrote")
    w = arrays["w"]
    want = (G.num_ws, G.w_dim)
    if w.ndim != 3 or not w.shape[0] or tuple(w.shape[1:]) != want or not np.issubdtype(w.dtype, np.floating):
        raise UserError(f"{name}: 'w' is {w.dtype} of shape {list(w.shape)}, this network needs "
                        f"floats of shape [N, {want[0]}, {want[1]}] (N >= 1); project into this network first")
    stored = noise_buffers(G)
    noise = {}
    for key, value in arrays.items():
        buffer = key[len(NOISE_KEY_PREFIX):]
        if key.startswith(NOISE_KEY_PREFIX) and buffer in stored and tuple(value.shape) == tuple(stored[buffer].shape):
            noise[buffer] = torch.from_numpy(value).float()
    return torch.from_numpy(w).float(), noise
