"""Inception Score (Salimans et al. 2016): exp of the mean KL divergence between each image's
class distribution p(y|x) and the marginal p(y), per split of the generated set (10 splits);
reported as the mean and standard deviation over splits. As published, p(y|x) is the softmax
of the 1008 logits without the output bias."""

from __future__ import annotations

import numpy as np

from creps.metrics.features import LOGITS_UNBIASED, Evaluation
from creps.metrics.spec import MetricSpec


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))), p(y) the split's mean."""
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part) - np.log(marginal))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def evaluate(ev: Evaluation, spec: MetricSpec) -> dict[str, float]:
    fake = ev.fake_features(LOGITS_UNBIASED, keep_all=True, count=spec.num_gen)
    mean, std = inception_score(softmax(fake.values), spec.is_splits)
    return {f"{spec.name}_mean": mean, f"{spec.name}_std": std}
