"""Per-resolution rules of the networks: image sizes, feature maps, low-precision blocks."""

from __future__ import annotations

import math


def resolution_log2(img_resolution: int, minimum: int) -> int:
    """log2 of the image size, which must be a power of two >= `minimum` (ValueError otherwise)."""
    log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else 0
    if img_resolution < minimum or 2**log2 != img_resolution:
        raise ValueError(f"img_resolution must be a power of two >= {minimum}, got {img_resolution}")
    return log2


def feature_channels(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: channel_base / res, capped at channel_max."""
    return min(channel_base // res, channel_max)


def low_precision_from(log2: int, num_fp16_res: int) -> int:
    """Lowest resolution of the `num_fp16_res` highest ones (never below 8): blocks at and above
    it compute in the autocast dtype."""
    return max(2 ** (log2 + 1 - num_fp16_res), 8)
