"""`creps <command> ...`: one entry point for every command."""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


def _train(argv):
    from creps.cli.train import main

    return main(argv, prog="creps train")


def _generate(argv):
    from creps.cli.generate import generate

    return generate(argv, prog="creps generate")


def _dataset(argv):
    from creps.cli.dataset import main

    return main(argv, prog="creps dataset")


def _metrics(argv):
    from creps.cli.metrics import main

    return main(argv, prog="creps metrics")


def _video(argv):
    from creps.cli.video import gen_video

    return gen_video(argv, prog="creps video")


def _project(argv):
    from creps.cli.project import run_projection

    return run_projection(argv, prog="creps project")


def _convert(argv):
    from creps.cli.convert import convert

    return convert(argv)


def _torchrun(argv):
    from creps.cli.torchrun import torchrun

    return torchrun(argv)


def _demo(argv):
    from creps.cli.demo import demo

    return demo(argv)


def _studio(argv):
    from creps.cli.studio import studio

    return studio(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (_train, "train a GAN (same flags as train.py)"),
    "generate": (_generate, "render images from a snapshot (same flags as gen_images.py)"),
    "dataset": (_dataset, "convert images into a training dataset (same flags as dataset_tool.py)"),
    "metrics": (_metrics, "quality metrics of a snapshot (same flags as calc_metrics.py)"),
    "video": (_video, "latent-interpolation video from a snapshot (same flags as gen_video.py)"),
    "project": (_project, "invert images into a network's latent space (same flags as projector.py)"),
    "convert": (_convert, "write a published network pickle (.pkl) as a creps snapshot"),
    "demo": (_demo, "train a small CREPS on the built-in synthetic dataset"),
    "torchrun": (_torchrun, "torchrun (same options) for many hosts, with one-line failures"),
    "studio": (_studio, "explore networks and watch training runs in the browser"),
}


def usage() -> str:
    lines = ["usage: creps <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
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
    return COMMANDS[name][0](rest)


if __name__ == "__main__":
    sys.exit(main())
