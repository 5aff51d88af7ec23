"""Take docs/studio.png: creps studio in headless Chromium, watching a run and exploring its
last snapshot, the two views one above the other.

  python -m creps demo --outdir=demo-runs              # a run to show (a few minutes on a CPU)
  python docs/studio_screenshot.py demo-runs/runs/00000-creps-shapes-32x32-gpus1-batch16-gamma0.5

Needs the studio and test extras (pip install -e ".[test]") and the system's Chromium.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import PIL.Image
import torch

from creps.studio.app import Studio, create_app
from creps.studio.paths import Sources

WIDTH, HEIGHT = 1280, 760
MAX_BYTES = 300 * 1024


def serve_in_thread(studio: Studio):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(studio), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory with snapshots")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "studio.png")
    p.add_argument("--seed", type=int, default=0, help="first seed of the grid shown")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium found (apt-get install chromium)")
    run = a.run.resolve()
    # The folder as a user would give it (the page shows it): relative to where this runs.
    studio = Studio(Sources([os.path.relpath(run.parent)]), torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    server, thread, url = serve_in_thread(studio)
    shots = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.click(f"[data-run='{run.name}']")
            page.locator("[data-chart='Loss'] polyline").first.wait_for()
            page.wait_for_function("() => { const g = document.querySelector('#grid-img');"
                                   " return g.complete && g.naturalWidth > 0; }")
            page.mouse.move(WIDTH - 600, 300)  # a crosshair on a chart
            time.sleep(0.5)
            shots.append(page.screenshot())
            page.locator(f"[data-run='{run.name}'] ~ .snaps [data-snapshot]").last.click()
            page.wait_for_function("() => document.querySelector('#view-img').dataset.kind === 'full'")
            page.fill("input[name=seed]", str(a.seed))
            page.fill("input[name=cols]", "5")
            page.fill("input[name=rows]", "3")
            size = int(page.locator("input[name=width]").get_attribute("placeholder")) * 3
            page.fill("input[name=width]", str(size))
            page.fill("input[name=height]", str(size))
            page.locator("input[name=psi]").fill("0.8")
            page.wait_for_function(f"() => {{ const d = document.querySelector('#view-img').dataset;"
                                   f" return d.kind === 'full' && d.width === '{5 * size}'; }}")
            time.sleep(0.3)
            shots.append(page.screenshot())
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
        studio.close()
    images = [PIL.Image.open(io.BytesIO(s)).convert("RGB") for s in shots]
    sheet = PIL.Image.new("RGB", (WIDTH, HEIGHT * len(images) + 4 * (len(images) - 1)), (60, 64, 70))
    for i, image in enumerate(images):
        sheet.paste(image, (0, i * (HEIGHT + 4)))
    sheet = sheet.quantize(colors=256, method=PIL.Image.Quantize.MEDIANCUT, dither=PIL.Image.Dither.NONE)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    if buf.tell() > MAX_BYTES:
        sys.exit(f"the screenshot is {buf.tell() // 1024} KB, more than {MAX_BYTES // 1024} KB")
    a.out.write_bytes(buf.getvalue())
    print(f"wrote {a.out} ({buf.tell() // 1024} KB, {sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
