"""Kernel Inception Distance (Binkowski et al. 2018): the unbiased squared MMD between the
Inception pool features of the reals and the generated images, with the cubic polynomial
kernel, averaged over random subsets (published: 100 subsets of at most 1000 each)."""

from __future__ import annotations

import numpy as np

from creps.metrics.features import POOL, Evaluation
from creps.metrics.spec import MetricSpec


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for every pair of rows."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples: within-set kernel means without the diagonal,
    minus twice the cross-set kernel mean."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kernel_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID: mean of mmd2_unbiased over `num_subsets` random subsets (without replacement) of
    size min(#real, #fake, max_subset_size), drawn from each set."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 features in each set")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        total += mmd2_unbiased(x, y)
    return total / num_subsets


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    real = ev.real_features(POOL, keep_all=True, max_items=spec.max_real, full=spec.full)
    fake = ev.fake_features(POOL, keep_all=True, count=spec.num_gen)
    value = kernel_distance(real.values, fake.values, spec.kid_subsets, spec.kid_subset_size, seed=ev.seed)
    return {spec.name: value}
