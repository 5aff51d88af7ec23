"""Run directories as the trainer writes them (creps.train.loop and NVlabs' layout alike):

  training_options.json                 the resolved configuration (total_kimg, cfg, ...)
  stats.jsonl                           one JSON object a tick: {name: {num, mean, std}, ..., timestamp}
  metric-<name>.jsonl                   one JSON object a snapshot: {results: {key: value}, snapshot_pkl, ...}
  fakes_init.png, fakesNNNNNN.png       image grids of G_ema (NNNNNN: kimg)
  network-snapshot-NNNNNN.safetensors   (or .pkl in published runs)
  log.txt                               everything the trainer printed

Everything here only reads, and reads what a run still being written holds at that moment: a
last line not yet finished is left for the next poll.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from creps.studio.paths import PROJECTION_SUFFIX, NotFound, Sources

SNAPSHOT = re.compile(r"^network-snapshot-(\d+)\.(safetensors|pkl)$")
FAKES = re.compile(r"^fakes(\d+|_init)\.png$")
METRIC = re.compile(r"^metric-(.+)\.jsonl$")
NETWORK_SUFFIXES = (".safetensors", ".pkl")
RUN_MARKERS = ("training_options.json", "stats.jsonl", "log.txt")
SCAN_DEPTH = 3  # folders below a given folder searched for runs and network files
SCAN_LIMIT = 5000  # entries looked at per given folder, at most
LOG_TAIL_BYTES = 32 * 1024
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (any((path / name).is_file() for name in RUN_MARKERS) or bool(snapshots(path)))


def snapshots(run: Path) -> list[dict[str, Any]]:
    """The run's network snapshots by kimg: [{file, kimg}], oldest first."""
    found = []
    for entry in _entries(run):
        m = SNAPSHOT.match(entry.name)
        if m and entry.is_file():
            found.append({"file": entry.name, "kimg": int(m.group(1))})
    return sorted(found, key=lambda s: (s["kimg"], s["file"]))


def image_grids(run: Path) -> list[dict[str, Any]]:
    """fakes_init.png and fakesNNNNNN.png: [{file, kimg}] (kimg None for the initial grid), oldest first."""
    found = []
    for entry in _entries(run):
        m = FAKES.match(entry.name)
        if m and entry.is_file():
            found.append({"file": entry.name, "kimg": None if m.group(1) == "_init" else int(m.group(1))})
    return sorted(found, key=lambda g: -1 if g["kimg"] is None else g["kimg"])


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def library(sources: Sources) -> dict[str, Any]:
    """Every run, loose network file and projection file (projected_w.npz) under the sources:
    {runs: [...], networks: [...], projections: [...]}."""
    runs: list[dict] = []
    networks: list[dict] = []
    projections: list[dict] = []
    for source in sources:
        if source.url is not None:
            networks.append({"src": source.index, "path": "", "name": source.url.rsplit("/", 1)[-1] or source.url})
            continue
        if source.path.is_file():
            found = projections if source.path.suffix.lower() == PROJECTION_SUFFIX else networks
            found.append({"src": source.index, "path": "", "name": source.path.name})
            continue
        for kind, path in _scan(source.path):
            rel = sources.relative(source.index, path)
            entry = {"src": source.index, "path": rel, "name": rel or source.path.name}
            if kind == "run":
                entry["snapshots"] = snapshots(path)
                runs.append(entry)
            else:
                (projections if kind == "projection" else networks).append(entry)
    return {"sources": [s.describe() for s in sources], "runs": runs, "networks": networks,
            "projections": projections}


def _scan(root: Path) -> Iterator[tuple[str, Path]]:
    """("run", dir), ("network", file) and ("projection", file) under root, breadth first; runs
    are not searched further (their snapshots are listed with them); symbolic links are not followed."""
    if is_run_dir(root):
        yield "run", root
        return
    queue, seen = [(root, 0)], 0
    while queue:
        folder, depth = queue.pop(0)
        for entry in _entries(folder):
            seen += 1
            if seen > SCAN_LIMIT:
                return
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if is_run_dir(entry):
                    yield "run", entry
                elif depth + 1 < SCAN_DEPTH:
                    queue.append((entry, depth + 1))
            elif entry.suffix in NETWORK_SUFFIXES and entry.is_file():
                yield "network", entry
            elif entry.suffix.lower() == PROJECTION_SUFFIX and entry.is_file():
                yield "projection", entry


# ---------------------------------------------------------------------------------------------
# Reading a run


def read_new_lines(path: Path, offset: int) -> tuple[list[dict], int, bool]:
    """The JSON objects of the complete lines of `path` from byte `offset` on, the offset after
    the last complete line, and whether the file was replaced by a shorter one (then reading
    restarts at 0). Lines that do not parse are skipped."""
    try:
        size = path.stat().st_size
    except OSError:
        return [], 0, offset > 0
    restarted = offset > size
    if restarted:
        offset = 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    entries = []
    for line in data[:end].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries, offset + end, restarted


def tick_means(entry: dict) -> dict[str, Any]:
    """One stats.jsonl line for the page: {t: timestamp, values: {name: mean}} (finite means only)."""
    values = {}
    for name, stat in entry.items():
        if isinstance(stat, dict) and isinstance(stat.get("mean"), (int, float)) and math.isfinite(stat["mean"]):
            values[name] = stat["mean"]
    return {"t": entry.get("timestamp"), "values": values}


def metric_series(run: Path) -> dict[str, list[dict[str, Any]]]:
    """Every metric-*.jsonl: {result key: [{kimg, value, snapshot}]} in file order."""
    series: dict[str, list[dict]] = {}
    for entry in _entries(run):
        if not METRIC.match(entry.name):
            continue
        lines, _, _ = read_new_lines(entry, 0)
        for line in lines:
            results = line.get("results")
            if not isinstance(results, dict):
                continue
            snap = str(line.get("snapshot_pkl") or "")
            m = SNAPSHOT.match(Path(snap).name)
            for key, value in results.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    series.setdefault(key, []).append(
                        {"kimg": int(m.group(1)) if m else None, "value": value, "snapshot": Path(snap).name or None})
    return series


def log_tail(run: Path, lines: int = 40) -> list[str]:
    path = run / "log.txt"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > LOG_TAIL_BYTES:
        text = text[1:]  # the first line is cut
    return text[-lines:]


def training_options(run: Path) -> dict[str, Any]:
    try:
        options = json.loads((run / "training_options.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return options if isinstance(options, dict) else {}


def summary_of_options(options: dict[str, Any]) -> dict[str, Any]:
    """The few options the page shows (ours and the published names alike)."""
    data = options.get("data") if isinstance(options.get("data"), dict) else {}
    g = options.get("G") if isinstance(options.get("G"), dict) else {}
    published_data = options.get("training_set_kwargs") if isinstance(options.get("training_set_kwargs"), dict) else {}
    return {
        "cfg": options.get("preset") or options.get("cfg") or g.get("arch"),  # this format, format 1
        "dataset": data.get("path") or published_data.get("path"),
        "resolution": data.get("resolution") or published_data.get("resolution") or g.get("img_resolution"),
        "total_kimg": options.get("total_kimg"),
        "batch": options.get("batch_size"),
        "gpus": options.get("num_gpus"),
        "gamma": (options.get("loss") or {}).get("r1_gamma") if isinstance(options.get("loss"), dict)
        else (options.get("loss_kwargs") or {}).get("r1_gamma"),
        "metrics": options.get("metrics"),
        "kimg_per_tick": options.get("kimg_per_tick"),
        "snapshot_ticks": options.get("snapshot_ticks") or options.get("network_snapshot_ticks"),
    }


def progress(options: dict[str, Any], last: Optional[dict[str, Any]], log: list[str],
             now: Optional[float] = None) -> dict[str, Any]:
    """Where the run stands: kimg of total_kimg, elapsed, s/kimg, time left, and whether it still
    trains (a tick written lately, no 'Exiting...' in the log)."""
    now = time.time() if now is None else now
    values = (last or {}).get("values", {})
    kimg = values.get("Progress/kimg")
    total = options.get("total_kimg")
    sec_per_kimg = values.get("Timing/sec_per_kimg")
    sec_per_tick = values.get("Timing/sec_per_tick")
    updated = (last or {}).get("t")
    finished = any(line.startswith("Exiting...") for line in log[-3:])
    if kimg is not None and total and kimg >= total:
        finished = True
    recent = updated is not None and now - updated < max(120.0, 3 * (sec_per_tick or 0))
    left = None
    if not finished and kimg is not None and total and sec_per_kimg:
        left = max(total - kimg, 0.0) * sec_per_kimg
    return {
        "kimg": kimg, "total_kimg": total, "fraction": (kimg / total) if kimg is not None and total else None,
        "elapsed_sec": values.get("Timing/total_sec"), "sec_per_kimg": sec_per_kimg, "sec_left": left,
        "updated": updated, "state": "finished" if finished else ("training" if recent else "stopped"),
    }


def read_run(sources: Sources, src: object, rel: str, stats_from: int = 0) -> dict[str, Any]:
    """Everything the page shows of a run; stats.jsonl from byte `stats_from` on (the page keeps
    what it has and asks for the rest)."""
    run = sources.resolve(src, rel)
    if not run.is_dir():
        raise NotFound(f"{rel or run.name}: not a run directory")
    entries, stats_next, restarted = read_new_lines(run / "stats.jsonl", max(0, int(stats_from)))
    ticks = [tick_means(e) for e in entries]
    options = training_options(run)
    log = log_tail(run)
    last = ticks[-1] if ticks else _last_tick(run / "stats.jsonl")
    return {
        "src": int(src), "path": rel, "name": run.name, "options": summary_of_options(options),
        "snapshots": snapshots(run), "grids": image_grids(run), "metrics": metric_series(run),
        "stats": {"from": 0 if restarted else stats_from, "next": stats_next, "restarted": restarted, "ticks": ticks},
        "log": log, "progress": progress(options, last, log),
    }


def _last_tick(path: Path) -> Optional[dict[str, Any]]:
    """The last complete line of stats.jsonl (for progress when the page already has every tick)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data[: data.rfind(b"\n") + 1].splitlines()):
        try:
            return tick_means(json.loads(line))
        except (ValueError, AttributeError):
            continue
    return None
