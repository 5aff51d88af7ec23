"""Detector features of real and generated images, with an on-disk cache for the reals.

Reals: the dataset's images (first N items, in order) as uint8, gray repeated to RGB, through
the detector in batches. The result (mean and covariance, or every feature) is cached under
$CREPS_CACHE_DIR/gan-metrics, keyed by the dataset's content hash, the detector's weights
and the options (feature, x-flips, item count, what is kept); files appear whole or not at all.

Generated images: random z (a seeded torch generator, drawn on the CPU so every device gets
the same latents) and, for conditional networks, labels of random dataset items; rendered
on the device and converted to uint8 exactly as the published metric code does
((img * 127.5 + 128).clamp(0, 255) then a uint8 cast), optionally at `scale` x for CREPS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from creps.atomic import atomic_path
from creps.data.dataset import ImageDataset, open_dataset
from creps.errors import UserError
from creps.generate import render
from creps.download import cache_root
from creps.parallel import SINGLE, World, all_sum, broadcast_object, gather_objects, owns

POOL = "pool"  # 2048-d pool features: FID, KID, precision/recall
LOGITS_UNBIASED = "logits_unbiased"  # 1008 logits without bias: Inception Score
FEATURE_KINDS = (POOL, LOGITS_UNBIASED)
CACHE_FORMAT = 1
PIXELS_PER_GENERATOR_CALL = 1 << 22  # about 4 Mpx rendered per G call (64 images at 256x256)


@dataclass
class Features:
    """What was kept of a feature set: always the count, mean and covariance (divided by N,
    as published); every feature row too when asked for."""

    count: int
    mean: np.ndarray  # float64 [D]
    cov: np.ndarray  # float64 [D, D]
    values: Optional[np.ndarray] = None  # float32 [N, D]


class FeatureAccumulator:
    """Sums of x and x x^T in float64 (on the features' device), and optionally the rows, each
    batch of rows under the index of its first item (so rows of many ranks go back in order)."""

    def __init__(self, keep_all: bool):
        self.keep_all = keep_all
        self.count = 0
        self.total: Optional[torch.Tensor] = None
        self.gram: Optional[torch.Tensor] = None
        self.rows: list[tuple[int, np.ndarray]] = []

    def _start(self, dim: int, device: torch.device) -> None:
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, batch: torch.Tensor, first_index: Optional[int] = None) -> None:
        """Add a batch of feature rows; `first_index`: the item index of its first row (default:
        the rows follow the ones added before)."""
        if batch.shape[0] == 0:
            return
        x = batch.detach().to(torch.float64)
        if self.total is None:
            self._start(x.shape[1], x.device)
        self.total += x.sum(dim=0)
        self.gram += x.t() @ x
        if self.keep_all:
            index = self.count if first_index is None else first_index
            self.rows.append((index, batch.detach().to(torch.float32).cpu().numpy()))
        self.count += x.shape[0]

    def combine(self, world: World, device: torch.device) -> None:
        """Sums and rows of every rank, on every rank (a rank that had no batch adds nothing)."""
        if not world.enabled:
            return
        dims = [d for d in gather_objects(None if self.total is None else self.total.shape[0], world) if d is not None]
        if not dims:
            return
        if self.total is None or self.gram is None:
            self._start(dims[0], device)
        self.total = all_sum(self.total, world)
        self.gram = all_sum(self.gram, world)
        self.count = int(all_sum(torch.tensor([self.count], dtype=torch.float64), world).item())
        if self.keep_all:
            self.rows = [row for rows in gather_objects(self.rows, world) for row in rows]

    def result(self) -> Features:
        if self.count == 0 or self.total is None or self.gram is None:
            raise ValueError("no features were computed")
        mean = (self.total / self.count).cpu().numpy()
        cov = (self.gram / self.count).cpu().numpy() - np.outer(mean, mean)
        values = np.concatenate([rows for _, rows in sorted(self.rows, key=lambda r: r[0])]) if self.keep_all else None
        return Features(count=self.count, mean=mean, cov=cov, values=values)


# ---------------------------------------------------------------------------------------
# Running the detector.


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No TF32 while the detector runs on CUDA (as the published metrics run), restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def detect(detector: torch.nn.Module, images: torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 NCHW images (1 or 3 channels) -> the detector's `kind` features."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    with torch.no_grad(), full_precision():
        if kind == POOL:
            return detector(images)
        if kind == LOGITS_UNBIASED:
            return detector(images, logits=True)[1]
    raise ValueError(f"unknown feature kind {kind!r}; use one of {FEATURE_KINDS}")


def detector_identity(detector: torch.nn.Module) -> str:
    """A name for the detector's weights: set by load_detector, else a hash of its state dict."""
    identity = getattr(detector, "identity", None)
    if not identity:
        digest = hashlib.sha256()
        for key, value in detector.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        identity = f"state-sha256-{digest.hexdigest()}"
        with contextlib.suppress(AttributeError):
            detector.identity = identity
    return identity


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=False)


@contextlib.contextmanager
def eval_mode(G: torch.nn.Module) -> Iterator[None]:
    """G in eval mode; its training flag is put back afterwards, also when the work fails."""
    was_training = G.training
    G.eval()
    try:
        yield
    finally:
        G.train(was_training)


# ---------------------------------------------------------------------------------------
# Reals, cached.


def cache_key(dataset: ImageDataset, detector: torch.nn.Module, kind: str, keep_all: bool,
              max_items: Optional[int]) -> str:
    """What the cached features depend on: the dataset's contents and options (its content
    hash covers every file, x-flips and subsetting), the detector's weights, the feature kind,
    what is kept and how many items."""
    fields = {
        "format": CACHE_FORMAT, "dataset": dataset.content_hash(), "detector": detector_identity(detector),
        "feature": kind, "keep_all": keep_all, "max_items": max_items,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, dataset: ImageDataset, detector: torch.nn.Module, key: str) -> Path:
    detector_name = detector_identity(detector).split("-sha256-")[0][:40]
    return cache_dir / f"{dataset.name}-{detector_name}-{key[:32]}.npz"


def save_features(path: Path, features: Features, key: str) -> None:
    arrays = {"key": np.array(key), "count": np.array(features.count), "mean": features.mean, "cov": features.cov}
    if features.values is not None:
        arrays["values"] = features.values
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_features(path: Path, key: str, keep_all: bool) -> Optional[Features]:
    """Cached features, or None when the file is absent, damaged or for another key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or (keep_all and "values" not in data):
                return None
            values = data["values"] if keep_all else None
            return Features(count=int(data["count"]), mean=data["mean"], cov=data["cov"], values=values)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def cached_features(cache_dir: Path, dataset: ImageDataset, detector: torch.nn.Module, kind: str, keep_all: bool,
                    max_items: Optional[int]) -> Optional[Features]:
    """The cached features, if any. An entry that kept every row also holds the mean and
    covariance: FID can reuse KID's."""
    for stored_all in (keep_all, True):
        key = cache_key(dataset, detector, kind, stored_all, max_items)
        cached = load_features(cache_path(cache_dir, dataset, detector, key), key, stored_all)
        if cached is not None:
            return cached if keep_all else Features(cached.count, cached.mean, cached.cov)
    return None


def dataset_features(dataset: ImageDataset, detector: torch.nn.Module, kind: str, *, keep_all: bool,
                     max_items: Optional[int], device: torch.device, batch_size: int = 64, workers: int = 0,
                     cache_dir: Optional[Path] = None, progress: bool = True, world: World = SINGLE) -> Features:
    """Features of the first `max_items` items of `dataset` (all when None); cached in
    `cache_dir` when given. Under many processes each rank embeds its turn of the batches and
    every rank gets the whole result; rank 0 writes the cache."""
    if cache_dir is not None:
        hit = broadcast_object(
            cached_features(Path(cache_dir), dataset, detector, kind, keep_all, max_items) is not None
            if world.is_main else None, world)
        if hit:
            cached = cached_features(Path(cache_dir), dataset, detector, kind, keep_all, max_items)
            if cached is not None:
                return cached
    count = len(dataset) if max_items is None else min(len(dataset), max_items)
    batches = [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    mine = [batch for index, batch in enumerate(batches) if owns(index, world)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=mine, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    acc = FeatureAccumulator(keep_all=keep_all)
    with progress_bar(count, "dataset features", progress) as bar:
        for batch, (images, _labels) in zip(mine, loader):
            acc.add(detect(detector, images.to(device), kind), first_index=batch.start)
            bar.update(images.shape[0] * world.size)
    acc.combine(world, device)
    features = acc.result()
    if cache_dir is not None and world.is_main:
        key = cache_key(dataset, detector, kind, keep_all, max_items)
        save_features(cache_path(Path(cache_dir), dataset, detector, key), features, key)
    return features


# ---------------------------------------------------------------------------------------
# Generated images.


def latents(G: torch.nn.Module, count: int, batch: int, seed: int,
            labels: Optional[np.ndarray]) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """(z, c) batches for `count` images: z ~ N(0, I) from torch.Generator().manual_seed(seed),
    c = labels of random dataset items (np.random.RandomState(seed)) or None. CPU tensors."""
    z_gen = torch.Generator().manual_seed(seed)
    label_rng = np.random.RandomState(seed)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        z = torch.randn([n, G.z_dim], generator=z_gen)
        yield z, (random_labels(labels, n, label_rng) if G.c_dim else None)


def random_labels(labels: np.ndarray, count: int, rng: np.random.RandomState) -> torch.Tensor:
    """The labels of `count` random dataset items (drawn with replacement), a float32 CPU tensor."""
    return torch.from_numpy(labels[rng.randint(len(labels), size=count)]).float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """G's [-1, 1] float images -> uint8, as the published metrics: (x * 127.5 + 128).clamp(0, 255)."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def generator_batch_size(G: torch.nn.Module, batch_size: int, scale: Optional[float]) -> int:
    """Images per G call: about PIXELS_PER_GENERATOR_CALL pixels, at most `batch_size`."""
    side = G.img_resolution * (scale or 1)
    return int(max(1, min(batch_size, PIXELS_PER_GENERATOR_CALL // max(1, int(side * side)))))


def generator_features(G: torch.nn.Module, detector: torch.nn.Module, kind: str, *, count: int, keep_all: bool,
                       device: torch.device, labels: Optional[np.ndarray] = None, scale: Optional[float] = None,
                       batch_size: int = 64, seed: int = 0, progress: bool = True, world: World = SINGLE) -> Features:
    """Features of `count` images of G (truncation 1, random noise), rendered on `device`. The
    latents are the same for any number of processes; each rank renders its turn of the
    generator batches and every rank gets the whole result."""
    if G.c_dim and labels is None:
        raise ValueError("a conditional generator needs dataset labels to sample from")
    acc = FeatureAccumulator(keep_all=keep_all)
    pending: list[tuple[int, torch.Tensor]] = []  # (index of the first image, uint8 images)

    def embed() -> None:
        features = detect(detector, torch.cat([images for _, images in pending]).to(device), kind)
        for (first, images), rows in zip(pending, features.split([images.shape[0] for _, images in pending])):
            acc.add(rows, first_index=first)
        bar.update(features.shape[0] * world.size)
        pending.clear()

    with eval_mode(G), progress_bar(count, "generator features", progress) as bar:
        step = generator_batch_size(G, batch_size, scale)
        for index, (z, c) in enumerate(latents(G, count, step, seed, labels)):
            if not owns(index, world):
                continue
            pending.append((index * step, to_uint8(render(G, z, c, noise_mode="random", scale=scale))))
            if sum(images.shape[0] for _, images in pending) >= batch_size:
                embed()
        if pending:
            embed()
    acc.combine(world, device)
    return acc.result()


# ---------------------------------------------------------------------------------------
# One evaluation: a generator, a dataset, a detector.


@dataclass
class Evaluation:
    """Everything a metric reads; metrics ask it for real and generated features."""

    G: torch.nn.Module
    data_path: str
    mirror: bool
    device: torch.device
    detector: torch.nn.Module
    scale: Optional[float] = None
    progress: bool = True
    cache_dir: Optional[Path] = None  # None: no feature cache
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    world: World = SINGLE  # the processes that share the work (each gets the whole result)
    _labels: Optional[np.ndarray] = field(default=None, repr=False)

    def open_reals(self, xflip: bool) -> ImageDataset:
        dataset = open_dataset(self.data_path, xflip=xflip)
        if self.scale in (None, 1, 1.0) and dataset.resolution != self.G.img_resolution:
            raise UserError(f"dataset {self.data_path}: images are {dataset.resolution}x{dataset.resolution} but "
                            f"the network renders {self.G.img_resolution}x{self.G.img_resolution}; "
                            "pass its training dataset with --data")
        return dataset

    def labels(self) -> Optional[np.ndarray]:
        """Labels of the dataset's images, for conditional generators (None otherwise): as
        published, a conditional G always gets labels of random dataset items."""
        if not self.G.c_dim:
            return None
        if self._labels is None:
            with open_dataset(self.data_path, use_labels=True) as dataset:
                if dataset.label_dim != self.G.c_dim:
                    raise UserError(f"dataset {self.data_path}: labels have {dataset.label_dim} classes but the "
                                    f"network takes {self.G.c_dim}; pass its training dataset with --data")
                self._labels = dataset.raw_labels.copy()
        return self._labels

    def real_features(self, kind: str, *, keep_all: bool, max_items: Optional[int], full: bool) -> Features:
        """Features of the reals: all of them without x-flips (`full`), else the first
        `max_items` items with x-flips as `mirror` says."""
        with self.open_reals(xflip=self.mirror and not full) as dataset:
            return dataset_features(dataset, self.detector, kind, keep_all=keep_all, max_items=max_items,
                                    device=self.device, batch_size=self.batch_size, workers=self.workers,
                                    cache_dir=self.cache_dir, progress=self.progress, world=self.world)

    def fake_features(self, kind: str, *, keep_all: bool, count: int) -> Features:
        return generator_features(self.G, self.detector, kind, count=count, keep_all=keep_all, device=self.device,
                                  labels=self.labels(), scale=self.scale, batch_size=self.batch_size,
                                  seed=self.seed, progress=self.progress, world=self.world)


def default_cache_dir() -> Path:
    return cache_root() / "gan-metrics"
