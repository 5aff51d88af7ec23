"""Every command line of docs/training-configurations.md runs with our train.py (--dry-run).

The doc is the product spec: its fenced `.bash` commands and every Options cell of its
tables must parse, validate and resolve to the published presets.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import pytest
import torch

from creps.cli.train import train
from creps.data.tool import png_bytes

REPO = Path(__file__).resolve().parents[1]
DOC_CANDIDATES = [REPO / "docs" / "training-configurations.md", REPO.parent / "shared" / "docs" / "training-configurations.md"]
DOC = next((p for p in DOC_CANDIDATES if p.is_file()), DOC_CANDIDATES[0])

# Rows outside a per-resolution section (the example at the top) describe AFHQv2 512x512.
DEFAULT_RESOLUTION = 512


@dataclass(frozen=True)
class DocCommand:
    where: str  # "bash:<n>" or "table:<res>:<line>"
    args: tuple[str, ...]  # flags for train.py, without the program name
    resolution: int
    needs_data: bool  # table rows exclude --outdir and --data

    def __str__(self) -> str:
        return self.where


def parse_doc(text: str) -> list[DocCommand]:
    commands: list[DocCommand] = []
    lines = text.splitlines()
    resolution = DEFAULT_RESOLUTION
    in_block = False
    block: list[str] = []
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if in_block:
            if stripped.startswith("```"):
                in_block = False
                joined = "\n".join(block).replace("\\\n", " ")
                for cmd in joined.splitlines():
                    cmd = cmd.strip()
                    if not cmd or cmd.startswith("#"):
                        continue
                    words = shlex.split(cmd)
                    assert words[:2] == ["python", "train.py"], f"unexpected command in the doc: {cmd}"
                    commands.append(DocCommand(f"bash:{lineno}", tuple(words[2:]), DEFAULT_RESOLUTION, False))
                block = []
            else:
                block.append(line)
            continue
        if stripped.startswith("```"):
            assert stripped in ("```.bash", "```bash"), f"unexpected fence at line {lineno}: {stripped}"
            in_block = True
            continue
        m = re.match(r"^#+\s*(\d+)x(\d+) resolution", stripped)
        if m:
            resolution = int(m.group(1))
            continue
        if stripped.startswith("|") and "`--" in stripped:
            cell = stripped.rstrip("|").split("|")[-1]
            m = re.search(r"`([^`]*)`", cell)
            assert m, f"no options in table row at line {lineno}"
            commands.append(DocCommand(f"table:{resolution}:{lineno}", tuple(shlex.split(m.group(1))), resolution, True))
    assert not in_block, "unterminated code block"
    return commands


DOC_COMMANDS = parse_doc(DOC.read_text(encoding="utf-8")) if DOC.is_file() else []


def constant_png_zip(path: Path, resolution: int, count: int = 2) -> Path:
    """A tiny dataset in the published layout: `00000/img00000000.png`, constant colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            img = PIL.Image.new("RGB", (resolution, resolution), (40 * i + 20, 90, 200 - 30 * i))
            zf.writestr(f"{i // 1000:05d}/img{i:08d}.png", png_bytes(img))
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A temporary HOME holding the datasets that the doc's commands name."""
    root = tmp_path_factory.mktemp("home")
    constant_png_zip(root / "datasets" / "afhqv2-512x512.zip", 512)
    constant_png_zip(root / "datasets" / "metfaces-1024x1024.zip", 1024)
    for res in (128, 256, 512, 1024):
        constant_png_zip(root / "datasets" / f"doc-{res}x{res}.zip", res)
    return root


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def flag(args: tuple[str, ...], name: str, default=None):
    """The value of --name=VALUE (last wins) in an argument list."""
    value = default
    for a in args:
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
    return value


def dry_run(args: list[str], capsys) -> tuple[int, str, str, dict]:
    code = train(args + ["--dry-run"])
    out, err = capsys.readouterr()
    options = {}
    if "Training options:" in out:
        start = out.index("{", out.index("Training options:"))
        options, _ = json.JSONDecoder().raw_decode(out, start)
    return code, out, err, options


def check_presets(cfg: dict, args: tuple[str, ...]) -> None:
    """The printed options match the flags and the published preset of --cfg."""
    name = flag(args, "cfg")
    assert cfg["preset"] == name
    cbase = int(flag(args, "cbase", 32768))
    cmax = int(flag(args, "cmax", 512))
    gpus = int(flag(args, "gpus", 1))
    batch = int(flag(args, "batch"))
    resume = flag(args, "resume")
    factor = 2 if name in ("creps", "stylegan3-r") else 1
    assert cfg["G"]["channel_base"] == factor * cbase
    assert cfg["G"]["channel_max"] == factor * cmax
    assert cfg["D"]["channel_base"] == cbase and cfg["D"]["channel_max"] == cmax
    assert cfg["num_gpus"] == gpus and cfg["batch_size"] == batch
    assert cfg["batch_gpu"] == int(flag(args, "batch-gpu", batch // gpus))
    assert cfg["loss"]["r1_gamma"] == pytest.approx(float(flag(args, "gamma")))
    assert cfg["data"]["xflip"] == (flag(args, "mirror", "0") in ("1", "true"))
    assert cfg["snapshot_ticks"] == int(flag(args, "snap", 50))
    assert cfg["total_kimg"] == pytest.approx(float(flag(args, "kimg", 25000)))
    assert cfg["ema_kimg"] == pytest.approx(batch * 10 / 32)
    assert cfg["D_opt"]["reg_interval"] == 16
    if name == "creps":
        assert cfg["G"]["mapping_layers"] == 8 and cfg["G_opt"]["lr"] == pytest.approx(0.002)
        assert cfg["G_opt"]["reg_interval"] == 4 and cfg["loss"]["pl_weight"] == 2
    elif name == "stylegan2":
        assert cfg["G"]["mapping_layers"] == 8 and cfg["G_opt"]["lr"] == pytest.approx(0.002)
        assert cfg["loss"]["style_mixing_prob"] == pytest.approx(0.9)
        assert cfg["G_opt"]["reg_interval"] == 4 and cfg["loss"]["pl_weight"] == 2
    else:  # stylegan3-t / -r
        assert cfg["G"]["mapping_layers"] == 2 and cfg["G_opt"]["lr"] == pytest.approx(0.0025)
        assert cfg["G_opt"]["reg_interval"] is None and cfg["loss"]["pl_weight"] == 0
        assert cfg["G"]["magnitude_ema_beta"] == pytest.approx(0.5 ** (batch / 20000))
    if name != "stylegan2":
        assert cfg["loss"]["style_mixing_prob"] == 0
    if name == "stylegan3-r":
        assert cfg["loss"]["blur_init_sigma"] == (0 if resume else 10)
    else:
        assert cfg["loss"]["blur_init_sigma"] == 0
    if resume:
        assert cfg["resume"] == resume and cfg["ema_rampup"] is None
        assert cfg["augment"]["ada_kimg"] == 100
    else:
        assert cfg["resume"] is None and cfg["ema_rampup"] == pytest.approx(0.05)
    if flag(args, "aug", "ada") == "ada" and not resume:
        assert cfg["augment"]["ada_kimg"] == 500


def test_doc_parsed():
    assert DOC.is_file(), f"missing {DOC}"
    kinds = [c.where.split(":")[0] for c in DOC_COMMANDS]
    assert kinds.count("bash") >= 2, DOC_COMMANDS
    assert kinds.count("table") >= 17, DOC_COMMANDS  # the example row + 4 sections x 4 GPU counts
    assert sorted({c.resolution for c in DOC_COMMANDS if c.where.startswith("table:")}) == [128, 256, 512, 1024]


@pytest.mark.parametrize("cmd", DOC_COMMANDS, ids=str)
def test_doc_command_dry_run(cmd: DocCommand, home: Path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(home))
    args = list(cmd.args)
    outdir = home / "training-runs"
    if cmd.needs_data:
        args = [f"--outdir={outdir}", f"--data={home / 'datasets' / f'doc-{cmd.resolution}x{cmd.resolution}.zip'}"] + args
    else:
        assert any(a.startswith("--outdir=~/") for a in args) and any(a.startswith("--data=~/") for a in args)
    code, out, err, cfg = dry_run(args, capsys)
    assert code == 0, f"{cmd}: exit {code}\n{err}"
    assert "Traceback" not in out + err
    assert "Dry run" in out
    assert cfg, "no JSON options printed"
    check_presets(cfg, tuple(args))
    # ~ was expanded against HOME; the dataset's resolution was read from its images.
    assert cfg["data"]["path"].startswith(str(home))
    assert cfg["outdir"] == str(outdir)
    data_res = re.search(r"(\d+)x\1\.zip$", cfg["data"]["path"])
    assert data_res and cfg["data"]["resolution"] == int(data_res.group(1))
    assert cfg["G"]["img_resolution"] == cfg["D"]["img_resolution"] == cfg["data"]["resolution"]
    gpus = int(flag(tuple(args), "gpus", 1))
    if gpus > cuda_count():
        warnings = [line for line in (out + err).splitlines() if "warning" in line.lower()]
        assert any("gpu" in line.lower() for line in warnings), out
    # A dry run writes nothing.
    assert not outdir.exists() or not any(outdir.iterdir())


@pytest.mark.parametrize("name", ["creps", "stylegan2", "stylegan3-t", "stylegan3-r"])
@pytest.mark.parametrize("resume", [None, "creps-ffhq-512x512.pkl"])
def test_every_cfg_resolves_in_dry_run(name, resume, home, monkeypatch, capsys):
    """The doc's first command with each --cfg (the doc only shows creps and stylegan3-t)."""
    monkeypatch.setenv("HOME", str(home))
    args = ["--outdir=~/training-runs", f"--cfg={name}", "--data=~/datasets/afhqv2-512x512.zip", "--gpus=8",
            "--batch=32", "--gamma=8.2", "--mirror=1"]
    if resume:
        args.append(f"--resume={resume}")
    code, out, err, cfg = dry_run(args, capsys)
    assert code == 0, err
    assert "Dry run" in out
    check_presets(cfg, tuple(args))
    if cuda_count() < 8:
        assert any("warning" in line.lower() and "gpu" in line.lower() for line in out.splitlines())


def test_dry_run_is_quiet_about_gpus_when_enough(home, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(home))
    args = ["--outdir=~/training-runs", "--cfg=creps", "--data=~/datasets/afhqv2-512x512.zip", "--gpus=1",
            "--batch=32", "--gamma=8.2"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, out, _, _ = dry_run(args, capsys)
    assert code == 0
    assert not any("warning" in line.lower() and "gpu" in line.lower() for line in out.splitlines())


PUBLISHED_FLAGS = (
    "--outdir --cfg --data --gpus --batch --gamma --cond --mirror --aug --resume --freezed --p --target --batch-gpu "
    "--cbase --cmax --glr --dlr --map-depth --mbstd-group --desc --metrics --kimg --tick --snap --seed --fp32 "
    "--nobench --workers --dry-run"
).split()


def test_train_py_help_lists_published_flags():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", proc.stdout))
    missing = [f for f in PUBLISHED_FLAGS if f not in listed]
    assert not missing, f"train.py --help does not list {missing}"
