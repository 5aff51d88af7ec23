"""Parity with the published implementation: every fixture in $CREPS_FIXTURES.

Each fixture gives a published network's constructor kwargs, its state dict, inputs and
the published outputs; our module built through `creps.compat` must reproduce them within
the fixture's own tolerance (never loosened here).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import fixtures_dir
from creps.nets.registry import UnknownFamily, build_published

FIXTURES = sorted(fixtures_dir().glob("*.json")) if fixtures_dir().is_dir() else []
# Networks that other parity tests cover with their own loaders (e.g. the Inception detector).
HANDLED_ELSEWHERE = {"inception_v3_fid"}


def _calls():
    for path in FIXTURES:
        spec = json.loads(path.read_text())
        if spec.get("network") in HANDLED_ELSEWHERE or "calls" not in spec:
            continue
        for i, call in enumerate(spec["calls"]):
            yield pytest.param(path, i, id=f"parity-{path.stem}-{call['output'].removeprefix('out.')}")


def _load(path):
    spec = json.loads(path.read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    try:
        net = build_published(spec["network"], spec["init"])
    except UnknownFamily as err:
        pytest.skip(f"{path.stem}: {err}")
    params = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    net.load_state_dict(params, strict=True)
    return spec, tensors, net.eval()


def _arg(value, tensors):
    if isinstance(value, str) and value.startswith("in."):
        return tensors[value]
    return value


@pytest.mark.skipif(not FIXTURES, reason="no parity fixtures found (set CREPS_FIXTURES)")
@pytest.mark.parametrize("path,index", list(_calls()))
def test_parity(path, index):
    spec, tensors, net = _load(path)
    call = spec["calls"][index]
    inputs = {k: _arg(v, tensors) for k, v in call["inputs"].items()}
    saved = {}
    for name, tensor_name in (call.get("buffer_override") or {}).items():
        saved[name] = net.get_buffer(name).clone()
        net.get_buffer(name).data = tensors[tensor_name].clone()
    fn = {"G": net, "D": net, "G.mapping": getattr(net, "mapping", None), "E": net}[call["fn"]]
    try:
        with torch.no_grad():
            out = fn(*inputs.values()) if call["fn"] == "G.mapping" else fn(**inputs)
    finally:
        for name, value in saved.items():
            net.get_buffer(name).data = value
    if isinstance(out, (tuple, list)):
        out = out[call.get("select_index", 0)]
    expected = tensors[call["output"]]
    assert out.shape == expected.shape
    atol = call["tolerance"]["atol"]
    err = (out.float() - expected).abs().max().item()
    assert err <= atol, f"{path.stem}/{call['output']}: max |diff| {err:.3g} > atol {atol:.3g}"
