"""Parity of our FID Inception-v3 with the published extractor, for every `inception_v3_fid`
fixture in $CREPS_FIXTURES.

The fixture stores the BatchNorm statistics and fc bias; the conv and fc weights are rebuilt
here from its `param_generator` (splitmix64 counters scaled by a power of two), checked
against the stored checksums, and the whole state dict is loaded strictly. Each call's
output must match within the call's own tolerance (never loosened here).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import network_fixtures
from creps.metrics.inception import from_state_dict

NETWORK = "inception_v3_fid"
MASK64 = (1 << 64) - 1


FIXTURES = [(path, json.loads(path.read_text())) for path in network_fixtures(NETWORK)]


def splitmix64_stream(stream: int, count: int) -> np.ndarray:
    """splitmix64 of the counters (stream << 32) + i, i < count, as uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = np.uint64((stream << 32) & MASK64) + np.arange(count, dtype=np.uint64)
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def generated_tensor(shape: list[int], stream: int, exp2: int) -> torch.Tensor:
    """value[i] = (top 24 bits of splitmix64 - 2^23) * 2^exp2, C order; exact in float32."""
    count = math.prod(shape)
    top24 = (splitmix64_stream(stream, count) >> np.uint64(40)).astype(np.int64) - (1 << 23)
    values = np.ldexp(top24.astype(np.float64), exp2).astype(np.float32)
    return torch.from_numpy(values.reshape(shape))


def check_generated(key: str, tensor: torch.Tensor, info: dict) -> None:
    values = tensor.double()
    first = info["first"]
    assert tensor.flatten()[: len(first)].tolist() == first, f"{key}: first values differ"
    assert math.isclose(values.sum().item(), info["sum"], rel_tol=1e-9, abs_tol=1e-9), f"{key}: sum differs"
    assert math.isclose((values * values).sum().item(), info["sum_sq"], rel_tol=1e-9), f"{key}: sum_sq differs"


def rebuild_state_dict(spec: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generated = spec["param_generator"]["keys"]
    state = {}
    for key in spec["state_dict_key_order"]:
        if key in generated:
            info = generated[key]
            state[key] = generated_tensor(info["shape"], info["stream"], info["exp2"])
            check_generated(key, state[key], info)
        else:
            state[key] = tensors[f"param.{key}"]
    assert len(state) == spec.get("state_dict_keys", len(state))
    return state


_NETS: dict[str, tuple] = {}


def _net(path, spec):
    """(network, stored tensors, outputs per input name), built once per fixture."""
    if path.stem not in _NETS:
        tensors = load_file(str(path.with_suffix(".safetensors")))
        net = from_state_dict(rebuild_state_dict(spec, tensors), where=path.stem)
        _NETS[path.stem] = (net, tensors, {})
    return _NETS[path.stem]


def _calls():
    for path, spec in FIXTURES:
        for index, call in enumerate(spec["calls"]):
            yield pytest.param(path, spec, index, id=f"parity-{path.stem}-{call['output'].removeprefix('out.')}")


@pytest.mark.skipif(not FIXTURES, reason=f"no {NETWORK} fixtures found (set CREPS_FIXTURES)")
@pytest.mark.parametrize("path,spec,index", list(_calls()))
def test_inception_parity(path, spec, index):
    net, tensors, outputs = _net(path, spec)
    call = spec["calls"][index]
    assert call["fn"] == "E" and list(call["inputs"]) == ["x"]
    name = call["inputs"]["x"]
    if name not in outputs:
        with torch.no_grad():
            outputs[name] = net(tensors[name], logits=True)
    out = outputs[name][call.get("select_index", 0)]
    expected = tensors[call["output"]]
    assert out.dtype == torch.float32 and out.shape == expected.shape
    atol = call["tolerance"]["atol"]
    err = (out - expected).abs().max().item()
    assert err <= atol, f"{path.stem}/{call['output']}: max |diff| {err:.3g} > atol {atol:.3g}"


@pytest.mark.skipif(not FIXTURES, reason=f"no {NETWORK} fixtures found (set CREPS_FIXTURES)")
def test_parity_state_dict_layout_matches_fixture():
    """Our state_dict() has exactly the published keys, in the published order."""
    path, spec = FIXTURES[0]
    net, _, _ = _net(path, spec)
    assert list(net.state_dict()) == spec["state_dict_key_order"]
