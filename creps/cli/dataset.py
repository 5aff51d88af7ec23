"""`dataset_tool.py` / `creps dataset`: turn a folder or ZIP of images into a training dataset."""

from __future__ import annotations

import argparse
import os
import sys

from creps.cli.common import Parser, run_cli
from creps.data.tool import TRANSFORMS, convert_dataset

_EPILOG = """examples:
  dataset_tool.py --source=~/photos --dest=~/datasets/photos-256.zip --resolution=256x256 --transform=center-crop
  dataset_tool.py --source=~/cats-and-dogs --dest=~/datasets/pets.zip   # one subfolder per class -> labels
  dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10-32x32.zip
  dataset_tool.py --source=~/downloads/lsun/raw/cat_lmdb --dest=~/datasets/lsuncat200k-256x256.zip \
      --transform=center-crop --resolution=256x256 --max-images=200000
"""


def build_parser(prog: str = "dataset_tool.py") -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Convert a folder or ZIP of PNG/JPEG/WebP images (or CIFAR-10, MNIST, an LSUN LMDB)\n"
        "into a training dataset:\n"
        "PNGs in the published layout (00000/img00000000.png, ...) plus dataset.json with labels\n"
        "(from the source's dataset.json, or one subfolder per class). Written atomically.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--source", required=True, metavar="PATH",
                        help="input folder (searched recursively), ZIP, cifar-10-python.tar.gz, "
                             "MNIST train-images-idx3-ubyte.gz, or LMDB folder (LSUN)")
    parser.add_argument("--dest", required=True, metavar="ZIP|DIR", help="output .zip file, or a new/empty folder")
    parser.add_argument("--max-images", type=int, metavar="N", help="convert only the first N images (sorted by path)")
    parser.add_argument("--transform", choices=TRANSFORMS, help="crop before resizing (needs --resolution)")
    parser.add_argument("--resolution", metavar="WxH", help="output size, e.g. 256x256 (Lanczos resize)")
    return parser


def main(argv: list[str] | None = None, prog: str = "dataset_tool.py") -> int:
    """Run the dataset tool; returns the exit code (0 ok, 2 user error)."""
    return run_cli(lambda: _convert(build_parser(prog).parse_args(argv)))


def _convert(args: argparse.Namespace) -> int:
    summary = convert_dataset(
        os.path.expanduser(args.source),
        os.path.expanduser(args.dest),
        max_images=args.max_images,
        transform=args.transform,
        resolution=args.resolution,
    )
    if summary["labels"] == "subfolders":
        print("labels from class subfolders (index: folder):")
        for index, name in enumerate(summary["class_names"]):
            print(f"  {index}: {name}")
    elif summary["labels"] == "source":
        print("labels carried over from the source dataset.json")
    elif summary["labels"] == "release":
        names = ", ".join(summary["class_names"]) or "unnamed"
        print(f"labels from the source release ({len(summary['class_names']) or 'its'} classes: {names})")
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    width, height = summary["resolution"]
    channels = {1: "grayscale", 3: "RGB"}[summary["num_channels"]]
    print(f"wrote {summary['num_images']} {channels} images of {width}x{height} to {summary['dest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
