"""CREPS generator: Column-Row Entangled Pixel Synthesis (CVPR 2023).

The image is never built by convolutions. A Fourier-feature *bi-line* input (one row line
and one column line, each `rank` deep) goes through modulated fully connected layers; each
block's bi-line output (accumulated over blocks) is turned into a 2-D feature map by the
outer product of its row and column halves, mixed into the running per-pixel feature by a
small decoder, and two final blocks of per-pixel modulated FC layers produce the RGB image.
Because every layer is a function of continuous coordinates, the same weights render at
any output size.

Internal layout is channels-last: a line is [N, positions, C], a feature map [N, H*W, C],
so every modulated layer is one batched matmul. Parameter names and shapes equal the
published implementation's state_dict.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.utils.checkpoint

from creps.nets.family import (REQUIRED_G, Capability, Family, GeneratorConfig, GeneratorOptions, Preset, Section,
                               config_from_dict, translate_published)
from creps.nets.generator import MappedGenerator, check_synthesis_inputs
from creps.nets.layers import FullyConnectedLayer
from creps.nets.mapping import MappingNetwork
from creps.nets.precision import autocast_off
from creps.nets.resolution import feature_channels, resolution_log2
from creps.ops.bias_act import bias_act, default_gain
from creps.ops.modulated_linear import modulated_linear

Size = Union[int, Sequence[int]]


class Region(NamedTuple):
    """A window of the output pixel grid: rows top .. top + height, columns left .. left + width."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class CrepsConfig(GeneratorConfig):
    """Everything the CREPS generator is built from (its constructor's input)."""

    mapping_layers: int = 8
    biline_channels: int = 32  # channels of the bi-line output and of the per-pixel feature
    rank: int = 8  # positions per coordinate in each line (the outer product's depth)
    bandwidth: float = 10  # spread of the input's random frequencies
    fc_clamp: Optional[float] = 256  # output clamp of the line layers; None: none
    head_clamp: Optional[float] = 256  # output clamp of the per-pixel heads
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998


def line_coords(n: int, device=None) -> torch.Tensor:
    """Coordinates of n samples along one image axis: evenly spaced over [0, 1]."""
    return torch.linspace(0, 1, n, device=device)


class _StyledLinear(torch.nn.Module):
    """What every modulated FC layer holds: `affine` (w -> styles), `weight` [O, I], `bias` [O]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, clamp: Optional[float] = 256):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.clamp = clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))


class ModulatedFC(_StyledLinear):
    """Modulated FC layer with demodulation, bias, lrelu and clamping (published `fc0/fc1`)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, clamp: Optional[float] = 256):
        super().__init__(in_channels, out_channels, w_dim, clamp)
        self.act_gain = default_gain("lrelu")

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_linear(x, self.weight, styles, demodulate=True)
        return bias_act(x, self.bias, dim=-1, act="lrelu", gain=self.act_gain, clamp=self.clamp)


class ToRes(_StyledLinear):
    """Modulated FC without demodulation or activation producing a block's residual output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, clamp: Optional[float] = 256):
        super().__init__(in_channels, out_channels, w_dim, clamp)
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_linear(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, dim=-1, act="linear", clamp=self.clamp)


class BilineInput(torch.nn.Module):
    """Fourier-feature bi-line input: sin/cos of random frequencies along rows and columns,
    modulated per channel and per rank slot by an affine map of w."""

    def __init__(self, channels: int, w_dim: int, resolution: int, rank: int = 8, bandwidth: float = 10):
        super().__init__()
        if channels % 2:
            raise ValueError("the input layer needs an even number of channels")
        self.channels, self.rank, self.resolution = channels, rank, resolution
        self.register_buffer("freqs", torch.randn(1, channels // 2 * rank) * bandwidth)
        self.register_buffer("coords", line_coords(resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = torch.nn.Parameter(torch.randn(1, channels, 1, 2 * rank))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)

    def axis_coords(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column coordinates; the stored buffer is used at the native size."""
        n = self.coords.shape[1]
        rc = self.coords[0, :, 0, 0] if rows == n else line_coords(rows, self.coords.device)
        cc = self.coords[0, :, 1, 0] if cols == n else line_coords(cols, self.coords.device)
        return rc, cc

    def _line(self, coords: torch.Tensor, axis: int, mod: torch.Tensor) -> torch.Tensor:
        # phase[p, c', k] = 2*pi * coords[p] * freqs[c' * rank + k]; channels c' and c' + C/2
        # hold sin and cos (sin with a quarter-turn shift), as in the published layout.
        phase = (coords.unsqueeze(1) @ self.freqs).reshape(len(coords), self.channels // 2, self.rank)
        phase = phase * (2 * math.pi)
        feats = torch.sin(torch.cat([phase, phase + math.pi / 2], dim=1))  # [P, C, rank]
        slot = slice(axis * self.rank, (axis + 1) * self.rank)
        x = feats.unsqueeze(0) * mod[:, :, slot].unsqueeze(1)  # [N, P, C, rank]
        return x.permute(0, 1, 3, 2).reshape(mod.shape[0], -1, self.channels)  # [N, P*rank, C]

    def _modulation(self, w: torch.Tensor) -> torch.Tensor:
        mod = self.weight[0, :, 0, :] * self.affine(w.float()).reshape(-1, self.channels, 2 * self.rank)
        return mod / math.sqrt(self.channels)  # [N, C, 2*rank]

    def forward(self, w: torch.Tensor, rows: int, cols: int, region: Optional[Region] = None) -> torch.Tensor:
        """Returns the bi-line [N, (rows + cols) * rank, C]: row line first, then column line;
        with a `region`, only its rows and columns of the rows x cols grid."""
        with autocast_off(w.device.type):
            mod = self._modulation(w)
            rc, cc = self.axis_coords(rows, cols)
            if region is not None:
                rc = rc[region.top: region.top + region.height]
                cc = cc[region.left: region.left + region.width]
            return torch.cat([self._line(rc, 0, mod), self._line(cc, 1, mod)], dim=1)

    def pieces(self, w: torch.Tensor, rows: int, cols: int, segments: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """Pieces of the bi-line one after the other, each (axis, start, count): rows start ..
        start + count (axis 0) or those columns (axis 1) of the rows x cols grid,
        [N, sum of count * rank, C]."""
        with autocast_off(w.device.type):
            mod, coords = self._modulation(w), self.axis_coords(rows, cols)
            return torch.cat([self._line(coords[axis][start: start + count], axis, mod)
                              for axis, start, count in segments], dim=1)


class LineBlock(torch.nn.Module):
    """One CREPS block on the bi-line: (input | fc0), fc1, and the residual output tores."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, res_channels: int,
                 clamp: Optional[float], rank: int, bandwidth: float, is_last: bool):
        super().__init__()
        self.is_first = in_channels == 0
        if self.is_first:
            self.input = BilineInput(out_channels, w_dim, resolution, rank=rank, bandwidth=bandwidth)
        else:
            self.fc0 = ModulatedFC(in_channels, out_channels, w_dim, clamp)
        self.fc1 = ModulatedFC(out_channels, out_channels, w_dim, clamp)
        self.tores = ToRes(out_channels, res_channels, w_dim, clamp)
        # The published first block owns a `tores` but only calls it when it is also the last
        # block (4x4 models): its bi-line output is otherwise never used.
        self.emits = not self.is_first or is_last

    def forward(self, x: torch.Tensor, ws: list[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.fc0(x, ws[0]) if not self.is_first else x
        x = self.fc1(x, ws[1])
        return x, (self.tores(x, ws[2]).float() if self.emits else None)


class PixelBlock(torch.nn.Module):
    """A final per-pixel block: fc0, fc1 and an RGB residual, all styled by the last w."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, img_channels: int, clamp: Optional[float]):
        super().__init__()
        self.fc0 = ModulatedFC(in_channels, out_channels, w_dim, clamp)
        self.fc1 = ModulatedFC(out_channels, out_channels, w_dim, clamp)
        self.tores = ToRes(out_channels, img_channels, w_dim, clamp)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fc1(self.fc0(x, w), w)
        return x, self.tores(x, w).float()


def _decoder(channels: int) -> torch.nn.Sequential:
    widths = [channels, 2 * channels, 4 * channels, 2 * channels, channels]
    return torch.nn.Sequential(*[FullyConnectedLayer(a, b, activation="lrelu") for a, b in zip(widths, widths[1:])])


def outer_feature(line: torch.Tensor, rows: int, cols: int, rank: int) -> torch.Tensor:
    """Column-row entanglement: F[h, w, c] = sum_k R[h, k, c] * C[w, k, c] / 2 -> [N, H*W, C]."""
    n, _, ch = line.shape
    line = line * math.sqrt(0.5)
    r = line[:, : rows * rank].reshape(n, rows, rank, ch).permute(0, 3, 1, 2)  # [N, C, H, k]
    c = line[:, rows * rank:].reshape(n, cols, rank, ch).permute(0, 3, 2, 1)  # [N, C, k, W]
    return (r @ c).permute(0, 2, 3, 1).reshape(n, rows * cols, ch)


def check_region(rows: int, cols: int, region: Optional[Sequence[int]]) -> Region:
    """The window to render of a rows x cols output: the whole grid, or `region` (top, left,
    height, width), which must lie inside it."""
    if region is None:
        return Region(0, 0, rows, cols)
    top, left, height, width = (int(v) for v in region)
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > rows or left + width > cols:
        raise ValueError(f"region (top {top}, left {left}, {height}x{width}) is not inside the {rows}x{cols} output")
    return Region(top, left, height, width)


def split_region(height: int, width: int, tile: int) -> list[Region]:
    """Tiles of at most tile x tile covering a height x width window, row by row."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    return [Region(top, left, min(tile, height - top), min(tile, width - left))
            for top in range(0, height, tile) for left in range(0, width, tile)]


def resolve_size(img_resolution: int, scale: Optional[float] = None, size: Optional[Size] = None) -> tuple[int, int]:
    """Output (rows, cols) for a render at `scale` x native or at an explicit `size`."""
    if size is not None and scale is not None:
        raise ValueError("give either scale or size, not both")
    if size is not None:
        rows, cols = (size, size) if isinstance(size, int) else tuple(size)
    else:
        rows = cols = int(img_resolution * (1 if scale is None else scale))
    if rows < 2 or cols < 2:
        raise ValueError(f"output size {rows}x{cols} is too small (needs at least 2x2)")
    return int(rows), int(cols)


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, biline_channels: int = 32, rank: int = 8, bandwidth: float = 10,
                 fc_clamp: Optional[float] = 256, head_clamp: Optional[float] = 256):
        super().__init__()
        log2 = resolution_log2(img_resolution, minimum=4)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.biline_channels, self.rank = biline_channels, rank
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        width = {r: feature_channels(r, channel_base, channel_max) for r in self.block_resolutions}
        prev = 0
        for r in self.block_resolutions:
            block = LineBlock(prev, width[r], w_dim, img_resolution, biline_channels, fc_clamp, rank, bandwidth,
                              is_last=r == img_resolution)
            self.add_module(f"b{r}", block)
            prev = width[r]
        for r in self.block_resolutions[1:]:
            self.add_module(f"decoder_{r}", _decoder(biline_channels))
        self.decoder_last = _decoder(biline_channels)
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        self.block0 = PixelBlock(biline_channels, 4 * biline_channels, w_dim, img_channels, head_clamp)
        self.block1 = PixelBlock(4 * biline_channels, 2 * biline_channels, w_dim, img_channels, head_clamp)
        # ws rows: block b4 reads (0, 1, 2); each later block starts at the previous block's
        # fc1 row + 1, so a block's fc0 shares its row with the previous tores (published
        # layout); the two pixel heads read the last row only.
        self.num_ws = 2 * len(self.block_resolutions) + 1
        # Training switch, not part of the architecture: the per-pixel layers (decoders and
        # heads) keep only their inputs for backward and are re-run there. At 256x256 they
        # hold well over half of G's saved activations; re-running them adds about a sixth
        # to G's arithmetic.
        self.recompute = False

    def block_ws_rows(self) -> list[list[int]]:
        """Rows of ws read by each line block: b4 (0, 1, 2), then (2i - 1, 2i, 2i + 1)."""
        return [[0, 1, 2]] + [[2 * i - 1, 2 * i, 2 * i + 1] for i in range(1, len(self.block_resolutions))]

    def output_size(self, size: Optional[Size] = None, scale: Optional[float] = None) -> tuple[int, int]:
        """(rows, cols) of the output at `scale` x native or at `size`. With neither, as many
        pixels per side as the input layer's coordinate buffer (so replacing that buffer
        re-samples, as published)."""
        if scale is None:
            return resolve_size(self.b4.input.coords.shape[1], None, size)
        return resolve_size(self.img_resolution, scale, size)

    def forward(self, ws: torch.Tensor, size: Optional[Size] = None, scale: Optional[float] = None,
                noise_mode: str = "const", update_emas: bool = False, force_fp32: bool = False,
                region: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Images [N, C, H, W] of the output grid at `scale` x native or at `size`; with `region`
        (top, left, height, width), only that window of it, computed alone (every layer works on
        one coordinate or one pixel at a time, so a window equals the same crop of the whole render)."""
        del update_emas  # CREPS has no running statistics in synthesis
        check_synthesis_inputs(ws, noise_mode, self.num_ws, self.w_dim)
        rows, cols = self.output_size(size, scale)
        window = check_region(rows, cols, region)
        with autocast_off(ws.device.type) if force_fp32 else contextlib.nullcontext():
            ws = ws.float()
            return self._pixels(ws, self._lines(ws, rows, cols, window), window.height, window.width)

    def tiles(self, ws: torch.Tensor, size: Optional[Size] = None, scale: Optional[float] = None,
              region: Optional[Sequence[int]] = None, tile: int = 256) -> Iterator[tuple[Region, torch.Tensor]]:
        """The render of `region` (default: the whole output) in tiles of at most tile x tile
        pixels, row by row: (the tile's window of the output, images [N, C, h, w]), each computed
        when asked for. Every band of rows and of columns goes through the line blocks once, and
        each tile through the per-pixel layers of its own pixels only, so a big render never
        holds more than one tile's activations and no one step of it is long; the tiles put
        together equal `forward` of the region."""
        check_synthesis_inputs(ws, "const", self.num_ws, self.w_dim)
        rows, cols = self.output_size(size, scale)
        window = check_region(rows, cols, region)
        ws = ws.float()
        band_top, row_band, col_bands = None, None, {}
        for part in split_region(window.height, window.width, tile):
            top, left = window.top + part.top, window.left + part.left
            due = ([(0, top, part.height)] if top != band_top else []) + \
                ([(1, left, part.width)] if left not in col_bands else [])
            for (axis, start, _), band in zip(due, self._segment_lines(ws, rows, cols, due) if due else []):
                if axis == 0:
                    band_top, row_band = start, band
                else:
                    col_bands[start] = band
            lines = [torch.cat([r, c], dim=1) for r, c in zip(row_band, col_bands[left])]
            yield Region(top, left, part.height, part.width), self._pixels(ws, lines, part.height, part.width)

    def _lines(self, ws: torch.Tensor, rows: int, cols: int, window: Region) -> list[torch.Tensor]:
        """The line blocks on the rows and columns of `window`: the accumulated bi-line
        [N, (height + width) * rank, C] after each block that emits one."""
        return self._line_blocks(ws, lambda inp, w: inp(w, rows, cols, window))

    def _segment_lines(self, ws: torch.Tensor, rows: int, cols: int,
                       segments: Sequence[tuple[int, int, int]]) -> list[list[torch.Tensor]]:
        """`_lines` of pieces of the bi-line, each (axis, start, count): rows (axis 0) or columns
        start .. start + count. The line blocks act on each position alone, so a window's lines
        are its two halves; the pieces go through the blocks together (each styled weight is
        made once) and come back apart, per piece."""
        lines = self._line_blocks(ws, lambda inp, w: inp.pieces(w, rows, cols, segments))
        sizes = [count * self.rank for _, _, count in segments]
        return [list(piece) for piece in zip(*(line.split(sizes, dim=1) for line in lines))]

    def _line_blocks(self, ws: torch.Tensor, first: Callable) -> list[torch.Tensor]:
        """The line blocks from the input line `first(input_layer, w)`; the accumulated line after
        each block that emits one."""
        w_rows = ws.unbind(dim=1)
        x = line = None
        lines = []
        for r, idx in zip(self.block_resolutions, self.block_ws_rows()):
            block = getattr(self, f"b{r}")
            block_ws = [w_rows[i] for i in idx]
            if block.is_first:
                x = first(block.input, block_ws[0])  # float32
                if torch.is_autocast_enabled(x.device.type):  # what the first product casts it to anyway
                    x = x.to(torch.get_autocast_dtype(x.device.type))
            x, out = block(x, block_ws)
            if out is not None:
                line = out if line is None else line + out
                lines.append(line)
        return lines

    def _pixels(self, ws: torch.Tensor, lines: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """The per-pixel layers: each block's feature map (outer product of its bi-line), the
        decoders and the two heads -> images [N, C, height, width]."""
        emitting = [r for r in self.block_resolutions if getattr(self, f"b{r}").emits]
        feature = None
        for r, line in zip(emitting, lines):
            new = outer_feature(line, height, width, self.rank)
            # The first emitted feature map is taken as is (so decoder_8 goes unused, as published).
            if feature is not None:
                new = self._per_pixel(self._decode, getattr(self, f"decoder_{r}"), feature) + new
            feature = new
        feature = self._per_pixel(self._decode, self.decoder_last, feature)
        img = self._decode(self.decoder_img, feature).float()
        img = self._per_pixel(self._heads, feature, ws.unbind(dim=1)[-1], img)
        return img.reshape(ws.shape[0], height, width, self.img_channels).permute(0, 3, 1, 2).contiguous()

    def _per_pixel(self, fn, *args):
        """fn(*args); with `recompute` on and gradients recorded, its intermediate tensors are
        not kept but recomputed in backward (the result and every gradient, including the
        double backward of path-length regularisation, are unchanged)."""
        if self.recompute and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)
        return fn(*args)

    def _heads(self, feature: torch.Tensor, w: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """The two per-pixel heads, each adding its RGB residual to img (one recompute segment,
        so the 128-channel feature between them is never kept)."""
        for head in (self.block0, self.block1):
            feature, out = head(feature, w)
            img = img + out
        return img

    @staticmethod
    def _decode(layer: torch.nn.Module, feature: torch.Tensor) -> torch.Tensor:
        n, m, c = feature.shape
        return layer(feature.reshape(n * m, c)).reshape(n, m, -1)


class Generator(MappedGenerator):
    """CREPS generator: mapping network + any-scale bi-line synthesis network."""

    def __init__(self, config: CrepsConfig):
        c = config
        super().__init__(config)
        self.synthesis = SynthesisNetwork(c.w_dim, c.img_resolution, c.img_channels, c.channel_base, c.channel_max,
                                          c.biline_channels, c.rank, c.bandwidth, c.fc_clamp, c.head_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(c.z_dim, c.c_dim, c.w_dim, self.num_ws, num_layers=c.mapping_layers,
                                      lr_multiplier=c.mapping_lr_multiplier, w_avg_beta=c.w_avg_beta)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False, **synthesis_kwargs):
        """Any-scale rendering: synthesis_kwargs are SynthesisNetwork.forward's (size, scale, ...)."""
        ws = self.mapped_ws(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# ---------------------------------------------------------------------------------------
# The family: train.py preset, published constructor arguments, capabilities.


def train_py_config(o: GeneratorOptions) -> CrepsConfig:
    """`train.py --cfg=creps`: one clamp for the line layers and the heads."""
    return CrepsConfig(**o.sizes(), fc_clamp=o.clamp, head_clamp=o.clamp)


_PUBLISHED_TOP = Section(
    names={name: name for name in (*REQUIRED_G, "channel_base", "channel_max", "biline_channels", "fc_clamp")},
    ignored=frozenset({"num_fp16_res", "fp16_channels_last", "architecture"}),  # precision/layout only
)
_PUBLISHED_MAPPING = Section(
    names={"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"},
)


def from_published(init: Mapping[str, Any]) -> CrepsConfig:
    """Published `training/networks_creps.py Generator` kwargs -> our config."""
    fields = translate_published("CREPS generator", init, REQUIRED_G, _PUBLISHED_TOP,
                                 {"mapping_kwargs": _PUBLISHED_MAPPING})
    return config_from_dict(CrepsConfig, fields, "CREPS generator")


FAMILY = Family(
    name="creps", role="G", config=CrepsConfig, network=Generator, published_name="creps.Generator",
    from_published=from_published, marker="synthesis.b4.input.coords",
    capabilities=frozenset({Capability.ANY_SCALE, Capability.RECOMPUTE}),
    presets=(Preset("creps", train_py_config, glr=0.002, mapping_layers=8, capacity_factor=2, lazy_g_reg=True,
                    pl_weight=2),),
)
