"""Metric names -> computations, the published result dict, and metric-<name>.jsonl lines.

    result = compute_metric("fid50k_full", G, "data.zip", mirror=False, device=dev)
    # {"results": {"fid50k_full": 3.2}, "metric": "fid50k_full", "total_time": 812.4,
    #  "total_time_str": "13m 32s", "num_gpus": 1}
    append_metric_jsonl(run_dir, result, run_dir / "network-snapshot-000200.safetensors")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from creps.atomic import append_line
from creps.metrics import equivariance, fid, inception_score, kid, ppl, precision_recall
from creps.metrics.detectors import Detectors
from creps.metrics.features import Evaluation, default_cache_dir
from creps.metrics.spec import PUBLISHED_NAMES, MetricSpec, parse_metric_name
from creps.parallel import SINGLE, World
from creps.timefmt import format_time

# The published metrics by name; numbered variants (fid1k_full, ...) parse on demand.
METRICS: dict[str, MetricSpec] = {name: parse_metric_name(name) for name in PUBLISHED_NAMES}

FAMILIES: dict[str, Callable[[Evaluation, MetricSpec], dict[str, float]]] = {
    "fid": fid.evaluate,
    "kid": kid.evaluate,
    "pr": precision_recall.evaluate,
    "is": inception_score.evaluate,
    "ppl": ppl.evaluate,
    "eq": equivariance.evaluate,
}

Detector = Union[str, torch.nn.Module, None]


def detectors_for(detector: Union[Detector, Detectors], device: torch.device) -> Detectors:
    """A Detectors as given, or one whose Inception detector is `detector` (module, path/URL, or
    None for the default)."""
    if isinstance(detector, Detectors):
        return detector.to(device)
    return Detectors(device, inception=detector)


def metric_spec(name: str) -> MetricSpec:
    return METRICS.get(name) or parse_metric_name(name)


def check_metrics(names: Sequence[str]) -> None:
    """Raise UserError for an unknown metric (check before long work)."""
    for name in names:
        metric_spec(name)


def metric_families(names: Sequence[str]) -> list[str]:
    return [metric_spec(name).family for name in names]


def compute_metric(name: str, G: torch.nn.Module, data_path: str, *, mirror: bool,
                   device: Union[str, torch.device], detector: Union[Detector, Detectors] = None,
                   scale: Optional[float] = None,
                   progress: bool = True, cache_dir: Union[str, Path, None] = None, cache: bool = True,
                   batch_size: int = 64, workers: int = 0, seed: int = 0, world: World = SINGLE) -> dict[str, Any]:
    """Compute one metric of generator `G` (used as is: pass G_ema) against `data_path`.
    Under many processes (`world`) every rank calls this with the same arguments, does its
    share of the work, and gets the same result.

    `detector`: the feature networks (a `Detectors`, reused across calls), or just the Inception
    detector (module, or path/URL for load_detector, or None: $CREPS_DETECTOR, else the published
    weights); the VGG16 of precision/recall and PPL then comes from $CREPS_VGG16 / $CREPS_LPIPS
    or the published URLs. `mirror`: the dataset's x-flips (used by
    the non-_full metrics). As published, a conditional G is always fed the labels of random
    dataset items, an unconditional one none. `cache_dir`: where real features are cached (default
    $CREPS_CACHE_DIR/gan-metrics; `cache=False` disables it). Returns the published dict.
    """
    spec = metric_spec(name)
    device = torch.device(device)
    start = time.time()
    detectors = detectors_for(detector, device)
    ev = Evaluation(
        G=G, data_path=data_path, mirror=mirror, device=device,
        detector=detectors.for_family(spec.family), scale=scale, progress=progress,
        cache_dir=(Path(cache_dir) if cache_dir is not None else default_cache_dir()) if cache else None,
        batch_size=batch_size, workers=workers, seed=seed, world=world,
    )
    results = FAMILIES[spec.family](ev, spec)
    total = time.time() - start
    return {"results": results, "metric": name, "total_time": total, "total_time_str": format_time(total),
            "num_gpus": world.size}


def metric_jsonl_line(result: dict[str, Any], snapshot_pkl: Union[str, Path, None],
                      run_dir: Union[str, Path, None] = None) -> str:
    """The published jsonl line: the result dict + snapshot_pkl (relative to the run dir) + timestamp."""
    if snapshot_pkl is not None and run_dir is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    return json.dumps(dict(result, snapshot_pkl=None if snapshot_pkl is None else str(snapshot_pkl),
                           timestamp=time.time()))


def append_metric_jsonl(run_dir: Union[str, Path], result: dict[str, Any],
                        snapshot_pkl: Union[str, Path, None]) -> str:
    """Append the result's line to <run_dir>/metric-<name>.jsonl and return it.

    One write in append mode, then fsync: concurrent writers (the trainer, calc_metrics.py)
    never lose each other's lines, and a line is either there whole or missing.
    """
    line = metric_jsonl_line(result, snapshot_pkl, run_dir)
    append_line(Path(run_dir) / f"metric-{result['metric']}.jsonl", line)
    return line


def evaluate_snapshot(names: Sequence[str], G: torch.nn.Module, data_path: str, *, mirror: bool,
                      device: Union[str, torch.device], run_dir: Union[str, Path],
                      snapshot_path: Union[str, Path], detector: Union[Detector, Detectors] = None,
                      progress: bool = False, log: Optional[Callable[[str], None]] = None,
                      world: World = SINGLE) -> dict[str, float]:
    """What the training loop runs after writing a snapshot: each metric, its jsonl line in the
    run directory (rank 0 writes); returns every result value by key (for stats.jsonl /
    TensorBoard). Under many processes every rank calls this and shares the work."""
    values: dict[str, float] = {}
    detectors = detectors_for(detector, torch.device(device)).require(metric_families(names))  # once for all
    for name in names:
        result = compute_metric(name, G, data_path, mirror=mirror, device=device,
                                detector=detectors, progress=progress and world.is_main, world=world)
        if world.is_main:
            line = append_metric_jsonl(run_dir, result, snapshot_path)
            if log is not None:
                log(line)
        values.update(result["results"])
    return values
