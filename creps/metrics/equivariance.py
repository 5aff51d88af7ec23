"""Equivariance metrics of "Alias-Free Generative Adversarial Networks" (EQ-T, EQ-T_frac,
EQ-R) and a scale-consistency analogue for CREPS (EQ-S).

Each test renders every latent twice with the same w and noise_mode='const', and reports
the PSNR (dB, pixel range [-1, 1]) between the two renders over the pixels both define,
from the squared error and pixel count summed over all images:

- eqt<N>_int: the StyleGAN3 input is translated by t (a whole number of pixels per axis);
  the reference is the untransformed render shifted by the same pixels (EQ-T, Appendix E.1);
- eqt<N>_frac: t is any real translation; the reference is shifted with a Lanczos-windowed
  sinc interpolator (EQ-T_frac, Appendix E.2);
- eqr<N>: the input is rotated by an angle; the reference is the untransformed render rotated
  through a band-limited 4x upsampling, and the rotated render is filtered to the same
  oriented pass band (EQ-R, Appendix E.3);
- eqs<N> (ours, CREPS only): the render at scale 2 brought down to the native grid, against
  the native render. The low-pass is a sinc with its cutoff at the native Nyquist frequency
  (0.5 cycles per native pixel) under a Kaiser window 6 native pixels in radius, its beta from
  Kaiser's formula for a 0.25 cycles/pixel transition band (about 51 dB stop-band attenuation);
  it is evaluated at the exact native sample positions (CREPS lines run from 0 to 1 inclusive,
  so the two grids do not nest) and the 6 border pixels per side it cannot fully see are left
  out. A renderer that samples one band-limited image at any scale scores high; one whose
  native render aliases (content above the native Nyquist) scores low.

As published: translations uniform in [-0.125, 0.125] image widths per axis, angles uniform in
[-pi, pi], one random transform per 4 images (the published batch), float32 synthesis
(force_fp32). The user transform is written to `G.synthesis.input.transform` as the inverse of
the image transform, and restored afterwards. Latents and labels are drawn as for the other
metrics (`features.latents`), the transforms from their own seeded generator, all on the CPU,
so a seed gives the same number on every device. (The published loop also re-draws the
constant noise buffers each batch; StyleGAN3 and CREPS have none, so nothing here does.)
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from creps.generate import describe, set_transform, synthesize, transform_buffer
from creps.metrics.features import Evaluation, eval_mode, generator_batch_size, latents, progress_bar
from creps.metrics.spec import MetricSpec, check_network_can, parse_name
from creps.nets.creps import line_coords
from creps.nets.registry import Capability, family_of
from creps.nets.stylegan3 import make_transform
from creps.parallel import World, all_sum, owns
from creps.ops.filters import kaiser_attenuation, kaiser_beta
from creps.ops.upfirdn2d import filter2d, upsample2d

PIXEL_RANGE = 2.0  # generated images span [-1, 1]
TRANSLATE_MAX = 0.125  # largest translation per axis, in image widths
ROTATE_MAX = 1.0  # largest rotation, in half turns (pi radians)
IMAGES_PER_TRANSFORM = 4  # images that share one random transform (the published batch)
LANCZOS_RADIUS = 3  # support radius, in pixels, of the sub-pixel translation kernel
ROTATION_UP = 4  # the rotation resamples a copy upsampled this many times
ROTATION_FILTER_RADIUS = 2 * LANCZOS_RADIUS  # support radius (pixels) of the oriented band-limit filter
FILTER_DESIGN_RADIUS = 64  # half extent (pixels) of the grid the oriented filter is designed on
SCALE_FILTER_RADIUS = 6  # support radius, in native pixels, of the scale-consistency low-pass
SCALE_FILTER_TRANSITION = 0.25  # its transition band width, in cycles per native pixel

# ---------------------------------------------------------------------------------------
# PSNR.


def psnr_from_mse(mse: float, pixel_range: float = PIXEL_RANGE) -> float:
    # Peak signal-to-noise ratio: 20 log10(range) - 10 log10(MSE), in dB.
    if mse <= 0:
        return math.inf
    return 20 * math.log10(pixel_range) - 10 * math.log10(mse)


class MaskedErrorSum:
    """Squared differences and the number of pixels they cover, summed in float64 over every
    image, channel and mask; the PSNR comes from their ratio (not from per-image PSNRs)."""

    def __init__(self) -> None:
        self.squared_error = 0.0
        self.pixels = 0.0

    def add(self, reference: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> None:
        """Count `(reference - image)^2` where `mask` (broadcast to the images) is 1."""
        diff = reference.to(torch.float64) - image.to(torch.float64)
        weight = mask.to(torch.float64).expand_as(diff)
        self.squared_error += float((diff.square() * weight).sum())
        self.pixels += float(weight.sum())

    def combine(self, world: World) -> None:
        """The sums over every rank, on every rank."""
        if world.enabled:
            total = all_sum(torch.tensor([self.squared_error, self.pixels], dtype=torch.float64), world)
            self.squared_error, self.pixels = float(total[0]), float(total[1])

    def psnr(self) -> float:
        if self.pixels <= 0:
            raise ValueError("no pixel was valid in any comparison (images smaller than the filter margins)")
        return psnr_from_mse(self.squared_error / self.pixels)


# ---------------------------------------------------------------------------------------
# Translation of an image batch [N, C, H, W]. A positive shift moves the content towards
# larger column (x) or row (y) indices: out[.., y, x] = in[.., y - dy, x - dx].


def shifted_range_mask(size: int, lowest: int, highest: int, device=None) -> torch.Tensor:
    """[size] 0/1 mask along one axis of the outputs out[i] whose every source in[i - s],
    s in [lowest, highest], lies inside the image: lowest + size > i >= highest."""
    index = torch.arange(size, device=device)
    return ((index >= highest) & (index < size + lowest)).to(torch.float32)


def integer_translate(images: torch.Tensor, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift by whole pixels (EQ-T reference): a cyclic shift and a [1, 1, H, W] mask that
    zeroes the pixels that wrapped around (their true values lie outside the image)."""
    dx, dy = int(dx), int(dy)
    _, _, height, width = images.shape
    out = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    mask_y = shifted_range_mask(height, dy, dy, images.device)
    mask_x = shifted_range_mask(width, dx, dx, images.device)
    return out, torch.outer(mask_y, mask_x)[None, None]


def lanczos_taps(fraction: float, radius: int = LANCZOS_RADIUS) -> tuple[torch.Tensor, int]:
    """Weights of the Lanczos-windowed sinc interpolator, sinc(d) sinc(d / a) at distances
    d = k - fraction, for a delay of `fraction` (in [0, 1)) pixels; returns the weights of
    integer delays k = -(a - 1) .. a (normalised to sum to one) and the first k."""
    first = 1 - radius
    distance = torch.arange(first, radius + 1, dtype=torch.float64) - float(fraction)
    weights = torch.sinc(distance) * torch.sinc(distance / radius)
    return weights / weights.sum(), first


def subpixel_shift_axis(images: torch.Tensor, shift: float, dim: int,
                        radius: int = LANCZOS_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Delay `images` by `shift` (any real) pixels along `dim` by windowed-sinc interpolation:
    out[i] = sum_k w_k in[i - floor(shift) - k]. Also returns the [size] mask of the outputs
    whose sources all lie inside the image."""
    whole = math.floor(shift)
    weights, first = lanczos_taps(shift - whole, radius)
    out = torch.zeros_like(images)
    for k, weight in enumerate(weights.tolist(), start=first):
        out += weight * torch.roll(images, shifts=whole + k, dims=dim)
    mask = shifted_range_mask(images.shape[dim], whole + first, whole + first + len(weights) - 1, images.device)
    return out, mask


def fractional_translate(images: torch.Tensor, dx: float, dy: float,
                         radius: int = LANCZOS_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift by (dx, dy) pixels, any real amounts (EQ-T_frac reference): separable
    Lanczos-windowed sinc interpolation, and a [1, 1, H, W] mask of the pixels whose whole
    filter footprint lies inside the image."""
    out, mask_x = subpixel_shift_axis(images, dx, dim=3, radius=radius)
    out, mask_y = subpixel_shift_axis(out, dy, dim=2, radius=radius)
    return out, torch.outer(mask_y, mask_x)[None, None]


# ---------------------------------------------------------------------------------------
# Rotation. Positions are (x, y) = (column, row) relative to the image centre, in pixels;
# rotating the image by angle `a` maps position p to rotation_matrix(a) @ p, the matrix that
# `make_transform(angle_deg=degrees(a))` builds (the StyleGAN3 user transform convention).


def rotation_matrix(angle: float) -> torch.Tensor:
    """2x2 float64 matrix of the image rotation by `angle` radians."""
    return make_transform(angle_deg=math.degrees(angle))[:2, :2]


def lanczos_window(t: torch.Tensor, radius: float) -> torch.Tensor:
    # Lanczos window: sinc(t / a) inside |t| < a, zero outside.
    return torch.where(t.abs() < radius, torch.sinc(t / radius), torch.zeros_like(t))


def circular_convolve2d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular 2-D convolution of two same-size real arrays, through the FFT."""
    return torch.fft.ifft2(torch.fft.fft2(a) * torch.fft.fft2(b)).real


def normalise_phases(taps: torch.Tensor, up: int) -> torch.Tensor:
    """Scale each of the up x up polyphase components (taps[r::up, c::up]) to sum 1 / up^2, so
    that upsampling by `up` (which multiplies by up^2) keeps a constant image constant at every
    output phase."""
    out = taps.clone()
    for r in range(up):
        for c in range(up):
            out[r::up, c::up] /= out[r::up, c::up].sum() * up * up
    return out


def _design_device(device) -> torch.device:
    """Where to design a filter in float64: the given device, or the CPU for none or MPS (no float64)."""
    device = torch.device("cpu" if device is None else device)
    return torch.device("cpu") if device.type == "mps" else device


def oriented_bandlimit_filter(matrix: torch.Tensor, up: int = 1, radius: int = ROTATION_FILTER_RADIUS,
                              window_radius: int = LANCZOS_RADIUS,
                              design_radius: int = FILTER_DESIGN_RADIUS, device=None) -> torch.Tensor:
    """[2 radius up - 1]^2 float32 low-pass filter, on a grid of 1/up pixel, that keeps the
    frequencies inside both the pixel grid's Nyquist square and that square mapped by the 2x2
    `matrix` (the pass band a resampling by `matrix` can keep).

    The ideal kernel of that intersection is the convolution of the two sinc products
    sinc(x) sinc(y) (input axes) and sinc(x') sinc(y'), (x', y') = matrix @ (x, y) (output axes);
    the window is the convolution of the two Lanczos window products on the same axes. Both
    convolutions are done circularly by FFT on a grid `design_radius` pixels wide on each side,
    the product is cropped to `radius` pixels, and its polyphase components are normalised.
    Designed in float64 on `device` (the images' device: a GPU makes the FFTs negligible).
    """
    if not window_radius <= radius < design_radius:
        raise ValueError("need window_radius <= radius < design_radius")
    device = _design_device(device)
    matrix = torch.as_tensor(matrix, dtype=torch.float64).to(device)
    steps = 2 * design_radius * up - 1  # odd: the grid is symmetric about 0
    centred = torch.arange(steps, dtype=torch.float64, device=device) - (steps - 1) / 2
    offsets = torch.fft.ifftshift(centred / up)
    y_in, x_in = torch.meshgrid(offsets, offsets, indexing="ij")
    x_out = matrix[0, 0] * x_in + matrix[0, 1] * y_in
    y_out = matrix[1, 0] * x_in + matrix[1, 1] * y_in
    ideal = circular_convolve2d(torch.sinc(x_in) * torch.sinc(y_in), torch.sinc(x_out) * torch.sinc(y_out))
    window = circular_convolve2d(lanczos_window(x_in, window_radius) * lanczos_window(y_in, window_radius),
                                 lanczos_window(x_out, window_radius) * lanczos_window(y_out, window_radius))
    taps = torch.fft.fftshift(ideal * window)
    crop = (design_radius - radius) * up
    taps = taps[crop:steps - crop, crop:steps - crop]
    return normalise_phases(taps, up).to(torch.float32)


def _grid_sample_coordinate(index: torch.Tensor, size: int) -> torch.Tensor:
    """Sample index (pixel centres at 0 .. size - 1) -> grid_sample's [-1, 1] coordinate
    (align_corners=False)."""
    return (2 * index + 1) / size - 1


def rotate_bandlimited(images: torch.Tensor, angle: float, up: int = ROTATION_UP,
                       radius: int = ROTATION_FILTER_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by `angle` radians (EQ-R reference): upsample `up` times with the oriented
    band-limit filter of the rotation, then read each output pixel's source position,
    rotation_matrix(-angle) @ p, bilinearly from the upsampled copy. Returns the rotated
    images and the [1, 1, H, W] mask of the pixels whose source lies at least the filter's
    reach inside the image."""
    _, _, height, width = images.shape
    taps = oriented_bandlimit_filter(rotation_matrix(angle), up=up, radius=radius, device=images.device)
    taps = taps.to(images.device)
    pad = taps.shape[0] // 2
    fine = upsample2d(images, taps, up=up, padding=pad)
    fine_h, fine_w = fine.shape[2:]
    # Output pixel positions relative to the centre, and their sources in the input.
    rows = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    cols = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    y_out, x_out = torch.meshgrid(rows, cols, indexing="ij")
    inverse = rotation_matrix(-angle)
    x_src = inverse[0, 0] * x_out + inverse[0, 1] * y_out + (width - 1) / 2
    y_src = inverse[1, 0] * x_out + inverse[1, 1] * y_out + (height - 1) / 2
    # upsample2d keeps the (odd, centred) filter centred: input pixel i lands on fine sample
    # up * i + up / 2 + pad.
    x_fine = up * x_src + up / 2 + pad
    y_fine = up * y_src + up / 2 + pad
    grid = torch.stack([_grid_sample_coordinate(x_fine, fine_w), _grid_sample_coordinate(y_fine, fine_h)], dim=-1)
    grid = grid.to(device=images.device, dtype=images.dtype)[None].expand(images.shape[0], -1, -1, -1)
    rotated = F.grid_sample(fine, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Valid: the nearest fine sample lies more than 2 pad + 1 samples inside the fine grid.
    margin = 2 * pad + 1
    x_near, y_near = torch.round(x_fine), torch.round(y_fine)
    valid = (x_near >= margin) & (x_near < fine_w - margin) & (y_near >= margin) & (y_near < fine_h - margin)
    return rotated, valid.to(device=images.device, dtype=images.dtype)[None, None]


def pseudo_rotate(images: torch.Tensor, angle: float,
                  radius: int = ROTATION_FILTER_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Give images the pass band they would have after a band-limited rotation by `angle`
    without moving them (the operator R* of EQ-R): filter with the oriented band-limit filter
    of the rotation by -angle. Returns the filtered images and the [1, 1, H, W] mask of the
    pixels whose filter footprint lies inside the image."""
    _, _, height, width = images.shape
    taps = oriented_bandlimit_filter(rotation_matrix(-angle), up=1, radius=radius, device=images.device)
    taps = taps.to(images.device)
    filtered = filter2d(images, taps)
    reach = taps.shape[0] // 2
    mask_y = shifted_range_mask(height, -reach, reach, images.device)
    mask_x = shifted_range_mask(width, -reach, reach, images.device)
    return filtered, torch.outer(mask_y, mask_x).to(images.dtype)[None, None]


# ---------------------------------------------------------------------------------------
# Scale consistency (CREPS). A CREPS render of n pixels per side samples its coordinate
# lines at `line_coords(n)`; the 2x render samples the same span twice as densely.


def kaiser_window(t: np.ndarray, radius: float, beta: float) -> np.ndarray:
    # Kaiser window I0(beta sqrt(1 - (t / R)^2)) / I0(beta) inside |t| <= R, zero outside.
    inside = np.abs(t) <= radius
    arg = np.sqrt(np.clip(1 - (t / radius) ** 2, 0, None))
    return np.where(inside, np.i0(beta * arg) / np.i0(beta), 0.0)


def scale_filter_beta(radius: int = SCALE_FILTER_RADIUS, transition: float = SCALE_FILTER_TRANSITION) -> float:
    """Kaiser beta for the scale-consistency low-pass: the attenuation Kaiser's formula gives
    for the 4 R + 1 taps it spans at the 2x rate and a transition band of `transition` cycles
    per native pixel (that fraction of the 2x Nyquist frequency)."""
    return kaiser_beta(kaiser_attenuation(4 * radius + 1, transition))


def lowpass_resampling_matrix(coarse: np.ndarray, fine: np.ndarray, radius: int = SCALE_FILTER_RADIUS,
                              transition: float = SCALE_FILTER_TRANSITION) -> tuple[np.ndarray, np.ndarray]:
    """[n_coarse, n_fine] weights that low-pass a line sampled at positions `fine` and read it
    at positions `coarse`: a sinc with its cutoff at the coarse grid's Nyquist frequency times
    a Kaiser window `radius` coarse pixels wide, each row normalised to sum one; and the
    [n_coarse] mask of the rows whose window lies inside the fine line's span."""
    coarse, fine = np.asarray(coarse, np.float64), np.asarray(fine, np.float64)
    spacing = coarse[1] - coarse[0]
    t = (coarse[:, None] - fine[None, :]) / spacing  # distances in coarse pixels
    weights = np.sinc(t) * kaiser_window(t, radius, scale_filter_beta(radius, transition))
    weights /= weights.sum(axis=1, keepdims=True)
    slack = 1e-9 * spacing
    valid = (coarse - radius * spacing >= fine[0] - slack) & (coarse + radius * spacing <= fine[-1] + slack)
    return weights, valid.astype(np.float64)


@functools.lru_cache(maxsize=8)
def creps_line_resampler(coarse_size: int, fine_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`lowpass_resampling_matrix` from a CREPS line of `fine_size` samples to one of
    `coarse_size` (cached: every batch of a metric run needs the same one)."""
    return lowpass_resampling_matrix(line_coords(coarse_size).double().numpy(),
                                     line_coords(fine_size).double().numpy())


def downscale_to(images: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring renders of the CREPS coordinate grid down to a height x width render's grid with
    `lowpass_resampling_matrix` along rows and columns. Returns the images and the
    [1, 1, height, width] mask of fully supported pixels."""
    rows, row_mask = creps_line_resampler(height, images.shape[2])
    cols, col_mask = creps_line_resampler(width, images.shape[3])
    rows_t = torch.as_tensor(rows, dtype=images.dtype, device=images.device)
    cols_t = torch.as_tensor(cols, dtype=images.dtype, device=images.device)
    out = rows_t @ images @ cols_t.t()
    mask = torch.as_tensor(np.outer(row_mask, col_mask), dtype=images.dtype, device=images.device)
    return out, mask[None, None]


# ---------------------------------------------------------------------------------------
# Running a generator.


def _synthesize(G: torch.nn.Module, ws: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    return synthesize(G, ws, scale=scale, force_fp32=True)


def _uniform(rng: torch.Generator, limit: float, count: int) -> list[float]:
    """`count` draws uniform in [-limit, limit)."""
    return ((torch.rand(count, generator=rng, dtype=torch.float64) * 2 - 1) * limit).tolist()


Comparison = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator, MaskedErrorSum], None]


def compare_integer_translation(G: torch.nn.Module, ws: torch.Tensor, reference: torch.Tensor,
                                rng: torch.Generator, errors: MaskedErrorSum) -> None:
    """EQ-T: render translated by whole pixels; compare with the reference shifted as much."""
    res = G.img_resolution
    tx, ty = (round(t * res) / res for t in _uniform(rng, TRANSLATE_MAX, 2))
    set_transform(G, (tx, ty))
    image = _synthesize(G, ws)
    shifted, mask = integer_translate(reference, round(tx * reference.shape[3]), round(ty * reference.shape[2]))
    errors.add(shifted, image, mask)


def compare_fractional_translation(G: torch.nn.Module, ws: torch.Tensor, reference: torch.Tensor,
                                   rng: torch.Generator, errors: MaskedErrorSum) -> None:
    """EQ-T_frac: render translated by any amount; compare with the interpolated reference."""
    tx, ty = _uniform(rng, TRANSLATE_MAX, 2)
    set_transform(G, (tx, ty))
    image = _synthesize(G, ws)
    shifted, mask = fractional_translate(reference, tx * reference.shape[3], ty * reference.shape[2])
    errors.add(shifted, image, mask)


def compare_rotation(G: torch.nn.Module, ws: torch.Tensor, reference: torch.Tensor,
                     rng: torch.Generator, errors: MaskedErrorSum) -> None:
    """EQ-R: render rotated; compare its pass band with the band-limited rotated reference."""
    (angle,) = _uniform(rng, ROTATE_MAX * math.pi, 1)
    set_transform(G, angle_deg=math.degrees(angle))
    image = _synthesize(G, ws)
    rotated, rotated_mask = rotate_bandlimited(reference, angle)
    filtered, filtered_mask = pseudo_rotate(image, angle)
    errors.add(rotated, filtered, rotated_mask * filtered_mask)


COMPARISONS: dict[str, Comparison] = {
    "eqt_int": compare_integer_translation,
    "eqt_frac": compare_fractional_translation,
    "eqr": compare_rotation,
}


def compare_transformed(G: torch.nn.Module, ws: torch.Tensor, test: str, rng: torch.Generator,
                        errors: MaskedErrorSum) -> None:
    """One batch of EQ-T / EQ-T_frac / EQ-R: the untransformed reference render, then one random
    transform per IMAGES_PER_TRANSFORM images."""
    transform_buffer(G).copy_(torch.eye(3))
    reference = _synthesize(G, ws)
    for start in range(0, ws.shape[0], IMAGES_PER_TRANSFORM):
        group = slice(start, start + IMAGES_PER_TRANSFORM)
        COMPARISONS[test](G, ws[group], reference[group], rng, errors)


def compare_scales(G: torch.nn.Module, ws: torch.Tensor, errors: MaskedErrorSum) -> None:
    """One batch of EQ-S: the native render against the 2x render low-passed to the native grid."""
    native = _synthesize(G, ws)
    double = _synthesize(G, ws, scale=2)
    down, mask = downscale_to(double, native.shape[2], native.shape[3])
    errors.add(down, native, mask)


@contextlib.contextmanager
def evaluation_mode(G: torch.nn.Module) -> Iterator[None]:
    """G in eval mode without gradients; its training flag and user transform (if any) are put
    back afterwards, also when the work fails."""
    transform = transform_buffer(G) if family_of(G).can(Capability.USER_TRANSFORM) else None
    saved = None if transform is None else transform.detach().clone()
    with eval_mode(G), torch.no_grad():
        try:
            yield
        finally:
            if transform is not None:
                transform.copy_(saved)


def transform_generator(seed: int, batch_index: int) -> torch.Generator:
    """CPU generator of the random transforms of one batch: its own stream, derived from the
    metric seed and the batch (the latents use torch.Generator().manual_seed(seed) itself), so
    any number of processes draws the same transforms."""
    state = np.random.SeedSequence([seed, 0xE9, batch_index]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    """The PSNR (dB) of test `spec.name` over `spec.num_gen` images of `ev.G`: {name: psnr}."""
    parsed = parse_name(spec.name)
    if parsed is None:
        raise ValueError(f"{spec.name} is not an equivariance metric")
    G, count = ev.G, spec.num_gen
    check_network_can(spec.name, family_of(G), describe(G))
    batch = generator_batch_size(G, ev.batch_size, 2 if parsed.test == "eqs" else None)
    errors = MaskedErrorSum()
    with progress_bar(count, spec.name, ev.progress) as bar, evaluation_mode(G):
        for index, (z, c) in enumerate(latents(G, count, batch, ev.seed, ev.labels())):
            if not owns(index, ev.world):
                continue
            ws = G.mapping(z.to(ev.device), None if c is None else c.to(ev.device))
            if parsed.test == "eqs":
                compare_scales(G, ws, errors)
            else:
                compare_transformed(G, ws, parsed.test, transform_generator(ev.seed, index), errors)
            bar.update(ws.shape[0] * ev.world.size)
    errors.combine(ev.world)
    return {spec.name: errors.psnr()}
