"""Autocast helpers shared by every network: float32 regions and the low-precision dtype."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


def autocast_off(device_type: str, active: bool = True):
    """A region computed in float32 even when the caller runs under autocast (a no-op unless `active`)."""
    if active and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def autocast_dtype(device_type: str, wanted: bool = True) -> Optional[torch.dtype]:
    """The autocast dtype when `wanted` and autocast is on for this device; None means float32."""
    if wanted and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None
