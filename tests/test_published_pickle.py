"""Published network pickles (.pkl of the StyleGAN2-ADA / StyleGAN3 / CREPS code).

- the sample pickles in $CREPS_FIXTURES/published-pkl render the images the published code
  renders;
- pickles written here in the published format (tests/published_pickle_writer.py) from the
  parity fixtures load for every network family and pickle protocol 2 to 5;
- nothing in a pickle runs: code-running payloads, foreign globals, malformed tensors and
  records are refused with one clear line;
- `creps convert`, `gen_images.py`, URLs and `train.py --resume=X.pkl` (fine-tuning, Freeze-D,
  another resolution, files that do not fit).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import io
import json
import os
import pickle
import pickletools
import random
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import creps
import creps.download
import published_pickle_writer as W
from conftest import fixtures_dir
from creps.checkpoint import load_snapshot
from creps.cli.generate import generate
from creps.cli.main import main as creps_main
from creps.cli.metrics import calc_metrics
from creps.cli.train import train
from creps.compat.pickle_reader import LEGACY_MAGIC, UnsafePickle, read_published_pickle
from creps.compat.published import read_published
from creps.nets.registry import build_published
from creps.data.synthetic import make_synthetic_dataset
from creps.errors import UserError

FIXTURES = fixtures_dir()
SAMPLES = FIXTURES / "published-pkl"
CREPS_PKL = SAMPLES / "creps-32.pkl"
SG3_PKL = SAMPLES / "stylegan3-t-32.pkl"
needs_samples = pytest.mark.skipif(not (CREPS_PKL.is_file() and SG3_PKL.is_file()),
                                   reason=f"sample pickles not found in {SAMPLES} (set CREPS_FIXTURES)")


# ---------------------------------------------------------------------------------------
# Fixtures and helpers.


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    if not (SAMPLES / "expected.safetensors").is_file():
        pytest.skip(f"{SAMPLES}/expected.safetensors not found (set CREPS_FIXTURES)")
    return load_file(str(SAMPLES / "expected.safetensors"))


@pytest.fixture(scope="module")
def creps_pub():
    return read_published(CREPS_PKL)


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a payload would create if it ran."""
    return tmp_path / "pwned"


def parity_fixture(stem: str):
    """(spec, tensors, published state dict) of a parity fixture; skipped when missing."""
    path = FIXTURES / f"{stem}.json"
    if not path.is_file():
        pytest.skip(f"parity fixture {stem} not found in {FIXTURES}")
    tensors = load_file(str(path.with_suffix(".safetensors")))
    state = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    return json.loads(path.read_text()), tensors, state


def check_calls(net: torch.nn.Module, spec: dict, tensors: dict[str, torch.Tensor]) -> int:
    """Run every recorded call of a parity fixture on `net`; assert the fixture's tolerance."""
    for call in spec["calls"]:
        inputs = {k: tensors[v] if isinstance(v, str) and v.startswith("in.") else v
                  for k, v in call["inputs"].items()}
        saved = {}
        for name, tensor_name in (call.get("buffer_override") or {}).items():
            saved[name] = net.get_buffer(name).clone()
            net.get_buffer(name).data = tensors[tensor_name].clone()
        try:
            with torch.no_grad():
                out = net.mapping(*inputs.values()) if call["fn"] == "G.mapping" else net(**inputs)
        finally:
            for name, value in saved.items():
                net.get_buffer(name).data = value
        want = tensors[call["output"]]
        err = (out.float() - want).abs().max().item()
        assert out.shape == want.shape and err <= call["tolerance"]["atol"], \
            f"{call['output']}: max |diff| {err:.3g} > atol {call['tolerance']['atol']}"
    return len(spec["calls"])


def perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Another set of weights of the same shapes (written as G, so G_ema must not be read from G)."""
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}


def ada_layout(init: dict) -> dict:
    """The StyleGAN2-ADA repo's generator kwargs: synthesis options nested in `synthesis_kwargs`,
    with the fp16 options its train.py sets (no effect in float32; that code has no
    fused_modconv_default: it fuses in inference, as 'inference_only')."""
    top = ("c_dim", "img_resolution", "img_channels")
    synthesis = {k: v for k, v in init.items()
                 if k not in (*top, "z_dim", "w_dim", "mapping_kwargs", "fused_modconv_default")}
    synthesis.update(num_fp16_res=4, conv_clamp=256)
    return {"z_dim": init["z_dim"], "w_dim": init["w_dim"], "mapping_kwargs": init["mapping_kwargs"],
            "synthesis_kwargs": synthesis, **{k: init[k] for k in top}}


def pickle_globals(data: bytes) -> set[str]:
    """Every global a pickle names (STACK_GLOBAL's two strings resolved through the memo)."""
    memo, stack, names = {}, [], set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif op.name == "STACK_GLOBAL":
            names.add(f"{stack[-2]}.{stack[-1]}")
            stack.append(None)
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
            stack.append(None)
        elif op.stack_after:
            stack.append(arg if isinstance(arg, str) else None)
    return names


def assert_refused(path: Path, *words: str) -> str:
    """read_published refuses `path` with one line naming `words`; returns the message."""
    with pytest.raises(UserError) as info:
        read_published(path)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def one_error_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def fixture_network(stem: str, layout: str = "stylegan3") -> W.PublishedNetwork:
    """A parity fixture as the published code would pickle it (StyleGAN3 layers without
    resampling filters store them as None buffers)."""
    spec, _, state = parity_fixture(stem)
    init = ada_layout(spec["init"]) if layout == "ada" else spec["init"]
    layers = {k.rsplit(".", 1)[0] for k in state if re.fullmatch(r"synthesis\.L\d+_\d+_\d+\.weight", k)}
    nones = tuple(f"{layer}.{name}" for layer in sorted(layers) for name in ("up_filter", "down_filter")
                  if f"{layer}.{name}" not in state)
    return W.PublishedNetwork(spec["network"], init, state, none_buffers=nones)


# ---------------------------------------------------------------------------------------
# 1. The sample pickles render as published.


@needs_samples
@pytest.mark.parametrize("file,key,kind,atol,augment_p", [
    ("creps-32.pkl", "creps", "creps.Generator", 1e-4, 0.25),
    ("stylegan3-t-32.pkl", "stylegan3-t", "stylegan3.Generator", 2e-6, None),
])
def test_sample_pickle_renders_as_published(expected, file, key, kind, atol, augment_p):
    """G_ema of each sample renders expected.safetensors (seeds 0, 1; CREPS also at scale 2)."""
    pub = read_published(SAMPLES / file)
    assert pub.kinds == {"G": kind, "D": "stylegan2.Discriminator", "G_ema": kind}
    assert pub.augment_p == augment_p
    assert pub.training_set_kwargs == {
        "class_name": "training.dataset.ImageFolderDataset", "path": "~/datasets/sample-32x32.zip",
        "use_labels": False, "max_size": 1000, "xflip": False, "resolution": 32, "random_seed": 0}
    assert pub.init_kwargs["D"]["channel_max"] == 16 and pub.init_kwargs["G"]["z_dim"] == 64
    g, g_ema = pub.G.state_dict(), pub.G_ema.state_dict()
    assert g.keys() == g_ema.keys() and not torch.equal(g["mapping.fc0.weight"], g_ema["mapping.fc0.weight"])
    assert not pub.G_ema.training and not any(p.requires_grad for p in pub.G_ema.parameters())
    assert len(pub.sha256) == 64
    for seed in (0, 1):
        z = expected[f"z.seed{seed}"].float()
        with torch.no_grad():
            img = pub.G_ema(z, None, truncation_psi=1, noise_mode="const")
            torch.testing.assert_close(img, expected[f"{key}.seed{seed}.x1"], atol=atol, rtol=0)
            if key == "creps":
                img2 = pub.G_ema(z, None, noise_mode="const", scale=2)
                torch.testing.assert_close(img2, expected[f"creps.seed{seed}.x2"], atol=atol, rtol=0)


@needs_samples
def test_sample_discriminator_loads(creps_pub):
    """D of the sample is our Discriminator at the file's (deviating, smaller) width."""
    D = creps_pub.D
    assert D.state_dict()["b32.fromrgb.weight"].shape == (16, 3, 1, 1)
    with torch.no_grad():
        logits = D(torch.zeros(4, 3, 32, 32), None)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------
# 2. Pickles written here in the published format.

CONFIGS = [("sg2_g32", "stylegan3"), ("sg2_g32", "ada"), ("sg3r_g32", "stylegan3"), ("creps_g32_cond", "stylegan3")]


def _cases():
    for stem, layout in CONFIGS:
        for protocol in (2, 3, 4, 5):
            yield pytest.param(stem, layout, protocol, id=f"{stem}-{layout}-p{protocol}")


@pytest.mark.parametrize("stem,layout,protocol", list(_cases()))
def test_written_pickle_renders_fixture_outputs(tmp_path, stem, layout, protocol):
    """G_ema of a pickle written from a parity fixture reproduces the fixture's outputs."""
    spec, tensors, state = parity_fixture(stem)
    net = fixture_network(stem, layout)
    if stem.startswith("sg3"):
        assert net.none_buffers  # the last layer's filters, as in published files
    other = W.PublishedNetwork(net.name, net.init, perturbed(state), none_buffers=net.none_buffers)
    path = tmp_path / "net.pkl"
    W.write_network_pickle(path, G=other, G_ema=net, protocol=protocol,
                           training_set_kwargs={"class_name": "training.dataset.ImageFolderDataset", "path": "x.zip"})
    assert path.read_bytes()[:2] == bytes([0x80, protocol])
    pub = read_published(path)
    assert pub.kinds == {"G": spec["network"], "G_ema": spec["network"]} and pub.D is None
    assert pub.training_set_kwargs["path"] == "x.zip"
    if layout == "ada":
        assert pub.init_kwargs["G_ema"]["synthesis_kwargs"]["channel_base"] == spec["init"]["channel_base"]
    torch.testing.assert_close(pub.G.state_dict(), perturbed(state), atol=0, rtol=0)
    assert check_calls(pub.G_ema, spec, tensors) >= 2


def test_protocol_2_without_python2_names_loads(tmp_path):
    """The rest of protocol 2 (GLOBAL, BINPUT, bytes as _codecs.encode) reads fine."""
    spec, tensors, _ = parity_fixture("creps_g32_cond")
    tree = W.snapshot_dict(None, None, fixture_network("creps_g32_cond"), old_torch=True)
    with W.published_names():
        f = io.BytesIO()
        pickle.Pickler(f, protocol=2, fix_imports=False).dump(tree)
    assert "_codecs.encode" in pickle_globals(f.getvalue())
    (tmp_path / "p2.pkl").write_bytes(f.getvalue())
    check_calls(read_published(tmp_path / "p2.pkl").G_ema, spec, tensors)


@pytest.mark.parametrize("protocol", [3, 4])
def test_written_discriminator_matches_fixture(tmp_path, protocol):
    """D written from the sg2_d32_cond fixture computes the fixture's logits."""
    spec, tensors, _ = parity_fixture("sg2_d32_cond")
    W.write_network_pickle(tmp_path / "d.pkl", D=fixture_network("sg2_d32_cond"),
                           G_ema=fixture_network("creps_g32_cond"), protocol=protocol)
    pub = read_published(tmp_path / "d.pkl")
    assert pub.kinds["D"] == "stylegan2.Discriminator" and pub.G is None
    check_calls(pub.D, spec, tensors)


@needs_samples
@pytest.mark.parametrize("file", ["creps-32.pkl", "stylegan3-t-32.pkl"])
def test_writer_matches_the_sample_format(tmp_path, expected, file):
    """The sample's networks written again by our writer: same globals as the sample, same images."""
    sample = read_published(SAMPLES / file)
    nets = {role: W.PublishedNetwork(sample.kinds[role], sample.init_kwargs[role], getattr(sample, role).state_dict())
            for role in ("G", "D", "G_ema")}
    W.write_network_pickle(tmp_path / file, **nets, augment_p=sample.augment_p,
                           training_set_kwargs=sample.training_set_kwargs)
    assert pickle_globals((tmp_path / file).read_bytes()) == pickle_globals((SAMPLES / file).read_bytes())
    again = read_published(tmp_path / file)
    assert (again.kinds, again.augment_p, again.init_kwargs) == (sample.kinds, sample.augment_p, sample.init_kwargs)
    z = expected["z.seed0"].float()
    with torch.no_grad():
        assert torch.equal(again.G_ema(z, None, noise_mode="const"), sample.G_ema(z, None, noise_mode="const"))


def test_older_pickle_without_optional_entries(tmp_path):
    """Files without augment_pipe / training_set_kwargs (older code) read them as None."""
    spec, tensors, _ = parity_fixture("sg2_g32")
    net = fixture_network("sg2_g32")
    (tmp_path / "old.pkl").write_bytes(W.dumps({"G": W.network_record(net), "D": None,
                                                 "G_ema": W.network_record(net)}))
    pub = read_published(tmp_path / "old.pkl")
    assert pub.augment_p is None and pub.training_set_kwargs is None
    check_calls(pub.G_ema, spec, tensors)


# ---------------------------------------------------------------------------------------
# 3. Safety: nothing in a pickle runs.


def _command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def test_os_system_payload_is_refused_and_does_not_run(tmp_path, marker):
    """`os.system` (protocol-2 GLOBAL) and `posix.system` (what pickle writes for it) are refused;
    the same bytes do run under plain pickle.loads (the payload is live)."""
    cmd = _command(marker).encode()
    handmade = b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    (tmp_path / "os.pkl").write_bytes(handmade)
    (tmp_path / "posix.pkl").write_bytes(pickle.dumps({"G": W.Payload(os.system, _command(marker))}, protocol=4))
    assert_refused(tmp_path / "os.pkl", "os.system")
    assert_refused(tmp_path / "posix.pkl", "posix.system")
    assert not marker.exists()
    pickle.loads(handmade)  # control: the payload is real
    assert marker.exists()


@pytest.mark.parametrize("make,name", [
    (lambda m: W.Payload(eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
    (lambda m: W.Payload(exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
    (lambda m: W.Payload(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    (lambda m: W.Payload(getattr, W.Payload(__import__, "os"), "system"), "builtins.getattr"),
], ids=["eval", "exec", "Popen", "getattr"])
def test_code_running_globals_are_refused(tmp_path, marker, make, name):
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"G": make(marker)}, protocol=4))
    assert_refused(tmp_path / "bad.pkl", name)
    assert not marker.exists()


def test_payload_inside_a_valid_network_pickle_is_refused(tmp_path, marker):
    """A payload hidden in G's _init_kwargs of an otherwise valid file: refused, nothing runs."""
    net = fixture_network("sg2_g32")
    evil = W.PublishedNetwork(net.name, net.init, net.state, extra_init_kwargs={"x": W.Payload(os.system,
                                                                                               _command(marker))})
    W.write_network_pickle(tmp_path / "evil.pkl", G=evil, G_ema=net)
    assert_refused(tmp_path / "evil.pkl", "posix.system")
    assert not marker.exists()


def _legacy_stream(obj) -> bytes:
    """A legacy torch.save stream whose object (item 4) is `obj`."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, info, obj, []))


def _tensor(storage_payload, offset=0, size=(4,), stride=(1,)):
    return W.Payload(torch._utils._rebuild_tensor_v2, storage_payload, offset, size, stride, False,
                     collections.OrderedDict())


def test_payloads_inside_tensor_streams_are_refused(tmp_path, marker):
    """The embedded storage streams: a REDUCE of posix.system, or a foreign storage class."""
    runs = W.Payload(torch.storage._load_from_bytes, _legacy_stream(W.Payload(os.system, _command(marker))))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"G": _tensor(runs)}, protocol=4))
    assert_refused(tmp_path / "a.pkl", "posix.system")
    good = W.storage_bytes(torch.zeros(4))
    assert b"ctorch\nFloatStorage\n" in good
    foreign = W.Payload(torch.storage._load_from_bytes, good.replace(b"ctorch\nFloatStorage\n", b"cos\nsystem\n"))
    (tmp_path / "b.pkl").write_bytes(pickle.dumps({"G": _tensor(foreign)}, protocol=4))
    assert_refused(tmp_path / "b.pkl", "os.system")
    assert not marker.exists()


@pytest.mark.parametrize("offset,size,stride", [(1, (4,), (1,)), (0, (2,), (4,)), (0, (2, 3), (1, 2))])
def test_tensor_reaching_outside_its_storage_is_refused(tmp_path, offset, size, stride):
    storage = torch.arange(4, dtype=torch.float32)._typed_storage()
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"G": _tensor(storage, offset, size, stride)}, protocol=4))
    assert_refused(tmp_path / "t.pkl", "past the end of its storage")


def test_honours_tensor_offset_and_stride(tmp_path):
    """A view inside its storage is rebuilt with its offset and stride."""
    storage = torch.arange(8, dtype=torch.float32)._typed_storage()
    data = pickle.dumps({"t": _tensor(storage, 1, (2, 3), (1, 2))}, protocol=4)
    tree = read_published_pickle(io.BytesIO(data))
    assert torch.equal(tree["t"], torch.arange(8.0).as_strided((2, 3), (1, 2), 1))


def test_torch_load_style_persistent_ids_are_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, torch.Tensor) else None

    f = io.BytesIO()
    PidPickler(f, protocol=2).dump({"G": torch.zeros(4)})
    (tmp_path / "pid.pkl").write_bytes(f.getvalue())
    assert_refused(tmp_path / "pid.pkl", "persistent ids")


def test_object_dtype_numpy_array_is_refused(tmp_path, marker):
    arr = np.empty(1, dtype=object)
    arr[0] = W.Payload(os.system, _command(marker))
    (tmp_path / "np.pkl").write_bytes(pickle.dumps({"G": arr}, protocol=4))
    assert_refused(tmp_path / "np.pkl", "dtype")
    assert not marker.exists()


def test_unknown_persistence_version_is_refused(tmp_path):
    net = fixture_network("sg2_g32")
    record = W.network_record(net)
    record.meta["version"] = 5
    (tmp_path / "v5.pkl").write_bytes(W.dumps({"G": record, "D": None, "G_ema": W.network_record(net)}))
    assert_refused(tmp_path / "v5.pkl", "version 5")




def test_cyclic_init_kwargs_are_refused(tmp_path):
    net = fixture_network("sg2_g32")
    loop: list = []
    loop.append(loop)
    bad = W.PublishedNetwork(net.name, net.init, net.state, extra_init_kwargs={"x": loop})
    W.write_network_pickle(tmp_path / "cycle.pkl", G=bad, G_ema=net)
    assert_refused(tmp_path / "cycle.pkl")


def test_module_cycle_is_refused(tmp_path):
    net = fixture_network("sg2_g32")
    record = W.network_record(net)
    seq = W.by_reference(torch.nn.Sequential, {"training": False, "_parameters": {}, "_buffers": {}, "_modules": {}})
    seq.__dict__["_modules"]["0"] = seq  # a Sequential that contains itself
    record.meta["state"]["_modules"]["loop"] = seq
    (tmp_path / "cycle.pkl").write_bytes(W.dumps({"G": record, "D": None, "G_ema": W.network_record(net)}))
    assert_refused(tmp_path / "cycle.pkl")


def test_unsafe_pickle_from_the_reader_itself(marker):
    """read_published_pickle raises UnsafePickle (the reader's own error) naming the global."""
    with pytest.raises(UnsafePickle, match="posix.system"):
        read_published_pickle(io.BytesIO(pickle.dumps(W.Payload(os.system, _command(marker)), protocol=3)))
    assert not marker.exists()


def _bad_networks(tmp_path: Path, marker: Path) -> dict[str, Path]:
    rng = random.Random(0)
    files = {"torch-save.pt": None, "random.pkl": rng.randbytes(4096), "random-proto4.pkl": b"\x80\x04" +
             rng.randbytes(4096), "payload.pkl": pickle.dumps({"G": W.Payload(os.system, _command(marker))})}
    torch.save({"G": torch.zeros(3)}, tmp_path / "torch-save.pt")
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def test_cli_refuses_bad_network_files_with_one_line(tmp_path, marker, capsys):
    """gen_images.py / calc_metrics.py: a torch.save zip, random bytes, a payload: exit 2, one line."""
    for name, path in _bad_networks(tmp_path, marker).items():
        capsys.readouterr()
        assert generate([f"--network={path}", "--seeds=0", f"--outdir={tmp_path / 'out'}"]) == 2, name
        one_error_line(capsys.readouterr().err)
        assert calc_metrics([f"--network={path}", "--metrics=fid50k_full", "--verbose=0"]) == 2, name
        one_error_line(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# 4. creps convert.


@needs_samples
@pytest.mark.parametrize("file", ["creps-32.pkl", "stylegan3-t-32.pkl"])
def test_convert_writes_an_equivalent_snapshot(tmp_path, expected, file, capsys):
    src = SAMPLES / file
    out = tmp_path / "net.safetensors"
    assert creps_main(["convert", str(src), str(out)]) == 0
    assert "Wrote" in capsys.readouterr().out
    snap, pub = creps.load(out), read_published(src)
    assert snap.meta["file"] == file and snap.meta["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert snap.meta["networks"] == pub.kinds
    z = torch.cat([expected["z.seed0"], expected["z.seed1"]]).float()
    with torch.no_grad():
        assert torch.equal(snap.G_ema(z, None, noise_mode="const"), pub.G_ema(z, None, noise_mode="const"))
    for role in ("G", "D"):
        torch.testing.assert_close(getattr(snap, role).state_dict(), getattr(pub, role).state_dict(), atol=0, rtol=0)


@needs_samples
def test_convert_refusals_write_nothing(tmp_path, marker, capsys):
    out = tmp_path / "net.safetensors"
    assert creps_main(["convert", str(CREPS_PKL), str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert creps_main(["convert", str(CREPS_PKL), str(out)]) == 2  # exists, no --force
    err = capsys.readouterr().err
    one_error_line(err)
    assert "--force" in err and out.read_bytes() == before
    assert creps_main(["convert", str(CREPS_PKL), str(tmp_path / "net.pt")]) == 2
    one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "net.pt").exists()
    assert creps_main(["convert", str(SG3_PKL), str(out), "--force"]) == 0
    assert creps.load(out).meta["file"] == "stylegan3-t-32.pkl"
    (tmp_path / "bad").mkdir()
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    for name, path in _bad_networks(tmp_path / "bad", marker).items():
        capsys.readouterr()
        assert creps_main(["convert", str(path), str(dest_dir / "x.safetensors")]) == 2, name
        one_error_line(capsys.readouterr().err)
        assert list(dest_dir.iterdir()) == [], f"{name}: left {list(dest_dir.iterdir())}"
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# 5. gen_images.py with a pickle.


@needs_samples
def test_gen_images_from_pickle_at_scale_2(tmp_path, expected):
    assert generate([f"--network={CREPS_PKL}", "--seeds=0", "--scale=2", f"--outdir={tmp_path}"]) == 0
    (png,) = tmp_path.glob("*.png")
    got = np.asarray(Image.open(png))
    want = (expected["creps.seed0.x2"] * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert got.shape == (64, 64, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"{(diff > 0).sum()} values differ, max {diff.max()}"


# ---------------------------------------------------------------------------------------
# 6. A pickle by URL.


@needs_samples
def test_pickle_by_url_is_downloaded_once(tmp_path, monkeypatch, expected):
    calls = []

    def fake_download(url, dest, timeout=60.0):
        calls.append(url)
        shutil.copyfile(CREPS_PKL, dest)

    monkeypatch.setenv("CREPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(creps.download, "download_file", fake_download)
    url = "https://example.com/x/creps-32.pkl"
    snap = load_snapshot(url)
    cached = tmp_path / "cache" / "networks" / "creps-32.pkl"
    assert calls == [url] and cached.read_bytes() == CREPS_PKL.read_bytes()
    assert snap.meta["file"] == "creps-32.pkl"
    assert snap.meta["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    with torch.no_grad():
        img = snap.G_ema(expected["z.seed0"].float(), None, noise_mode="const")
    torch.testing.assert_close(img, expected["creps.seed0.x1"], atol=1e-4, rtol=0)
    load_snapshot(url)
    assert calls == [url]
    assert [p.name for p in cached.parent.iterdir()] == ["creps-32.pkl"]  # no temp files left


# ---------------------------------------------------------------------------------------
# 7. Fine-tuning from a pickle: train.py --resume=X.pkl.

TUNE_FLAGS = ["--cfg=creps", "--gpus=1", "--batch=4", "--batch-gpu=4", "--mbstd-group=2", "--gamma=1",
              "--cbase=2048", "--cmax=64", "--map-depth=2", "--aug=noaug", "--metrics=none", "--kimg=0.008",
              "--tick=0.008", "--snap=1", "--grid=2x2", "--workers=1"]
FROZEN_BY_2 = ["b32.fromrgb.weight", "b32.fromrgb.bias", "b32.conv0.weight", "b32.conv0.bias"]  # Freeze-D order


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("data")
    return {res: Path(make_synthetic_dataset(str(root / f"shapes{res}.zip"), num_images=8, resolution=res, seed=0))
            for res in (32, 64)}


@pytest.fixture(scope="module")
def tunable(tmp_path_factory):
    """A CREPS pickle that train.py's `--cfg=creps --cbase=2048 --cmax=64 --map-depth=2` networks fit:
    the sample's options with z/w 512 (train.py's) and D of channel_max 64 (the sample's is 16)."""
    if not CREPS_PKL.is_file():
        pytest.skip(f"{CREPS_PKL} not found (set CREPS_FIXTURES)")
    sample = read_published(CREPS_PKL)
    g_init = dict(sample.init_kwargs["G"], z_dim=512, w_dim=512)
    d_init = dict(copy.deepcopy(sample.init_kwargs["D"]), channel_max=64)
    gen = torch.Generator().manual_seed(1)

    def weights(name, init):
        return {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                for k, v in build_published(name, init).state_dict().items()}

    nets = {"G": W.PublishedNetwork("creps.Generator", g_init, weights("creps.Generator", g_init)),
            "D": W.PublishedNetwork("stylegan2.Discriminator", d_init, weights("stylegan2.Discriminator", d_init)),
            "G_ema": W.PublishedNetwork("creps.Generator", g_init, weights("creps.Generator", g_init))}
    path = tmp_path_factory.mktemp("pkl") / "creps-tunable-32.pkl"
    W.write_network_pickle(path, **nets, augment_p=0.25, training_set_kwargs=sample.training_set_kwargs)
    return path, nets


def run_train(tmp_path: Path, data: Path, *flags: str) -> tuple[int, Path]:
    outdir = tmp_path / "runs"
    return train([f"--outdir={outdir}", f"--data={data}", *flags]), outdir


def final_snapshot(outdir: Path) -> dict[str, torch.Tensor]:
    (run_dir,) = [p for p in outdir.iterdir() if p.is_dir()]
    return load_file(str(sorted(run_dir.glob("network-snapshot-*.safetensors"))[-1]))


def assert_started_from_file_g_ema(value: torch.Tensor, nets: dict, key: str) -> None:
    """After two EMA steps (beta ~0.998) G_ema is still far closer to the file's G_ema than to
    the file's G (G and G_ema of the file are independent draws)."""
    g_ema, g = nets["G_ema"].state[key], nets["G"].state[key]
    assert (value - g_ema).abs().max() < 0.05 * (g - g_ema).abs().max()


@needs_samples
def test_sample_pickle_does_not_fit_train_py_networks(tmp_path, datasets, capsys):
    """The sample's z/w (64) fit no train.py flags: one line naming both sides."""
    code, outdir = run_train(tmp_path, datasets[32], *TUNE_FLAGS, f"--resume={CREPS_PKL}")
    assert code == 2
    err = capsys.readouterr().err
    one_error_line(err)
    assert "z_dim 64 and w_dim 64" in err and "builds 512 and 512" in err
    assert not outdir.exists() or not any(outdir.iterdir())


@needs_samples
def test_resume_pickle_with_another_cfg_is_refused(tmp_path, datasets, capsys):
    flags = [f if f != "--cfg=creps" else "--cfg=stylegan2" for f in TUNE_FLAGS]
    code, outdir = run_train(tmp_path, datasets[32], *flags, f"--resume={CREPS_PKL}")
    assert code == 2
    err = capsys.readouterr().err
    one_error_line(err)
    assert "creps" in err and "--cfg=stylegan2" in err
    assert not outdir.exists() or not any(outdir.iterdir())


def test_finetune_from_pickle_with_frozen_d_layers(tmp_path, datasets, tunable):
    """--freezed=2: D's first two layers stay bit-identical to the pickle's; the rest trains."""
    path, nets = tunable
    code, outdir = run_train(tmp_path, datasets[32], *TUNE_FLAGS, f"--resume={path}", "--freezed=2")
    assert code == 0
    snap = final_snapshot(outdir)
    d_file, g_file = nets["D"].state, nets["G"].state
    for key in FROZEN_BY_2:
        assert torch.equal(snap[f"D.{key}"], d_file[key]), key
    trained_d = [k for k in d_file if k.endswith((".weight", ".bias")) and k not in FROZEN_BY_2]
    changed_d = [k for k in trained_d if not torch.equal(snap[f"D.{k}"], d_file[k])]
    assert len(changed_d) > len(trained_d) // 2, f"only {changed_d} of D changed"
    assert not torch.equal(snap["G.mapping.fc0.weight"], g_file["mapping.fc0.weight"])
    assert not torch.equal(snap["G.synthesis.b32.fc1.weight"], g_file["synthesis.b32.fc1.weight"])
    assert_started_from_file_g_ema(snap["G_ema.mapping.fc0.weight"], nets, "mapping.fc0.weight")


def test_finetune_pickle_at_another_resolution(tmp_path, datasets, tunable, capsys):
    """A 32x32 pickle on 64x64 data: notes printed, matching tensors copied, new layers fresh."""
    path, nets = tunable
    code, outdir = run_train(tmp_path, datasets[64], *TUNE_FLAGS, f"--resume={path}")
    assert code == 0
    out = capsys.readouterr().out
    assert "note: fine-tuning a 32x32 network on 64x64 data" in out
    snap = final_snapshot(outdir)
    g_ema = {k.removeprefix("G_ema."): v for k, v in snap.items() if k.startswith("G_ema.")}
    fresh = [k for k in g_ema if k not in nets["G_ema"].state]
    assert any(k.startswith("synthesis.b64.") for k in fresh), fresh
    assert_started_from_file_g_ema(g_ema["mapping.fc0.weight"], nets, "mapping.fc0.weight")
    assert snap["D.b64.fromrgb.weight"].shape[0] == 32 and "D.b32.fromrgb.weight" not in snap
    log = next(outdir.glob("*/log.txt")).read_text()
    assert "tensors from the file" in log and "fresh" in log


@needs_samples
def test_resume_from_pickle_url_uses_the_cache(tmp_path, monkeypatch, capsys):
    """train.py --resume=URL.pkl downloads into the cache, then checks the networks (here: another --cfg)."""
    monkeypatch.setenv("CREPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(creps.download, "download_file",
                        lambda url, dest, timeout=60.0: shutil.copyfile(CREPS_PKL, dest))
    data = make_synthetic_dataset(str(tmp_path / "d.zip"), num_images=4, resolution=32)
    flags = [f if f != "--cfg=creps" else "--cfg=stylegan2" for f in TUNE_FLAGS]
    code, _ = run_train(tmp_path, Path(data), *flags, "--resume=https://example.com/x/creps-32.pkl")
    assert code == 2 and "--cfg=creps" in capsys.readouterr().err
    assert (tmp_path / "cache" / "networks" / "creps-32.pkl").is_file()
