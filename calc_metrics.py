"""Quality metrics: `python calc_metrics.py --metrics=fid50k_full --network=SNAPSHOT [--data=ZIP] [--mirror=1]`."""

import sys

from creps.cli.metrics import calc_metrics

if __name__ == "__main__":
    sys.exit(calc_metrics(prog="calc_metrics.py"))
