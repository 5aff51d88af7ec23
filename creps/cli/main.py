"""`creps <command> ...`: one entry point for every command."""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# command -> (module, its function taking (argv, prog=...), one line of help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("creps.cli.train", "main", "train a GAN (same flags as train.py)"),
    "generate": ("creps.cli.generate", "generate", "render images from a snapshot (same flags as gen_images.py)"),
    "dataset": ("creps.cli.dataset", "main",
                "convert images into a training dataset (same flags as dataset_tool.py)"),
    "metrics": ("creps.cli.metrics", "main", "quality metrics of a snapshot (same flags as calc_metrics.py)"),
    "video": ("creps.cli.video", "gen_video", "latent-interpolation video from a snapshot (same flags as gen_video.py)"),
    "project": ("creps.cli.project", "run_projection",
                "invert images into a network's latent space (same flags as projector.py)"),
    "convert": ("creps.cli.convert", "convert", "write a published network pickle (.pkl) as a creps snapshot"),
    "demo": ("creps.cli.demo", "demo", "train a small CREPS on the built-in synthetic dataset"),
    "torchrun": ("creps.cli.torchrun", "torchrun", "torchrun (same options) for many hosts, with one-line failures"),
    "studio": ("creps.cli.studio", "studio", "explore networks and watch training runs in the browser"),
}


def usage() -> str:
    lines = ["usage: creps <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "Run `creps <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)(rest, prog=f"creps {name}")


if __name__ == "__main__":
    sys.exit(main())
