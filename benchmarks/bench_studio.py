"""creps studio latency: how long a view takes to come back as PNG, preview and full, per view
size, through the studio's own API (request -> render thread -> PNG), printed as one JSON line.

The network is a CREPS generator built from the same flags as train.py (full size by default,
random weights: the time does not depend on them). Each view is asked for as the page asks:
a preview (at most 64 pixels a side, smaller when the studio's timing of earlier previews says so;
`preview_sizes`) and the full render. `preview_during_full_ms` is the worst
case of the page: the view changes while a big full render runs, and the new preview waits
for that render to reach its next tile (it is stopped there).

  python benchmarks/bench_studio.py                       # CREPS 256x256, full size
  python benchmarks/bench_studio.py --sizes=256,512,1024 --zoom=512 --device=cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import add_device_options, device_from  # benchmarks/common.py
from creps.checkpoint import save_snapshot
from creps.config import DatasetInfo, TrainOptions, resolve
from creps.nets.registry import build


def snapshot_file(folder: Path, a: argparse.Namespace) -> tuple[Path, int]:
    options = TrainOptions(outdir="-", cfg="creps", data="-", gpus=1, batch=4, gamma=1, aug="noaug", cbase=a.cbase,
                           cmax=a.cmax, map_depth=a.map_depth, metrics=())
    info = DatasetInfo(path="-", name="random", resolution=a.res, channels=3, size=1000, has_labels=False,
                       label_dim=0)
    cfg = resolve(options, info)
    torch.manual_seed(0)
    G = build(cfg.G).eval()
    path = folder / "network-snapshot-000000.safetensors"
    save_snapshot(path, {"G_ema": G}, training=cfg)
    return path, sum(p.numel() for p in G.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--cbase", type=int, default=32768)
    p.add_argument("--cmax", type=int, default=512)
    p.add_argument("--map-depth", type=int, default=None)
    p.add_argument("--sizes", default="256,512", help="one image at each of these sizes (pixels a side)")
    p.add_argument("--grid", type=int, default=2, help="also a grid of GRIDxGRID images at the native size")
    p.add_argument("--zoom", type=int, default=512, help="also a zoom window of ZOOMxZOOM pixels at 4x")
    p.add_argument("--repeat", type=int, default=3, help="timed requests per view (the median is reported)")
    add_device_options(p)
    a = p.parse_args()
    device = device_from(a)
    try:
        import httpx

        from creps.studio.app import Studio, create_app
        from creps.studio.paths import Sources
    except ImportError as err:
        sys.exit(f'bench_studio.py needs the studio extra and httpx: pip install -e ".[test]" ({err})')

    with tempfile.TemporaryDirectory() as tmp:
        path, params = snapshot_file(Path(tmp), a)
        studio = Studio(Sources([tmp]), device)
        app = create_app(studio)
        sizes = [int(s) for s in a.sizes.split(",") if s]
        views = [(f"1 image {s}x{s}", {"width": s, "height": s}) for s in sizes]
        if a.grid > 1:
            views.append((f"{a.grid}x{a.grid} images {a.res}x{a.res}", {"cols": a.grid, "rows": a.grid}))
        if a.zoom:
            views.append((f"zoom window {a.zoom}x{a.zoom} at 4x", {
                "mode": "zoom", "scale": 4, "region": f"{a.res},{a.res},{a.zoom},{a.zoom}"}))

        async def measure():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://studio", timeout=3600) as client:
                sizes: list[str] = []  # WxH of each image of the last view asked for

                async def ask(params: dict) -> float:
                    t0 = time.perf_counter()
                    r = await client.get("/api/render", params={"src": 0, "path": path.name, **params})
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise SystemExit(f"render failed: {r.status_code} {r.text}")
                    rows_, cols_ = json.loads(r.headers["x-studio-view"])["image_size"]
                    sizes.append(f"{cols_}x{rows_}")
                    return elapsed * 1000

                await client.get("/api/network", params={"src": 0, "path": path.name})
                await ask({"kind": "preview"})  # warm-up
                await ask({})
                rows = []
                for name, params in views:
                    pixels = (a.grid * a.grid * a.res * a.res if "cols" in params else
                              params.get("width", a.zoom) * params.get("height", a.zoom))
                    preview = [await ask({**params, "seed": i, "kind": "preview"}) for i in range(a.repeat)]
                    preview_sizes = sizes[-a.repeat:]  # sized by the studio from its timing of earlier previews
                    full = [await ask({**params, "seed": i}) for i in range(a.repeat)]
                    rows.append({"view": name, "pixels": pixels, "preview_ms": round(statistics.median(preview), 1),
                                 "preview_sizes": preview_sizes, "full_ms": round(statistics.median(full), 1)})
                # the page's worst case: a new preview while a big full render of the same view runs
                big = views[-1][1]
                waits, stopped = [], 0
                for i in range(a.repeat):
                    base = {"src": 0, "path": path.name, "view": "bench", **big}
                    running = asyncio.ensure_future(client.get("/api/render", params={**base, "seq": 2 * i + 1,
                                                                                       "seed": 100 + i}))
                    while studio.worker.state()["running"] is None:
                        await asyncio.sleep(0.001)
                    await asyncio.sleep(0.2)  # well inside the full render
                    t0 = time.perf_counter()
                    r = await client.get("/api/render", params={**base, "seq": 2 * i + 2, "seed": 200 + i,
                                                                 "kind": "preview"})
                    waits.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise SystemExit(f"render failed: {r.status_code} {r.text}")
                    stopped += (await running).status_code == 409  # 200 when it had finished already
                return rows, round(statistics.median(waits), 1), stopped

        try:
            rows, during, stopped = asyncio.run(measure())
        finally:
            studio.close()
    print(json.dumps({
        "cfg": "creps", "res": a.res, "cbase": a.cbase, "cmax": a.cmax, "params": params,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "tile": studio.tile, "repeat": a.repeat, "views": rows, "preview_during_full_ms": during,
        "full_renders_stopped": f"{stopped}/{a.repeat}",
    }))


if __name__ == "__main__":
    main()
