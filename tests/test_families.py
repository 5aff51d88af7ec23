"""The network families: one declaration each, one registry; format-1 files still load;
crafted files cannot steer the loader; --scale/--size on a network that cannot render there."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import resource
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save as safetensors_save

import published_pickle_writer as W
from conftest import REPO
from creps.checkpoint import load_snapshot, save_snapshot
from creps.cli.generate import generate
from creps.cli.metrics import calc_metrics
from creps.cli.video import gen_video
from creps.config import TrainConfig
from creps.errors import UserError
from creps.generate import render, supports_any_scale, z_from_seed
from creps.nets import registry
from creps.nets.family import Capability, GeneratorOptions, config_from_dict, implied_shapes
from creps.train.state import load_training_state

FORMAT1 = REPO / "tests" / "data" / "format1"
OPTIONS = GeneratorOptions(z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256,
                           channel_max=16, mapping_layers=1, clamp=256.0, batch_size=4)


def call(fn, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fn(argv)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------
# The registry.


def test_every_train_py_config_has_one_preset_of_one_family():
    assert set(registry.CONFIG_NAMES) == {"creps", "stylegan2", "stylegan3-t", "stylegan3-r"}
    for name, preset in registry.PRESETS.items():
        config = preset.generator(OPTIONS)
        family = registry.family_of(config)
        assert registry.PRESET_FAMILY[name] is family and family.role == "G"
        assert family.preset_of(config) is preset  # the config says which --cfg built it
        net = registry.build(config)
        assert registry.family_of(net) is family and net.config == config


@pytest.mark.parametrize("name", ["creps", "stylegan2", "stylegan3-t", "stylegan3-r"])
def test_capabilities_are_what_the_networks_do(name):
    G = registry.build(registry.PRESETS[name].generator(OPTIONS)).eval()
    family = registry.family_of(G)
    z = z_from_seed(0, 8)
    if family.can(Capability.ANY_SCALE):
        assert render(G, z, None, scale=2).shape[-2:] == (32, 32)
        assert render(G, z, None, size=(12, 20)).shape[-2:] == (12, 20)
    else:
        with pytest.raises(ValueError, match=f"{family.name} network .*native 16x16 only"):
            render(G, z, None, scale=2)
    assert supports_any_scale(G) == family.can(Capability.ANY_SCALE)
    assert family.can(Capability.USER_TRANSFORM) == (family.transform_buffer is not None)
    if family.can(Capability.USER_TRANSFORM):
        assert tuple(family.transform_buffer(G).shape) == (3, 3)
    noise = [name for name, _ in G.named_buffers() if name.endswith("noise_const")]
    assert bool(noise) == family.can(Capability.NOISE_INPUTS)
    assert ("recompute" in vars(G.synthesis)) == family.can(Capability.RECOMPUTE)


def test_lookups_refuse_unknown_names():
    with pytest.raises(registry.UnknownFamily, match="unknown network family 'bigsleep'"):
        registry.family_named("bigsleep")
    with pytest.raises(registry.UnknownFamily, match="not a network creps builds"):
        registry.published_family("stylegan1.Generator")
    with pytest.raises(TypeError, match="not a network"):
        registry.family_of(torch.nn.Linear(2, 2))


def test_config_records_round_trip_and_are_type_checked():
    for preset in registry.PRESETS.values():
        config = preset.generator(OPTIONS)
        record = json.loads(json.dumps(registry.config_record(config)))
        assert registry.config_from_record(record, "G") == config
    record = registry.config_record(registry.PRESETS["creps"].generator(OPTIONS))
    for field, value, words in [("channel_max", "512", "channel_max='512'"), ("fc_clamp", [1], "fc_clamp"),
                                ("z_dim", True, "z_dim=True"), ("bogus", 1, "unknown field")]:
        with pytest.raises(ValueError, match=words):
            registry.config_from_record({**record, field: value}, "G")
    with pytest.raises(ValueError, match="missing field"):
        registry.config_from_record({k: v for k, v in record.items() if k != "z_dim"}, "G")
    with pytest.raises(ValueError, match="no network family"):
        registry.config_from_record({k: v for k, v in record.items() if k != "family"}, "G")


def test_implied_shapes_allocate_nothing():
    """A config asking for 2^22 channels and w of 2^20: its state dict is described, not built."""
    huge = dataclasses.replace(registry.PRESETS["creps"].generator(OPTIONS), channel_max=2**22, w_dim=2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shapes = implied_shapes(registry.family_of(huge), huge)
    assert shapes["mapping.fc0.weight"] == (2**20, 8)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_config_from_dict_fills_defaults():
    from creps.nets.discriminator import DiscriminatorConfig

    d = config_from_dict(DiscriminatorConfig, {"c_dim": 0, "img_resolution": 32, "img_channels": 3}, "D")
    assert d.channel_base == 32768 and d.architecture == "resnet"


# ---------------------------------------------------------------------------------------
# Files written by format 1 (tests/data/format1, written before the families existed).


@pytest.mark.parametrize("cfg", ["creps", "stylegan2", "stylegan3-t", "stylegan3-r"])
def test_format1_snapshots_load_and_render_as_before(cfg):
    snap = load_snapshot(FORMAT1 / f"network-snapshot-{cfg}.safetensors")
    assert snap.preset == cfg and snap.training.preset == cfg
    assert snap.G is not None and snap.D is not None and snap.data.name == "shapes-16"
    expected = load_file(str(FORMAT1 / f"expected-{cfg}.safetensors"))
    c = torch.eye(2)[:2] if snap.G_ema.c_dim else None
    with torch.no_grad():
        img = snap.G_ema(expected["z"], c, noise_mode="const")
    assert torch.equal(img, expected["img"])


def test_format1_training_state_and_options_load():
    state = load_training_state(FORMAT1 / "training-state-000000.safetensors")
    assert state.config.preset == "creps" and state.progress["cur_nimg"] == 4
    options = TrainConfig.from_dict(json.loads((FORMAT1 / "training_options.json").read_text()))
    assert options == state.config
    # Rewritten today, it reads back the same.
    assert TrainConfig.from_dict(json.loads(options.to_json())) == options
    G = registry.build(state.config.G)
    G.load_state_dict(state.network_state("G"), strict=True)


def test_a_format1_snapshot_rewritten_in_format2_is_the_same(tmp_path):
    old = load_snapshot(FORMAT1 / "network-snapshot-stylegan3-r.safetensors")
    save_snapshot(tmp_path / "new.safetensors", {"G": old.G, "D": old.D, "G_ema": old.G_ema}, training=old.training)
    new = load_snapshot(tmp_path / "new.safetensors")
    assert new.G_ema.config == old.G_ema.config and new.D.config == old.D.config and new.training == old.training
    for name in ("G", "D", "G_ema"):
        a, b = getattr(old, name).state_dict(), getattr(new, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------
# Crafted files: one line, exit code 2, nothing allocated beyond the file's own tensors.


def rewrite_metadata(src: Path, dest: Path, **changes) -> None:
    """The safetensors file `src` with metadata entries replaced (tensors unchanged)."""
    tensors = load_file(str(src))
    header_len = struct.unpack("<Q", src.read_bytes()[:8])[0]
    metadata = json.loads(src.read_bytes()[8:8 + header_len])["__metadata__"]
    metadata.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in changes.items()})
    dest.write_bytes(safetensors_save(tensors, metadata=metadata))


@pytest.fixture(scope="module")
def small_snapshot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snap") / "network-snapshot-000000.safetensors"
    G = registry.build(registry.PRESETS["stylegan2"].generator(OPTIONS)).eval()
    save_snapshot(path, {"G_ema": G})
    return path


def g_record(path: Path) -> dict:
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return json.loads(json.loads(path.read_bytes()[8:8 + header_len])["__metadata__"]["G"])


def test_snapshot_naming_an_unknown_family_is_one_line(tmp_path, small_snapshot):
    bad = tmp_path / "bad.safetensors"
    rewrite_metadata(small_snapshot, bad, G={**g_record(small_snapshot), "family": "bigsleep"})
    code, _, err = call(generate, [f"--network={bad}", "--seeds=0", f"--outdir={tmp_path / 'out'}"])
    assert code == 2 and "unknown network family 'bigsleep'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", [{"channel_max": 2**22}, {"w_dim": 2**20}, {"img_resolution": 2**15}])
def test_snapshot_asking_for_more_than_its_tensors_is_refused_before_building(tmp_path, small_snapshot, change):
    bad = tmp_path / "huge.safetensors"
    rewrite_metadata(small_snapshot, bad, G={**g_record(small_snapshot), **change})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = call(generate, [f"--network={bad}", "--seeds=0", f"--outdir={tmp_path / 'out'}"])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "do not fit the recorded config" in err or "no stylegan2 network can be built" in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_snapshot_with_a_field_of_the_wrong_type_is_one_line(tmp_path, small_snapshot):
    bad = tmp_path / "typed.safetensors"
    rewrite_metadata(small_snapshot, bad, G={**g_record(small_snapshot), "channel_max": "all"})
    with pytest.raises(UserError, match="channel_max='all'"):
        load_snapshot(bad)


def test_pickle_whose_kwargs_ask_for_more_than_its_tensors_is_refused(tmp_path):
    G = registry.build(registry.PRESETS["creps"].generator(OPTIONS))
    init = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "img_channels": 3, "channel_base": 256,
            "channel_max": 2**22, "mapping_kwargs": {"num_layers": 1}}
    W.write_network_pickle(tmp_path / "huge.pkl", G_ema=W.PublishedNetwork("creps.Generator", init, G.state_dict()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = call(generate, [f"--network={tmp_path / 'huge.pkl'}", "--seeds=0", f"--outdir={tmp_path / 'o'}"])
    assert code == 2 and "do not fit the recorded config" in err and "Traceback" not in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_training_state_whose_config_does_not_fit_its_tensors_is_refused(tmp_path):
    src = FORMAT1 / "training-state-000000.safetensors"
    tensors = load_file(str(src))
    header_len = struct.unpack("<Q", src.read_bytes()[:8])[0]
    metadata = json.loads(src.read_bytes()[8:8 + header_len])["__metadata__"]
    config = json.loads(metadata["config"])
    config["G"]["channel_max"] = 2**22
    metadata["config"] = json.dumps(config)
    (tmp_path / "state.safetensors").write_bytes(safetensors_save(tensors, metadata=metadata))
    with pytest.raises(UserError, match="does not fit"):
        load_training_state(tmp_path / "state.safetensors")


# ---------------------------------------------------------------------------------------
# --scale / --size on a network that renders at its native size only.


def test_scale_on_a_stylegan2_network_is_one_line_in_every_command(tmp_path, small_snapshot):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        from PIL import Image

        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(data / f"{i}.png")
    commands = [
        (generate, [f"--network={small_snapshot}", "--seeds=0", "--scale=2", f"--outdir={tmp_path / 'img'}"]),
        (generate, [f"--network={small_snapshot}", "--seeds=0", "--size=64", f"--outdir={tmp_path / 'img'}"]),
        (gen_video, [f"--network={small_snapshot}", "--seeds=0-1", "--grid=1x1", "--scale=2",
                     f"--output={tmp_path / 'v.gif'}"]),
        (calc_metrics, [f"--network={small_snapshot}", "--metrics=fid2", f"--data={data}", "--scale=2"]),
    ]
    for fn, argv in commands:
        code, _, err = call(fn, argv)
        assert code == 2, (argv, err)
        assert "stylegan2 network (16x16)" in err and "native 16x16 only" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "img").exists() and not (tmp_path / "v.gif").exists()


def test_translate_on_a_creps_network_is_one_line(tmp_path):
    path = tmp_path / "creps.safetensors"
    save_snapshot(path, {"G_ema": registry.build(registry.PRESETS["creps"].generator(OPTIONS))})
    code, _, err = call(generate, [f"--network={path}", "--seeds=0", "--rotate=10", f"--outdir={tmp_path / 'o'}"])
    assert code == 2 and "creps network (16x16)" in err and "only StyleGAN3 networks take a user transform" in err
