"""The studio's web application (Starlette): the page, its static files, and a small API.

  GET /                   the page
  GET /static/<file>      its CSS and JavaScript
  GET /api/library        runs (with their snapshots), network files and projection files
                          (projected_w.npz) under the served paths
  GET /api/run            one run: options, progress, stats.jsonl from a byte offset on, metrics,
                          image grids, log tail (the page polls it to follow a training run)
  GET /api/file           an image of a run (fakes*.png, reals.png)
  GET /api/network        load a network (in the render thread) and describe it
  GET /api/render         a view of a network as PNG; what it shows in the X-Studio-View header
                          (mode=projection: the ws of the file proj_src, proj_path)

Files are named by (src, path): the index of a served PATH and a path under it. Errors are JSON
{"error": "..."} with a 4xx status, and the server keeps serving; a request replaced by a newer
one for the same view gets 409 {"superseded": true}.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import sys
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from creps.data.tool import png_bytes
from creps.studio import runs, views
from creps.studio.paths import NotFound, Sources, StudioError
from creps.studio.worker import NetworkCache, RenderWorker, Superseded

STATIC = Path(__file__).resolve().parent / "static"
VIEW_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
_REQUESTS = itertools.count()


class Studio:
    """What a server holds: the served paths, the render thread and the network cache.

    `tile`: pixels a side of the pieces a CREPS view renders in; `piece_pixels`: pixels of all
    images rendered in one call. Smaller pieces let a newer request stop an older render sooner.
    `load(source, device)` loads a network (load_snapshot; tests pass their own). Previews are
    timed, and the next ones of a network made small enough to render in `preview_seconds`
    (None: always about views.PREVIEW_SIDE pixels a side).
    """

    def __init__(self, sources: Sources, device: torch.device, cache_size: int = 3, tile: Optional[int] = None,
                 piece_pixels: Optional[int] = None, load: Optional[Callable] = None,
                 preview_seconds: Optional[float] = views.PREVIEW_SECONDS):
        cpu = device.type == "cpu"
        self.sources, self.device, self.preview_seconds = sources, device, preview_seconds
        self.tile = tile or (128 if cpu else 512)
        self.piece_pixels = piece_pixels or (self.tile * self.tile if cpu else 2**20)
        self.worker = RenderWorker()
        self.cache = NetworkCache(device, cache_size, load)
        self.preview_times: dict[str, deque[tuple[int, float]]] = {}  # network -> its last previews' (lines, s)

    def preview_lines(self, source: str) -> Optional[float]:
        """How many rows and columns (of all its images) a preview of this network may have, to
        render in `preview_seconds` (None until one has been timed)."""
        samples = self.preview_times.get(source)
        if not samples or self.preview_seconds is None:
            return None
        return views.lines_within(samples, self.preview_seconds)

    def network_info(self, source: str, check: Callable[[], None]) -> dict[str, Any]:
        snap = self.cache.get(source)
        G = snap.G_ema
        meta = snap.meta or {}
        kimg = meta.get("cur_nimg") / 1000 if isinstance(meta.get("cur_nimg"), (int, float)) else None
        return dict(views.network_info(G), name=Path(source).name, cfg=snap.preset,
                    kimg=kimg, device=str(self.device), notes=meta.get("notes"))

    def render(self, source: str, view: views.View, check: Callable[[], None]) -> tuple[bytes, dict]:
        G = self.cache.get(source).G_ema
        check()
        image, info = views.render_view(G, view, before_each=check, tile=self.tile, max_pixels=self.piece_pixels,
                                        preview_lines=self.preview_lines(source) if view.preview else None)
        check()
        if info["preview"] and info["ms"] > 0:
            rows, cols = info["image_size"]
            count = (image.shape[0] // rows) * (image.shape[1] // cols)
            self.preview_times.setdefault(source, deque(maxlen=8)).append((count * (rows + cols), info["ms"] / 1000))
        return png_bytes(image), info

    def close(self) -> None:
        self.worker.close()


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


def _network_source(studio: Studio, params: dict[str, str]) -> str:
    if "src" not in params:
        raise StudioError("name a network: src (and path)")
    return studio.sources.network_source(params["src"], params.get("path", ""))


def _view(studio: Studio, params: dict[str, str]) -> views.View:
    """The view a render request asks for; a projection's file goes through the served paths' checks."""
    view = views.parse_view(params)
    if view.mode != "projection":
        return view
    if "proj_src" not in params:
        raise StudioError("projection: pick a projection file (projected_w.npz): proj_src (and proj_path)")
    path = studio.sources.projection_file(params["proj_src"], params.get("proj_path", ""))
    return replace(view, projection=str(path), projection_name=params.get("proj_path") or path.name)


def _view_key(params: dict[str, str]) -> tuple[str, int]:
    """The view a request is for and its version; without one, a view of its own (nothing replaces it)."""
    view = params.get("view")
    if view is None:
        return f"request-{next(_REQUESTS)}", 0
    if not VIEW_NAME.match(view):
        raise StudioError("view: letters, digits and _.:- only, at most 80")
    try:
        seq = int(params.get("seq", "0"))
    except ValueError:
        raise StudioError(f"seq: expected a whole number, got {params.get('seq')!r}") from None
    return view, seq


def create_app(studio: Studio) -> Starlette:
    """The ASGI application serving `studio`."""

    def library(request: Request) -> JSONResponse:
        return JSONResponse(runs.library(studio.sources))

    def run(request: Request) -> JSONResponse:
        p = _params(request)
        try:
            stats_from = int(p.get("stats_from", "0"))
        except ValueError:
            raise StudioError("stats_from: expected a byte offset") from None
        return JSONResponse(runs.read_run(studio.sources, p.get("src"), p.get("path", ""), stats_from))

    def file(request: Request) -> Response:
        p = _params(request)
        path = studio.sources.resolve(p.get("src"), p.get("path", ""))
        media = runs.IMAGE_TYPES.get(path.suffix.lower())
        if media is None:
            raise StudioError(f"{p.get('path')}: the studio serves the images of a run only")
        if not path.is_file():
            raise NotFound(f"{p.get('path')}: no such file")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    async def network(request: Request) -> JSONResponse:
        p = _params(request)
        source = _network_source(studio, p)
        view, seq = _view_key(p)
        future = studio.worker.submit(view, "info", seq, lambda check: studio.network_info(source, check))
        info = await asyncio.wrap_future(future)
        return JSONResponse(dict(info, src=int(p["src"]), path=p.get("path", "")))

    async def render(request: Request) -> Response:
        p = _params(request)
        source = _network_source(studio, p)
        view_key, seq = _view_key(p)
        view = _view(studio, p)
        kind = "preview" if view.preview else "full"
        future = studio.worker.submit(view_key, kind, seq, lambda check: studio.render(source, view, check))
        png, info = await asyncio.wrap_future(future)
        return Response(png, media_type="image/png",
                        headers={"X-Studio-View": json.dumps(info), "Cache-Control": "no-store"})

    def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def studio_error(request: Request, err: StudioError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    async def superseded(request: Request, err: Superseded) -> JSONResponse:
        return JSONResponse({"superseded": True, "error": str(err)}, status_code=409)

    async def internal(request: Request, err: Exception) -> JSONResponse:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
        return JSONResponse({"error": f"internal error ({type(err).__name__}: {err}); the server goes on"},
                            status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        studio.close()

    routes = [
        Route("/", page),
        Route("/api/library", library),
        Route("/api/run", run),
        Route("/api/file", file),
        Route("/api/network", network),
        Route("/api/render", render),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={StudioError: studio_error, Superseded: superseded, Exception: internal})
