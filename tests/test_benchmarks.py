"""The benchmark scripts run and print what they promise (tiny networks; no timings asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--res=32", "--cbase=1024", "--cmax=64"]


def bench(script: str, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_saved_shows_what_recompute_keeps():
    on = bench("bench_saved.py", "--cfg=creps", *TINY, "--fp32=1")
    off = bench("bench_saved.py", "--cfg=creps", *TINY, "--fp32=1", "--recompute=0")
    assert on["recompute"] is True and off["recompute"] is False
    assert 0 < on["G_saved_mb_per_image"] < 0.6 * off["G_saved_mb_per_image"]
    assert on["D_saved_mb_per_image"] == off["D_saved_mb_per_image"] > 0


def test_bench_train_prints_one_json_line():
    out = bench("bench_train.py", "--cfg=stylegan2", *TINY, "--batch=4", "--mbstd-group=2", "--iters=1", "--warmup=1",
                "--fused-modconv=1")
    assert out["cfg"] == "stylegan2" and out["fused_modconv"] == 1 and out["sec_per_kimg"] > 0


def test_bench_studio_times_preview_and_full_views():
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    out = bench("bench_studio.py", *TINY, "--sizes=32,64", "--grid=2", "--zoom=64", "--repeat=1")
    assert [v["view"] for v in out["views"]] == ["1 image 32x32", "1 image 64x64", "2x2 images 32x32",
                                                 "zoom window 64x64 at 4x"]
    assert [v["pixels"] for v in out["views"]] == [1024, 4096, 4096, 4096]
    assert all(v["preview_ms"] > 0 and v["full_ms"] > 0 for v in out["views"]) and out["preview_during_full_ms"] > 0
    assert out["views"][0]["preview_sizes"] == ["32x32"]  # smaller than a preview: the view itself
def test_bench_projector_prints_speed_and_fit():
    out = bench("bench_projector.py", "--cfgs=creps", *TINY, "--map-depth=2", "--steps=1", "--fit-steps=4")
    assert out["res"] == 32 and out["speed"]["creps"]["sec_per_1000_steps"] > 0
    fit = out["fit"]["w_4_steps"]
    assert fit["lpips"] < fit["initial_lpips"] and set(out["fit"]) == {"w_4_steps", "w_plus_4_steps", "start_psnr_db"}
