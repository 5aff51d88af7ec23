"""The paths the studio serves: what it was given on the command line, and nothing else.

Every file the page names is a (source, relative path) pair; `Sources.resolve` turns it into a
real path only when that path, with every symbolic link followed, lies under the source. So
`..`, absolute paths, URL-encoded traversal (decoded before it gets here) and links that point
out of a served folder are all refused alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from creps.download import is_remote, local_path
from creps.errors import UserError


PROJECTION_SUFFIX = ".npz"  # projected_w.npz, as projector.py writes it


class StudioError(Exception):
    """A request the studio refuses or cannot serve: its message goes to the page as JSON."""

    status = 400

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(StudioError):
    status = 404


class Forbidden(StudioError):
    status = 403


@dataclass(frozen=True)
class Source:
    """One PATH given to `creps studio`: a folder (a run or a folder of runs), a network file,
    a projection file (projected_w.npz), or the URL of a network file."""

    index: int
    given: str
    path: Optional[Path]  # resolved; None for a URL
    url: Optional[str] = None

    @property
    def kind(self) -> str:
        if self.url is not None:
            return "url"
        return "dir" if self.path.is_dir() else "file"

    def describe(self) -> dict:
        return {"src": self.index, "given": self.given, "kind": self.kind}


class Sources:
    def __init__(self, given: Sequence[str]):
        items = []
        for index, text in enumerate(given):
            if is_remote(text) and not text.startswith("file://"):
                items.append(Source(index, text, None, url=text))
                continue
            path = local_path(text)
            if not path.exists():
                raise UserError(f"{text}: no such file or directory; give run directories, folders of runs, "
                                "network snapshots, .pkl files or projected_w.npz files")
            items.append(Source(index, text, path.resolve()))
        self.items: tuple[Source, ...] = tuple(items)

    def __iter__(self):
        return iter(self.items)

    def source(self, src: object) -> Source:
        try:
            index = int(src)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise StudioError(f"bad source number {src!r}") from None
        if not 0 <= index < len(self.items):
            raise NotFound(f"no source number {index} (the studio serves {len(self.items)})")
        return self.items[index]

    def resolve(self, src: object, rel: Optional[str] = "") -> Path:
        """The real path of `rel` under source `src`; Forbidden when it lies outside it."""
        source = self.source(src)
        rel = rel or ""
        if source.url is not None:
            raise StudioError(f"source {source.index} is a URL, not a folder or file")
        base = source.path
        if rel in ("", "."):
            return base
        if "\x00" in rel:
            raise Forbidden("a path with a NUL character")
        try:
            target = (base / rel).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable component
            raise Forbidden(f"{rel}: cannot be resolved") from None
        if not target.is_relative_to(base) or (target != base and not base.is_dir()):
            raise Forbidden(f"{rel}: outside the paths this studio serves")
        return target

    def network_source(self, src: object, rel: Optional[str] = "") -> str:
        """What load_snapshot takes for a network the page names: a checked local path, or a URL
        exactly as given on the command line."""
        source = self.source(src)
        if source.url is not None:
            if rel:
                raise StudioError(f"source {source.index} is a URL: it names one file")
            return source.url
        path = self.resolve(src, rel)
        if not path.is_file():
            raise NotFound(f"{rel or source.given}: no such network file")
        return str(path)

    def projection_file(self, src: object, rel: Optional[str] = "") -> Path:
        """The checked path of a projection file (projected_w.npz) the page names."""
        source = self.source(src)
        path = self.resolve(src, rel)
        name = rel or source.given
        if not path.is_file():
            raise NotFound(f"{name}: no such projection file")
        if path.suffix.lower() != PROJECTION_SUFFIX:
            raise StudioError(f"{name}: not a projection file; pick a {PROJECTION_SUFFIX} file that projector.py wrote")
        return path

    def relative(self, src: int, path: Path) -> str:
        """`path` relative to source `src`, with forward slashes (how the page names files)."""
        base = self.items[src].path
        return "" if path == base else path.relative_to(base).as_posix()
