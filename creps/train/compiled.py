"""Compiled calls of the networks in the main training phases (`--compile`).

The main phases (G main, D main: most of the work) call G's mapping and synthesis and D
through `creps.ops.compiled.CompiledCall`. Compiled graphs do not support double backward,
so R1 and path length run the plain modules, which share the parameters. A module that
fails to compile runs plain for the rest of the run after one log line.
"""

from __future__ import annotations

from typing import Optional

import torch


def on_device(setting: Optional[bool], device: torch.device) -> bool:
    """--compile / --recompute, or unset: on with CUDA, off on CPUs. On CPUs compiling takes
    minutes (Inductor's C++ backend) for no gain shown at the sizes a CPU trains, and
    recomputing per-pixel layers costs time to save memory a CPU has plenty of."""
    return device.type == "cuda" if setting is None else setting
