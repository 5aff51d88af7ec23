"""Training images from a ZIP archive or a folder, in the published StyleGAN dataset layout.

A dataset is a ZIP file or a directory holding PNG/JPEG/WebP images (searched recursively)
and, optionally, a `dataset.json` at its root: `{"labels": [[relative_path, label], ...]}`
where a label is a class index or a list of floats, or `{"labels": null}`.

Images are returned as uint8 arrays [C, H, W] (C = 1 for grayscale, 3 otherwise) and labels
as float32 vectors (class indices become one-hot vectors).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from typing import IO, Any, Iterator

import numpy as np
import PIL.Image
import torch.utils.data

from creps.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LABELS_FILE = "dataset.json"
NO_IMAGES_HINT = "expected PNG, JPEG or WebP files, searched recursively"

# Image modes that hold one channel; every other mode is read as RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# ----------------------------------------------------------------------------------------
# Files: one interface over a ZIP archive and a directory tree.


def is_image_name(name: str) -> bool:
    """True for a relative path that names an image we read (by extension, skipping hidden
    files and folders such as `__MACOSX/` or `._photo.png` left by archivers)."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class FileSource:
    """Read-only access to the files of a ZIP archive or a directory, by posix relative path.

    `entries` maps every regular file to a (size, stamp) pair: the CRC for a ZIP member,
    the modification time in ns for a file on disk. Safe to pickle and to use after a fork:
    the archive is (re)opened lazily in each process.
    """

    def __init__(self, path: str, what: str = "dataset") -> None:
        self.path = path
        self.what = what
        if not os.path.exists(path):
            raise UserError(f"{what} {path}: no such file or folder (pass a ZIP file or a folder of images)")
        self.is_zip = not os.path.isdir(path)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        try:
            self.entries = self._list_zip() if self.is_zip else self._list_dir()
        except (OSError, zipfile.BadZipFile) as e:
            raise UserError(f"{what} {path}: cannot be read ({error_reason(e)}); check the path and permissions") from e

    def _list_dir(self) -> dict[str, tuple[int, int]]:
        entries: dict[str, tuple[int, int]] = {}
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for fname in files:
                full = os.path.join(root, fname)
                rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                st = os.stat(full)
                entries[rel] = (st.st_size, st.st_mtime_ns)
        return entries

    def _list_zip(self) -> dict[str, tuple[int, int]]:
        if not zipfile.is_zipfile(self.path):
            raise UserError(f"{self.what} {self.path}: not a ZIP file or a folder "
                            "(pass a folder of images or a ZIP made by dataset_tool.py)")
        return {i.filename: (i.file_size, i.CRC) for i in self._zipfile().infolist() if not i.is_dir()}

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)  # a forked child gets its own handle
            self._zip_pid = os.getpid()
        return self._zip

    def open(self, name: str) -> IO[bytes]:
        """Open one file (a relative path from `entries`) for binary reading."""
        if self.is_zip:
            return self._zipfile().open(name, "r")
        return open(os.path.join(self.path, *name.split("/")), "rb")

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def image_names(self) -> list[str]:
        """Relative paths of all images, sorted."""
        return sorted(n for n in self.entries if is_image_name(n))

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state


def error_reason(e: BaseException) -> str:
    """A short, one-line description of an I/O or decoding error."""
    if isinstance(e, PIL.UnidentifiedImageError):
        return "unknown or damaged image format"
    text = str(e.strerror if isinstance(e, OSError) and e.strerror else e) or type(e).__name__
    return " ".join(text.split())


_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, zipfile.BadZipFile, PIL.Image.DecompressionBombError)


# ----------------------------------------------------------------------------------------
# Images.


def channels_for_mode(mode: str) -> int:
    """Number of channels we store for a PIL image mode: 1 for grayscale, 3 otherwise."""
    return 1 if mode in _GRAY_MODES else 3


def to_mode(img: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """Convert a decoded image to 8-bit 'L' (channels=1) or 'RGB' (channels=3)."""
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit gray: keep the top 8 bits
        arr = np.asarray(img)
        arr = (arr.astype(np.float64) / 256.0) if img.mode != "F" else arr
        img = PIL.Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":  # via RGBA, so palettes with transparency convert without a warning
        img = img.convert("RGBA")
    return img.convert(target)


def image_to_array(img: PIL.Image.Image, channels: int) -> np.ndarray:
    """An image as a uint8 array [C, H, W]."""
    arr = np.asarray(to_mode(img, channels), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


@contextlib.contextmanager
def _image_errors(where: str, problem: str, advice: str = "fix or remove the file") -> Iterator[None]:
    """A reading or decoding error becomes one UserError: `where: problem (reason); advice`."""
    try:
        yield
    except _DECODE_ERRORS as e:
        raise UserError(f"{where}: {problem} ({error_reason(e)}); {advice}") from e


def read_header(source: FileSource, name: str) -> tuple[tuple[int, int], str]:
    """(width, height) and mode of one image, read from its header without decoding."""
    with _image_errors(f"{source.what} {source.path}: {name}", "not a readable image"):
        with source.open(name) as f, PIL.Image.open(f) as img:
            return img.size, img.mode


def _decoded(f: IO[bytes]) -> PIL.Image.Image:
    img = PIL.Image.open(io.BytesIO(f.read()))
    img.load()
    return img


def decode_image(source: FileSource, name: str) -> PIL.Image.Image:
    """Decode one image fully; a broken file raises UserError naming it."""
    with _image_errors(f"{source.what} {source.path}: {name}", "cannot decode image"), source.open(name) as f:
        return _decoded(f)


def decode_image_file(path: str, what: str) -> PIL.Image.Image:
    """Decode one image file fully; a missing or broken file raises UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path}: no such file")
    with _image_errors(f"{what} {path}", "not a readable image", "give a PNG, JPEG or WebP image"):
        with open(path, "rb") as f:
            return _decoded(f)


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


# ----------------------------------------------------------------------------------------
# Labels.


def read_labels_file(source: FileSource) -> list[Any] | None:
    """The `labels` list of the root dataset.json, or None when absent or null.

    A malformed file raises UserError.
    """
    if LABELS_FILE not in source.entries:
        return None
    where = f"{source.what} {source.path}: {LABELS_FILE}"
    try:
        meta = json.loads(source.read(LABELS_FILE).decode("utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{where}: not valid JSON ({error_reason(e)}); fix it or remove it") from e
    if not isinstance(meta, dict) or "labels" not in meta:
        raise UserError(f'{where}: expected an object {{"labels": [[path, label], ...]}} or {{"labels": null}}')
    labels = meta["labels"]
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, list) and len(x) == 2 for x in labels):
        raise UserError(f'{where}: "labels" must be a list of [relative_path, label] pairs or null')
    return labels


def _is_class_index(value: object) -> bool:
    """An integer, or a float with an integral value (3.0), but not a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def label_matrix(pairs: list[Any], names: list[str], where: str) -> np.ndarray:
    """Float32 labels [len(names), dim] for `names`: one-hot for class indices, as is for vectors."""
    table = {str(path).replace("\\", "/"): value for path, value in pairs}
    missing = [n for n in names if n not in table]
    if missing:
        raise UserError(f"{where}: no label for {missing[0]} ({len(missing)} images unlabeled); label every image")
    values = [table[n] for n in names]
    if all(_is_class_index(v) for v in values):
        classes = np.asarray(values, dtype=np.int64)
        if classes.size and classes.min() < 0:
            raise UserError(f"{where}: class labels must be >= 0; renumber the classes from 0")
        dim = int(classes.max()) + 1 if classes.size else 0
        onehot = np.zeros([len(values), dim], dtype=np.float32)
        onehot[np.arange(len(values)), classes] = 1
        return onehot
    if all(isinstance(v, list) for v in values):
        try:
            vectors = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: label vectors must be lists of numbers of one length") from e
        if vectors.ndim != 2:
            raise UserError(f"{where}: label vectors must be lists of numbers of one length")
        return vectors
    raise UserError(f"{where}: labels must be all class indices (integers) or all lists of floats")


# ----------------------------------------------------------------------------------------
# The dataset.


class ImageDataset(torch.utils.data.Dataset):
    """Square, power-of-two images from a ZIP file or a folder, with optional labels and x-flips.

    Item i is (image uint8 [C, H, W], label float32 [label_dim]). With `xflip`, items
    n..2n-1 are the mirrored copies of items 0..n-1. `max_size` keeps a random subset
    (drawn with `random_seed`, kept in file order).
    """

    def __init__(self, path: str, use_labels: bool = False, xflip: bool = False, max_size: int | None = None,
                 random_seed: int = 0) -> None:
        self._path = path
        self._use_labels = use_labels
        self._xflip = xflip
        self._max_size = max_size
        self._random_seed = random_seed
        self._source = FileSource(path)
        where = f"dataset {path}"

        self._names = self._source.image_names()
        if not self._names:
            raise UserError(f"{where}: no images found ({NO_IMAGES_HINT})")
        self._size, self._num_channels = self._check_headers()
        width, height = self._size
        if width != height or width < 4 or not is_power_of_two(width):
            raise UserError(f"{where}: images are {width}x{height}, training needs square images whose side is a "
                            f"power of two >= 4 (convert with dataset_tool.py --source={path} --dest=OUT.zip "
                            "--resolution=256x256 --transform=center-crop)")
        self._load_raw(0)  # the first image must decode

        self._raw_labels_all = self._read_labels()
        if use_labels and self._raw_labels_all is None:
            raise UserError(f"{where}: labels requested but the dataset has none (add a {LABELS_FILE} with class "
                            "labels, e.g. convert class subfolders with dataset_tool.py, or train without --cond=1)")

        raw_idx = np.arange(len(self._names), dtype=np.int64)
        if max_size is not None:
            if max_size < 1:
                raise UserError(f"{where}: max_size must be >= 1 (got {max_size})")
            if raw_idx.size > max_size:
                np.random.RandomState(random_seed % (1 << 31)).shuffle(raw_idx)
                raw_idx = np.sort(raw_idx[:max_size])
        self._raw_idx = raw_idx
        if use_labels and self._raw_labels_all is not None:
            self._labels = self._raw_labels_all[raw_idx]
        else:
            self._labels = np.zeros([raw_idx.size, 0], dtype=np.float32)

    def _check_headers(self) -> tuple[tuple[int, int], int]:
        """Common (width, height) of all images and the channel count (3 if any is in color)."""
        first_size, first_mode = read_header(self._source, self._names[0])
        channels = channels_for_mode(first_mode)
        for name in self._names[1:]:
            size, mode = read_header(self._source, name)
            if size != first_size:
                raise UserError(f"dataset {self._path}: {name} is {size[0]}x{size[1]} but {self._names[0]} is "
                                f"{first_size[0]}x{first_size[1]}; all images must have one size (convert with "
                                "dataset_tool.py --resolution=WxH --transform=center-crop)")
            channels = max(channels, channels_for_mode(mode))
        return first_size, channels

    def _read_labels(self) -> np.ndarray | None:
        """Labels of all images on disk, float32 [num_files, dim], or None.

        Broken label files only fail when labels are asked for.
        """
        try:
            pairs = read_labels_file(self._source)
            if pairs is None:
                return None
            return label_matrix(pairs, self._names, f"dataset {self._path}: {LABELS_FILE}")
        except UserError:
            if self._use_labels:
                raise
            return None

    def _load_raw(self, raw_index: int) -> np.ndarray:
        name = self._names[raw_index]
        img = decode_image(self._source, name)
        if img.size != self._size:
            raise UserError(f"dataset {self._path}: {name} is {img.size[0]}x{img.size[1]}, expected "
                            f"{self._size[0]}x{self._size[1]}; all images must have one size")
        return image_to_array(img, self._num_channels)

    # -- torch Dataset ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._raw_idx.size * (2 if self._xflip else 1)

    def _split(self, index: int) -> tuple[int, bool]:
        """(position among the kept images, whether mirrored) for an item index."""
        n = self._raw_idx.size
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        return (index - n, True) if index >= n else (index, False)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pos, flip = self._split(int(index))
        image = self._load_raw(int(self._raw_idx[pos]))
        if flip:
            image = np.ascontiguousarray(image[:, :, ::-1])
        return image, self.get_label(index)

    def get_label(self, index: int) -> np.ndarray:
        """The label vector of item `index` (empty when labels are not used)."""
        pos, _ = self._split(int(index))
        return self._labels[pos].copy()

    # -- properties ---------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def name(self) -> str:
        """The file or folder name without extension."""
        return os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]

    @property
    def resolution(self) -> int:
        return self._size[0]

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def image_shape(self) -> list[int]:
        return [self._num_channels, self._size[1], self._size[0]]

    @property
    def has_labels(self) -> bool:
        """Whether the dataset carries labels on disk (whether or not they are used)."""
        return self._raw_labels_all is not None

    @property
    def label_dim(self) -> int:
        return self._labels.shape[1]

    @property
    def label_shape(self) -> list[int]:
        return [self.label_dim]

    @property
    def raw_labels(self) -> np.ndarray:
        """Labels of the kept images (before x-flip), float32 [n, label_dim]."""
        return self._labels

    @property
    def image_names(self) -> list[str]:
        """Relative paths of the kept images, in item order (before x-flip)."""
        return [self._names[i] for i in self._raw_idx]

    # -- identity and lifetime ----------------------------------------------------------

    def content_hash(self) -> str:
        """A stable hex digest of what this dataset yields, to key caches.

        Covers every image and dataset.json (name, size, CRC for ZIPs / mtime for folders)
        and the options that change the items; not the dataset's location.
        """
        files = sorted(n for n in self._source.entries if is_image_name(n) or n == LABELS_FILE)
        identity = {
            "format": 1,
            "kind": "zip" if self._source.is_zip else "dir",
            "files": [[n, *self._source.entries[n]] for n in files],
            "use_labels": self._use_labels,
            "xflip": self._xflip,
            "max_size": self._max_size,
            "random_seed": self._random_seed if self._max_size is not None else None,
        }
        return hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()

    def close(self) -> None:
        """Close the archive handle of this process (reopened on the next read)."""
        self._source.close()

    def __enter__(self) -> ImageDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ImageDataset({self._path!r}, items={len(self)}, shape={self.image_shape}, "
                f"label_dim={self.label_dim}, xflip={self._xflip})")


def open_dataset(path: str, use_labels: bool = False, xflip: bool = False, max_size: int | None = None,
                 random_seed: int = 0) -> ImageDataset:
    """Open a dataset; any I/O or decoding problem becomes a one-line UserError."""
    try:
        return ImageDataset(path, use_labels=use_labels, xflip=xflip, max_size=max_size, random_seed=random_seed)
    except (OSError, zipfile.BadZipFile, PIL.UnidentifiedImageError) as e:
        raise UserError(f"dataset {path}: cannot be read ({error_reason(e)}); check the path and permissions") from e
