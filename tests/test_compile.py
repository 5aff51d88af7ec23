"""--compile: the main phases through torch.compile, and the fallback when compiling fails."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from creps.cli.train import train
from creps.config import DatasetInfo, TrainOptions, resolve
from creps.ops import compiled
from creps.ops.compiled import CompiledCall
from creps.train.compiled import on_device
from creps.train.step import Trainer, build_networks
from test_config_docs import constant_png_zip


class CompileError(RuntimeError):
    pass


def failing_backend(graph_module, example_inputs):
    raise CompileError("no compiler here")


def tiny_cfg(compile):
    options = TrainOptions(outdir="/runs", cfg="creps", data="/data/x.zip", gpus=1, batch=4, gamma=1.0, cbase=256,
                           cmax=32, map_depth=1, mbstd_group=2, aug="noaug", metrics=(), fp32=True, compile=compile)
    return resolve(options, DatasetInfo("/data/x.zip", "x", 16, 3, 64, False, 0))


def test_compile_default_follows_the_device():
    assert on_device(tiny_cfg(None).compile, torch.device("cpu")) is False
    assert on_device(tiny_cfg(None).compile, torch.device("cuda")) is True
    assert on_device(tiny_cfg(True).compile, torch.device("cpu")) is True
    assert on_device(tiny_cfg(False).compile, torch.device("cuda")) is False


def test_a_failing_compile_runs_the_plain_module_with_one_log_line():
    torch._dynamo.reset()
    module = torch.nn.Linear(3, 2)
    lines = []
    call = CompiledCall(module, "the linear", lines.append, backend=failing_backend)
    x = torch.randn(4, 3)
    assert torch.equal(call(x), module(x))
    assert torch.equal(call(x), module(x))
    assert len(lines) == 1 and "torch.compile failed for the linear" in lines[0] and "no compiler here" in lines[0]
    assert call.failed


def test_a_real_error_still_raises():
    """A bug is not hidden by the fallback: the plain module raises it again."""
    torch._dynamo.reset()
    call = CompiledCall(torch.nn.Linear(3, 2), "the linear", lambda line: None, backend=failing_backend)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        call(torch.randn(4, 5))


def test_training_step_survives_a_failing_compile(monkeypatch):
    """Forced compile failure in every main-phase module: one line each, then the step is
    exactly the uncompiled one (every phase, batch_idx 0)."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", failing_backend)
    torch.manual_seed(0)
    base = build_networks(tiny_cfg(False), torch.device("cpu"))
    reals = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    runs, lines = [], []
    for compile in (True, False):
        nets = copy.deepcopy(base)
        trainer = Trainer(tiny_cfg(compile), nets, torch.device("cpu"), lambda n: torch.zeros(n, 0),
                          log=lines.append)
        assert trainer.compiled is compile
        torch.manual_seed(7)
        for batch_idx in range(2):
            trainer.step(reals, torch.zeros(4, 0), batch_idx=batch_idx, cur_nimg=batch_idx * 4)
        runs.append(nets)
    assert len(lines) == 3, lines  # G.mapping, G.synthesis, D: once each
    assert sorted(line.split(" (")[0] for line in lines) == [
        "torch.compile failed for D", "torch.compile failed for G.mapping", "torch.compile failed for G.synthesis"]
    for name in ("G", "D", "G_ema"):
        a, b = getattr(runs[0], name).state_dict(), getattr(runs[1], name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_dry_run_shows_compile(tmp_path, capsys):
    data = constant_png_zip(tmp_path / "d.zip", 16)
    for value, expected, line in ((None, None, "auto"), ("1", True, "compiled"), ("0", False, "off")):
        args = [f"--outdir={tmp_path}/runs", "--cfg=creps", f"--data={data}", "--batch=4", "--gamma=1", "--dry-run"]
        code = train(args + ([f"--compile={value}"] if value else []))
        out = capsys.readouterr().out
        assert code == 0
        start = out.index("{", out.index("Training options:"))
        options, _ = json.JSONDecoder().raw_decode(out, start)
        assert options["compile"] is expected
        summary = next(l for l in out.splitlines() if l.startswith("Compiled phases:"))
        assert line in summary


def test_compile_may_change_on_resume():
    from creps.train.resume import continued_config

    stored = tiny_cfg(None)
    assert continued_config(stored, dataclasses.replace(stored, compile=True)).compile is True
