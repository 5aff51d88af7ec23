"""Train a GAN: `python train.py --outdir=... --cfg=creps --data=... --gpus=1 --batch=32 --gamma=8`."""

import sys

from creps.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train.py"))
