"""Generate images: `python gen_images.py --network=SNAPSHOT --seeds=0-3 --outdir=out [--scale=2]`."""

import sys

from creps.cli.generate import generate

if __name__ == "__main__":
    sys.exit(generate(prog="gen_images.py"))
