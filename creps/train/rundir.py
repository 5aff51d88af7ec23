"""The run directory users know: <outdir>/<NNNNN>-<desc>/ with log.txt and options."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TextIO

from creps.atomic import atomic_write_text
from creps.errors import UserError


def check_outdir(outdir: str | Path) -> Path:
    path = Path(outdir).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--outdir={outdir}: exists and is not a directory; pick another --outdir")
    return path


def next_run_dir(outdir: str | Path, desc: str) -> Path:
    """<outdir>/<id:05d>-<desc> with id one more than the largest existing run id."""
    root = check_outdir(outdir)
    ids = [int(m.group()) for p in (root.iterdir() if root.is_dir() else []) if p.is_dir()
           for m in [re.match(r"^\d+", p.name)] if m]
    return root / f"{max(ids, default=-1) + 1:05d}-{desc}"


def create_run_dir(outdir: str | Path, desc: str, options_json: str) -> Path:
    """Create the run directory and write training_options.json (whole or not at all)."""
    run_dir = next_run_dir(outdir, desc)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise UserError(f"--outdir={outdir}: cannot create {run_dir} ({err.strerror}); pick a writable --outdir") from None
    atomic_write_text(run_dir / "training_options.json", options_json + "\n")
    return run_dir


class RunLog:
    """Prints to the console and appends the same lines to <run_dir>/log.txt."""

    def __init__(self, path: Path | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.file = open(path, "a", encoding="utf-8") if path is not None else None

    def __call__(self, *parts: object) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, file=self.stream, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def to_file(self, line: str) -> None:
        """A line for log.txt only (e.g. the error that the CLI prints on its own)."""
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
