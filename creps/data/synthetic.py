"""The built-in dataset for the demo and the tests: simple shapes on colour gradients.

Each image shows one or two soft-edged shapes (disc, square, diamond or ring) in a vivid
colour over a smooth two-colour gradient, all drawn at random. With classes, the class
fixes the shape kind (class % 4) and, beyond four classes, a band of hues, so a
conditional model has something visible to learn. Same seed, same bytes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image

from creps.data.dataset import LABELS_FILE, is_power_of_two
from creps.data.tool import archive_name, atomic_output, png_bytes
from creps.errors import UserError

SHAPES = ("disc", "square", "diamond", "ring")
_EDGE_PX = 1.5  # width of the soft edge, in pixels
_CHUNK = 256  # images rendered per numpy batch


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (any shape) -> RGB [..., 3] in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] * (1.0 - s[..., None] * ramp)


def _shape_distance(kind: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (image units, < 0 inside) from each pixel to each shape; kind indexes SHAPES."""
    radius = np.sqrt(dx * dx + dy * dy)
    return np.select(
        [kind == 0, kind == 1, kind == 2],
        [
            radius - r,
            np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r,
            (np.abs(dx) + np.abs(dy) - 1.2 * r) / math.sqrt(2.0),
        ],
        default=np.abs(radius - 0.8 * r) - 0.3 * r,
    )


def render_synthetic_images(
    num_images: int, resolution: int, rng: np.random.Generator, num_classes: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw images uint8 [N, H, W, 3] and, with classes, class indices int64 [N]."""
    n, res = num_images, resolution
    classes = rng.integers(0, num_classes, size=n) if num_classes > 0 else None

    # Background: a linear gradient between two related, muted colours.
    hue0 = rng.random(n)
    c0 = _hsv_to_rgb(hue0, rng.uniform(0.2, 0.5, n), rng.uniform(0.25, 0.9, n))
    c1 = _hsv_to_rgb((hue0 + rng.uniform(-0.2, 0.2, n)) % 1.0, rng.uniform(0.2, 0.5, n), rng.uniform(0.25, 0.9, n))
    angle = rng.uniform(0.0, 2.0 * math.pi, n)

    # Shapes: up to two per image; unused slots get zero opacity.
    slots = 2
    present = np.stack([np.ones(n, bool), rng.random(n) < 0.5], axis=1)
    cx, cy = rng.uniform(0.2, 0.8, (n, slots)), rng.uniform(0.2, 0.8, (n, slots))
    size = rng.uniform(0.12, 0.24, (n, slots))
    if classes is None:
        kind = rng.integers(0, len(SHAPES), (n, slots))
        hue = rng.random((n, slots))
    else:
        kind = np.repeat((classes % len(SHAPES))[:, None], slots, axis=1)
        bands = max(1, -(-num_classes // len(SHAPES)))
        band = classes // len(SHAPES)
        if bands == 1:
            hue = rng.random((n, slots))
        else:
            hue = (band[:, None] + rng.uniform(0.0, 0.6, (n, slots))) / bands
    color = _hsv_to_rgb(hue % 1.0, rng.uniform(0.7, 1.0, (n, slots)), rng.uniform(0.75, 1.0, (n, slots)))

    images = np.empty([n, res, res, 3], dtype=np.uint8)
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    gy, gx = coords[:, None], coords[None, :]
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, n))
        ca, sa = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
        t = np.clip(0.5 + ((gx - 0.5) * ca + (gy - 0.5) * sa) / math.sqrt(2.0), 0.0, 1.0)[..., None]
        img = c0[sl, None, None] * (1.0 - t) + c1[sl, None, None] * t
        for j in range(slots):
            dx = gx - cx[sl, j, None, None]
            dy = gy - cy[sl, j, None, None]
            dist = _shape_distance(kind[sl, j, None, None], dx, dy, size[sl, j, None, None])
            alpha = np.clip(0.5 - dist * res / _EDGE_PX, 0.0, 1.0) * present[sl, j, None, None]
            img = img * (1.0 - alpha[..., None]) + color[sl, j, None, None] * alpha[..., None]
        images[sl] = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, classes


def make_synthetic_dataset(
    dest: str, num_images: int = 1000, resolution: int = 32, seed: int = 0, num_classes: int = 0
) -> str:
    """Write a ZIP dataset (published layout) of synthetic images to `dest`; returns `dest`.

    The file appears atomically and replaces any file already at `dest`. Labels are class
    indices when `num_classes > 0`, else null.
    """
    if num_images < 1:
        raise UserError(f"synthetic dataset: num_images must be >= 1 (got {num_images})")
    if resolution < 4 or not is_power_of_two(resolution):
        raise UserError(f"synthetic dataset: resolution must be a power of two >= 4 (got {resolution})")
    if num_classes < 0:
        raise UserError(f"synthetic dataset: num_classes must be >= 0 (got {num_classes})")
    if not dest.lower().endswith(".zip"):
        raise UserError(f"synthetic dataset: {dest}: the destination must be a .zip file")

    images, classes = render_synthetic_images(num_images, resolution, np.random.default_rng(seed), num_classes)
    names = [archive_name(i) for i in range(len(images))]
    labels = None if classes is None else [[name, int(c)] for name, c in zip(names, classes)]
    with atomic_output(dest) as write:
        for name, arr in zip(names, images):
            write(name, png_bytes(PIL.Image.fromarray(arr, "RGB")))
        write(LABELS_FILE, json.dumps({"labels": labels}).encode("utf-8"))
    return dest
