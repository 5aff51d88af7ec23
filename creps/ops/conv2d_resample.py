"""2D convolution fused with FIR up/downsampling (semantics of the published `conv2d_resample`).

The result always equals this composition, with all padding applied once, up front:

    y = upfirdn2d(x, f, up=up, padding=p, gain=up**2)   # zero-stuff + pad (+ filter if up > 1)
    y = conv2d(y, w, groups=groups)                     # correlation, or convolution if not flip_weight
    y = upfirdn2d(y, f, down=down)                      # if down > 1

where `p` is the user's padding plus what keeps the filter centred. Cheaper but equivalent
orders are chosen per case: a 1x1 kernel is applied at the lower resolution, downsampling
uses a strided conv, upsampling a strided transposed conv.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from creps.ops.upfirdn2d import Padding, centred_padding, parse_padding, upfirdn2d


def resample_padding(
    f: Optional[torch.Tensor], up: int, down: int, padding: Padding
) -> tuple[int, int, int, int]:
    """User padding (w.r.t. the upsampled image) plus the padding that centres the filter."""
    pads = parse_padding(padding)
    if up > 1:
        pads = centred_padding(f, pads, up=up)
    if down > 1:
        pads = centred_padding(f, pads, down=down)
    return pads


def _oriented(w: torch.Tensor, flip_weight: bool) -> torch.Tensor:
    """conv2d correlates: flip the kernel when a true convolution is asked for."""
    if flip_weight or w.shape[2] * w.shape[3] == 1:
        return w
    return w.flip([2, 3])


def _transposed_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[O, I/g, kh, kw] -> the [I, O/g, kh, kw] layout conv_transpose2d takes, group by group."""
    out_ch, in_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    per_group = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    return per_group.reshape(groups * in_per_group, out_ch // groups, kh, kw)


def _validate(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor], up, down, groups) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_resample expects 4D x and w, got {tuple(x.shape)} and {tuple(w.shape)}")
    if f is not None and f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1D or 2D, got shape {tuple(f.shape)}")
    for name, value in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """conv2d of x [N, I, H, W] with w [O, I/groups, kh, kw], resampled by up/down through f.

    `f` comes from `setup_filter` (None = identity); `padding` is w.r.t. the upsampled image;
    `flip_weight=True` correlates like `torch.nn.functional.conv2d`; `flip_filter` likewise
    for the FIR filter.
    """
    _validate(x, w, f, up, down, groups)
    kh, kw = int(w.shape[2]), int(w.shape[3])
    pads = resample_padding(f, up, down, padding)
    px0, px1, py0, py1 = pads
    pointwise = kh == 1 and kw == 1

    if down > 1 and up == 1:
        if pointwise:  # filter + decimate first, then the 1x1 conv on fewer pixels
            y = upfirdn2d(x, f, down=down, padding=pads, flip_filter=flip_filter)
            return F.conv2d(y, w, groups=groups)
        # filter at full resolution, then let the conv's stride do the decimation
        y = upfirdn2d(x, f, padding=pads, flip_filter=flip_filter)
        return F.conv2d(y, _oriented(w, flip_weight), stride=down, groups=groups)

    if up > 1:
        if pointwise and down == 1:  # 1x1 conv first, on fewer pixels, then upsample
            y = F.conv2d(x, w, groups=groups)
            return upfirdn2d(y, f, up=up, padding=pads, gain=up * up, flip_filter=flip_filter)
        # Strided transposed conv = zero-stuffing + full convolution with the kernel. Shift
        # the remaining padding to account for the kernel footprint; whatever part of it is
        # a crop on both sides is done by the transposed conv itself.
        px0, px1 = px0 - (kw - 1), px1 - (kw - up)
        py0, py1 = py0 - (kh - 1), py1 - (kh - up)
        crop_x = max(min(-px0, -px1), 0)
        crop_y = max(min(-py0, -py1), 0)
        weight = _oriented(_transposed_weight(w, groups), not flip_weight)
        y = F.conv_transpose2d(x, weight, stride=up, padding=[crop_y, crop_x], groups=groups)
        y = upfirdn2d(y, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y], gain=up * up,
                      flip_filter=flip_filter)
        if down > 1:
            y = upfirdn2d(y, f, down=down, flip_filter=flip_filter)
        return y

    # up == down == 1
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, _oriented(w, flip_weight), padding=[py0, px0], groups=groups)
    y = upfirdn2d(x, None, padding=pads)
    return F.conv2d(y, _oriented(w, flip_weight), groups=groups)
