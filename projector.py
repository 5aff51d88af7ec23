"""Project images into a network: `python projector.py --network=SNAPSHOT --target=photo.png --outdir=out`."""

import sys

from creps.cli.project import run_projection

if __name__ == "__main__":
    sys.exit(run_projection(prog="projector.py"))
