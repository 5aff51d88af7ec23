"""The image collections the dataset tool reads, behind one interface.

- a folder or ZIP of image files (labels from its `dataset.json` or class subfolders);
- the CIFAR-10 python release, `cifar-10-python.tar.gz` (the 50,000 training images with
  their class labels and names; its pickled batches are read without running anything);
- MNIST, `train-images-idx3-ubyte.gz` with `train-labels-idx1-ubyte.gz` beside it (padded
  to 32x32, as the published tool does);
- an LMDB database of encoded images, as the LSUN releases ship (`pip install lmdb`).

Every source answers `names` (a stable order), `header(name)` ((width, height), PIL mode)
and `image(name)` (a decoded PIL image), and `labels(names)`.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from typing import Any, Optional

import numpy as np
import PIL.Image

from creps.data.dataset import FileSource, decode_image, error_reason, read_header
from creps.errors import UserError
from creps.safe_pickle import UnsafePickle, read_data_pickle

Labels = tuple[Optional[str], dict[str, Any], list[str], list[str]]  # kind, label per name, class names, warnings


class FilesSource:
    """A folder or ZIP of image files."""

    def __init__(self, path: str, plan_labels) -> None:
        self.files = FileSource(path, what="--source")
        self.names = self.files.image_names()
        self._plan_labels = plan_labels

    def header(self, name: str) -> tuple[tuple[int, int], str]:
        return read_header(self.files, name)

    def image(self, name: str) -> PIL.Image.Image:
        return decode_image(self.files, name)

    def labels(self, names: list[str]) -> Labels:
        return self._plan_labels(self.files, self.names)

    def close(self) -> None:
        self.files.close()


class ArraySource:
    """Images held as one uint8 array [N, H, W] or [N, H, W, 3], with optional labels."""

    def __init__(self, images: np.ndarray, labels: Optional[np.ndarray], class_names: list[str]) -> None:
        self.images, self._labels, self.class_names = images, labels, class_names
        self.names = [f"{i:08d}" for i in range(len(images))]
        self._mode = "L" if images.ndim == 3 else "RGB"

    def header(self, name: str) -> tuple[tuple[int, int], str]:
        return (self.images.shape[2], self.images.shape[1]), self._mode

    def image(self, name: str) -> PIL.Image.Image:
        return PIL.Image.fromarray(self.images[int(name)], self._mode)

    def labels(self, names: list[str]) -> Labels:
        if self._labels is None:
            return None, {}, [], []
        return "release", {n: int(self._labels[int(n)]) for n in names}, self.class_names, []

    def close(self) -> None:
        pass


def read_cifar10(path: str) -> ArraySource:
    """The training batches of `cifar-10-python.tar.gz`: 50,000 RGB 32x32 images, labels 0-9."""
    images, labels, class_names = [], [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            batches = sorted(n for n in members if os.path.basename(n).startswith("data_batch_"))
            if not batches:
                raise UserError(f"--source {path}: no data_batch_* files; pass the CIFAR-10 python release "
                                "(cifar-10-python.tar.gz)")
            for name in batches:
                batch = read_data_pickle(tar.extractfile(members[name]))
                data, batch_labels = batch.get("data"), batch.get("labels")
                if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                        or data.dtype != np.uint8 or len(batch_labels or ()) != len(data):
                    raise UserError(f"--source {path}: {name} is not a CIFAR-10 batch (uint8 data [N, 3072] "
                                    "and one label per image)")
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(np.asarray(batch_labels, dtype=np.int64))
            meta = [n for n in members if os.path.basename(n) == "batches.meta"]
            if meta:
                names = read_data_pickle(tar.extractfile(members[meta[0]])).get("label_names")
                class_names = [str(n) for n in names] if isinstance(names, list) else []
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UserError(f"--source {path}: cannot be read as a .tar.gz ({error_reason(e)}); check the file") from e
    except UnsafePickle as e:
        raise UserError(f"--source {path}: a batch is not plain data ({e}); refusing to read it") from e
    label_array = np.concatenate(labels)
    if label_array.min() < 0 or label_array.max() > 9:
        raise UserError(f"--source {path}: labels outside 0-9; not the CIFAR-10 release")
    return ArraySource(np.ascontiguousarray(np.concatenate(images)), label_array, class_names)


def _read_idx(path: str, what: str, ndim: int) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped: uint8 data of `ndim` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"--source: {what} {path} cannot be read ({error_reason(e)})") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise UserError(f"--source: {what} {path} is not an IDX file of {ndim}-D uint8 data")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise UserError(f"--source: {what} {path} is truncated ({len(body)} of {int(np.prod(shape))} bytes)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_mnist(path: str) -> ArraySource:
    """`*-images-idx3-ubyte.gz` and its `*-labels-idx1-ubyte.gz`: gray digits padded to 32x32."""
    images = _read_idx(path, "image file", 3)
    label_path = path.replace("-images-idx3-", "-labels-idx1-")
    if not os.path.isfile(label_path):
        raise UserError(f"--source {path}: the labels {os.path.basename(label_path)} are not beside it; "
                        "put both MNIST files in one folder")
    labels = _read_idx(label_path, "label file", 1)
    if len(labels) != len(images):
        raise UserError(f"--source {path}: {len(images)} images but {len(labels)} labels")
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2)])  # 28x28 -> 32x32, a power of two
    return ArraySource(np.ascontiguousarray(padded), labels.astype(np.int64), [str(d) for d in range(10)])


class LmdbSource:
    """An LMDB database whose values are encoded images (the LSUN releases); no labels."""

    def __init__(self, path: str) -> None:
        try:
            import lmdb
        except ImportError:
            raise UserError(f"--source {path}: reading LMDB needs the lmdb package; pip install lmdb") from None
        self.path = path
        try:
            self._env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1, subdir=True)
            with self._env.begin(write=False) as txn:
                self._keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        except lmdb.Error as e:
            raise UserError(f"--source {path}: cannot be read as LMDB ({e})") from e
        self.names = [f"{i:08d}" for i in range(len(self._keys))]

    def _open(self, name: str) -> PIL.Image.Image:
        with self._env.begin(write=False) as txn:
            value = txn.get(self._keys[int(name)])
        try:
            return PIL.Image.open(io.BytesIO(value))
        except (OSError, ValueError, TypeError) as e:
            key = self._keys[int(name)].decode("utf-8", "replace")
            raise UserError(f"--source {self.path}: record {key} is not an image ({error_reason(e)})") from e

    def header(self, name: str) -> tuple[tuple[int, int], str]:
        with self._open(name) as img:
            return img.size, img.mode

    def image(self, name: str) -> PIL.Image.Image:
        img = self._open(name)
        try:
            img.load()
        except OSError as e:
            raise UserError(f"--source {self.path}: record {name} cannot be decoded ({error_reason(e)})") from e
        return img

    def labels(self, names: list[str]) -> Labels:
        return None, {}, [], []

    def close(self) -> None:
        self._env.close()


def open_source(path: str, plan_labels):
    """The reader for `path`, chosen by what it is (see the module docstring)."""
    lower = path.lower()
    if os.path.isfile(path) and (lower.endswith((".tar.gz", ".tgz"))):
        return read_cifar10(path)
    if os.path.isfile(path) and lower.endswith("-idx3-ubyte.gz"):
        return read_mnist(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb")):
        return LmdbSource(path)
    return FilesSource(path, plan_labels)
