"""Latent-interpolation video: `python gen_video.py --network=SNAPSHOT --seeds=0-31 --grid=4x2 --output=lerp.mp4`."""

import sys

from creps.cli.video import gen_video

if __name__ == "__main__":
    sys.exit(gen_video(prog="gen_video.py"))
