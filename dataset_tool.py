#!/usr/bin/env python3
"""Published command line: convert a folder or ZIP of images into a training dataset.

Example: python dataset_tool.py --source=~/photos --dest=~/datasets/photos-256.zip --resolution=256x256 --transform=center-crop
"""

import sys

from creps.cli.dataset import main

if __name__ == "__main__":
    sys.exit(main())
