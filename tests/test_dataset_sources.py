"""dataset_tool.py on the published releases: CIFAR-10 (python pickles, read without running
anything), MNIST (IDX), LSUN (LMDB). Each test writes a small file in the release's format."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from creps.cli.dataset import main as dataset_tool
from creps.safe_pickle import UnsafePickle, read_data_pickle


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (BINSTRING), as the CIFAR-10 batches were
    written by Python 2's cPickle."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def read_dataset(path: Path) -> tuple[list[np.ndarray], dict]:
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        images = [np.asarray(PIL.Image.open(io.BytesIO(z.read(n)))) for n in names]
        meta = json.loads(z.read("dataset.json"))
    return images, meta


def write_cifar(path: Path, batches: list[tuple[np.ndarray, list[int]]], dump=py2_pickle, meta=True) -> None:
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i, (data, labels) in enumerate(batches, 1):
            add(f"data_batch_{i}", dump({"batch_label": f"training batch {i} of {len(batches)}", "labels": labels,
                                         "data": data, "filenames": [f"img{j}.png" for j in range(len(labels))]}))
        add("test_batch", dump({"labels": [0], "data": np.zeros((1, 3072), np.uint8)}))
        if meta:
            add("batches.meta", dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck"], "num_vis": 3072}))


@pytest.mark.parametrize("dump", [py2_pickle, lambda obj: pickle.dumps(obj, protocol=4)], ids=["python2", "protocol4"])
def test_cifar10_release(tmp_path, dump, capsys):
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)])
               for n in (5, 3)]
    src = tmp_path / "cifar-10-python.tar.gz"
    write_cifar(src, batches, dump)
    dest = tmp_path / "cifar10-32x32.zip"
    assert dataset_tool([f"--source={src}", f"--dest={dest}"]) == 0
    assert "10 classes: airplane, automobile" in capsys.readouterr().out
    images, meta = read_dataset(dest)
    data = np.concatenate([b[0] for b in batches])  # training batches only, in order
    labels = [label for b in batches for label in b[1]]
    assert len(images) == 8
    for img, row in zip(images, data):
        assert img.shape == (32, 32, 3)
        np.testing.assert_array_equal(img, row.reshape(3, 32, 32).transpose(1, 2, 0))  # channel planes -> HWC
    assert [label for _, label in meta["labels"]] == labels
    assert meta["class_names"][3] == "cat"


def test_cifar10_with_max_images_and_no_meta(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "c.tar.gz"
    write_cifar(src, [(rng.integers(0, 256, (6, 3072), dtype=np.uint8), [1, 2, 3, 4, 5, 6])], meta=False)
    dest = tmp_path / "out.zip"
    assert dataset_tool([f"--source={src}", f"--dest={dest}", "--max-images=4", "--resolution=64x64"]) == 0
    images, meta = read_dataset(dest)
    assert [img.shape for img in images] == [(64, 64, 3)] * 4
    assert [label for _, label in meta["labels"]] == [1, 2, 3, 4] and "class_names" not in meta


class Payload:
    def __reduce__(self):
        return (os.system, ("touch payload-ran",))


def test_cifar10_batch_with_a_payload_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "evil.tar.gz"
    write_cifar(src, [(Payload(), [0])], dump=lambda obj: pickle.dumps(obj, protocol=2), meta=False)
    dest = tmp_path / "out.zip"
    assert dataset_tool([f"--source={src}", f"--dest={dest}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "posix.system" in err[0] and "refusing" in err[0]
    assert not (tmp_path / "payload-ran").exists() and not dest.exists()


def test_tar_gz_that_is_not_cifar10(tmp_path, capsys):
    src = tmp_path / "photos.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        info = tarfile.TarInfo("a.txt")
        tar.addfile(info, io.BytesIO(b""))
    assert dataset_tool([f"--source={src}", f"--dest={tmp_path / 'o.zip'}"]) == 2
    assert "no data_batch_* files" in capsys.readouterr().err


def test_data_pickle_reader_accepts_plain_data_of_any_protocol():
    value = {"a": [1, 2.5, "x", None, True], "b": (np.arange(6, dtype=np.int16).reshape(2, 3), {3, 4})}
    for protocol in range(0, 6):
        back = read_data_pickle(io.BytesIO(pickle.dumps(value, protocol=protocol)))
        assert back["a"] == value["a"] and back["b"][1] == {3, 4}
        np.testing.assert_array_equal(back["b"][0], value["b"][0])
    with pytest.raises(UnsafePickle, match="collections.Counter"):
        import collections
        read_data_pickle(io.BytesIO(pickle.dumps(collections.Counter("ab"), protocol=2)))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_release(tmp_path, capsys):
    rng = np.random.default_rng(2)
    digits = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    dest = tmp_path / "mnist-32x32.zip"
    assert dataset_tool([f"--source={tmp_path / 'train-images-idx3-ubyte.gz'}", f"--dest={dest}"]) == 0
    assert "grayscale images of 32x32" in capsys.readouterr().out
    images, meta = read_dataset(dest)
    for img, digit in zip(images, digits):
        assert img.shape == (32, 32)
        np.testing.assert_array_equal(img[2:30, 2:30], digit)
        assert not img[:2].any() and not img[:, 30:].any()  # zero padding to a power of two
    assert [label for _, label in meta["labels"]] == labels.tolist()


def test_mnist_needs_its_labels_and_whole_files(tmp_path, capsys):
    images = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(images, np.zeros((3, 28, 28), np.uint8))
    assert dataset_tool([f"--source={images}", f"--dest={tmp_path / 'o.zip'}"]) == 2
    assert "train-labels-idx1-ubyte.gz are not beside it" in capsys.readouterr().err
    with gzip.open(images, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 3, 28, 28) + b"\0" * 100)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    assert dataset_tool([f"--source={images}", f"--dest={tmp_path / 'o.zip'}"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "o.zip").exists()


def test_lsun_lmdb(tmp_path, capsys):
    lmdb = pytest.importorskip("lmdb")
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(5)]
    db = tmp_path / "cat_lmdb"
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, pixels in enumerate(pictures):
            buf = io.BytesIO()
            PIL.Image.fromarray(pixels).save(buf, format="PNG" if i % 2 else "WEBP", lossless=True)
            txn.put(f"{i:040x}".encode(), buf.getvalue())
    env.close()
    dest = tmp_path / "lsuncat-32x32.zip"
    args = [f"--source={db}", f"--dest={dest}", "--transform=center-crop", "--resolution=32x32", "--max-images=4"]
    assert dataset_tool(args) == 0
    images, meta = read_dataset(dest)
    assert [img.shape for img in images] == [(32, 32, 3)] * 4 and meta["labels"] is None
    # The first record, center-cropped (48x64 -> 48x48) and resized, as a folder source gives.
    folder = tmp_path / "folder"
    folder.mkdir()
    PIL.Image.fromarray(pictures[0]).save(folder / "a.png")
    assert dataset_tool([f"--source={folder}", f"--dest={tmp_path / 'ref.zip'}", "--transform=center-crop",
                         "--resolution=32x32"]) == 0
    np.testing.assert_array_equal(images[0], read_dataset(tmp_path / "ref.zip")[0][0])
