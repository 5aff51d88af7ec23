"""The dataset tool: conversion, labels, transforms, atomic output, CLI and the root shim."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from creps.cli.dataset import main
from creps.data import ImageDataset, convert_dataset
from creps.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def rand_image(seed: int, width: int = 8, height: int | None = None, gray: bool = False) -> np.ndarray:
    shape = (height or width, width) + (() if gray else (3,))
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(arr).save(path, format=fmt)


def make_folder(root: Path, count: int = 5, width: int = 8, height: int | None = None) -> dict[str, np.ndarray]:
    images = {f"{'sub/' if i % 2 else ''}img{i}.png": rand_image(i, width, height) for i in range(count)}
    for name, arr in images.items():
        write_image(root / name, arr)
    return images


def truncated_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def read_meta(dest: Path) -> dict:
    if dest.suffix == ".zip":
        with zipfile.ZipFile(dest) as zf:
            return json.loads(zf.read("dataset.json"))
    return json.loads((dest / "dataset.json").read_text())


@pytest.mark.parametrize("dest_name", ["out.zip", "outdir"])
def test_round_trip_keeps_pixels_and_published_layout(tmp_path, dest_name):
    images = make_folder(tmp_path / "src")
    dest = tmp_path / dest_name
    summary = convert_dataset(str(tmp_path / "src"), str(dest), progress=False)
    assert summary["num_images"] == 5 and summary["resolution"] == (8, 8) and summary["labels"] is None
    assert summary["warnings"] == []
    assert read_meta(dest) == {"labels": None}

    ds = ImageDataset(str(dest))
    assert ds.image_names == [f"00000/img{i:08d}.png" for i in range(5)]
    for i, name in enumerate(sorted(images)):
        np.testing.assert_array_equal(ds[i][0], images[name].transpose(2, 0, 1))
    assert sorted(os.listdir(tmp_path)) == sorted(["src", dest_name])  # no temp leftovers


def test_class_subfolders_become_labels(tmp_path, capsys):
    for i, cls in enumerate(["dog", "cat", "dog", "bird"]):
        write_image(tmp_path / "src" / cls / f"{i}.png", rand_image(i))
    assert main([f"--source={tmp_path / 'src'}", f"--dest={tmp_path / 'out.zip'}"]) == 0
    out = capsys.readouterr().out
    assert "0: bird" in out and "1: cat" in out and "2: dog" in out

    ds = ImageDataset(str(tmp_path / "out.zip"), use_labels=True)
    # sorted sources: bird/3, cat/1, dog/0, dog/2
    np.testing.assert_array_equal(ds.raw_labels.argmax(1), [0, 1, 2, 2])
    assert read_meta(tmp_path / "out.zip")["class_names"] == ["bird", "cat", "dog"]


def test_zip_source_and_published_layout_folders_are_not_classes(tmp_path):
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for i, name in enumerate(["00000/img00000000.png", "00001/img00001000.png"]):
            buf = io.BytesIO()
            PIL.Image.fromarray(rand_image(i)).save(buf, format="PNG")
            zf.writestr(name, buf.getvalue())
    summary = convert_dataset(str(src), str(tmp_path / "o.zip"), progress=False)
    assert summary["labels"] is None and summary["num_images"] == 2
    np.testing.assert_array_equal(ImageDataset(str(tmp_path / "o.zip"))[1][0], rand_image(1).transpose(2, 0, 1))


def test_source_labels_are_carried_over(tmp_path):
    images = make_folder(tmp_path / "src", count=3)
    (tmp_path / "src" / "dataset.json").write_text(
        json.dumps({"labels": [[name, [float(i), 1.0]] for i, name in enumerate(sorted(images))]})
    )
    summary = convert_dataset(str(tmp_path / "src"), str(tmp_path / "o.zip"), progress=False)
    assert summary["labels"] == "source"
    ds = ImageDataset(str(tmp_path / "o.zip"), use_labels=True)
    np.testing.assert_allclose(ds.raw_labels, [[0, 1], [1, 1], [2, 1]])


def test_center_crop_resizes_mixed_sizes(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 200  # the centre square is uniform
    write_image(tmp_path / "src" / "a.png", wide)
    write_image(tmp_path / "src" / "b.jpg", rand_image(1, 30, 50), fmt="JPEG")
    summary = convert_dataset(
        str(tmp_path / "src"), str(tmp_path / "o.zip"), transform="center-crop", resolution="16x16", progress=False
    )
    assert summary["resolution"] == (16, 16)
    ds = ImageDataset(str(tmp_path / "o.zip"))
    assert ds.image_shape == [3, 16, 16] and len(ds) == 2
    assert np.all(np.abs(ds[0][0].astype(int) - 200) <= 2)


def test_resolution_without_transform_resizes(tmp_path):
    make_folder(tmp_path / "src", count=2, width=12, height=6)
    convert_dataset(str(tmp_path / "src"), str(tmp_path / "o.zip"), resolution=(8, 8), progress=False)
    assert ImageDataset(str(tmp_path / "o.zip")).image_shape == [3, 8, 8]


def test_center_crop_wide_pads_with_black_bars(tmp_path):
    write_image(tmp_path / "src" / "a.png", np.full((40, 64, 3), 255, np.uint8))
    write_image(tmp_path / "src" / "small.png", np.full((4, 8, 3), 255, np.uint8))  # too small: skipped
    summary = convert_dataset(
        str(tmp_path / "src"), str(tmp_path / "o.zip"), transform="center-crop-wide", resolution="16x8", progress=False
    )
    assert summary["num_images"] == 1 and summary["skipped"] == 1 and summary["resolution"] == (16, 16)
    image = ImageDataset(str(tmp_path / "o.zip"))[0][0]
    assert image.shape == (3, 16, 16)
    assert np.all(image[:, :4] == 0) and np.all(image[:, 12:] == 0) and np.all(image[:, 4:12] == 255)


def test_max_images_and_grayscale(tmp_path):
    for i in range(5):
        write_image(tmp_path / "src" / f"{i}.png", rand_image(i, gray=True))
    summary = convert_dataset(str(tmp_path / "src"), str(tmp_path / "o"), max_images=3, progress=False)
    assert summary["num_images"] == 3 and summary["num_channels"] == 1
    ds = ImageDataset(str(tmp_path / "o"))
    assert len(ds) == 3 and ds.num_channels == 1
    np.testing.assert_array_equal(ds[2][0][0], rand_image(2, gray=True))


def test_non_square_output_warns(tmp_path, capsys):
    make_folder(tmp_path / "src", count=2, width=16, height=8)
    assert main([f"--source={tmp_path / 'src'}", f"--dest={tmp_path / 'o.zip'}"]) == 0
    assert "warning:" in capsys.readouterr().err
    with pytest.raises(UserError, match="power of two"):
        ImageDataset(str(tmp_path / "o.zip"))


def test_mixed_sizes_need_resolution(tmp_path):
    write_image(tmp_path / "src" / "a.png", rand_image(0, 8))
    write_image(tmp_path / "src" / "b.png", rand_image(1, 16))
    with pytest.raises(UserError, match=r"b\.png is 16x16 but a\.png is 8x8.*--resolution"):
        convert_dataset(str(tmp_path / "src"), str(tmp_path / "o.zip"), progress=False)
    assert not (tmp_path / "o.zip").exists()


@pytest.mark.parametrize("dest_name", ["out.zip", "outdir"])
def test_failure_midway_leaves_nothing(tmp_path, dest_name):
    make_folder(tmp_path / "src", count=6)
    (tmp_path / "src" / "sub" / "img3.png").write_bytes(truncated_png(rand_image(3)))  # fails when decoded
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / dest_name
    with pytest.raises(UserError, match=r"sub/img3\.png: cannot decode image"):
        convert_dataset(str(tmp_path / "src"), str(dest), progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_dest_must_be_new_or_empty(tmp_path):
    make_folder(tmp_path / "src", count=2)
    (tmp_path / "file.zip").write_bytes(b"x")
    with pytest.raises(UserError, match="already exists and is a file"):
        convert_dataset(str(tmp_path / "src"), str(tmp_path / "file.zip"), progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        convert_dataset(str(tmp_path / "src"), str(tmp_path / "full"), progress=False)
    (tmp_path / "empty").mkdir()
    convert_dataset(str(tmp_path / "src"), str(tmp_path / "empty"), progress=False)
    assert len(ImageDataset(str(tmp_path / "empty"))) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source={src}", "--dest={tmp}/o.zip", "--transform=center-crop"], "needs a target size"),
        (["--source={tmp}/missing", "--dest={tmp}/o.zip"], "no such file or folder"),
        (["--source={src}", "--dest={tmp}/o.zip", "--resolution=big"], "expected WxH"),
        (["--source={src}", "--dest={tmp}/o.zip", "--max-images=x"], "invalid int"),
        (["--source={src}"], "required: --dest"),
        (["--source={src}", "--dest={src}"], "not empty"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    make_folder(tmp_path / "src", count=1)
    argv = [a.format(src=tmp_path / "src", tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o.zip").exists()


def test_root_shim_runs_as_a_script(tmp_path):
    make_folder(tmp_path / "src", count=2)
    command = [sys.executable, str(REPO / "dataset_tool.py"), "--source", str(tmp_path / "src")]
    result = subprocess.run(
        [*command, "--dest", str(tmp_path / "o.zip")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 RGB images of 8x8" in result.stdout
    assert len(ImageDataset(str(tmp_path / "o.zip"))) == 2
