"""Exact resume, crash safety of training states, and transfer from a snapshot."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from creps.cli.train import train
from creps.data.synthetic import make_synthetic_dataset
from creps.errors import UserError
from creps.train.state import load_training_state

pytestmark = pytest.mark.slow

FLAGS = ["--cfg=creps", "--gpus=1", "--batch=4", "--gamma=1", "--cbase=256", "--cmax=32", "--map-depth=1",
         "--mbstd-group=2", "--aug=noaug", "--metrics=none", "--tick=0.008", "--snap=1", "--grid=4x2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.zip"
    make_synthetic_dataset(str(path), num_images=32, resolution=16, seed=0)
    return path


def final_weights(outdir: Path) -> dict[str, torch.Tensor]:
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    return load_file(str(sorted(run_dir.glob("network-snapshot-*.safetensors"))[-1]))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> dict[str, torch.Tensor]:
    outdir = tmp_path_factory.mktemp("full")
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.032"]) == 0
    return final_weights(outdir)


def test_stop_and_resume_equals_uninterrupted_run(data, tmp_path, uninterrupted):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.016"]) == 0
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.032", "--resume=auto"]) == 0
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]  # continued in the same directory
    assert_same_weights(final_weights(outdir), uninterrupted)
    log = (run_dir / "log.txt").read_text()
    assert "Continuing run" in log and "Resumed from training-state-" in log
    ticks = [line for line in (run_dir / "stats.jsonl").read_text().splitlines() if line]
    assert len(ticks) == 5  # ticks 0..4 of the whole run, appended across both sessions


def _spawn(data: Path, outdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "train.py"), f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.032"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def _wait_for_state(outdir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Return as soon as the first training state exists (it appears whole: atomic rename)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(outdir.glob("*/training-state-*.safetensors")):
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted:\n{proc.stdout.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no training state appeared in time")


def test_sigkill_then_resume_reproduces_the_uninterrupted_weights(data, tmp_path, uninterrupted):
    outdir = tmp_path / "runs"
    proc = _spawn(data, outdir)
    _wait_for_state(outdir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    for path in run_dir.glob("training-state-*.safetensors"):
        load_training_state(path)  # whole files only
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.032", f"--resume={run_dir}"]) == 0
    assert_same_weights(final_weights(outdir), uninterrupted)


def test_sigterm_writes_a_resumable_state(data, tmp_path, uninterrupted):
    outdir = tmp_path / "runs"
    proc = _spawn(data, outdir)
    _wait_for_state(outdir, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "SIGTERM received" in out and "--resume=" in out
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.032", f"--resume={run_dir}"]) == 0
    assert_same_weights(final_weights(outdir), uninterrupted)


def test_truncated_and_corrupt_states_are_refused(data, tmp_path, capsys):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.004"]) == 0
    (state,) = list(outdir.glob("*/training-state-*.safetensors"))
    good = state.read_bytes()

    state.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_training_state(state)
    capsys.readouterr()
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.008", f"--resume={state.parent}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no valid training-state" in err

    corrupt = bytearray(good)
    corrupt[-100] ^= 0xFF  # flip bits inside the last tensor
    state.write_bytes(bytes(corrupt))
    with pytest.raises(UserError, match="checksum"):
        load_training_state(state)


def test_resume_with_different_options_is_refused(data, tmp_path, capsys):
    outdir = tmp_path / "runs"
    assert train([f"--outdir={outdir}", f"--data={data}", *FLAGS, "--kimg=0.004"]) == 0
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    flags = [f if f != "--gamma=1" else "--gamma=2" for f in FLAGS]
    capsys.readouterr()
    assert train([f"--outdir={outdir}", f"--data={data}", *flags, "--kimg=0.008", f"--resume={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "r1_gamma" in err and err.count("\n") == 1


def test_transfer_from_a_network_snapshot(data, tmp_path, capsys):
    first = tmp_path / "first"
    assert train([f"--outdir={first}", f"--data={data}", *FLAGS, "--kimg=0.004"]) == 0
    (snap,) = list(first.glob("*/network-snapshot-*.safetensors"))
    second = tmp_path / "second"
    assert train([f"--outdir={second}", f"--data={data}", *FLAGS, "--kimg=0.004", f"--resume={snap}",
                  "--freezed=1"]) == 0
    (run_dir,) = [p for p in second.iterdir() if p.is_dir()]
    assert "Starting from the weights of" in (run_dir / "log.txt").read_text()
    import json
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["ema_rampup"] is None and options["resume"] == str(snap)

    capsys.readouterr()
    other = [f if f != "--cmax=32" else "--cmax=16" for f in FLAGS]
    assert train([f"--outdir={tmp_path / 'third'}", f"--data={data}", *other, "--kimg=0.004",
                  f"--resume={snap}"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "vs" in err
    assert not (tmp_path / "third").exists() or not any((tmp_path / "third").iterdir())
