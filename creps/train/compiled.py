"""Compiled calls of the networks in the main training phases (`--compile`).

`torch.compile` turns G's and D's forward and backward into fused kernels (Inductor: Triton
on CUDA, C++ on CPUs). Compiled graphs do not support double backward, so only the main
phases call them; R1 and path length run the plain modules, which share the parameters.

A module that fails to compile (no compiler, an unsupported op, a backend error) falls back
to the plain module for the rest of the run, with one log line; it never stops training.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Union

import torch


DEFAULT_BACKEND = "inductor"


def compile_by_default(device: torch.device) -> bool:
    """--compile unset: on with CUDA; off on CPUs, where compiling costs more time than it saves
    in a short run (see README, figures)."""
    return device.type == "cuda"


def _eager_backward_compile():
    """Compile the backward graph together with the forward, so that a compile failure shows
    at the forward call (where the fallback catches it), not halfway through backward."""
    try:
        from torch._functorch import config
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


def root_cause(err: BaseException) -> str:
    """'Type: first line' of the innermost exception (the compiler's own error, not the wrapper)."""
    while True:
        inner = getattr(err, "inner_exception", None) or err.__cause__  # dynamo wraps the backend's error
        if not isinstance(inner, BaseException):
            break
        err = inner
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first}"


class CompiledCall:
    """`module(...)` through torch.compile, or the plain module once compiling has failed."""

    def __init__(self, module: torch.nn.Module, name: str, log: Callable[[str], None],
                 backend: Union[str, Callable[..., Any], None] = None):
        self.module, self.name, self.log = module, name, log
        self.compiled = torch.compile(module, backend=backend or DEFAULT_BACKEND, dynamic=False)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                with _eager_backward_compile():
                    return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compile failure: run plain (a real bug raises again there)
                self.failed = True
                self.log(f"torch.compile failed for {self.name} ({root_cause(err)}); running it uncompiled")
        return self.module(*args, **kwargs)
