"""Compiled calls of the networks in the main training phases (`--compile`).

The main phases (G main, D main: most of the work) call G's mapping and synthesis and D
through `creps.ops.compiled.CompiledCall`. Compiled graphs do not support double backward,
so R1 and path length run the plain modules, which share the parameters. A module that
fails to compile runs plain for the rest of the run after one log line.
"""

from __future__ import annotations

import torch


def compile_by_default(device: torch.device) -> bool:
    """--compile unset: on with CUDA; off on CPUs, where compiling takes minutes (Inductor's
    C++ backend) and a gain at the sizes a CPU trains has not been shown."""
    return device.type == "cuda"
