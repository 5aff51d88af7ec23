"""Shared CLI plumbing: argument types, and turning UserError (exit 2) and RunFailure (exit 1)
into one line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn, Optional

from creps.errors import RunFailure, UserError

TRUE = {"1", "true", "t", "yes", "y", "on"}
FALSE = {"0", "false", "f", "no", "n", "off"}


def parse_bool(text: str) -> bool:
    """Booleans as the published click options accept them: 1/0, true/false, yes/no, on/off."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {text!r}")


def _number(kind: type, what: str, problem: Callable[[Any], Optional[str]]) -> Callable[[str], Any]:
    """An argument type: text -> kind, refused with `problem(value)` when that is not None."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if problem(value) is not None:
            raise argparse.ArgumentTypeError(problem(value))
        return value

    return parse


positive_int = _number(int, "a whole number", lambda v: f"must be at least 1, got {v}" if v < 1 else None)
positive_float = _number(float, "a number", lambda v: "must be positive" if v <= 0 else None)


def add_network_option(p: argparse.ArgumentParser) -> None:
    """--network, as every command that reads a network takes it."""
    p.add_argument("--network", required=True, metavar="PATH|URL",
                   help="network snapshot (.safetensors) or published network pickle (.pkl)")


def parse_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '768x512' -> (768, 512): (width, height), as --grid=WxH (see rows_cols)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected N or WxH with sides >= 2, got {text!r}")
    return values[0], values[1]


def seed_list(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7] (the --seeds flag)."""
    from creps.generate import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def rows_cols(size: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
    """A --size (width, height) as the renderer takes it: (rows, cols)."""
    return None if size is None else (size[1], size[0])


def check_scale_or_size(scale, size) -> None:
    """--scale and --size pick the output size of a CREPS render: one of them at most."""
    if scale is not None and size is not None:
        raise UserError("--scale and --size: give one of them, not both")


def load_renderer(network: str, device: Optional[str], scale: Optional[float] = None,
                  size: Optional[tuple[int, int]] = None):
    """The snapshot (G_ema only) of a creps snapshot or published pickle, path or URL, on
    `device` (default: CUDA when present); --scale/--size are for CREPS networks only."""
    import torch

    from creps.checkpoint import load_snapshot

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    snap = load_snapshot(os.path.expanduser(network), device=device, networks=("G_ema",))
    check_renders_at(snap.G_ema, scale, size)
    return snap


def check_renders_at(G, scale=None, size=None) -> None:
    """UserError (naming the network) unless G renders at --scale / --size."""
    from creps.generate import scale_kwargs

    try:
        scale_kwargs(G, scale, size)
    except ValueError as err:
        raise UserError(str(err)) from None


def class_label(class_idx: Optional[int], c_dim: int):
    """--class as a one-hot label batch of 1 (None for an unconditional network, with a warning
    when a class was given anyway)."""
    from creps.generate import one_hot

    try:
        c = one_hot(class_idx, c_dim)
    except ValueError as err:
        raise UserError(str(err)) from None
    if class_idx is not None and c_dim == 0:
        print("warning: --class is ignored for an unconditional network")
    return c


def parse_list(text: str) -> tuple[str, ...]:
    """'a,b,c' -> ('a', 'b', 'c'); 'none' or '' -> ()."""
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


class Parser(argparse.ArgumentParser):
    """argparse whose flag mistakes are UserErrors: one line, exit code 2 through run_cli."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def run_cli(fn: Callable[[], int | None]) -> int:
    """Run a command body: UserError -> 'error: ...' on stderr and exit code 2; RunFailure
    (a peer or the network failed) -> the same line and exit code 1."""
    try:
        return int(fn() or 0)
    except (UserError, RunFailure) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
