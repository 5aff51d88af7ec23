"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"): the "bgc" pipeline and the controller that tunes its strength.

`AugmentPipe` draws, per image, a chain of geometric transforms (x-flip, quarter turns,
integer translation, isotropic scaling, pre-rotation, anisotropic scaling, post-rotation,
fractional translation). Their inverses multiply into one 3x3 homogeneous matrix per image
("output pixel -> source pixel", coordinates centred on the image), which one anti-aliased
resampling pass executes: reflect padding sized from where the output corners land in the
source, 2x upsampling with the sym6 wavelet low-pass filter, bilinear `grid_sample` on the
2x grid, 2x downsampling with the same (orthogonal) filter. Then colour transforms
(brightness, contrast, luma flip, hue rotation, saturation) multiply into one 4x4 matrix per
image acting on homogeneous RGB. Each transform is applied to an image with probability
`multiplier * p`; `p` is a buffer, so the loop can move it and checkpoints keep it.

The whole pipe is differentiable w.r.t. the images, twice (R1 runs on augmented reals):
`F.grid_sample` where this PyTorch differentiates its input gradient again (2.13 does; 2.11
does not), else an equivalent bilinear sampler made of gathers.

`ada_adjust` is the published p update and `AdaStats` collects what it needs in the loop.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from creps.config import AugmentConfig
from creps.ops.upfirdn2d import downsample2d, setup_filter, upsample2d
from creps.parallel import SINGLE, World, all_sum

# Low-pass decomposition filter of the Daubechies symlet with 6 vanishing moments ("sym6"),
# the published anti-aliasing filter for the geometric pass. Orthogonal: upsampling and then
# downsampling with it (normalised) is the identity.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

# Unit vector along the grey axis of RGB: the luma axis the colour transforms pivot on.
LUMA_AXIS = (1 / math.sqrt(3),) * 3

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------
# Batched homogeneous matrices: one per image, [N, 3, 3] for 2D points, [N, 4, 4] for RGB.


def homogeneous(linear: Tensor, shift: Tensor) -> Tensor:
    """[N, k, k] linear part and [N, k] shift -> [N, k+1, k+1] affine map in homogeneous form."""
    n, k = shift.shape
    out = torch.zeros(n, k + 1, k + 1, dtype=linear.dtype, device=linear.device)
    out[:, :k, :k] = linear
    out[:, :k, k] = shift
    out[:, k, k] = 1
    return out


def translation2d(tx: Tensor, ty: Tensor) -> Tensor:
    """Per-image 2D translation by (tx, ty)."""
    eye = torch.eye(2, dtype=tx.dtype, device=tx.device).expand(tx.shape[0], 2, 2)
    return homogeneous(eye, torch.stack([tx, ty], dim=1))


def scaling2d(sx: Tensor, sy: Tensor) -> Tensor:
    """Per-image 2D scaling by sx along x and sy along y."""
    diagonal = torch.stack([sx, sy], dim=1)
    return homogeneous(torch.diag_embed(diagonal), torch.zeros_like(diagonal))


def rotation2d(cos: Tensor, sin: Tensor) -> Tensor:
    """Per-image 2D rotation, counter-clockwise in (x right, y down) pixel axes, from its cos and sin."""
    linear = torch.stack([torch.stack([cos, -sin], dim=1), torch.stack([sin, cos], dim=1)], dim=1)
    return homogeneous(linear, torch.zeros(cos.shape[0], 2, dtype=cos.dtype, device=cos.device))


def quarter_turns(k: Tensor) -> Tensor:
    """Rotation by k * 90 degrees with exact 0 / +-1 entries (k in {0, 1, 2, 3})."""
    k = k.long() % 4
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k]
    return rotation2d(cos, sin)


def fixed2d(n: int, device: torch.device, *, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    """The same map x -> scale * x + shift (both axes) for n images."""
    s = torch.full([n], float(scale), device=device)
    t = torch.full([n], float(shift), device=device)
    return translation2d(t, t) @ scaling2d(s, s)


def _luma_outer(device: torch.device) -> Tensor:
    """v v^T for the luma axis v: projection of an RGB vector onto the grey axis."""
    v = torch.tensor(LUMA_AXIS, device=device)
    return torch.outer(v, v)


def _luma_cross(device: torch.device) -> Tensor:
    """[v]_x, the matrix of u -> v x u for the luma axis v."""
    a = LUMA_AXIS[0]
    return torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]], device=device)


def _color_linear(linear: Tensor) -> Tensor:
    """[N, 3, 3] linear RGB map -> [N, 4, 4] homogeneous colour matrix without offset."""
    return homogeneous(linear, torch.zeros(linear.shape[0], 3, dtype=linear.dtype, device=linear.device))


def brightness_offset(b: Tensor) -> Tensor:
    """Brightness: add b to every channel."""
    eye = torch.eye(3, device=b.device).expand(b.shape[0], 3, 3)
    return homogeneous(eye, b[:, None].expand(-1, 3))


def contrast_scale(c: Tensor) -> Tensor:
    """Contrast: multiply every channel by c (about 0, the middle of [-1, 1])."""
    return _color_linear(torch.eye(3, device=c.device) * c[:, None, None])


def luma_flip(flip: Tensor) -> Tensor:
    """Luma flip: Householder reflection I - 2 v v^T across the plane normal to the grey axis, where flip == 1."""
    eye = torch.eye(3, device=flip.device)
    return _color_linear(eye - 2 * _luma_outer(flip.device) * flip[:, None, None])


def hue_rotation(theta: Tensor) -> Tensor:
    """Hue rotation: Rodrigues rotation by theta about the grey axis, I + sin K + (1 - cos)(v v^T - I)."""
    eye = torch.eye(3, device=theta.device)
    sin, one_minus_cos = theta.sin()[:, None, None], (1 - theta.cos())[:, None, None]
    linear = eye + sin * _luma_cross(theta.device) + one_minus_cos * (_luma_outer(theta.device) - eye)
    return _color_linear(linear)


def saturation_scale(s: Tensor) -> Tensor:
    """Saturation: scale the part of the colour orthogonal to the grey axis by s, I + (s - 1)(I - v v^T)."""
    eye = torch.eye(3, device=s.device)
    return _color_linear(eye + (s - 1)[:, None, None] * (eye - _luma_outer(s.device)))


# ---------------------------------------------------------------------------------------
# Random draws.


def keep_with_prob(values: Tensor, neutral: float, prob: Tensor) -> Tensor:
    """Per image (leading axis): keep `values` with probability `prob`, else the neutral value."""
    keep = torch.rand([values.shape[0]], device=values.device) < prob
    keep = keep.reshape([-1] + [1] * (values.ndim - 1))
    return torch.where(keep, values, torch.full_like(values, neutral))


def lognormal_factor(n: int, log2_std: float, device: torch.device) -> Tensor:
    """Random factor 2^(N(0, 1) * log2_std): log-normal, median 1."""
    return torch.exp2(torch.randn([n], device=device) * log2_std)


def uniform_angle(n: int, max_turns: float, device: torch.device) -> Tensor:
    """Uniform angle in [-pi, pi) * max_turns (max_turns = 1: the full circle)."""
    return (torch.rand([n], device=device) * 2 - 1) * math.pi * max_turns


def split_rotation_prob(prob: Tensor) -> Tensor:
    """Probability of each of two independent rotations so that P(pre or post) = prob: 1 - sqrt(1 - prob)."""
    return 1 - (1 - prob).clamp(0, 1).sqrt()


# ---------------------------------------------------------------------------------------
# Executing the transforms.


@functools.lru_cache(maxsize=None)
def grid_sample_has_double_backward() -> bool:
    """Whether this PyTorch differentiates grid_sample's input gradient again (R1 needs it)."""
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    grid = torch.zeros(1, 1, 1, 2)
    try:
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        torch.autograd.grad(g.sum() * y.sum(), x)
    except RuntimeError:
        return False
    return True


def bilinear_by_gather(images: Tensor, grid: Tensor) -> Tensor:
    """`grid_sample(bilinear, zeros, align_corners=False)` from gathers: slower, but twice
    differentiable w.r.t. `images` on any PyTorch (the grid gets no gradient)."""
    n, c, h, w = images.shape
    _, out_h, out_w, _ = grid.shape
    grid = grid.detach()
    px = ((grid[..., 0] + 1) * w - 1) / 2  # source column, in pixels
    py = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    flat = images.reshape(n, c, h * w)
    out = images.new_zeros(n, c, out_h, out_w)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
        picked = flat.gather(2, index).reshape(n, c, out_h, out_w)
        out = out + picked * (weight * inside).to(images.dtype)[:, None]
    return out


def bilinear_sample(images: Tensor, grid: Tensor) -> Tensor:
    """Bilinear sampling at normalised grid points (zeros outside), double-backward safe."""
    if grid_sample_has_double_backward():
        return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=False)
    return bilinear_by_gather(images, grid)


def source_margins(inverse: Tensor, height: int, width: int, reach: int) -> Tensor:
    """Source pixels needed beyond each border [left, right, top, bottom]: how far the output
    corners land outside the image, plus the filter's reach; kept within one image size."""
    hx, hy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-hx, hx, hx, -hx], [-hy, -hy, hy, hy], [1.0, 1.0, 1.0, 1.0]], device=inverse.device)
    landed = (inverse @ corners)[:, :2, :]  # [N, xy, corner]
    before = (-landed).amax(dim=(0, 2)) - torch.tensor([hx, hy], device=inverse.device)
    after = landed.amax(dim=(0, 2)) - torch.tensor([hx, hy], device=inverse.device)
    limit = torch.tensor([width - 1, height - 1], device=inverse.device, dtype=torch.float32)
    before = torch.minimum((before + reach).clamp(min=0), limit)
    after = torch.minimum((after + reach).clamp(min=0), limit)
    return torch.stack([before[0], after[0], before[1], after[1]]).ceil()


def apply_color_matrix(images: Tensor, color: Tensor) -> Tensor:
    """Apply per-image [N, 4, 4] colour matrices: to RGB (the first 3 of RGBA), or to grey
    as the mean of what the matrix makes of (L, L, L)."""
    n, c, h, w = images.shape
    color = color.to(images.dtype)
    linear, offset = color[:, :3, :3], color[:, :3, 3:]
    if c == 1:
        gain = linear.sum(dim=2).mean(dim=1)  # every output channel of (L, L, L), averaged
        return images * gain[:, None, None, None] + offset.mean(dim=1)[:, :, None, None]
    if c not in (3, 4):
        raise ValueError(f"colour augmentation needs 1 (L), 3 (RGB) or 4 (RGBA) channels, got {c}")
    rgb = torch.baddbmm(offset, linear, images[:, :3].reshape(n, 3, h * w)).reshape(n, 3, h, w)
    return rgb if c == 3 else torch.cat([rgb, images[:, 3:]], dim=1)


# ---------------------------------------------------------------------------------------
# The pipeline.


class AugmentPipe(torch.nn.Module):
    """The published ADA pipeline's geometric and colour transforms ("bgc" when all are on).

    Each flag is the probability multiplier of one transform (0 disables it; the transform
    then draws no random numbers); the `*_std` / `*_max` arguments are its strength, with
    the published defaults. The overall probability is the buffer `p`.
    """

    def __init__(
        self,
        xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
        scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0,
        scale_std: float = 0.2, rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
        brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0, saturation: float = 0,
        brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1, saturation_std: float = 1,
        p: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))  # overall probability multiplier
        # Pixel blitting: exact moves of whole pixels.
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.xint_max = float(xint_max)  # max integer shift, as a fraction of the image size
        # General geometric transforms.
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std = float(scale_std)  # log2 std of isotropic scaling
        self.rotate_max = float(rotate_max)  # rotation range, 1 = full circle
        self.aniso_std = float(aniso_std)  # log2 std of anisotropic scaling
        self.xfrac_std = float(xfrac_std)  # std of fractional shift, as a fraction of the image size
        # Colour transforms.
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std = float(brightness_std)  # std of the brightness offset
        self.contrast_std = float(contrast_std)  # log2 std of the contrast factor
        self.hue_max = float(hue_max)  # hue rotation range, 1 = full circle
        self.saturation_std = float(saturation_std)  # log2 std of the saturation factor
        # Anti-aliasing filter of the geometric pass; a constant, so not in the state dict.
        self.register_buffer("geom_filter", setup_filter(list(SYM6_LOWPASS)), persistent=False)

    @classmethod
    def bgc(cls, p: float = 0.0) -> "AugmentPipe":
        """The published default pipeline: blit + general geometry + colour, all multipliers 1."""
        return cls(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, p=p)

    def extra_repr(self) -> str:
        on = [name for name in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                                "contrast", "lumaflip", "hue", "saturation") if getattr(self, name) > 0]
        return f"p={float(self.p):.4f}, transforms={','.join(on) or 'none'}"

    # -- geometry ------------------------------------------------------------------------

    def _geometric_steps(self, n: int, height: int, width: int, device: torch.device) -> list[Tensor]:
        """Inverse of each enabled geometric transform, in the order they act on the image."""
        p = self.p.to(device=device, dtype=torch.float32)
        steps: list[Tensor] = []
        if self.xflip > 0:
            mirrored = keep_with_prob(torch.floor(torch.rand([n], device=device) * 2), 0, self.xflip * p)
            steps.append(scaling2d(1 - 2 * mirrored, torch.ones_like(mirrored)))  # its own inverse
        if self.rotate90 > 0:
            turns = keep_with_prob(torch.floor(torch.rand([n], device=device) * 4), 0, self.rotate90 * p)
            steps.append(quarter_turns(turns))
        if self.xint > 0:
            shift = (torch.rand([n, 2], device=device) * 2 - 1) * self.xint_max
            shift = keep_with_prob(shift, 0, self.xint * p)
            steps.append(translation2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height)))
        if self.scale > 0:
            s = keep_with_prob(lognormal_factor(n, self.scale_std, device), 1, self.scale * p)
            steps.append(scaling2d(1 / s, 1 / s))
        rotation_prob = split_rotation_prob(self.rotate * p)
        if self.rotate > 0:  # pre-rotation, before the anisotropic scaling
            theta = keep_with_prob(uniform_angle(n, self.rotate_max, device), 0, rotation_prob)
            steps.append(rotation2d(theta.cos(), theta.sin()))
        if self.aniso > 0:
            s = keep_with_prob(lognormal_factor(n, self.aniso_std, device), 1, self.aniso * p)
            steps.append(scaling2d(1 / s, s))
        if self.rotate > 0:  # post-rotation
            theta = keep_with_prob(uniform_angle(n, self.rotate_max, device), 0, rotation_prob)
            steps.append(rotation2d(theta.cos(), theta.sin()))
        if self.xfrac > 0:
            shift = keep_with_prob(torch.randn([n, 2], device=device) * self.xfrac_std, 0, self.xfrac * p)
            steps.append(translation2d(-shift[:, 0] * width, -shift[:, 1] * height))
        return steps

    def sample_geometry(self, n: int, height: int, width: int, device: torch.device) -> Optional[Tensor]:
        """Per-image [N, 3, 3] map from output pixel to source pixel (centred coordinates),
        or None when no geometric transform is enabled."""
        steps = self._geometric_steps(n, height, width, device)
        if not steps:
            return None
        inverse = steps[0]
        for step in steps[1:]:
            inverse = inverse @ step  # the last transform applied is undone first
        return inverse

    def resample(self, images: Tensor, inverse: Tensor) -> Tensor:
        """Execute per-image geometric maps in one anti-aliased pass (see the module doc)."""
        n, c, height, width = images.shape
        device = images.device
        taps = self.geom_filter.shape[0]
        reach = taps // 2  # 2x pixels the down filter reaches past the output; source pixels of padding
        margins = source_margins(inverse, height, width, reach)
        is_identity = (inverse == torch.eye(3, device=device)).all()
        host = torch.cat([margins, is_identity.float()[None]]).tolist()  # one device->host copy
        if host[4]:
            return images
        left, right, top, bottom = (int(v) for v in host[:4])

        padded = F.pad(images, [left, right, top, bottom], mode="reflect")
        # Re-centre the source on the padded image.
        inverse = translation2d(torch.full([n], (left - right) / 2, device=device),
                                torch.full([n], (top - bottom) / 2, device=device)) @ inverse

        filt = self.geom_filter.to(device)
        up = upsample2d(padded, filt, up=2)
        # Centred coordinates -> those of the 2x grid. sym6 is least-asymmetric, its mass sits
        # near tap 5 rather than 5.5, so pixel centres land half a 2x pixel before 2 * x.
        to_2x = fixed2d(n, device, shift=-0.5) @ fixed2d(n, device, scale=2)
        from_2x = fixed2d(n, device, scale=0.5) @ fixed2d(n, device, shift=0.5)
        inverse = to_2x @ inverse @ from_2x

        canvas_h, canvas_w = 2 * height + 2 * reach, 2 * width + 2 * reach
        # affine_grid works in [-1, 1] units of each image: output -> centred px -> source -> units.
        to_units_src = scaling2d(torch.full([n], 2 / up.shape[3], device=device),
                                 torch.full([n], 2 / up.shape[2], device=device))
        from_units_out = scaling2d(torch.full([n], canvas_w / 2, device=device),
                                   torch.full([n], canvas_h / 2, device=device))
        theta = (to_units_src @ inverse @ from_units_out)[:, :2, :]
        grid = F.affine_grid(theta, [n, c, canvas_h, canvas_w], align_corners=False)
        sampled = bilinear_sample(up, grid)
        return downsample2d(sampled, filt, down=2, padding=-reach, flip_filter=True)

    # -- colour --------------------------------------------------------------------------

    def sample_color(self, n: int, channels: int, device: torch.device) -> Optional[Tensor]:
        """Per-image [N, 4, 4] colour matrix (acting on homogeneous RGB), or None when no
        colour transform is enabled. Hue and saturation need more than one channel."""
        p = self.p.to(device=device, dtype=torch.float32)
        steps: list[Tensor] = []
        if self.brightness > 0:
            b = keep_with_prob(torch.randn([n], device=device) * self.brightness_std, 0, self.brightness * p)
            steps.append(brightness_offset(b))
        if self.contrast > 0:
            c = keep_with_prob(lognormal_factor(n, self.contrast_std, device), 1, self.contrast * p)
            steps.append(contrast_scale(c))
        if self.lumaflip > 0:
            flip = keep_with_prob(torch.floor(torch.rand([n], device=device) * 2), 0, self.lumaflip * p)
            steps.append(luma_flip(flip))
        if self.hue > 0 and channels > 1:
            theta = keep_with_prob(uniform_angle(n, self.hue_max, device), 0, self.hue * p)
            steps.append(hue_rotation(theta))
        if self.saturation > 0 and channels > 1:
            s = keep_with_prob(lognormal_factor(n, self.saturation_std, device), 1, self.saturation * p)
            steps.append(saturation_scale(s))
        if not steps:
            return None
        color = steps[0]
        for step in steps[1:]:
            color = step @ color  # later transforms act on the result of earlier ones
        return color

    # -- both ----------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects images [N, C, H, W], got shape {tuple(images.shape)}")
        n, c, height, width = images.shape
        inverse = self.sample_geometry(n, height, width, images.device)
        if inverse is not None:
            images = self.resample(images, inverse)
        color = self.sample_color(n, c, images.device)
        if color is not None:
            images = apply_color_matrix(images, color)
        return images


def build_augment_pipe(cfg: AugmentConfig, device: torch.device) -> Optional[AugmentPipe]:
    """The loop's pipe for --aug: None for noaug (and for fixed with p = 0), else bgc at the initial p."""
    if cfg.mode == "noaug" or (cfg.mode == "fixed" and cfg.p <= 0):
        return None
    return AugmentPipe.bgc(p=cfg.p).to(device).requires_grad_(False)


# ---------------------------------------------------------------------------------------
# The ADA controller.


def ada_adjust(p: Union[float, Tensor], sign_mean: Union[float, Tensor], target: float, batch_size: int,
               interval: int, ada_kimg: float) -> Union[float, Tensor]:
    """ADA p update: p + sign(E[sign D(real)] - target) * batch * interval / (ada_kimg * 1000), kept in [0, 1]."""
    step = batch_size * interval / (ada_kimg * 1000)
    # The published update only clamps at 0; p is a probability, so we also cap it at 1.
    if torch.is_tensor(p) or torch.is_tensor(sign_mean):  # on the device, without reading back
        direction = torch.sign(torch.as_tensor(sign_mean, dtype=torch.float64) - target)
        return (p + direction * step).clamp(0.0, 1.0)
    direction = (sign_mean > target) - (sign_mean < target)  # the sign; 0 exactly at the target
    return min(max(float(p) + direction * step, 0.0), 1.0)


class AdaStats:
    """Running mean of sign(D(real)) between ADA updates, and the update itself.

    In the loop: `accumulate(real_logits)` after every discriminator pass on reals; after
    each minibatch (with `batch_idx` = minibatches done so far) `if ada.ready(batch_idx):
    ada.update(augment_pipe)`. Under torch.distributed the sums are all-reduced in update,
    so every rank moves p the same way.
    """

    def __init__(self, target: float, batch_size: int, interval: int = 4, ada_kimg: float = 500,
                 device: Optional[torch.device] = None, world: World = SINGLE):
        if interval < 1 or ada_kimg <= 0 or batch_size < 1:
            raise ValueError("AdaStats needs interval >= 1, ada_kimg > 0 and batch_size >= 1")
        self.target, self.batch_size = float(target), int(batch_size)
        self.interval, self.ada_kimg = int(interval), float(ada_kimg)
        self._device, self._world = device, world
        self._sign_sum: Optional[Tensor] = None  # on the logits' device, so accumulating never syncs
        self._count = 0

    @classmethod
    def from_config(cls, cfg: AugmentConfig, batch_size: int, device: Optional[torch.device] = None,
                    world: World = SINGLE) -> Optional["AdaStats"]:
        """An AdaStats for --aug=ada, None otherwise (p then never moves)."""
        if cfg.mode != "ada":
            return None
        return cls(cfg.target, batch_size, cfg.ada_interval, cfg.ada_kimg, device, world)

    def accumulate(self, real_logits: Tensor) -> None:
        """Add sign(D(real)) of every logit; the sum stays on the device (no synchronisation)."""
        signs = real_logits.detach().sign()
        total = signs.sum(dtype=torch.float64)
        self._sign_sum = total if self._sign_sum is None else self._sign_sum + total
        self._count += signs.numel()

    def ready(self, batch_idx: int) -> bool:
        """Whether p is due for an update after `batch_idx` completed minibatches."""
        return batch_idx % self.interval == 0

    def sign_mean(self) -> Optional[float]:
        """Mean sign(D(real)) since the last update (over all ranks), or None if nothing came."""
        device = self._sign_sum.device if self._sign_sum is not None else (self._device or torch.device("cpu"))
        totals = torch.stack([
            self._sign_sum if self._sign_sum is not None else torch.zeros([], dtype=torch.float64, device=device),
            torch.tensor(float(self._count), dtype=torch.float64, device=device),
        ])
        totals = all_sum(totals, self._world)  # every rank must call update at the same minibatch
        total, count = totals.tolist()
        return total / count if count > 0 else None

    def update(self, aug_pipe: AugmentPipe) -> float:
        """Move `aug_pipe.p` by the ADA rule, reset the running sums, return the new p
        (reading it back from the device; the trainer calls `step_p`, which does not)."""
        self.step_p(aug_pipe)
        return float(aug_pipe.p)

    def step_p(self, aug_pipe: AugmentPipe) -> None:
        """Move `aug_pipe.p` by the ADA rule and reset the running sums, on the device: nothing
        is read back, so the training step never waits here."""
        if self._count == 0 or self._sign_sum is None:  # every rank counts the same images
            self.reset()
            return
        totals = torch.stack([self._sign_sum.to(aug_pipe.p.device),
                              torch.full([], float(self._count), dtype=torch.float64, device=aug_pipe.p.device)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)  # every rank must call this at the same minibatch
        self.reset()
        new_p = ada_adjust(aug_pipe.p.double(), totals[0] / totals[1], self.target, self.batch_size, self.interval,
                           self.ada_kimg)
        aug_pipe.p.copy_(new_p)

    def reset(self) -> None:
        self._sign_sum, self._count = None, 0

    def state_dict(self) -> dict[str, float]:
        """The partial sums since the last update (for exact resume mid-interval)."""
        total = float(self._sign_sum) if self._sign_sum is not None else 0.0
        return {"sign_sum": total, "count": float(self._count)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        device = self._device or torch.device("cpu")
        self._sign_sum = torch.tensor(float(state["sign_sum"]), dtype=torch.float64, device=device)
        self._count = int(state["count"])
