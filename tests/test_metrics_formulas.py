"""The metric formulas on synthetic numbers: Fréchet distance, KID, precision/recall,
Inception Score, metric names, and the TF1-style resize of the detector input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from creps.errors import UserError
from creps.metrics.fid import frechet_distance, psd_sqrt
from creps.metrics.inception import resize_like_tf1
from creps.metrics.inception_score import inception_score, softmax
from creps.metrics.kid import kernel_distance, mmd2_unbiased
from creps.metrics.precision_recall import precision_recall
from creps.metrics.registry import METRICS, format_time, metric_spec
from creps.metrics.spec import KID_FULL_MAX_REAL, PR_FULL_MAX_REAL


def random_cov(rng: np.random.RandomState, d: int, n: int) -> np.ndarray:
    a = rng.randn(n, d)
    return a.T @ a / n


# ---------------------------------------------------------------------------------------
# Fréchet distance.


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(16), rng.randn(16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    expected = np.square(mu1 - mu2).sum() + np.square(np.sqrt(a) - np.sqrt(b)).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_is_zero_for_identical_gaussians_and_symmetric():
    rng = np.random.RandomState(1)
    mu, s1, s2 = rng.randn(32), random_cov(rng, 32, 64), random_cov(rng, 32, 64)
    assert abs(frechet_distance(mu, s1, mu, s1)) < 1e-9
    assert frechet_distance(mu, s1, mu + 1, s2) == pytest.approx(frechet_distance(mu + 1, s2, mu, s1), rel=1e-10)


def test_frechet_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(2)
    for d, n in ((8, 50), (64, 200), (64, 40)):  # the last is rank deficient, as small FID runs are
        mu1, mu2 = rng.randn(d), rng.randn(d) * 0.1
        s1, s2 = random_cov(rng, d, n), random_cov(rng, d, n) * 2
        root = scipy_linalg.sqrtm(s1 @ s2)
        expected = np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * np.real(root))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_psd_sqrt_squares_back():
    s = random_cov(np.random.RandomState(3), 12, 30)
    r = psd_sqrt(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)
    np.testing.assert_allclose(r, r.T, atol=1e-12)


# ---------------------------------------------------------------------------------------
# KID.


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, summed pair by pair."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_unbiased_matches_pairwise_sum():
    rng = np.random.RandomState(4)
    x, y = rng.randn(12, 5), rng.randn(12, 5) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), rel=1e-10)


def test_kid_matches_published_subset_estimator():
    """Same subsets (gen first, then real, per draw) as the published loop, computed directly."""
    rng = np.random.RandomState(5)
    real, fake = rng.randn(40, 6), rng.randn(30, 6) * 1.2
    draws = np.random.RandomState(7)
    expected = 0.0
    for _ in range(4):
        x = fake[draws.choice(30, 10, replace=False)]
        y = real[draws.choice(40, 10, replace=False)]
        expected += direct_mmd2(x, y)
    assert kernel_distance(real, fake, num_subsets=4, max_subset_size=10, seed=7) == pytest.approx(expected / 4,
                                                                                                   rel=1e-10)


def test_kid_near_zero_for_equal_distributions_and_positive_for_different():
    rng = np.random.RandomState(6)
    a, b = rng.randn(600, 16), rng.randn(600, 16)
    same = kernel_distance(a, b, num_subsets=20, max_subset_size=300)
    shifted = kernel_distance(a, b + 0.5, num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.01
    assert shifted > 0.1 and shifted > 20 * abs(same)


# ---------------------------------------------------------------------------------------
# Precision / recall.


def test_precision_recall_identical_clouds():
    points = np.random.RandomState(8).randn(200, 8)
    assert precision_recall(points, points.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_disjoint_clouds():
    rng = np.random.RandomState(9)
    real, fake = rng.randn(150, 8), rng.randn(150, 8) + 100
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_partial_coverage():
    """Fakes on half of the reals' blobs: most fakes are real-like, about half the reals covered."""
    rng = np.random.RandomState(10)
    centres = rng.randn(4, 8) * 50
    real = np.concatenate([c + rng.randn(100, 8) for c in centres])
    fake = np.concatenate([c + rng.randn(200, 8) for c in centres[:2]])
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.75
    assert 0.4 < recall <= 0.5


# ---------------------------------------------------------------------------------------
# Inception Score.


def test_inception_score_bounds():
    n, classes = 200, 20
    uniform = np.full([n, classes], 1 / classes)
    assert inception_score(uniform, num_splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Confident and evenly spread over the classes: the score is the number of classes.
    confident = softmax(np.eye(classes)[np.arange(n) % classes] * 60)
    mean, std = inception_score(confident, num_splits=10)
    assert mean == pytest.approx(classes, rel=1e-6) and std < 1e-6


# ---------------------------------------------------------------------------------------
# Names.


def test_published_names_and_counts():
    assert METRICS["fid50k_full"].max_real is None and METRICS["fid50k_full"].full
    assert METRICS["fid50k"].max_real == 50_000 and not METRICS["fid50k"].full
    assert METRICS["kid50k_full"].max_real == KID_FULL_MAX_REAL
    assert METRICS["pr50k3_full"].max_real == PR_FULL_MAX_REAL and METRICS["pr50k3_full"].nhood == 3
    assert METRICS["is50k"].num_gen == 50_000 and METRICS["is50k"].is_splits == 10
    assert (METRICS["kid50k"].kid_subsets, METRICS["kid50k"].kid_subset_size) == (100, 1000)
    spec = metric_spec("fid1k_full")
    assert (spec.family, spec.num_gen, spec.max_real, spec.full) == ("fid", 1000, None, True)
    spec = metric_spec("kid10k")
    assert (spec.num_gen, spec.max_real, spec.full) == (10_000, 10_000, False)
    spec = metric_spec("pr2k3_full")
    assert (spec.family, spec.num_gen, spec.nhood) == ("pr", 2000, 3)
    assert metric_spec("fid200_full").num_gen == 200
    for bad in ("fid", "fid50q", "lpips", "fid1"):
        with pytest.raises(UserError):
            metric_spec(bad)


def test_format_time_like_published():
    assert [format_time(s) for s in (4.4, 64, 3725, 93784)] == ["4s", "1m 04s", "1h 02m 05s", "1d 02h 03m"]


# ---------------------------------------------------------------------------------------
# The detector's input resize, against a literal reading of TF1 resize_bilinear.


def tf1_resize_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel float32 TF1 resize_bilinear (no half-pixel centres) of one [H, W] plane."""
    h, w = img.shape
    f32 = np.float32
    out = np.zeros([size, size], np.float32)
    sy, sx = f32(h / size), f32(w / size)
    for i in range(size):
        y = f32(i) * sy
        y0 = int(y)
        y1, dy = min(y0 + 1, h - 1), f32(y - f32(y0))
        for j in range(size):
            x = f32(j) * sx
            x0 = int(x)
            x1, dx = min(x0 + 1, w - 1), f32(x - f32(x0))
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * dx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * dx
            out[i, j] = top + (bottom - top) * dy
    return out


@pytest.mark.parametrize("side", [7, 40])  # upsampling, and downsampling (the rows-first path)
def test_resize_is_exact_tf1(side):
    size = 23 if side == 40 else 31
    img = np.random.RandomState(side).randint(0, 256, [side, side]).astype(np.float32)
    ours = resize_like_tf1(torch.from_numpy(img)[None, None], size=size)[0, 0].numpy()
    np.testing.assert_array_equal(ours, tf1_resize_reference(img, size))


def test_resize_identity_at_299():
    x = torch.rand(1, 3, 299, 299)
    assert resize_like_tf1(x) is x
    assert not math.isnan(float(x.sum()))
