"""Every trainable --cfg with every --aug mode: a tiny real run, a snapshot, rendered images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from creps.cli.generate import generate
from creps.cli.train import train
from creps.nets.registry import CONFIG_NAMES as CONFIGS
from creps.data.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.slow

TINY = ["--gpus=1", "--batch=4", "--gamma=1", "--cbase=256", "--cmax=32", "--map-depth=1", "--mbstd-group=2",
        "--metrics=none", "--kimg=0.008", "--tick=0.004", "--snap=1", "--grid=4x2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.zip"
    make_synthetic_dataset(str(path), num_images=16, resolution=16, seed=1)
    return path


@pytest.mark.parametrize("aug", ["noaug", "ada", "fixed"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_trains_and_renders(cfg, aug, data, tmp_path):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", f"--cfg={cfg}", f"--aug={aug}", "--p=0.3", *TINY]) == 0
    (run_dir,) = list(outdir.iterdir())
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    p = [t["Progress/augment"]["mean"] for t in ticks]
    expected = 0.3 if aug == "fixed" else 0.0  # ADA moves p in steps of 3e-5 here, from 0
    assert p == pytest.approx([expected] * len(ticks), abs=1e-3)
    for t in ticks[1:]:
        assert np.isfinite(t["Loss/G/loss"]["mean"]) and np.isfinite(t["Loss/D/loss"]["mean"])
    (snapshot,) = list(run_dir.glob("network-snapshot-*.safetensors"))
    images = tmp_path / "images"
    assert generate([f"--network={snapshot}", "--seeds=0-1", f"--outdir={images}", "--trunc=0.7"]) == 0
    for seed in (0, 1):
        with Image.open(images / f"seed{seed:04d}.png") as img:
            assert img.size == (16, 16)


@pytest.mark.parametrize("cfg", ["stylegan3-t", "stylegan3-r"])
def test_stylegan3_renders_with_a_user_transform(cfg, data, tmp_path, capsys):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", f"--cfg={cfg}", "--aug=noaug", *TINY]) == 0
    (snapshot,) = list(outdir.glob("*/network-snapshot-*.safetensors"))
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    assert generate([f"--network={snapshot}", "--seeds=3", f"--outdir={plain}"]) == 0
    assert generate([f"--network={snapshot}", "--seeds=3", f"--outdir={moved}", "--translate=0.25,0",
                     "--rotate=10"]) == 0
    a = np.asarray(Image.open(plain / "seed0003.png"), dtype=np.float32)
    b = np.asarray(Image.open(moved / "seed0003.png"), dtype=np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() > 0.5


def test_user_transform_is_refused_for_other_configs(data, tmp_path, capsys):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", "--cfg=creps", "--aug=noaug", *TINY]) == 0
    (snapshot,) = list(outdir.glob("*/network-snapshot-*.safetensors"))
    capsys.readouterr()
    assert generate([f"--network={snapshot}", "--seeds=0", f"--outdir={tmp_path / 'x'}", "--rotate=5"]) == 2
    assert "only StyleGAN3" in capsys.readouterr().err
