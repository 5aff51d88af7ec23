"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

Each set's manifold is the union of balls around its points, of radius the distance to the
point's k-th nearest neighbour (k = 3 in pr50k3). Precision: the share of generated points
inside the real manifold; recall: the share of real points inside the generated manifold.

Images are embedded, as published, by the VGG16 classifier's 4096-d fc7 features (after
ReLU, images resized to 224x224); see creps.metrics.vgg16.
"""

from __future__ import annotations

import numpy as np
import torch

from creps.metrics.features import POOL, Evaluation
from creps.metrics.spec import MetricSpec

ROW_BATCH = 1024  # distance rows computed at once (memory: ROW_BATCH x N floats)


def knn_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point (the point itself excluded)."""
    # k + 1: the zero distance to itself comes first.
    return torch.cat([torch.cdist(rows, points).kthvalue(k + 1, dim=1).values for rows in points.split(ROW_BATCH)])


def coverage(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of probes within radii[i] of some manifold point i."""
    inside = [(torch.cdist(rows, manifold) <= radii).any(dim=1) for rows in probes.split(ROW_BATCH)]
    return torch.cat(inside).float().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     device: torch.device | str = "cpu") -> tuple[float, float]:
    """(precision, recall) of generated features against real features, k-NN manifolds."""
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    if min(real_t.shape[0], fake_t.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points in each set")
    precision = coverage(fake_t, real_t, knn_radii(real_t, k))
    recall = coverage(real_t, fake_t, knn_radii(fake_t, k))
    return precision, recall


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    real = ev.real_features(POOL, keep_all=True, max_items=spec.max_real, full=spec.full)
    fake = ev.fake_features(POOL, keep_all=True, count=spec.num_gen)
    precision, recall = precision_recall(real.values, fake.values, spec.nhood, device=ev.device)
    return {f"{spec.name}_precision": precision, f"{spec.name}_recall": recall}
