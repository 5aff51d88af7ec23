"""Upsample, pad, FIR-filter and downsample a batch of 2D images, in plain PyTorch.

Semantics (those of the published `upfirdn2d`, close to `scipy.signal.upfirdn`), per channel:

1. upsample: after every input pixel insert `up - 1` zeros (along each axis);
2. pad: add zeros on each side of the upsampled image (a negative amount crops);
3. filter: true convolution with the FIR filter (correlation when `flip_filter`), keeping
   only outputs whose whole footprint lies inside the padded image ("valid");
4. downsample: keep every `down`-th output pixel.

Filters are float32 tensors: 2D `[fh, fw]`, or 1D `[taps]` meaning the separable filter
`outer(f, f)`. `gain` scales the result (applied to the filter: gain^(ndim/2) per tap).

The fast path works one axis at a time when the filter allows it (separable, or a single row
or column): upsampling is polyphase (each output phase a short correlation of the input with
every up-th tap, so no zero-stuffed image is built or filtered), then `F.pad` and a depthwise
strided `conv2d`. A full 2-D filter takes zero insertion + `F.pad` + one depthwise conv.
`upfirdn2d_reference` computes the same sums tap by tap from the definition, for tests.

Backward keeps nothing but the filter: the gradient of this linear operation is the same
operation transposed (up and down swapped, filter flipped, `transposed_padding`), so the
padded copies and per-axis intermediates of the forward pass are freed at once.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


def parse_factor(value: IntPair, name: str = "factor") -> tuple[int, int]:
    """An up/down factor given as int or (x, y) -> (x, y), both >= 1."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be an int >= 1 or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Padding as int, (x, y) or (x_before, x_after, y_before, y_after) -> the 4-tuple."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    items = tuple(int(p) for p in padding)
    if len(items) == 2:
        return items[0], items[0], items[1], items[1]
    if len(items) == 4:
        return items  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")


def filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(width, height) of a prepared filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1D (separable) or 2D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def _centring(taps: int, up: int, down: int) -> tuple[int, int]:
    """(before, after) pads along one axis that keep a `taps`-tap filter centred."""
    if down == 1:  # upsampling, or plain filtering when up == 1 too
        return (taps + up - 1) // 2, (taps - up) // 2
    return (taps - down + 1) // 2, (taps - down) // 2


def centred_padding(f: Optional[torch.Tensor], padding: Padding = 0, up: IntPair = 1,
                    down: IntPair = 1) -> tuple[int, int, int, int]:
    """`padding` plus what keeps the filter centred, so that upsampling by `up` or downsampling
    by `down` (one way only; both 1 is plain filtering) gives the input's size times up / down."""
    (up_x, up_y), (down_x, down_y) = parse_factor(up, "up"), parse_factor(down, "down")
    if max(up_x, up_y) > 1 and max(down_x, down_y) > 1:
        raise ValueError("centred_padding: resample up or down, not both at once")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    (bx, ax), (by, ay) = _centring(fw, up_x, down_x), _centring(fh, up_y, down_y)
    return px0 + bx, px1 + ax, py0 + by, py1 + ay


def setup_filter(
    f,
    device: Union[str, torch.device, None] = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """Turn taps (list / array / tensor / None) into a float32 filter for `upfirdn2d`.

    1D taps become a 2D outer product unless `separable` (default: 1D with >= 8 taps).
    `normalize` makes the taps sum to one (unit DC gain); `gain` scales the signal. The
    filter is made on the default device unless `device` is given.
    """
    taps = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32).clone()
    if taps.numel() == 0 or taps.ndim > 2:
        raise ValueError(f"filter taps must be a non-empty scalar, 1D or 2D array, got shape {tuple(taps.shape)}")
    if taps.ndim == 0:
        taps = taps.reshape(1)
    if separable is None:
        separable = taps.ndim == 1 and taps.numel() >= 8
    if taps.ndim == 1 and not separable:
        taps = torch.outer(taps, taps)
    if taps.ndim != (1 if separable else 2):
        raise ValueError("a 2D filter cannot be made separable")
    if normalize:
        taps = taps / taps.sum()
    if flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    return taps if device is None else taps.to(device=device)


def _scaled_kernel(f: Optional[torch.Tensor], flip_filter: bool, gain: float, like: torch.Tensor) -> torch.Tensor:
    """The filter as conv2d should correlate with: gain applied, flipped unless `flip_filter`."""
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=like.device)
    kernel = f.to(like.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:  # conv2d correlates; a true convolution needs the flipped taps
        kernel = kernel.flip(list(range(kernel.ndim)))
    return kernel


def _insert_zeros(x: torch.Tensor, up_x: int, up_y: int) -> torch.Tensor:
    """Place each pixel at (i*up_y, j*up_x) of an all-zero image up_y x up_x times larger."""
    if up_x == 1 and up_y == 1:
        return x
    n, ch, h, w = x.shape
    grid = x.new_zeros(n, ch, h * up_y, w * up_x)
    grid[:, :, ::up_y, ::up_x] = x
    return grid


def _correlate_axis(x: torch.Tensor, taps: torch.Tensor, dim: int, stride: int) -> torch.Tensor:
    """Depthwise correlation of every channel with the 1-D `taps` along one axis (dim 3: width, 2: height)."""
    weight = taps.reshape(1, 1, 1, -1) if dim == 3 else taps.reshape(1, 1, -1, 1)
    channels = x.shape[1]
    return F.conv2d(x, weight.repeat(channels, 1, 1, 1), stride=(1, stride) if dim == 3 else (stride, 1),
                    groups=channels)


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Zeros before/after along one axis (negative amounts crop)."""
    if before == 0 and after == 0:
        return x
    return F.pad(x, [before, after, 0, 0] if dim == 3 else [0, 0, before, after])


def _polyphase_upsample_axis(x: torch.Tensor, taps: torch.Tensor, up: int, pad0: int, pad1: int,
                             dim: int) -> torch.Tensor:
    """Upsample by `up` (zeros), pad and correlate with `taps` along one axis, without building
    the zero-stuffed signal: output m = q*up + r only meets input samples through the taps
    k = k0(r) + up*t, k0(r) = (pad0 - r) mod up, at input q + c(r) + t with
    c(r) = (r + k0(r) - pad0) / up. Each phase r is a short correlation of the input with
    taps[k0(r)::up], written into every up-th output position."""
    length = x.shape[dim]
    out_len = length * up + pad0 + pad1 - taps.numel() + 1
    phases = []
    for r in range(up):
        k0 = (pad0 - r) % up
        phases.append((r, taps[k0::up], (r + k0 - pad0) // up))
    first = min(offset for _, _, offset in phases)
    width = max(offset - first + sub.numel() for _, sub, offset in phases)
    per_phase = -(-out_len // up)  # outputs q = 0 .. per_phase - 1 of every phase
    x = _pad_axis(x, -first, per_phase + width - 1 - (length - first), dim)
    shape = list(x.shape)
    shape[dim] = out_len
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    if any(sub.numel() == 0 for _, sub, _ in phases):  # taps shorter than the factor: some phases are 0
        out.zero_()
    for r, sub, offset in phases:
        count = -(-(out_len - r) // up)  # outputs of this phase inside the result
        if sub.numel() == 0 or count <= 0:
            continue
        kernel = sub.new_zeros(width)
        kernel[offset - first: offset - first + sub.numel()] = sub
        index = (slice(None),) * dim + (slice(r, None, up),)  # every up-th output, from r on
        out[index] = _correlate_axis(x, kernel, dim, 1).narrow(dim, 0, count)
    return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """Depthwise convolutions on the CPU run several times faster on channels-last images."""
    return torch.channels_last if x.device.type == "cpu" else torch.contiguous_format


def _resample_axis(x: torch.Tensor, taps: Optional[torch.Tensor], up: int, down: int, pad0: int, pad1: int,
                   dim: int) -> torch.Tensor:
    """upfirdn along one axis with 1-D `taps` as correlated (None: the identity filter)."""
    if up > 1 and down == 1 and taps is not None:
        return _polyphase_upsample_axis(x, taps, up, pad0, pad1, dim)
    x = _insert_zeros(x, up, 1) if dim == 3 else _insert_zeros(x, 1, up)
    x = _pad_axis(x, pad0, pad1, dim)
    if taps is None:
        return x[:, :, :, ::down] if dim == 3 else x[:, :, ::down]
    return _correlate_axis(x, taps, dim, down)


def _axis_taps(kernel: torch.Tensor) -> Optional[tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """(taps along width, taps along height) when the kernel acts on one axis at a time: 1-D
    (separable: the same taps on both) or a single row / column; None for a full 2-D kernel."""
    if kernel.ndim == 1:
        return kernel, kernel
    if kernel.shape[0] == 1:
        return kernel[0], None
    if kernel.shape[1] == 1:
        return None, kernel[:, 0]
    return None


def _check_sizes(x: torch.Tensor, f: Optional[torch.Tensor], up, pads) -> None:
    fw, fh = filter_size(f)
    wide = x.shape[3] * up[0] + pads[0] + pads[1]
    tall = x.shape[2] * up[1] + pads[2] + pads[3]
    if wide < fw or tall < fh:
        raise ValueError(
            f"upsampled and padded image ({tall}x{wide}) is smaller than the filter ({fh}x{fw})"
        )


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zeros), pad, FIR-filter and downsample x [N, C, H, W] (see module doc).

    With gradients recorded, the operation keeps nothing for its backward pass but the filter:
    its gradient is the same operation, transposed (see `_UpFirDn2d`)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {tuple(x.shape)}")
    up_xy = parse_factor(up, "up")
    down_xy = parse_factor(down, "down")
    pads = parse_padding(padding)
    _check_sizes(x, f, up_xy, pads)
    if x.requires_grad and torch.is_grad_enabled() and (f is None or not f.requires_grad):
        return _UpFirDn2d.apply(x, f, up_xy, down_xy, pads, flip_filter, gain)
    return _upfirdn2d(x, f, up_xy, down_xy, pads, flip_filter, gain)


def transposed_padding(f: Optional[torch.Tensor], in_size: tuple[int, int], out_size: tuple[int, int],
                       up: tuple[int, int], down: tuple[int, int], pads: tuple[int, int, int, int]
                       ) -> tuple[int, int, int, int]:
    """Padding of the transposed operation (up and down swapped, filter flipped) that maps an
    output-sized gradient back onto the input grid. Per axis, input n, output m, taps t:
    before' = t - 1 - before, after' = n * up - m * down + before - up + 1."""
    fw, fh = filter_size(f)
    (w, h), (ow, oh) = in_size, out_size
    return (fw - 1 - pads[0], w * up[0] - ow * down[0] + pads[0] - up[0] + 1,
            fh - 1 - pads[2], h * up[1] - oh * down[1] + pads[2] - up[1] + 1)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d is linear in x: y = A x. Its backward is dx = A^T dy, which is upfirdn2d with
    up and down swapped, the filter flipped and `transposed_padding`; that call is itself
    differentiable (double backward for R1 and path-length regularisation). So no image,
    padded copy or intermediate axis pass is kept for backward."""

    @staticmethod
    def forward(ctx, x, f, up, down, pads, flip_filter, gain):
        y = _upfirdn2d(x, f, up, down, pads, flip_filter, gain)
        ctx.has_filter = f is not None
        if ctx.has_filter:
            ctx.save_for_backward(f)
        ctx.config = (up, down, pads, flip_filter, gain)
        ctx.sizes = ((x.shape[3], x.shape[2]), (y.shape[3], y.shape[2]))
        return y

    @staticmethod
    def backward(ctx, dy):
        f = ctx.saved_tensors[0] if ctx.has_filter else None
        up, down, pads, flip_filter, gain = ctx.config
        back = transposed_padding(f, *ctx.sizes, up, down, pads)
        dx = upfirdn2d(dy, f, up=down, down=up, padding=back, flip_filter=not flip_filter, gain=gain)
        return dx, None, None, None, None, None, None


def _upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up_xy: tuple[int, int], down_xy: tuple[int, int],
               pads: tuple[int, int, int, int], flip_filter: bool, gain: float) -> torch.Tensor:
    down_x, down_y = down_xy
    kernel = _scaled_kernel(f, flip_filter, gain, x)
    axis_taps = _axis_taps(kernel)
    if axis_taps is not None:  # one axis at a time; upsampling without zero-stuffed images
        taps_x, taps_y = axis_taps
        x = x.contiguous(memory_format=_memory_format(x))
        y = _resample_axis(x, taps_x, up_xy[0], down_x, pads[0], pads[1], dim=3)
        return _resample_axis(y, taps_y, up_xy[1], down_y, pads[2], pads[3], dim=2)

    y = _insert_zeros(x, *up_xy)
    if any(pads):
        y = F.pad(y, list(pads))  # F.pad crops where an amount is negative
    channels = y.shape[1]
    bank = kernel.reshape(1, 1, *kernel.shape).repeat(channels, 1, 1, 1)
    return F.conv2d(y, bank, stride=(down_y, down_x), groups=channels)


def upfirdn2d_reference(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Plain definition of `upfirdn2d`, tap by tap, with explicit index arithmetic (slow).

    out[o] = sum_k g[k] * u[o * down + k - pad_before], where u is the zero-stuffed input
    (u[i] = x[i / up] when up divides i, else 0) and g the filter as correlated.
    """
    up_x, up_y = parse_factor(up, "up")
    down_x, down_y = parse_factor(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    _check_sizes(x, f, (up_x, up_y), (px0, px1, py0, py1))
    kernel = _scaled_kernel(f, flip_filter, 1.0, x)
    if kernel.ndim == 1:
        kernel = torch.outer(kernel, kernel)
    kernel = kernel * gain
    fh, fw = kernel.shape
    n, ch, h, w = x.shape
    out_h = (h * up_y + py0 + py1 - fh) // down_y + 1
    out_w = (w * up_x + px0 + px1 - fw) // down_x + 1

    def sources(out_len: int, tap: int, step_down: int, step_up: int, pad0: int, size: int):
        pos = torch.arange(out_len, device=x.device) * step_down + tap - pad0  # upsampled coordinate
        hit = (pos >= 0) & (pos < size * step_up) & (pos % step_up == 0)
        return torch.where(hit, pos // step_up, torch.zeros_like(pos)), hit

    out = x.new_zeros(n, ch, out_h, out_w)
    for ky in range(fh):
        rows, row_hit = sources(out_h, ky, down_y, up_y, py0, h)
        for kx in range(fw):
            cols, col_hit = sources(out_w, kx, down_x, up_x, px0, w)
            picked = x[:, :, rows][:, :, :, cols]
            mask = (row_hit[:, None] & col_hit[None, :]).to(x.dtype)
            out = out + kernel[ky, kx] * picked * mask
    return out


def filter2d(
    x: torch.Tensor, f: Optional[torch.Tensor], padding: Padding = 0, flip_filter: bool = False, gain: float = 1
) -> torch.Tensor:
    """Filter x with f, padded so the output has the input's size (plus `padding`)."""
    return upfirdn2d(x, f, padding=centred_padding(f, padding), flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample by `up` with f; the output is `up` times the input (plus `padding`), DC kept."""
    up_x, up_y = parse_factor(up, "up")
    pads = centred_padding(f, padding, up=(up_x, up_y))
    return upfirdn2d(x, f, up=(up_x, up_y), padding=pads, flip_filter=flip_filter, gain=gain * up_x * up_y)


def downsample2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    down: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Filter with f and keep every `down`-th pixel; the output is the input / `down`."""
    down_xy = parse_factor(down, "down")
    pads = centred_padding(f, padding, down=down_xy)
    return upfirdn2d(x, f, down=down_xy, padding=pads, flip_filter=flip_filter, gain=gain)
