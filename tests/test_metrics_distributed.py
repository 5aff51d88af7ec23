"""Metrics computed by many processes (gloo on CPUs) equal the single-process numbers.

Each rank embeds its turn of the batches and the sums and rows are combined, so every metric
family must give the same value with 1 or 2 processes (up to float64 summation order), and
calc_metrics.py --gpus=2 must print what --gpus=1 prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from creps import parallel
from creps.checkpoint import load_snapshot
from creps.metrics.detectors import Detectors
from creps.metrics.inception import load_detector
from creps.metrics.registry import compute_metric
from test_metrics_pipeline import CountingDetector, make_snapshot, tiny_state, write_images
from tiny_vgg16 import lin_state, vgg_state

ROOT = Path(__file__).resolve().parents[1]
# Small batches so that two processes really split the work (20 reals, 4 per batch).
NAMES = ["fid20_full", "kid20_full", "pr203_full", "is20", "ppl2_wend12", "eqs10"]
BATCH = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics-dist")
    data = write_images(root / "reals", 20, seed=3)
    torch.save(tiny_state(), root / "inception.pth")
    torch.save(vgg_state(), root / "vgg16.pth")
    torch.save(lin_state(), root / "lpips.pth")
    return {"root": root, "data": data, "snapshot": make_snapshot(root / "runs" / "00000-creps-reals", data)}


def _evaluate(world: parallel.World, files: dict, cache: str, out: str) -> None:
    G = load_snapshot(files["snapshot"], networks=("G_ema",)).G_ema
    inception = CountingDetector(load_detector(str(files["root"] / "inception.pth")))
    detectors = Detectors("cpu", inception=inception, vgg16=str(files["root"] / "vgg16.pth"),
                          lpips=str(files["root"] / "lpips.pth"))
    results = {}
    for name in NAMES:
        result = compute_metric(name, G, str(files["data"]), mirror=False, device="cpu",
                                detector=detectors, progress=False, cache_dir=cache, batch_size=BATCH, world=world)
        results.update(result["results"])
        assert result["num_gpus"] == world.size
    results["embedded_images"] = inception.images
    Path(out, f"rank{world.rank}.json").write_text(json.dumps(results))


def test_two_processes_compute_what_one_does(files, tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    _evaluate(parallel.SINGLE, files, str(tmp_path / "cache1"), str(single))
    split = tmp_path / "split"
    split.mkdir()
    parallel.spawn(_evaluate, 2, str(tmp_path), args=(files, str(tmp_path / "cache2"), str(split)))
    one = json.loads((single / "rank0.json").read_text())
    embedded = []
    for rank in (0, 1):
        two = json.loads((split / f"rank{rank}.json").read_text())
        embedded.append(two.pop("embedded_images"))
        assert two.keys() == one.keys() - {"embedded_images"}
        for key, value in two.items():
            assert value == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    # The work was split: each rank embedded part of the images, together all of them.
    assert sum(embedded) == one["embedded_images"] and 0 < min(embedded) < one["embedded_images"]
    # The real features were cached once, by rank 0, and read back by a later evaluation.
    cached = sorted((tmp_path / "cache2").glob("*.npz"))
    assert cached and len(cached) == len(sorted((tmp_path / "cache1").glob("*.npz")))


def test_calc_metrics_with_two_processes(files, tmp_path):
    env = dict(os.environ, CREPS_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    common = [sys.executable, str(ROOT / "calc_metrics.py"), f"--network={files['snapshot']}",
              "--metrics=fid20_full,eqs8", f"--detector={files['root'] / 'inception.pth'}", "--workers=0",
              "--verbose=0", "--device=cpu"]
    runs = {}
    for gpus in (1, 2):
        proc = subprocess.run([*common, f"--gpus={gpus}"], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs[gpus] = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["metric"] for r in runs[2]] == ["fid20_full", "eqs8"]
    assert [r["num_gpus"] for r in runs[2]] == [2, 2]
    for a, b in zip(runs[1], runs[2]):
        for key, value in a["results"].items():
            assert b["results"][key] == pytest.approx(value, rel=1e-6)
    lines = (files["snapshot"].parent / "metric-fid20_full.jsonl").read_text().splitlines()
    assert len(lines) >= 2  # rank 0 alone appended, once per run
