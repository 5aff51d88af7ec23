"""Throughput of the metric detectors, printed as one JSON line.

Full-size networks with random weights (speed does not depend on the values): the FID
Inception-v3 on 299x299 inputs (pool features, what FID/KID read), the VGG16 fc7 features at
224x224 (precision/recall) and the LPIPS distance of 256x256 image pairs (PPL).

  python benchmarks/bench_metrics.py --batch=16 --iters=4
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Callable

import torch

from creps.metrics.inception import InceptionV3
from creps.metrics.vgg16 import VGG16
from common import add_device_options, device_from  # benchmarks/common.py


def images_per_second(run: Callable[[], None], images: int, iters: int, warmup: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        run()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    sync()
    return images * iters / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    add_device_options(p)
    a = p.parse_args()
    device = device_from(a)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    inception = InceptionV3().to(device).eval()
    vgg = VGG16().to(device).eval()
    gen = torch.Generator().manual_seed(0)
    at_256 = torch.randint(0, 256, (a.batch, 3, 256, 256), generator=gen, dtype=torch.uint8).to(device)
    other = torch.randint(0, 256, (a.batch, 3, 256, 256), generator=gen, dtype=torch.uint8).to(device)
    results = {}
    with torch.no_grad():
        results["inception_pool_img_per_s"] = images_per_second(lambda: inception(at_256), a.batch, a.iters,
                                                                a.warmup, sync)
        results["vgg16_fc7_img_per_s"] = images_per_second(lambda: vgg.fc_features(at_256), a.batch, a.iters,
                                                           a.warmup, sync)
        results["lpips_pairs_per_s"] = images_per_second(lambda: vgg.lpips(at_256.float(), other.float()), a.batch,
                                                         a.iters, a.warmup, sync)
    print(json.dumps({
        "benchmark": "metric detectors", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads, {platform.machine()})", "batch": a.batch,
        "torch": torch.__version__, **{k: round(v, 2) for k, v in results.items()},
    }))


if __name__ == "__main__":
    main()
