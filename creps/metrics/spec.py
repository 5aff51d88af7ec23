"""What a metric name means: which formula, how many generated images, which reals.

Published names: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, eqt50k_frac,
eqr50k (recommended) and fid50k, kid50k, pr50k3, is50k (legacy). The numbered family
(fid1k_full, kid10k_full, pr1k3, is5k, fid200_full, ...) reads its counts from the name:
`<family><N>[k][3 for pr][_full]`.

`_full` metrics compare against every real image, without x-flips (KID caps the reals at
1M and precision/recall at 200k, as published); the others compare against the first N
items of the dataset, x-flipped copies included when the dataset is mirrored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from creps.errors import UserError

# Caps on the reals of the _full metrics, as published.
KID_FULL_MAX_REAL = 1_000_000
PR_FULL_MAX_REAL = 200_000


@dataclass(frozen=True)
class MetricSpec:
    name: str
    family: str  # fid | kid | pr | is | ppl | eq
    num_gen: int = 50_000  # generated images
    max_real: Optional[int] = None  # first N reals; None = all of them
    full: bool = True  # reals without x-flips
    nhood: int = 3  # precision/recall: k of the k-NN radius
    kid_subsets: int = 100  # KID: number of random subsets ...
    kid_subset_size: int = 1000  # ... of at most this many features each
    is_splits: int = 10  # Inception Score: splits of the generated set

    @property
    def uses_reals(self) -> bool:
        return self.family in ("fid", "kid", "pr")


# Metrics the published code has but we compute no number for yet, and why.
NOT_IMPLEMENTED = {
    "ppl2_wend": "perceptual path length needs the VGG16 LPIPS network",
    "eqt50k_int": "StyleGAN3 equivariance metrics",
    "eqt50k_frac": "StyleGAN3 equivariance metrics",
    "eqr50k": "StyleGAN3 equivariance metrics",
}

_NUMBERED = re.compile(r"^(?P<family>fid|kid|is)(?P<count>\d+)(?P<k>k?)(?P<full>_full)?$")
_NUMBERED_PR = re.compile(r"^pr(?P<count>\d+)(?P<k>k?)3(?P<full>_full)?$")


def parse_metric_name(name: str) -> MetricSpec:
    """A metric name -> its MetricSpec; an unknown name is a UserError."""
    if name in NOT_IMPLEMENTED:
        return MetricSpec(name=name, family="ppl" if name.startswith("ppl") else "eq")
    m = _NUMBERED.match(name) or _NUMBERED_PR.match(name)
    if m is None:
        raise UserError(f"unknown metric {name!r}; use fid50k_full, kid50k_full, pr50k3_full, is50k, fid50k, "
                        "kid50k, pr50k3 or another count such as fid1k_full")
    family = m.groupdict().get("family") or "pr"
    count = int(m.group("count")) * (1000 if m.group("k") else 1)
    full = bool(m.group("full"))
    smallest = 10 if family == "is" else 2
    if count < smallest:
        raise UserError(f"metric {name}: needs at least {smallest} images (e.g. {family}1k{'3' * (family == 'pr')})")
    if family == "fid":
        max_real = None if full else count
    elif family == "kid":
        max_real = KID_FULL_MAX_REAL if full else count
    elif family == "pr":
        max_real = PR_FULL_MAX_REAL if full else count
    else:
        max_real = None
    return MetricSpec(name=name, family=family, num_gen=count, max_real=max_real, full=full or family == "is")
