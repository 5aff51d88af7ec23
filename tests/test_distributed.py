"""Data-parallel training with torch.distributed on CPUs (gloo): the launch paths, the
kimg accounting, and identical weights on every rank."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_TRAIN_FLAGS, assert_same_tensors, final_snapshot
from creps.config import DatasetInfo, TrainOptions, resolve
from creps import parallel as distributed
from creps.train.rundir import RunLog, create_run_dir

pytestmark = pytest.mark.slow

FLAGS = [*TINY_TRAIN_FLAGS, "--kimg=0.032"]


@pytest.fixture(scope="module")
def data(tiny_dataset) -> Path:
    return tiny_dataset


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _train_rank(world: distributed.World, cfg_json: str, run_dir: str, out_dir: str) -> None:
    from creps.config import TrainConfig
    from creps.train.loop import run

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    log = RunLog(Path(run_dir) / "log.txt") if world.is_main else RunLog(None, stream=open(os.devnull, "w"))
    nets = run(cfg, Path(run_dir), log, world=world)
    Path(out_dir, f"rank{world.rank}.json").write_text(json.dumps(
        {name: digest(getattr(nets, name)) for name in ("G", "D", "G_ema")}))


def test_two_gloo_ranks_train_identical_weights(data, tmp_path):
    options = TrainOptions(outdir=str(tmp_path / "runs"), cfg="creps", data=str(data), gpus=2, batch=8, gamma=1,
                           cbase=256, cmax=32, map_depth=1, mbstd_group=2, aug="ada", metrics=(), kimg=0.032,
                           tick=0.016, snap=1, grid="2x2", workers=1)
    cfg = resolve(options, DatasetInfo(str(data), "shapes", 16, 3, 32, False, 0))
    run_dir = create_run_dir(cfg.outdir, cfg.run_desc, cfg.to_json())
    distributed.spawn(_train_rank, 2, str(tmp_path), args=(cfg.to_json(), str(run_dir), str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [t["Progress/kimg"]["mean"] for t in ticks] == pytest.approx([0.008, 0.024, 0.032])
    assert ticks[-1]["Loss/G/loss"]["num"] == 8  # one step of the global batch: 4 images from each rank
    assert sorted(p.name for p in run_dir.glob("network-snapshot-*")) == ["network-snapshot-000000.safetensors"]


def test_torchrun_launch_on_cpus(data, tmp_path):
    outdir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "train.py"), f"--outdir={outdir}", f"--data={data}", "--gpus=2", *FLAGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]  # one run directory, written by rank 0
    assert run_dir.name.endswith("-gpus2-batch8-gamma1")
    log = (run_dir / "log.txt").read_text()
    assert log.count("Training for") == 1 and "tick 2" in log


def test_gpus_flag_must_match_torchrun(data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "train.py"), f"--outdir={tmp_path / 'runs'}", f"--data={data}", "--gpus=1",
           *[f for f in FLAGS if f != "--batch=8"], "--batch=8"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            timeout=600)
    assert result.returncode != 0
    assert "--gpus=1" in result.stderr + result.stdout and "2 processes" in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_gpus_flag_spawns_cpu_ranks(data, tmp_path):
    """--gpus=2 without torchrun: two local processes (gloo on CPUs), one run directory."""
    from creps.cli.train import train

    outdir = tmp_path / "runs"
    flags = [f if f != "--metrics=none" else "--metrics=eqs4" for f in FLAGS]
    assert train([f"--outdir={outdir}", f"--data={data}", "--gpus=2", *flags]) == 0
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    log = (run_dir / "log.txt").read_text()
    assert "Data-parallel: 2 processes" in log and log.count("Exiting...") == 1
    # Both ranks computed the metric of each snapshot; rank 0 alone wrote its line.
    lines = [json.loads(x) for x in (run_dir / "metric-eqs4.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {line["num_gpus"] for line in lines} == {2}
    assert all(line["results"]["eqs4"] > 0 for line in lines)


def test_two_ranks_stop_and_resume_equal_an_uninterrupted_run(data, tmp_path):
    """Every rank's random streams, label sampler and partial statistics are in the training
    state, so a 2-process run that stops and resumes ends bit-identical to one that did not."""
    from creps.cli.train import train

    flags = TINY_TRAIN_FLAGS
    full, part = tmp_path / "full", tmp_path / "part"
    assert train([f"--outdir={full}", f"--data={data}", "--gpus=2", *flags, "--kimg=0.048"]) == 0
    assert train([f"--outdir={part}", f"--data={data}", "--gpus=2", *flags, "--kimg=0.016"]) == 0
    assert train([f"--outdir={part}", f"--data={data}", "--gpus=2", *flags, "--kimg=0.048", "--resume=auto"]) == 0
    assert_same_tensors(final_snapshot(full), final_snapshot(part))


def _spawned_ranks(parent: int) -> list[int]:
    """The pids of the ranks a `--gpus=N` run spawned, in the order they started."""
    ranks = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"spawn_main" in (entry / "cmdline").read_bytes():
                ranks.append(int(entry.name))
        except (ValueError, OSError, IndexError):
            continue
    return sorted(ranks)


def test_a_stop_sent_to_one_rank_stops_every_rank_at_one_step_then_resumes_exactly(data, tmp_path):
    """SIGTERM to rank 1 alone: the ranks agree on the step to stop at (no hang, no rank left
    behind), rank 0 writes the training state, the command exits 130 like a stopped one-process
    run, and the resumed run ends bit-identical to an uninterrupted one."""
    from creps.cli.train import train

    flags = [*TINY_TRAIN_FLAGS, "--gpus=2", "--kimg=0.064"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train([f"--outdir={full}", f"--data={data}", *flags]) == 0
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), f"--outdir={part}", f"--data={data}", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while not list(part.glob("*/training-state-*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, "no training state before the end"
            time.sleep(0.05)
        ranks = _spawned_ranks(proc.pid)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGTERM)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    (run_dir,) = [p for p in part.iterdir() if p.is_dir()]
    log = (run_dir / "log.txt").read_text()
    assert "A stop received at" in log and "Exiting..." not in log, log
    assert train([f"--outdir={part}", f"--data={data}", *flags, "--resume=auto"]) == 0
    assert_same_tensors(final_snapshot(full), final_snapshot(part))
