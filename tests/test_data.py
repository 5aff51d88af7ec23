"""Dataset reading (ZIP and folder), labels, x-flip, subsets, validation, synthetic data."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from creps.data import ImageDataset, make_synthetic_dataset, open_dataset
from creps.errors import UserError


def rand_image(seed: int, size: int = 8, mode: str = "RGB") -> np.ndarray:
    shape = (size, size) if mode == "L" else (size, size, 3)
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(arr).save(path, format=fmt)


def zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return dest


def chw(arr: np.ndarray) -> np.ndarray:
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Five RGB 8x8 PNGs, some in nested folders; returns (root, {relative path: pixels})."""
    root = tmp_path / "imgs"
    names = ["b.png", "a/c.png", "a/b/d.png", "a/a.png", "z.png"]
    images = {name: rand_image(i) for i, name in enumerate(names)}
    for name, arr in images.items():
        write_image(root / name, arr)
    (root / "notes.txt").write_text("not an image")
    return root, images


def write_labels(root: Path, labels: object) -> None:
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))


# ---- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True])
def test_reads_folder_and_zip_recursively_in_sorted_order(folder, tmp_path, as_zip):
    root, images = folder
    path = zip_folder(root, tmp_path / "data.zip") if as_zip else root
    ds = ImageDataset(str(path))
    expected = sorted(images)
    assert ds.image_names == expected
    assert len(ds) == 5
    assert ds.name == ("data" if as_zip else "imgs")
    assert (ds.resolution, ds.num_channels, ds.image_shape) == (8, 3, [3, 8, 8])
    assert (ds.label_dim, ds.label_shape, ds.has_labels) == (0, [0], False)
    for i, name in enumerate(expected):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (3, 8, 8)
        np.testing.assert_array_equal(image, chw(images[name]))
        assert label.dtype == np.float32 and label.shape == (0,)
    assert ds.raw_labels.shape == (5, 0)


def test_grayscale_stays_one_channel_and_other_modes_become_rgb(tmp_path):
    gray = tmp_path / "gray"
    arr = rand_image(0, mode="L")
    write_image(gray / "a.png", arr)
    write_image(gray / "b.jpg", rand_image(1, mode="L"), fmt="JPEG")
    ds = ImageDataset(str(gray))
    assert ds.num_channels == 1 and ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[0][0], chw(arr))

    color = tmp_path / "color"
    rgba = np.dstack([rand_image(2), np.full((8, 8), 7, np.uint8)])
    write_image(color / "rgba.png", rgba)
    PIL.Image.fromarray(rand_image(3)).convert("P").save(color / "palette.png")
    write_image(color / "webp.webp", rand_image(4), fmt="WEBP")
    write_image(color / "zgray.png", arr)  # mixed with colour images: read as RGB
    ds = ImageDataset(str(color))
    assert ds.num_channels == 3 and len(ds) == 4
    np.testing.assert_array_equal(ds[1][0], chw(rgba[:, :, :3]))
    np.testing.assert_array_equal(ds[3][0], np.stack([arr] * 3))


def test_class_labels_become_one_hot(folder):
    root, images = folder
    write_labels(root, [[name, i % 3] for i, name in enumerate(sorted(images))] + [["extra.png", 0]])
    ds = ImageDataset(str(root), use_labels=True)
    assert ds.has_labels and ds.label_dim == 3 and ds.label_shape == [3]
    assert ds.raw_labels.dtype == np.float32
    np.testing.assert_array_equal(ds.raw_labels.argmax(1), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(ds[2][1], [0, 0, 1])
    np.testing.assert_array_equal(ds.get_label(1), [0, 1, 0])

    unused = ImageDataset(str(root))
    assert unused.has_labels and unused.label_dim == 0 and unused[0][1].shape == (0,)


def test_float_vector_labels(folder):
    root, images = folder
    write_labels(root, [[name, [i, 0.5]] for i, name in enumerate(sorted(images))])
    ds = ImageDataset(str(root), use_labels=True)
    assert ds.label_dim == 2
    np.testing.assert_allclose(ds.get_label(3), [3.0, 0.5])


def test_null_or_missing_labels(folder):
    root, _ = folder
    with pytest.raises(UserError, match="labels requested but the dataset has none"):
        ImageDataset(str(root), use_labels=True)
    write_labels(root, None)
    assert not ImageDataset(str(root)).has_labels
    with pytest.raises(UserError, match="labels requested"):
        ImageDataset(str(root), use_labels=True)


def test_incomplete_labels_error_names_the_image(folder):
    root, images = folder
    write_labels(root, [[name, 0] for name in sorted(images)[1:]])
    with pytest.raises(UserError, match="no label for a/a.png"):
        ImageDataset(str(root), use_labels=True)
    assert not ImageDataset(str(root)).has_labels  # broken labels only matter when used


def test_xflip_doubles_with_mirrored_copies(folder):
    root, images = folder
    write_labels(root, [[name, i] for i, name in enumerate(sorted(images))])
    ds = ImageDataset(str(root), use_labels=True, xflip=True)
    assert len(ds) == 10
    for i in range(5):
        image, label = ds[i]
        flipped, flipped_label = ds[i + 5]
        np.testing.assert_array_equal(flipped, image[:, :, ::-1])
        np.testing.assert_array_equal(flipped_label, label)
    assert ds.raw_labels.shape == (5, 5)
    with pytest.raises(IndexError):
        ds[10]


def test_max_size_keeps_a_seeded_sorted_subset(folder):
    root, _ = folder
    full = ImageDataset(str(root)).image_names
    a = ImageDataset(str(root), max_size=3, random_seed=1)
    b = ImageDataset(str(root), max_size=3, random_seed=1)
    assert len(a) == 3 and a.image_names == b.image_names
    assert set(a.image_names) <= set(full)
    assert a.image_names == sorted(a.image_names, key=full.index)
    assert {tuple(ImageDataset(str(root), max_size=3, random_seed=s).image_names) for s in range(8)} != {
        tuple(a.image_names)
    }
    assert len(ImageDataset(str(root), max_size=100)) == 5
    assert len(ImageDataset(str(root), max_size=2, xflip=True)) == 4


# ---- validation -----------------------------------------------------------------------


def test_mixed_sizes_error_names_the_file(tmp_path):
    write_image(tmp_path / "a.png", rand_image(0, size=8))
    write_image(tmp_path / "sub" / "b.png", rand_image(1, size=16))
    with pytest.raises(UserError, match=r"sub/b\.png is 16x16 but a\.png is 8x8.*dataset_tool"):
        ImageDataset(str(tmp_path))


@pytest.mark.parametrize("shape", [(12, 12, 3), (8, 16, 3), (2, 2, 3)])
def test_resolution_must_be_square_power_of_two(tmp_path, shape):
    write_image(tmp_path / "a.png", np.zeros(shape, np.uint8))
    with pytest.raises(UserError, match="power of two"):
        ImageDataset(str(tmp_path))


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        ImageDataset(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no such file or folder"):
        ImageDataset(str(tmp_path / "nope.zip"))
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a ZIP file"):
        ImageDataset(str(tmp_path / "fake.zip"))


def test_corrupt_images(folder, tmp_path):
    root, _ = folder
    (root / "a" / "b" / "d.png").write_bytes(b"garbage" * 10)  # bad header: caught at open
    with pytest.raises(UserError, match=r"a/b/d\.png: not a readable image"):
        ImageDataset(str(root))

    good = rand_image(9)
    buf = io.BytesIO()
    PIL.Image.fromarray(good).save(buf, format="PNG")
    (root / "a" / "b" / "d.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated data
    for path in [root, zip_folder(root, tmp_path / "t.zip")]:
        ds = ImageDataset(str(path))  # headers are fine
        with pytest.raises(UserError, match=r"a/b/d\.png: cannot decode image"):
            ds[ds.image_names.index("a/b/d.png")]


def test_open_dataset_turns_os_errors_into_user_errors(folder, monkeypatch):
    root, _ = folder
    assert isinstance(open_dataset(str(root)), ImageDataset)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ImageDataset, "_check_headers", deny)
    with pytest.raises(UserError, match="Permission denied"):
        open_dataset(str(root))


# ---- processes and identity -----------------------------------------------------------


def test_pickle_and_dataloader_workers(folder, tmp_path):
    root, images = folder
    ds = ImageDataset(str(zip_folder(root, tmp_path / "d.zip")), xflip=True)
    first = ds[0][0]  # opens the archive in this process
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][0], first)

    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = torch.cat([images for images, _ in loader])
    assert batches.shape == (10, 3, 8, 8) and batches.dtype == torch.uint8
    np.testing.assert_array_equal(batches.numpy(), np.stack([ds[i][0] for i in range(10)]))


def test_content_hash(folder, tmp_path):
    root, _ = folder
    h = ImageDataset(str(root)).content_hash()
    assert len(h) == 64 and h == ImageDataset(str(root)).content_hash()
    assert h != ImageDataset(str(root), xflip=True).content_hash()
    assert h != ImageDataset(str(root), max_size=2).content_hash()
    write_image(root / "new.png", rand_image(5))
    assert h != ImageDataset(str(root)).content_hash()

    zipped = zip_folder(root, tmp_path / "d.zip")
    hz = ImageDataset(str(zipped)).content_hash()
    os.replace(zipped, tmp_path / "moved.zip")
    assert ImageDataset(str(tmp_path / "moved.zip")).content_hash() == hz


# ---- synthetic ------------------------------------------------------------------------


def test_synthetic_dataset_is_deterministic_and_readable(tmp_path):
    a = make_synthetic_dataset(str(tmp_path / "a.zip"), num_images=40, resolution=16, seed=3)
    b = make_synthetic_dataset(str(tmp_path / "b.zip"), num_images=40, resolution=16, seed=3)
    c = make_synthetic_dataset(str(tmp_path / "c.zip"), num_images=40, resolution=16, seed=4)
    assert Path(a).read_bytes() == Path(b).read_bytes() != Path(c).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.zip", "b.zip", "c.zip"]  # no temp files left

    ds = ImageDataset(a)
    assert (len(ds), ds.resolution, ds.num_channels, ds.has_labels) == (40, 16, 3, False)
    assert ds.image_names[:2] == ["00000/img00000000.png", "00000/img00000001.png"]
    images = np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float32)
    assert images.std(axis=(2, 3)).mean() > 10  # structured, not flat
    assert not np.array_equal(images[0], images[1])


def test_synthetic_dataset_with_classes(tmp_path):
    path = make_synthetic_dataset(str(tmp_path / "s.zip"), num_images=64, resolution=8, seed=0, num_classes=4)
    ds = ImageDataset(path, use_labels=True)
    assert ds.has_labels and ds.label_dim == 4
    assert set(ds.raw_labels.argmax(1).tolist()) == {0, 1, 2, 3}
    with pytest.raises(UserError):
        make_synthetic_dataset(str(tmp_path / "bad.zip"), resolution=24)
