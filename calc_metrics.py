"""Quality metrics: `python calc_metrics.py --metrics=fid50k_full --network=SNAPSHOT [--data=ZIP] [--mirror=1]`."""

import sys

from creps.cli.metrics import main

if __name__ == "__main__":
    sys.exit(main(prog="calc_metrics.py"))
