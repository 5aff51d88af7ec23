"""What a metric name means: which formula, how many generated images, which reals.

Published names: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, eqt50k_frac,
eqr50k (recommended) and fid50k, kid50k, pr50k3, is50k (legacy), plus eqs50k (CREPS scale
consistency: the 1x render against the 2x render brought down to 1x). The numbered family
(fid1k_full, kid10k_full, pr1k3, is5k, fid200_full, eqt1k_int, eqr500, ...) reads its counts
from the name: `<family><N>[k][3 for pr][_full | _int | _frac]`; PPL takes the count last
(ppl2_wend1k).

`_full` metrics compare against every real image, without x-flips (KID caps the reals at
1M and precision/recall at 200k, as published); the others compare against the first N
items of the dataset, x-flipped copies included when the dataset is mirrored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from creps.errors import UserError
from creps.nets.family import Capability, Family

# The published names; numbered variants (fid1k_full, ...) parse from their names.
PUBLISHED_NAMES = (
    "fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "eqt50k_int", "eqt50k_frac", "eqr50k",
    "fid50k", "kid50k", "pr50k3", "is50k", "eqs50k",
)

# Caps on the reals of the _full metrics, as published, by the families that read reals (None: no cap).
KID_FULL_MAX_REAL = 1_000_000
PR_FULL_MAX_REAL = 200_000
FULL_MAX_REAL = {"fid": None, "kid": KID_FULL_MAX_REAL, "pr": PR_FULL_MAX_REAL}


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


# ppl2_wend (50k samples), quick variants ppl2_wend1k / ppl2_wend200, legacy ppl_zfull, ppl_wfull,
# ppl_zend, ppl_wend (cropped, as published).
_PPL = re.compile(r"^(?:ppl2_wend|ppl_[zw](?:full|end))(?:(?P<count>\d+)(?P<k>k?))?$")
_NUMBERED = re.compile(r"^(?P<family>fid|kid|is)(?P<count>\d+)(?P<k>k?)(?P<full>_full)?$")
_NUMBERED_PR = re.compile(r"^pr(?P<count>\d+)(?P<k>k?)3(?P<full>_full)?$")


# Equivariance tests: integer / fractional translation, rotation (StyleGAN3), scale (CREPS),
# and what the network must be able to do for each.
NEEDS = {"eqt_int": Capability.USER_TRANSFORM, "eqt_frac": Capability.USER_TRANSFORM, "eqr": Capability.USER_TRANSFORM,
         "eqs": Capability.ANY_SCALE}
_NAME = re.compile(r"^eq(?P<kind>[a-z]*?)(?P<count>\d+)(?P<k>k?)(?P<mode>_[a-z]+)?$")


@dataclass(frozen=True)
class EquivarianceName:
    """What an equivariance metric name asks for: the test (a key of NEEDS) and the image count."""

    test: str
    num_samples: int


def parse_name(name: str) -> Optional[EquivarianceName]:
    """'eqt50k_int' -> EquivarianceName('eqt_int', 50000); None for a name outside the eq
    family; UserError for an eq-looking name that breaks the rules (eqt needs _int or _frac,
    eqr and eqs take no suffix, the count is at least 1)."""
    if not name.startswith("eq"):
        return None
    m = _NAME.match(name)
    kind, mode = (m.group("kind"), m.group("mode")) if m else (None, None)
    if kind not in ("t", "r", "s"):
        raise UserError(f"unknown equivariance metric {name!r}; use eqt50k_int, eqt50k_frac, eqr50k or eqs50k "
                        "(or another count, e.g. eqt1k_int)")
    count = int(m.group("count")) * (1000 if m.group("k") else 1)
    base = f"eq{kind}{m.group('count')}{m.group('k')}"
    if kind == "t" and mode not in ("_int", "_frac"):
        raise UserError(f"metric {name}: a translation test needs _int or _frac, e.g. {base}_int")
    if kind != "t" and mode is not None:
        raise UserError(f"metric {name}: eq{kind} takes no suffix; use {base}")
    if count < 1:
        raise UserError(f"metric {name}: needs at least 1 image, e.g. eq{kind}1k{mode or ''}")
    return EquivarianceName(test=f"eq{kind}{mode or ''}", num_samples=count)


def family_of(name: str) -> Optional[str]:
    """The equivariance test `name` computes ('eqt_int', 'eqt_frac', 'eqr' or 'eqs'), or None
    when it is not an equivariance metric; UserError for a malformed eq name."""
    parsed = parse_name(name)
    return None if parsed is None else parsed.test


def required_capability(name: str) -> Optional[Capability]:
    """What a network must be able to do for metric `name` (an equivariance test), or None."""
    test = family_of(name)
    return None if test is None else NEEDS[test]


def check_network_can(name: str, family: Family, network: str) -> None:
    """UserError when networks of `family` (the user's `network`, e.g. "--cfg=stylegan2") lack
    what metric `name` needs."""
    need = required_capability(name)
    if need is None or family.can(need):
        return
    if need is Capability.ANY_SCALE:
        raise UserError(f"metric {name}: scale consistency needs a CREPS network, which renders at any "
                        f"scale (--cfg=creps), not {network}; for StyleGAN3 use eqt50k_int, eqt50k_frac or eqr50k")
    raise UserError(f"metric {name}: translation/rotation equivariance is a StyleGAN3 metric; {network} does not "
                    "take a user transform (for CREPS use eqs50k)")


def parse_metric_name(name: str) -> MetricSpec:
    """A metric name -> its MetricSpec; an unknown name is a UserError."""
    eq = parse_name(name)
    if eq is not None:
        return MetricSpec(name=name, family="eq", num_gen=eq.num_samples, full=True)
    m = _PPL.match(name)
    if m is not None:
        count = int(m.group("count") or 50) * (1000 if m.group("k") or not m.group("count") else 1)
        if count < 2:
            raise UserError(f"metric {name}: needs at least 2 samples (e.g. ppl2_wend1k)")
        return MetricSpec(name=name, family="ppl", num_gen=count, full=True)
    m = _NUMBERED.match(name) or _NUMBERED_PR.match(name)
    if m is None:
        raise UserError(f"unknown metric {name!r}; use fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, "
                        "eqt50k_frac, eqr50k, eqs50k, is50k, fid50k, kid50k, pr50k3 or another count such as "
                        "fid1k_full")
    family = m.groupdict().get("family") or "pr"
    count = int(m.group("count")) * (1000 if m.group("k") else 1)
    full = bool(m.group("full"))
    smallest = 10 if family == "is" else 2
    if count < smallest:
        raise UserError(f"metric {name}: needs at least {smallest} images (e.g. {family}1k{'3' * (family == 'pr')})")
    max_real = (FULL_MAX_REAL[family] if full else count) if family in FULL_MAX_REAL else None
    return MetricSpec(name=name, family=family, num_gen=count, max_real=max_real, full=full or family == "is")
