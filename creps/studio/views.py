"""What the page asks to see, from the request's parameters to pixels (through creps.generate).

Five kinds of view:
  seeds       a grid of consecutive seeds (first seed, columns x rows)
  zoom        one seed, a window of its output at any scale (CREPS): only the visible pixels render
  interp      the straight line in W from one seed to another, in steps
  mix         style mixing: row seeds take the chosen layers of the column seeds (published layout)
  projection  the ws of a projected_w.npz in a row, with its noise maps (StyleGAN2), as
              gen_images.py --projected-w renders them (truncation and class do not apply)
and for all: truncation psi and cutoff, class, noise mode, StyleGAN3 translate / rotate, and
for CREPS the output size of each image. A preview is the same view at about 64 pixels a side
(CREPS renders any size, so it is the same image, coarser), smaller when a pixel budget says
so (the server's estimate of what renders in PREVIEW_SECONDS), but not under 24 pixels a side.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from creps import generate, project
from creps.errors import UserError
from creps.studio.paths import StudioError

MODES = ("seeds", "zoom", "interp", "mix", "projection")
NOISE_MODES = ("const", "random", "none")
PREVIEW_SIDE = 64  # pixels a side of a preview image (per image; a zoom view's whole window)
MIN_PREVIEW_SIDE = 24  # ... and no fewer, whatever the pixel budget
PREVIEW_SECONDS = 0.2  # what a preview may take to render (the page shows it within about 0.3 s)
MAX_SIDE = 8192  # pixels a side of one image or of a zoom window
MAX_PIXELS = 64 * 2**20  # pixels of a whole view
MAX_SCALE = 64.0  # zoom: output scale
MAX_SEED = 2**32 - 1  # RandomState seeds


@dataclass(frozen=True)
class View:
    mode: str = "seeds"
    seed: int = 0
    grid: tuple[int, int] = (1, 1)  # seeds: (columns, rows)
    seed_to: int = 1  # interp: the other end
    steps: int = 5  # interp
    row_seeds: tuple[int, ...] = (0,)  # mix
    col_seeds: tuple[int, ...] = (1,)  # mix
    layers: tuple[int, ...] = ()  # mix: rows of ws the column seeds give
    psi: float = 1.0
    cutoff: Optional[int] = None
    class_idx: Optional[int] = None
    noise: str = "const"
    translate: tuple[float, float] = (0.0, 0.0)
    rotate: float = 0.0
    size: Optional[tuple[int, int]] = None  # (rows, cols) of each image; None: native
    scale: float = 1.0  # zoom
    region: Optional[tuple[int, int, int, int]] = None  # zoom: (top, left, height, width) at `scale`
    projection: Optional[str] = None  # projection: its file, a path the app has checked (Sources)
    projection_name: str = ""  # projection: the file as the page names it (for messages)
    preview: bool = False


# ---------------------------------------------------------------------------------------------
# Parameters -> View


def _number(params: Mapping[str, str], name: str, default, lo, hi, kind: type = int):
    """params[name] as an int (or `kind`) within [lo, hi]; `default` when absent or empty."""
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        value = kind(text)
    except ValueError:
        raise StudioError(f"{name}: expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        bounds = f"{lo} to {hi}" if kind is int else f"{lo:g} to {hi:g}"
        raise StudioError(f"{name}: {value if kind is int else text} is out of range ({bounds})")
    return value


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return _number(params, name, default, lo, hi)


def _float(params: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    return _number(params, name, default, lo, hi, float)


def _seed_list(params: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        seeds = generate.parse_seeds(text)
    except ValueError as err:
        raise StudioError(f"{name}: {err}") from None
    if not 1 <= len(seeds) <= 8 or max(seeds) > MAX_SEED:
        raise StudioError(f"{name}: give 1 to 8 seeds from 0 to {MAX_SEED}")
    return tuple(seeds)


def _layers(params: Mapping[str, str], name: str) -> tuple[int, ...]:
    text = (params.get(name) or "").strip()
    if not text:
        return ()
    try:
        return tuple(dict.fromkeys(generate.parse_seeds(text)))  # same syntax: 0-3,7
    except ValueError:
        raise StudioError(f"{name}: expected layer numbers such as 0-6 or 0,2,4, got {text!r}") from None


def parse_view(params: Mapping[str, str]) -> View:
    """A View from the query parameters of a render request; StudioError names a bad one."""
    mode = params.get("mode", "seeds")
    if mode not in MODES:
        raise StudioError(f"mode: choose one of {', '.join(MODES)}, got {mode!r}")
    if params.get("kind", "full") not in ("full", "preview"):
        raise StudioError(f"kind: choose full or preview, got {params.get('kind')!r}")
    noise = params.get("noise", "const")
    if noise not in NOISE_MODES:
        raise StudioError(f"noise: choose one of {', '.join(NOISE_MODES)}, got {noise!r}")
    cutoff_text = params.get("cutoff")
    class_text = params.get("class")
    size = None
    if params.get("width") or params.get("height"):
        size = (_int(params, "height", 0, 2, MAX_SIDE), _int(params, "width", 0, 2, MAX_SIDE))
    region = None
    if mode == "zoom" and params.get("region"):
        try:
            region = tuple(int(v) for v in params["region"].split(","))
        except ValueError:
            raise StudioError(f"region: expected top,left,height,width, got {params['region']!r}") from None
        if len(region) != 4 or region[2] > MAX_SIDE or region[3] > MAX_SIDE:
            raise StudioError(f"region: expected top,left,height,width of at most {MAX_SIDE} a side")
    return View(
        mode=mode,
        seed=_int(params, "seed", 0, 0, MAX_SEED),
        grid=(_int(params, "cols", 1, 1, 8), _int(params, "rows", 1, 1, 8)),
        seed_to=_int(params, "seed_to", 1, 0, MAX_SEED),
        steps=_int(params, "steps", 5, 2, 16),
        row_seeds=_seed_list(params, "row_seeds", (0,)),
        col_seeds=_seed_list(params, "col_seeds", (1,)),
        layers=_layers(params, "layers"),
        psi=_float(params, "psi", 1.0, -2.0, 2.0),
        cutoff=None if cutoff_text in (None, "") else _int(params, "cutoff", 0, 0, 1024),
        class_idx=None if class_text in (None, "") else _int(params, "class", 0, 0, 1 << 20),
        noise=noise,
        translate=(_float(params, "tx", 0.0, -10, 10), _float(params, "ty", 0.0, -10, 10)),
        rotate=_float(params, "rotate", 0.0, -3600, 3600),
        size=size,
        scale=_float(params, "scale", 1.0, 1 / 64, MAX_SCALE),
        region=region,  # type: ignore[arg-type]
        preview=params.get("kind") == "preview",
    )


# ---------------------------------------------------------------------------------------------
# View -> pixels


def check_view(G: torch.nn.Module, view: View) -> None:
    """StudioError when the network cannot show the view as asked."""
    any_scale = generate.supports_any_scale(G)
    if view.mode == "zoom" and not any_scale:
        raise StudioError("zoom and pan need a CREPS network (it renders any window at any scale)")
    if view.size is not None and not any_scale:
        raise StudioError("only CREPS networks render at another output size")
    if view.translate != (0.0, 0.0) or view.rotate != 0.0:
        if not generate.supports_user_transform(G):
            raise StudioError("translate and rotate need a StyleGAN3 network")
    if view.mode == "seeds" and view.seed + view.grid[0] * view.grid[1] - 1 > MAX_SEED:
        raise StudioError(f"seeds: the grid runs past the last seed ({MAX_SEED})")
    if view.cutoff is not None and not 1 <= view.cutoff <= G.num_ws:
        raise StudioError(f"cutoff: {view.cutoff} is out of range for a network with {G.num_ws} layers of w "
                          f"(1 to {G.num_ws}, or none)")
    bad = [i for i in view.layers if i >= G.num_ws]
    if bad:
        raise StudioError(f"layers: {bad} out of range; this network has {G.num_ws} layers of w (0 to {G.num_ws - 1})")
    if view.mode == "zoom" and view.region is not None:
        rows, cols = generate.output_size(G, scale=view.scale)
        top, left, height, width = view.region
        if min(view.region) < 0 or height < 1 or width < 1 or top + height > rows or left + width > cols:
            raise StudioError(f"region: top {top}, left {left}, {height}x{width} is not inside the {cols}x{rows} "
                              f"output at scale {view.scale:g}")
    if view.mode == "projection":
        return  # the ws are rendered as stored: no class (load_projection checks the file against G)
    if G.c_dim and view.class_idx is None:
        raise StudioError(f"this is a conditional network: pick a class (0 to {G.c_dim - 1})")
    if G.c_dim and view.class_idx >= G.c_dim:
        raise StudioError(f"class {view.class_idx} is out of range for a network with {G.c_dim} classes")


def preview_factor(height: int, width: int, count: int = 1, lines: Optional[float] = None) -> float:
    """How much smaller a preview of `count` images of height x width is: PREVIEW_SIDE pixels a
    side at most; at most `lines` rows and columns in all, when given (what a CREPS render costs
    at these sizes goes mostly to its line blocks, which work on each row and column); at least
    MIN_PREVIEW_SIDE a side (unless the view is smaller than that)."""
    side = max(height, width)
    k = min(1.0, PREVIEW_SIDE / side)
    if lines is not None:
        k = min(k, max(lines / (count * (height + width)), MIN_PREVIEW_SIDE / side))
    return k


def lines_within(samples: Sequence[tuple[float, float]], seconds: float) -> float:
    """How many rows and columns render in `seconds`, from timed renders [(lines, seconds)]: the
    straight line s = a + b * lines through them when their sizes differ (a is what every render
    costs whatever its size: styling the weights, the mapping), else their plain rate."""
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    if spread > 0:
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / spread
        if b > 0:
            return max(0.0, (seconds - max(0.0, my - b * mx)) / b)
    return seconds * sum(xs) / sum(ys)


def preview_of(G: torch.nn.Module, view: View, count: int = 1, lines: Optional[float] = None) -> View:
    """The same view at about PREVIEW_SIDE pixels a side (CREPS), or fewer to keep its `count`
    images within `lines` rows and columns (see preview_factor): each image smaller, or for a
    zoom the same window at a proportionally smaller scale."""
    if view.mode == "zoom":
        rows, cols = generate.output_size(G, scale=view.scale)
        top, left, height, width = view.region or (0, 0, rows, cols)
        k = preview_factor(height, width, 1, lines)
        scale = view.scale * k
        prows, pcols = generate.output_size(G, scale=scale)
        h, w = min(prows, max(2, round(height * k))), min(pcols, max(2, round(width * k)))
        t, l = min(prows - h, math.floor(top * k)), min(pcols - w, math.floor(left * k))
        return replace(view, scale=scale, region=(t, l, h, w))
    rows, cols = view.size or generate.output_size(G)
    k = preview_factor(rows, cols, count, lines)
    return replace(view, size=(max(2, round(rows * k)), max(2, round(cols * k))))


def _latents(G: torch.nn.Module, seeds, view: View) -> torch.Tensor:
    z = torch.cat([generate.z_from_seed(int(s), G.z_dim) for s in seeds])
    c = generate.one_hot(view.class_idx, G.c_dim, batch=len(seeds)) if G.c_dim else None
    return generate.mapped_ws(G, z, c, truncation_psi=view.psi, truncation_cutoff=view.cutoff)


def load_projection(G: torch.nn.Module, view: View) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ws [N, num_ws, w_dim] and noise maps of the view's projection file, checked against G
    (creps.project.load_projected_w); a bad file is a one-line StudioError naming it."""
    if view.projection is None:
        raise StudioError("projection: pick a projection file (projected_w.npz) from the list")
    try:
        return project.load_projected_w(view.projection, G, name=view.projection_name or view.projection)
    except UserError as err:
        raise StudioError(str(err), status=422) from None


def _count_and_size(G: torch.nn.Module, view: View,
                    projected: Optional[tuple[torch.Tensor, dict]] = None) -> tuple[int, tuple[int, int]]:
    if view.mode == "zoom":
        rows, cols = generate.output_size(G, scale=view.scale)
        region = view.region or (0, 0, rows, cols)
        return 1, (region[2], region[3])
    if view.mode == "projection":
        return len(projected[0]), tuple(view.size or generate.output_size(G))  # type: ignore[index, return-value]
    count = {"seeds": view.grid[0] * view.grid[1], "interp": view.steps,
             "mix": (len(view.row_seeds) + 1) * (len(view.col_seeds) + 1)}[view.mode]
    return count, tuple(view.size or generate.output_size(G))  # type: ignore[return-value]


def render_view(G: torch.nn.Module, view: View, before_each: Optional[Callable[[], None]] = None,
                tile: int = 256, max_pixels: int = 2**18,
                preview_lines: Optional[float] = None) -> tuple[np.ndarray, dict]:
    """The view as one uint8 HWC image and what it shows (size, scale, region, timing). CREPS
    views render in tiles of at most `tile` pixels a side, `max_pixels` pixels at a time;
    `before_each()` runs before each piece (it raises to stop a render no longer wanted). A
    preview has `preview_lines` rows and columns at most (see preview_of)."""
    check_view(G, view)
    full = view
    # a projection's file is read once, here: its ws decide how many images the view has
    extra = {"projected": load_projection(G, view)} if view.mode == "projection" else {}
    count, (full_rows, full_cols) = _count_and_size(G, full, **extra)
    if view.preview and generate.supports_any_scale(G):
        view = preview_of(G, view, count, preview_lines)
    _, (rows, cols) = _count_and_size(G, view, **extra)
    if count * rows * cols > MAX_PIXELS:
        raise StudioError(f"the view would be {count} images of {cols}x{rows} pixels, more than "
                          f"{MAX_PIXELS // 2**20} megapixels; choose a smaller size or fewer images")

    def pieces(ws: torch.Tensor, **where) -> np.ndarray:
        """uint8 NCHW images of ws: at the view's size, or at `where` (scale and region)."""
        if not where and generate.supports_any_scale(G):
            where = {"size": view.size}
        images = generate.render_tiles(G, ws, noise_mode=view.noise, tile=tile, max_pixels=max_pixels,
                                       before_each=before_each, **where)
        return images.transpose(0, 3, 1, 2)

    start = time.perf_counter()
    transform = view.translate != (0.0, 0.0) or view.rotate != 0.0
    with generate.transformed(G, view.translate, view.rotate) if transform else contextlib.nullcontext():
        image, info = _RENDERERS[view.mode](G, view, pieces, **extra)
    info.update(mode=view.mode, psi=view.psi, width=int(image.shape[1]), height=int(image.shape[0]),
                preview=view.preview, image_size=[rows, cols], ms=round((time.perf_counter() - start) * 1000, 1),
                full_size=[image.shape[1] // cols * full_cols, image.shape[0] // rows * full_rows])
    return image, info


def _seeds(G, view: View, pieces):
    seeds = [view.seed + i for i in range(view.grid[0] * view.grid[1])]
    images = pieces(_latents(G, seeds, view))
    return generate.image_grid(images, view.grid), {"seeds": seeds, "grid": list(view.grid)}


def _zoom(G, view: View, pieces):
    rows, cols = generate.output_size(G, scale=view.scale)
    region = view.region or (0, 0, rows, cols)
    images = pieces(_latents(G, [view.seed], view), scale=view.scale, region=region)
    return images[0].transpose(1, 2, 0), {"seeds": [view.seed], "scale": view.scale, "output": [rows, cols],
                                          "region": list(region)}


def _interp(G, view: View, pieces):
    ends = _latents(G, [view.seed, view.seed_to], view)
    images = pieces(generate.interpolate_ws(ends[:1], ends[1:], view.steps))
    return generate.image_grid(images, (view.steps, 1)), {"seeds": [view.seed, view.seed_to], "grid": [view.steps, 1]}


def _mix(G, view: View, pieces):
    rows_ws = _latents(G, view.row_seeds, view)
    cols_ws = _latents(G, view.col_seeds, view)
    nr, nc = len(view.row_seeds), len(view.col_seeds)
    mixed = [generate.mix_styles(rows_ws[i: i + 1], cols_ws[j: j + 1], view.layers)
             for i in range(nr) for j in range(nc)]
    images = pieces(torch.cat([cols_ws, rows_ws, *mixed]))
    cells = [np.zeros_like(images[:1]), images[:nc]]  # the published layout: a blank corner, column seeds on top
    for i in range(nr):  # each row: the row seed, then its mixes with every column seed
        cells += [images[nc + i: nc + i + 1], images[nc + nr + i * nc: nc + nr + (i + 1) * nc]]
    grid = (nc + 1, nr + 1)
    return generate.image_grid(np.concatenate(cells), grid), {
        "row_seeds": list(view.row_seeds), "col_seeds": list(view.col_seeds), "layers": list(view.layers),
        "grid": list(grid)}


def _projection(G, view: View, pieces, projected):
    ws, noise = projected
    with project.projected_noise(G, noise):  # what render_ws does: the file's noise maps for G's own
        images = pieces(ws.to(next(G.parameters()).device))
    return generate.image_grid(images, (len(ws), 1)), {"projection": view.projection_name, "grid": [len(ws), 1],
                                                      "noise_maps": len(noise)}


_RENDERERS = {"seeds": _seeds, "zoom": _zoom, "interp": _interp, "mix": _mix, "projection": _projection}


def network_info(G: torch.nn.Module) -> dict:
    """What the page needs to know of a network to offer the right controls."""
    return {
        "resolution": int(G.img_resolution), "channels": int(G.img_channels), "z_dim": int(G.z_dim),
        "c_dim": int(G.c_dim), "w_dim": int(G.w_dim), "num_ws": int(G.num_ws),
        "any_scale": generate.supports_any_scale(G), "transform": generate.supports_user_transform(G),
        "noise": generate.has_noise_inputs(G),
    }
