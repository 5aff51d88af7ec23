"""What the benchmark scripts share: the --device and --threads options."""

from __future__ import annotations

import argparse

import torch


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")


def device_from(a: argparse.Namespace) -> torch.device:
    """Apply --threads and return the --device (CUDA when present unless told otherwise)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    return torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
