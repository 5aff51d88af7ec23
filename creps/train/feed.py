"""Endless, seeded stream of training minibatches from a dataset."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from creps.errors import UserError


class EpochSampler(torch.utils.data.Sampler):
    """Yields dataset indices forever: a fresh seeded permutation each epoch.

    `start` skips that many indices of the stream, so a stream can be resumed exactly.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start

    def __iter__(self) -> Iterator[int]:
        pos = 0
        epoch = 0
        while True:
            order = np.random.RandomState([self.seed, epoch]).permutation(self.size)
            for i in order:
                if pos >= self.start and pos % self.world == self.rank:
                    yield int(i)
                pos += 1
            epoch += 1


def _collate(items):
    images = torch.from_numpy(np.stack([img for img, _ in items]))
    labels = torch.from_numpy(np.stack([lbl for _, lbl in items]).astype(np.float32))
    return images, labels


def minibatches(dataset, batch: int, seed: int, workers: int, pin_memory: bool, start: int = 0, rank: int = 0,
                world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless iterator of (uint8 images [B, C, H, W], float32 labels [B, label_dim]),
    beginning `start` images into the seeded data order; rank r of n takes every n-th image."""
    sampler = EpochSampler(len(dataset), seed, rank=rank, world=world_size, start=start)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers,
        pin_memory=pin_memory, collate_fn=_collate, persistent_workers=workers > 0,
        # A private generator: making the iterator must not draw from the global RNG
        # (which exact resume restores and the training steps consume).
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=2 if workers > 0 else None,
    )
    return _clean_worker_errors(iter(loader))


def _clean_worker_errors(batches: Iterator) -> Iterator:
    """A UserError raised in a DataLoader worker comes back with the worker's traceback
    folded into its message; re-raise it as the original one-line error."""
    while True:
        try:
            batch = next(batches)
        except UserError as err:
            text = str(err).strip()
            raise UserError(text.splitlines()[-1].split("UserError: ", 1)[-1]) from None
        yield batch


class LabelSampler:
    """Random labels of the training set, for conditioning generated images."""

    def __init__(self, labels: np.ndarray, seed: int):
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        self.gen = torch.Generator().manual_seed(seed)

    def get_state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)

    def __call__(self, n: int) -> torch.Tensor:
        if self.labels.shape[1] == 0:
            return torch.zeros(n, 0)
        idx = torch.randint(len(self.labels), (n,), generator=self.gen)
        return self.labels[idx]
