"""Convert a folder or ZIP of arbitrary images into a training dataset (published layout).

Output: PNGs named `00000/img00000000.png`, `00000/img00000001.png`, ... (1000 per
folder) and a `dataset.json` with `{"labels": [[name, label], ...]}` or `{"labels": null}`,
in a ZIP file (dest ends with .zip) or a folder. The output appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import PIL.Image
from tqdm import tqdm

from creps.atomic import atomic_path
from creps.data.dataset import (LABELS_FILE, NO_IMAGES_HINT, FileSource, channels_for_mode, error_reason,
                                 is_power_of_two, read_labels_file, to_mode)
from creps.data.sources import open_source
from creps.errors import UserError

TRANSFORMS = ("center-crop", "center-crop-wide")
IMAGES_PER_FOLDER = 1000
# zlib level 1: a fraction of the size of stored PNGs for little encode/decode time.
PNG_COMPRESS_LEVEL = 1
# Fixed member timestamps, so that equal content gives a byte-identical ZIP.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

Size = tuple[int, int]  # (width, height)


# ----------------------------------------------------------------------------------------
# Atomic output.


Writer = Callable[[str, bytes], None]  # write(name, data) adds one file, `name` being a posix relative path


def _write_file(root: str, name: str, data: bytes) -> None:
    path = os.path.join(root, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_output(dest: str) -> Iterator[Writer]:
    """Yield a writer that collects files beside `dest`; they appear at `dest` on success only.

    A ZIP when `dest` ends with `.zip` (an existing file is replaced), else a folder (which,
    if it exists, must be empty). On an exception everything written is removed.
    """
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    if dest.lower().endswith(".zip"):
        with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            yield lambda name, data: archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
        return
    tmp_dir = os.path.join(parent, f".{os.path.basename(dest)}.{secrets.token_hex(4)}.tmp")
    os.mkdir(tmp_dir)  # not mkdtemp: the folder keeps the umask's permissions
    try:
        yield functools.partial(_write_file, tmp_dir)
        _sync_all()  # the files, before the rename publishes them
        if os.path.isdir(dest):
            os.rmdir(dest)  # an empty folder the user made for us
        os.replace(tmp_dir, dest)
        _sync_all()  # the rename
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _sync_all() -> None:
    """One system-wide flush instead of an fsync per image (POSIX; a no-op elsewhere)."""
    if hasattr(os, "sync"):
        os.sync()


_ARCHIVE_NAME = re.compile(r"\d{5}/img\d{8}\.png")


def archive_name(index: int) -> str:
    """Published member name of the index-th image: 00000/img00000000.png."""
    return f"{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def png_bytes(img: Union[PIL.Image.Image, np.ndarray]) -> bytes:
    """PNG file contents of an image, or of a uint8 HWC array (C = 1 or 3)."""
    if isinstance(img, np.ndarray):
        img = PIL.Image.fromarray(img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------
# Transforms: PIL image in, PIL image (or None to skip it) out.


def parse_resolution(text: str | Size) -> Size:
    """'WxH' or 'W,H' (or a single 'N' for NxN) -> (W, H)."""
    if isinstance(text, tuple):
        size = text
    else:
        parts = str(text).lower().replace(",", "x").split("x")
        try:
            size = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
        except ValueError:
            size = (0, 0)
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--resolution={text}: expected WxH with positive integers, e.g. --resolution=256x256")
    return int(size[0]), int(size[1])


def _resize(img: PIL.Image.Image, size: Size) -> PIL.Image.Image:
    return img if img.size == size else img.resize(size, PIL.Image.Resampling.LANCZOS)


def center_crop(img: PIL.Image.Image, size: Size) -> PIL.Image.Image:
    """The largest centered square, resized to `size`."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return _resize(img.crop((left, top, left + side, top + side)), size)


def _center_crop_wide(img: PIL.Image.Image, size: Size) -> Optional[PIL.Image.Image]:
    """The largest centered W:H window, resized to W x H and centered on a black W x W canvas.

    Images smaller than the window (which would need upscaling) are skipped (None).
    """
    width, height = size
    w, h = img.size
    crop_w, crop_h = w, round(w * height / width)
    if crop_h > h:
        crop_w, crop_h = round(h * width / height), h
    if crop_w < width or crop_h < height:
        return None
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    window = _resize(img.crop((left, top, left + crop_w, top + crop_h)), size)
    canvas = PIL.Image.new(img.mode, (width, width))
    canvas.paste(window, (0, (width - height) // 2))
    return canvas


def _make_transform(transform: str | None, size: Size | None) -> Callable[[PIL.Image.Image], Optional[PIL.Image.Image]]:
    if size is None:  # a transform always comes with a size (see _check_options)
        return lambda img: img
    fit = {"center-crop": center_crop, "center-crop-wide": _center_crop_wide}.get(transform, _resize)
    return lambda img: fit(img, size)


# ----------------------------------------------------------------------------------------
# Labels.


def _subfolder_classes(names: list[str]) -> list[str] | None:
    """Sorted class names when every image sits one folder below the root in >= 2 folders."""
    parts = [n.split("/") for n in names]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    if all(_ARCHIVE_NAME.fullmatch(n) for n in names):
        return None  # a converted dataset's 00000/, 00001/ ... folders are not classes
    classes = sorted({p[0] for p in parts})
    return classes if len(classes) >= 2 else None


def _plan_labels(source: FileSource, all_names: list[str]) -> tuple[str | None, dict[str, Any], list[str], list[str]]:
    """(kind, label per source image, class names, warnings); kind is 'source', 'subfolders' or None."""
    if LABELS_FILE in source.entries:
        pairs = read_labels_file(source)
        if pairs is None:
            return None, {}, [], []
        table = {str(p).replace("\\", "/"): v for p, v in pairs}
        missing = [n for n in all_names if n not in table]
        if missing:
            return None, {}, [], [f"{LABELS_FILE} of --source has no label for {missing[0]} ({len(missing)} images); "
                                  "the output has no labels"]
        return "source", table, [], []
    classes = _subfolder_classes(all_names)
    if classes is None:
        return None, {}, [], []
    index = {c: i for i, c in enumerate(classes)}
    return "subfolders", {n: index[n.split("/")[0]] for n in all_names}, classes, []


# ----------------------------------------------------------------------------------------
# Conversion.


def _check_dest(dest: str) -> None:
    if not os.path.exists(dest):
        return
    if not os.path.isdir(dest):
        raise UserError(f"--dest {dest}: already exists and is a file; delete it or choose another --dest")
    if dest.lower().endswith(".zip"):
        raise UserError(f"--dest {dest}: is a folder; remove it or choose another --dest")
    if os.listdir(dest):
        raise UserError(f"--dest {dest}: folder exists and is not empty; choose a new or empty --dest")


def _check_options(transform: str | None, resolution: str | Size | None, max_images: int | None) -> Size | None:
    """Validate the options; returns the target size, if any."""
    if transform is not None and transform not in TRANSFORMS:
        raise UserError(f"--transform={transform}: unknown; choose one of {', '.join(TRANSFORMS)}")
    size = parse_resolution(resolution) if resolution is not None else None
    if transform is not None and size is None:
        raise UserError(f"--transform={transform} needs a target size; add --resolution=WxH, e.g. 256x256")
    if transform == "center-crop-wide" and size is not None and size[1] > size[0]:
        raise UserError(f"--transform=center-crop-wide needs a wide --resolution (W >= H), got {size[0]}x{size[1]}")
    if max_images is not None and max_images < 1:
        raise UserError(f"--max-images={max_images}: must be >= 1")
    return size


def _check_same_size(source: str, names: list[str], sizes: list[Size]) -> None:
    """Without a target size, every image must have the size of the first."""
    for name, size in zip(names, sizes):
        if size != sizes[0]:
            raise UserError(f"--source {source}: {name} is {size[0]}x{size[1]} but {names[0]} is "
                            f"{sizes[0][0]}x{sizes[0][1]}; pass --resolution=WxH (and --transform=center-crop to keep "
                            "the aspect ratio) to convert images of different sizes")


def convert_dataset(source: str, dest: str, max_images: int | None = None, transform: str | None = None,
                    resolution: str | Size | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Convert the images of `source` (folder, ZIP, CIFAR-10 .tar.gz, MNIST .gz, LMDB; see
    creps.data.sources) into a dataset at `dest`.

    Labels come from the source's dataset.json, else from class subfolders (or the release's
    own labels). Without `transform`/`resolution` all images must share one size. Returns a
    summary: dest, num_images, skipped, resolution (W, H), num_channels, labels ('source',
    'subfolders', 'release' or None), class_names, warnings.
    """
    size = _check_options(transform, resolution, max_images)
    _check_dest(dest)

    src = open_source(source, _plan_labels)
    all_names = src.names
    if not all_names:
        src.close()
        raise UserError(f"--source {source}: no images found ({NO_IMAGES_HINT})")
    names = all_names[:max_images] if max_images is not None else all_names
    label_kind, labels_by_name, class_names, warnings = src.labels(names)

    checking = tqdm(names, desc="checking", unit="img", leave=False, disable=not progress)
    headers = [src.header(n) for n in checking]
    channels = max(channels_for_mode(mode) for _, mode in headers)
    if size is None:
        _check_same_size(source, names, [image_size for image_size, _ in headers])
    out_size = size or headers[0][0]
    if transform == "center-crop-wide":
        out_size = (out_size[0], out_size[0])
    if out_size[0] != out_size[1] or not is_power_of_two(out_size[0]) or out_size[0] < 4:
        warnings.append(f"the output is {out_size[0]}x{out_size[1]}; train.py needs square images whose side is a "
                        "power of two (e.g. --resolution=256x256)")

    apply = _make_transform(transform, size)
    out_labels: list[list[Any]] = []
    count = skipped = 0
    try:
        with atomic_output(dest) as write:
            for name in tqdm(names, desc="converting", unit="img", disable=not progress):
                img = apply(to_mode(src.image(name), channels))
                if img is None:
                    skipped += 1
                    continue
                out_name = archive_name(count)
                write(out_name, png_bytes(img))
                if label_kind is not None:
                    out_labels.append([out_name, labels_by_name[name]])
                count += 1
            if count == 0:
                assert size is not None  # only center-crop-wide skips images
                raise UserError(f"--source {source}: every image is smaller than --resolution={size[0]}x{size[1]}, "
                                "nothing to write; choose a smaller --resolution")
            meta: dict[str, Any] = {"labels": out_labels if label_kind is not None else None}
            if class_names:
                meta["class_names"] = class_names
            write(LABELS_FILE, json.dumps(meta).encode("utf-8"))
    except OSError as e:
        raise UserError(f"--dest {dest}: cannot write ({error_reason(e)}); check free space and permissions") from e
    finally:
        src.close()

    if skipped:
        warnings.append(f"skipped {skipped} images smaller than the {transform} window")
    return {"dest": dest, "num_images": count, "skipped": skipped, "resolution": out_size, "num_channels": channels,
            "labels": label_kind, "class_names": class_names, "warnings": warnings}
