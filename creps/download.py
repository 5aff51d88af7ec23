"""Files named by URL: downloaded once into the cache folder, atomically, hash-checked.

The cache folder is $CREPS_CACHE_DIR (default ~/.cache/creps); each kind of file has its
own subfolder (detectors/, networks/). A download that fails leaves nothing behind and
becomes one UserError line that says where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from creps.atomic import atomic_path
from creps.errors import UserError


def cache_root() -> Path:
    """$CREPS_CACHE_DIR, default ~/.cache/creps."""
    return Path(os.path.expanduser(os.environ.get("CREPS_CACHE_DIR") or "~/.cache/creps"))


def is_remote(text: str) -> bool:
    """An http(s) URL (a file:// URL names a local file)."""
    return bool(re.match(r"^https?://", text))


def local_path(text: str) -> Path:
    """A path given as PATH, ~/PATH or file://PATH."""
    return Path(os.path.expanduser(text.removeprefix("file://")))


def url_filename(url: str, fallback: str) -> str:
    """The last path component of `url` without query or fragment."""
    name = re.split(r"[?#]", url, maxsplit=1)[0].rstrip("/").split("/")[-1]
    return name or fallback


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def promised_sha256(filename: str, downloaded: bool, known: Mapping[str, str]) -> Optional[str]:
    """The SHA-256 (or its leading hex digits) a file must have: a known file name's, else for a
    download named `name-<hex>.<ext>` (the torch hub convention) that <hex>; None when nothing
    is known."""
    if filename in known:
        return known[filename]
    m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z]+$", filename) if downloaded else None
    return m.group(1) if m else None


def verify_sha256(path: Union[str, Path], want: Optional[str], origin: str, url: str) -> str:
    """SHA-256 of `path`, which must start with `want` (a full digest or its leading hex digits,
    None: anything); a mismatch is a UserError that says to fetch `url` again."""
    digest = sha256_of(path)
    if want is not None and not digest.startswith(want):
        raise UserError(f"{origin}: SHA-256 {digest[:16]}... does not match the expected {want[:16]}... "
                        f"(damaged or wrong file); delete it and download {url} again")
    return digest


def download_file(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch `url` into `dest` (a temporary path), with a progress bar. Raises OSError (URLError)
    when offline."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        size = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {url_filename(url, 'file')}",
                  leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def fetch_cached(url: str, subdir: str, what: str, hint: str = "",
                 check: Optional[Callable[[Path], None]] = None) -> Path:
    """The cached copy of `url` under $CREPS_CACHE_DIR/<subdir>, downloaded when missing.

    `check(tmp_path)` may raise UserError to refuse the download (e.g. a wrong SHA-256); the
    file then never reaches the cache. Offline: a UserError naming `what`, the URL, where to
    put the file by hand, and `hint` (another way to give it).
    """
    target = cache_root() / subdir / url_filename(url, "download")
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            download_file(url, tmp)
            if check is not None:
                check(tmp)
    except (OSError, urllib.error.URLError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        raise UserError(f"cannot download {what} {url} ({' '.join(str(reason).split())}); "
                        f"download it elsewhere and put it at {target}{', or ' + hint if hint else ''}") from None
    return target


def locate(source: str, what: str, subdir: str, missing: str, hint: str = "", known: Mapping[str, str] = {},
           origin: Optional[str] = None) -> tuple[Path, str]:
    """(local path, SHA-256) of a file given as PATH, ~/PATH, file:// URL or http(s) URL
    (downloaded once into $CREPS_CACHE_DIR/<subdir>). The SHA-256 must be what the file's name
    promises (see promised_sha256). `missing` is the fix named when a local file is not there,
    `hint` another way to give a file that cannot be downloaded, `origin` where to get it again."""
    remote = is_remote(source)
    filename = url_filename(source, "download") if remote else local_path(source).name
    want = promised_sha256(filename, remote, known)
    if remote:
        path = fetch_cached(source, subdir, what, hint=hint,
                            check=lambda tmp: verify_sha256(tmp, want, source, source))
    else:
        path = local_path(source)
        if not path.is_file():
            raise UserError(f"{what} {source}: no such file; {missing}")
    return path, verify_sha256(path, want, str(path), origin or source)
