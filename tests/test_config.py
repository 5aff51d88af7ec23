"""Unit tests of config.resolve(): presets, derivation rules, validation, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from creps.config import (
    DatasetInfo,
    TrainConfig,
    TrainOptions,
    check_options,
    resolve,
    run_description,
)
from creps.errors import UserError
from creps.nets.registry import CONFIG_NAMES as CONFIGS
from creps.nets.registry import family_of
from creps.train.resume import transfer_config


def info(resolution: int = 32, has_labels: bool = False, label_dim: int = 0, name: str = "shapes") -> DatasetInfo:
    return DatasetInfo(path=f"/data/{name}.zip", name=name, resolution=resolution, channels=3, size=100,
                       has_labels=has_labels, label_dim=label_dim)


def options(**kw) -> TrainOptions:
    base = dict(outdir="/runs", cfg="creps", data="/data/shapes.zip", gpus=1, batch=32, gamma=8.0)
    base.update(kw)
    return TrainOptions(**base)


def cfg_of(**kw) -> TrainConfig:
    ds = kw.pop("dataset", None) or info()
    return resolve(options(**kw), ds)


# ---------------------------------------------------------------------------------------
# Derivation rules.


@pytest.mark.parametrize("gpus,batch,batch_gpu,expected", [
    (1, 32, None, 32), (2, 32, None, 16), (4, 32, None, 8), (8, 32, None, 4), (1, 32, 16, 16), (2, 32, 8, 8),
])
def test_batch_gpu_defaults_to_batch_over_gpus(gpus, batch, batch_gpu, expected):
    cfg = cfg_of(gpus=gpus, batch=batch, batch_gpu=batch_gpu)
    assert cfg.batch_gpu == expected
    assert cfg.num_gpus == gpus and cfg.batch_size == batch


@pytest.mark.parametrize("name,g_interval", [("creps", 4), ("stylegan2", 4), ("stylegan3-t", None), ("stylegan3-r", None)])
def test_lazy_regularization_intervals(name, g_interval):
    cfg = cfg_of(cfg=name)
    assert cfg.G_opt.reg_interval == g_interval
    assert cfg.D_opt.reg_interval == 16
    # Path-length regularisation exactly where G is lazily regularised.
    assert (cfg.loss.pl_weight > 0) == (g_interval is not None)


@pytest.mark.parametrize("batch", [4, 8, 32, 64, 96])
def test_ema_kimg_scales_with_batch(batch):
    cfg = cfg_of(batch=batch, mbstd_group=4 if batch % 4 == 0 else 1)
    assert cfg.ema_kimg == pytest.approx(batch * 10 / 32)
    assert cfg.ema_rampup == pytest.approx(0.05)


@pytest.mark.parametrize("name", CONFIGS)
def test_resume_disables_rampup_and_shortens_ada(name):
    fresh = cfg_of(cfg=name)
    resumed = transfer_config(cfg_of(cfg=name, resume="/runs/network-snapshot-000100.safetensors"))
    assert fresh.ema_rampup == pytest.approx(0.05) and resumed.ema_rampup is None
    assert fresh.augment.mode == "ada" and fresh.augment.ada_kimg == 500
    assert resumed.augment.ada_kimg == 100
    assert resumed.resume == "/runs/network-snapshot-000100.safetensors"
    assert resumed.loss.blur_init_sigma == 0


def test_stylegan3_r_blur_unless_resuming():
    assert cfg_of(cfg="stylegan3-r").loss.blur_init_sigma == 10
    assert cfg_of(cfg="stylegan3-r", batch=32).loss.blur_fade_kimg == pytest.approx(32 * 200 / 32)
    assert transfer_config(cfg_of(cfg="stylegan3-r", resume="x.pkl")).loss.blur_init_sigma == 0
    for name in ("creps", "stylegan2", "stylegan3-t"):
        assert cfg_of(cfg=name).loss.blur_init_sigma == 0


def test_fp32_disables_clamps():
    default = cfg_of()
    assert default.G.fc_clamp == default.G.head_clamp == 256 and default.D.conv_clamp == 256
    assert default.fp32 is False
    exact = cfg_of(fp32=True)
    assert exact.G.fc_clamp is None and exact.G.head_clamp is None and exact.D.conv_clamp is None
    assert exact.fp32 is True
    for name in ("stylegan2", "stylegan3-t", "stylegan3-r"):
        assert cfg_of(cfg=name).G.conv_clamp == 256 and cfg_of(cfg=name, fp32=True).G.conv_clamp is None


@pytest.mark.parametrize("name,factor,mapping,glr", [
    ("creps", 2, 8, 0.002), ("stylegan2", 1, 8, 0.002), ("stylegan3-t", 1, 2, 0.0025), ("stylegan3-r", 2, 2, 0.0025),
])
def test_presets(name, factor, mapping, glr):
    cfg = cfg_of(cfg=name, cbase=16384, cmax=256)
    assert cfg.preset == name and family_of(cfg.G).preset_of(cfg.G).name == name
    assert cfg.G.channel_base == 16384 * factor and cfg.G.channel_max == 256 * factor
    assert cfg.D.channel_base == 16384 and cfg.D.channel_max == 256
    assert cfg.G.mapping_layers == mapping
    assert cfg.G_opt.lr == pytest.approx(glr) and cfg.D_opt.lr == pytest.approx(0.002)
    assert cfg.G_opt.betas == (0.0, 0.99) and cfg.D_opt.betas == (0.0, 0.99)
    assert cfg.loss.style_mixing_prob == (0.9 if name == "stylegan2" else 0)
    if name.startswith("stylegan3"):
        assert cfg.G.magnitude_ema_beta == pytest.approx(0.5 ** (32 / 20000))
    else:
        assert "magnitude_ema_beta" not in {f.name for f in dataclasses.fields(cfg.G)}
    if name == "stylegan3-r":
        assert cfg.G.conv_kernel == 1 and cfg.G.use_radial_filters


def test_flag_overrides():
    cfg = cfg_of(glr=0.01, dlr=0.005, map_depth=3, mbstd_group=8, freezed=10, gamma=2.5, mirror=True, seed=7,
                 kimg=100, tick=2, snap=5, nobench=True, workers=1, aug="fixed", p=0.3)
    assert cfg.G_opt.lr == 0.01 and cfg.D_opt.lr == 0.005
    assert cfg.G.mapping_layers == 3
    assert cfg.D.mbstd_group_size == 8 and cfg.D.freeze_layers == 10
    assert cfg.loss.r1_gamma == 2.5
    assert cfg.data.xflip is True and cfg.data.workers == 1
    assert cfg.seed == 7 and cfg.total_kimg == 100 and cfg.kimg_per_tick == 2 and cfg.snapshot_ticks == 5
    assert cfg.cudnn_benchmark is False
    assert cfg.augment.mode == "fixed" and cfg.augment.p == pytest.approx(0.3)
    assert cfg_of(aug="noaug").augment.mode == "noaug"


def test_cond_uses_label_dim():
    labelled = info(has_labels=True, label_dim=10)
    cfg = resolve(options(cond=True), labelled)
    assert cfg.G.c_dim == 10 and cfg.D.c_dim == 10 and cfg.data.use_labels and cfg.data.label_dim == 10
    uncond = resolve(options(cond=False), labelled)
    assert uncond.G.c_dim == 0 and uncond.D.c_dim == 0 and not uncond.data.use_labels


def test_dataset_facts_flow_into_config():
    cfg = resolve(options(), info(resolution=256, name="ffhq-256x256"))
    assert cfg.G.img_resolution == 256 and cfg.D.img_resolution == 256
    assert cfg.data.name == "ffhq-256x256" and cfg.data.size == 100 and cfg.data.channels == 3


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("extra", [
    {}, {"fp32": True}, {"resume": "x.pkl", "aug": "fixed", "p": 0.4}, {"metrics": ("fid50k_full", "kid50k_full")},
    {"desc": "trial", "mirror": True, "batch_gpu": 8, "gpus": 2}, {"recompute": False},
])
def test_json_round_trip(name, extra):
    cfg = resolve(options(cfg=name, **extra), info())
    text = cfg.to_json()
    data = json.loads(text)
    assert data["preset"] == name
    back = TrainConfig.from_dict(data)
    assert back == cfg
    assert back.to_json() == text
    # Every nested section comes back as its dataclass, not as a dict.
    for f in dataclasses.fields(cfg):
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name


def test_recompute_defaults_to_the_device_and_old_options_files_still_load():
    assert cfg_of().recompute is None and cfg_of(recompute=False).recompute is False
    assert cfg_of(recompute=True).recompute is True
    data = json.loads(cfg_of(recompute=False).to_json())
    del data["recompute"]  # training_options.json written before the option existed
    assert TrainConfig.from_dict(data).recompute is None


def test_labelled_round_trip():
    cfg = resolve(options(cond=True), info(has_labels=True, label_dim=3))
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


# ---------------------------------------------------------------------------------------
# Run directory names.

RUN_DESC = re.compile(r"^(?P<cfg>[a-z0-9-]+)-(?P<data>.+)-gpus(?P<gpus>\d+)-batch(?P<batch>\d+)-gamma(?P<gamma>[0-9.e+-]+)(-(?P<desc>.+))?$")


@pytest.mark.parametrize("args,expected", [
    (("creps", "afhqv2-512x512", 8, 32, 8.2, None), "creps-afhqv2-512x512-gpus8-batch32-gamma8.2"),
    (("stylegan3-t", "ffhq", 1, 32, 2.0, None), "stylegan3-t-ffhq-gpus1-batch32-gamma2"),
    (("stylegan2", "cats", 4, 64, 0.5, "trial"), "stylegan2-cats-gpus4-batch64-gamma0.5-trial"),
    (("creps", "shapes", 1, 4, 1, None), "creps-shapes-gpus1-batch4-gamma1"),
])
def test_run_description(args, expected):
    assert run_description(*args) == expected
    assert RUN_DESC.match(expected)


def test_run_desc_in_config():
    cfg = cfg_of(cfg="stylegan3-r", gpus=4, batch=32, gamma=6.6, desc="x1")
    assert cfg.run_desc == "stylegan3-r-shapes-gpus4-batch32-gamma6.6-x1"


# ---------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("kw,words", [
    ({"batch": 6, "gpus": 4}, ["--batch=6", "--gpus=4"]),
    ({"batch": 32, "gpus": 4, "batch_gpu": 3}, ["--batch-gpu", "multiple"]),
    ({"batch": 32, "gpus": 1, "batch_gpu": 12}, ["--batch-gpu", "multiple"]),
    ({"batch": 32, "gpus": 8, "mbstd_group": 8}, ["--mbstd-group"]),
    ({"batch": 32, "batch_gpu": 2, "mbstd_group": 4}, ["--mbstd-group"]),
    ({"metrics": ("fid50k_ful",)}, ["fid50k_ful", "--metrics"]),
    ({"metrics": ("fid50k_full", "nope")}, ["nope"]),
    ({"desc": "a/b"}, ["--desc"]),
    ({"desc": "has space"}, ["--desc"]),
    ({"desc": "../up"}, ["--desc"]),
    ({"cfg": "stylegan4"}, ["--cfg"]),
    ({"aug": "sometimes"}, ["--aug"]),
    ({"gpus": 0}, ["--gpus"]),
    ({"kimg": 0}, ["--kimg"]),
    ({"p": 1.5}, ["--p"]),
])
def test_user_errors(kw, words):
    with pytest.raises(UserError) as exc:
        resolve(options(**kw), info())
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    # The same checks run without a dataset.
    with pytest.raises(UserError):
        check_options(options(**kw))


def test_cond_without_labels_is_a_user_error():
    with pytest.raises(UserError) as exc:
        resolve(options(cond=True), info(has_labels=False))
    assert "--cond" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("metrics", [("fid50k_full",), ("kid50k_full", "pr50k3_full"), ("fid1k_full",), ("fid10k",), ()])
def test_valid_metrics(metrics):
    assert cfg_of(metrics=metrics).metrics == metrics


