"""Fréchet Inception Distance (Heusel et al. 2017) between the reals and the generated images.

Both sets are summarised by the mean and the covariance (divided by N, as the published code
does) of their 2048-d Inception pool features.
"""

from __future__ import annotations

import numpy as np

from creps.metrics.features import POOL, Evaluation
from creps.metrics.spec import MetricSpec


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0,
    which are rounding noise, count as 0)."""
    sym = (matrix + matrix.T) / 2
    eigvals, eigvecs = np.linalg.eigh(sym)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for covariances S1, S2. S1 S2 has the eigenvalues of the symmetric PSD
    matrix R S2 R with R = S1^(1/2), so the trace is the sum of their square roots."""
    root = psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    eigvals = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigvals, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    mean_term = float(np.square(mu1 - mu2).sum())
    return mean_term + float(np.trace(sigma1) + np.trace(sigma2)) - 2 * trace_sqrt_product(sigma1, sigma2)


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    real = ev.real_features(POOL, keep_all=False, max_items=spec.max_real, full=spec.full)
    fake = ev.fake_features(POOL, keep_all=False, count=spec.num_gen)
    return {spec.name: frechet_distance(real.mean, real.cov, fake.mean, fake.cov)}
