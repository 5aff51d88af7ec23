"""Calls through `torch.compile` that fall back to plain PyTorch when compiling fails.

Inductor fuses what it compiles into generated kernels (Triton on CUDA, C++ on CPUs). A
function or module that fails to compile (no compiler, no Triton, an unsupported op, a
backend error) runs plain from then on, after one log line: compiling only ever makes things
faster, it never stops the program. A real error (a wrong shape, ...) raises again from the
plain call, with its own traceback.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Optional, Union

import torch

DEFAULT_BACKEND = "inductor"
RECOMPILE_LIMIT = 64  # distinct shapes / constants one compiled call may specialise for


def root_cause(err: BaseException) -> str:
    """'Type: first line' of the innermost exception (the compiler's own error, not the wrapper)."""
    while True:
        inner = getattr(err, "inner_exception", None) or err.__cause__  # dynamo wraps the backend's error
        if not isinstance(inner, BaseException):
            break
        err = inner
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first}"


def _compile_settings():
    """Compile the backward graph together with the forward, so that a compile failure shows
    at the forward call (where the fallback catches it), not halfway through backward; and
    let one call site specialise for many shapes (e.g. every layer of a network)."""
    stack = contextlib.ExitStack()
    try:
        from torch._functorch import config as functorch_config
        from torch._dynamo import config as dynamo_config
    except ImportError:
        return stack
    if hasattr(functorch_config, "force_non_lazy_backward_lowering"):
        stack.enter_context(functorch_config.patch(force_non_lazy_backward_lowering=True))
    if hasattr(dynamo_config, "recompile_limit"):
        stack.enter_context(dynamo_config.patch(recompile_limit=RECOMPILE_LIMIT))
    return stack


def _warn(line: str) -> None:
    warnings.warn(line, RuntimeWarning, stacklevel=3)


class CompiledCall:
    """`fn(...)` through torch.compile, or plain `fn` once compiling has failed."""

    def __init__(self, fn: Callable[..., Any], name: str, log: Optional[Callable[[str], None]] = None,
                 backend: Union[str, Callable[..., Any], None] = None):
        self.fn, self.name, self.log = fn, name, log or _warn
        self.compiled = torch.compile(fn, backend=backend or DEFAULT_BACKEND, dynamic=False)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                with _compile_settings():
                    return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compile failure: run plain (a real bug raises again there)
                self.failed = True
                self.log(f"torch.compile failed for {self.name} ({root_cause(err)}); running it uncompiled")
        return self.fn(*args, **kwargs)
