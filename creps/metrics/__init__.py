"""Quality metrics with the published names (fid50k_full, kid50k_full, pr50k3_full, is50k, ...).

`compute_metric` evaluates one metric of a generator against a dataset; `append_metric_jsonl`
records it in the run directory as the published code does; `evaluate_snapshot` does both for
a list of metrics (what the training loop calls after each snapshot). See registry.py.
"""

from creps.metrics.detectors import Detectors
from creps.metrics.inception import InceptionV3, load_detector
from creps.metrics.registry import (
    METRICS,
    append_metric_jsonl,
    check_metrics,
    compute_metric,
    evaluate_snapshot,
    metric_families,
    metric_spec,
)
from creps.metrics.vgg16 import VGG16, load_vgg16

__all__ = [
    "METRICS", "VGG16", "Detectors", "InceptionV3", "append_metric_jsonl", "check_metrics", "compute_metric",
    "evaluate_snapshot", "load_detector", "load_vgg16", "metric_families", "metric_spec",
]
