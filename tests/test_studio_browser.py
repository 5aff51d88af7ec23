"""creps studio in a real browser (headless Chromium driven by Playwright) on a tiny CREPS run
trained here: the page lists the run, charts its numbers and follows it live, renders its
snapshot (truncation, zoom at a new scale, a projection file) and shows the error of a bad file.

Needs the `playwright` package and the system's Chromium (Debian: apt-get install chromium;
`make test` installs it when run as root). Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("starlette", reason="the studio extra is not installed (pip install -e '.[studio]')")
pytest.importorskip("uvicorn", reason="the studio extra is not installed (pip install -e '.[studio]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

from creps import generate  # noqa: E402
from creps.checkpoint import load_snapshot  # noqa: E402
from creps.cli.train import train  # noqa: E402
from creps.data.synthetic import make_synthetic_dataset  # noqa: E402
from creps.project import render_ws, save_projected_w  # noqa: E402
from creps.studio.app import Studio, create_app  # noqa: E402
from creps.studio.paths import Sources  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser")
TINY = ["--cfg=creps", "--gpus=1", "--batch=4", "--gamma=1", "--cbase=256", "--cmax=32", "--map-depth=1",
        "--mbstd-group=2", "--aug=noaug", "--metrics=none", "--workers=1", "--grid=2x2", "--snap=1"]
TIMEOUT_MS = 20_000
RES = 16  # the run's resolution: small, so that it trains in seconds


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no system Chromium (apt-get install chromium, or run `make test` as root, which installs it)")


@pytest.fixture(scope="session")
def studio_run(tmp_path_factory) -> dict:
    """A tiny CREPS run trained once per session (2 ticks, a snapshot each), next to a copy that
    the live-follow test may append to, a folder of bad files, and a projection file of two ws
    for the run's first snapshot."""
    root = tmp_path_factory.mktemp("studio-e2e")
    data = make_synthetic_dataset(str(root / "shapes.zip"), num_images=16, resolution=RES, seed=0)
    outdir = root / "runs"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = train([f"--outdir={outdir}", f"--data={data}", *TINY, "--kimg=0.008", "--tick=0.004"])
    assert code == 0, err.getvalue()
    run = next(p for p in outdir.iterdir() if p.is_dir())
    live = root / "live"
    shutil.copytree(run, live / run.name)
    bad = root / "bad"
    bad.mkdir()
    snapshot = run / "network-snapshot-000000.safetensors"
    (bad / "truncated.safetensors").write_bytes(snapshot.read_bytes()[:5000])
    (bad / "00000-no-snapshot-yet").mkdir()
    (bad / "00000-no-snapshot-yet" / "log.txt").write_text("Training for 1 kimg...\n")
    G = load_snapshot(snapshot, networks=("G_ema",)).G_ema
    ws = generate.mapped_ws(G, torch.cat([generate.z_from_seed(s, G.z_dim) for s in (5, 6)]), None)
    projected = root / "projected" / "projected_w.npz"
    projected.parent.mkdir()
    save_projected_w(projected, ws)
    return {"outdir": outdir, "run": run, "live": live / run.name, "bad": bad, "snapshot": snapshot,
            "projected": projected, "projected_ws": ws}


@pytest.fixture(scope="module")
def server(studio_run):
    """The studio on a free port of this machine, in a thread of this process."""
    import uvicorn

    studio = Studio(Sources([str(studio_run["outdir"]), str(studio_run["bad"]), str(studio_run["live"].parent),
                             str(studio_run["projected"].parent)]), torch.device("cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(studio), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the studio server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)
    studio.close()


@pytest.fixture(scope="module")
def browser(server):
    path = chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server + "?poll=250")
    yield page
    page.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def stats_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def shown_image(page) -> np.ndarray:
    """The pixels of the image on screen, as the server sent them."""
    data = page.evaluate("""async () => {
        const blob = await (await fetch(document.querySelector('#view-img').src)).arrayBuffer();
        return Array.from(new Uint8Array(blob));
    }""")
    return np.asarray(PIL.Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def wait_full(page, after_seq: int = 0, mode: str = "") -> dict:
    """Wait for a full render newer than `after_seq` (and of `mode`, if given: a change event that
    changed nothing still asks for a render, which may arrive after the wait); its data-* attributes."""
    page.wait_for_function("([s, m]) => { const d = document.querySelector('#view-img').dataset;"
                           " return d.kind === 'full' && Number(d.seq) > s && (!m || d.mode === m); }",
                           arg=[after_seq, mode])
    return page.eval_on_selector("#view-img", "img => ({...img.dataset, natural: [img.naturalWidth, img.naturalHeight]})")


def open_snapshot(page, studio_run) -> dict:
    page.click(f"[data-run='{studio_run['run'].name}'] ~ .snaps [data-snapshot]")
    return wait_full(page)


def test_page_lists_runs_and_their_snapshots(page, studio_run):
    run = page.locator(f"[data-run='{studio_run['run'].name}']").first
    run.wait_for()
    assert run.inner_text() == studio_run["run"].name
    chips = page.locator(f"[data-run='{studio_run['run'].name}'] ~ .snaps [data-snapshot]")
    assert chips.first.inner_text() == "0 kimg"
    assert chips.first.get_attribute("data-snapshot") == "network-snapshot-000000.safetensors"
    empty = page.locator("li", has=page.locator("[data-run='00000-no-snapshot-yet']"))
    assert "no snapshot yet" in empty.inner_text()
    assert page.locator("[data-network='truncated.safetensors']").count() == 1


def test_loss_chart_shows_the_runs_numbers(page, studio_run):
    page.click(f"[data-run='{studio_run['run'].name}']")
    lines = stats_lines(studio_run["run"] / "stats.jsonl")
    for name in ("Loss/G/loss", "Loss/D/loss"):
        value = page.locator(f"[data-chart='Loss'] .legend-value[data-series='{name}']")
        value.wait_for()
        assert float(value.get_attribute("data-value")) == lines[-1][name]["mean"]
        assert float(value.inner_text()) == pytest.approx(lines[-1][name]["mean"], rel=1e-3)
        line = page.locator(f"[data-chart='Loss'] polyline[data-series='{name}']")
        assert int(line.get_attribute("data-count")) == len(lines) == 2
    assert page.locator("#run-state").inner_text() == "finished"
    assert page.locator("#grid-img").evaluate("img => img.complete && img.naturalWidth") == 2 * RES
    assert "Exiting..." in page.locator("#log").inner_text()


def test_live_run_is_followed_without_reloading(page, studio_run):
    stats = studio_run["live"] / "stats.jsonl"
    page.click(f"[data-run='{studio_run['live'].name}'] >> nth=-1")
    count = page.locator("[data-chart='Loss'] polyline[data-series='Loss/G/loss']")
    count.wait_for()
    before = int(count.get_attribute("data-count"))
    page.evaluate("window.__same_page = true")
    last = stats_lines(stats)[-1]
    last["Loss/G/loss"] = dict(last["Loss/G/loss"], mean=9.875)
    last["Progress/kimg"] = dict(last["Progress/kimg"], mean=last["Progress/kimg"]["mean"] + 0.004)
    last["timestamp"] = time.time()
    with open(stats, "a") as f:
        f.write(json.dumps(last) + "\n")
    page.wait_for_function("() => { const v = document.querySelector("
                           "\"[data-chart='Loss'] .legend-value[data-series='Loss/G/loss']\");"
                           " return v && v.dataset.value === '9.875'; }")
    assert int(count.get_attribute("data-count")) == before + 1
    assert page.evaluate("window.__same_page") is True


def test_truncation_slider_changes_the_image(page, studio_run):
    first = open_snapshot(page, studio_run)
    assert first["psi"] == "1" and first["natural"] == [3 * RES, 2 * RES]
    before = shown_image(page)
    page.locator("input[name=psi]").fill("0.2")
    after_info = wait_full(page, int(first["seq"]))
    assert after_info["psi"] == "0.2"
    after = shown_image(page)
    assert after.shape == before.shape and np.abs(after.astype(int) - before.astype(int)).mean() > 1
    G = load_snapshot(studio_run["snapshot"], networks=("G_ema",)).G_ema
    want = generate.to_uint8(generate.render(G, generate.z_from_seed(0, G.z_dim), None, truncation_psi=0.2))[0]
    assert np.abs(after[:RES, :RES].astype(int) - want.astype(int)).max() <= 1


def test_creps_zoom_renders_the_window_at_the_new_scale(page, studio_run):
    first = open_snapshot(page, studio_run)
    page.add_style_tag(content="#stage.zoom { width: 256px; height: 192px; }")  # a small window renders fast
    page.check("input[name=mode][value=zoom]")
    fit = wait_full(page, int(first["seq"]), mode="zoom")
    assert fit["mode"] == "zoom"
    scale = float(fit["scale"])
    page.evaluate("""() => {  // every image the page shows, in order
        window.__shown = [];
        new MutationObserver(() => { const d = document.querySelector('#view-img').dataset;
                                     window.__shown.push([d.kind, Number(d.seq), d.scale]); })
            .observe(document.querySelector('#view-img'), { attributes: true, attributeFilter: ['data-seq'] });
    }""")
    page.click("#zoom-in")
    page.click("#zoom-in")
    zoomed = wait_full(page, int(fit["seq"]))
    assert float(zoomed["scale"]) == pytest.approx(scale * 1.25 ** 2)
    shown = page.evaluate("window.__shown")
    last = [entry for entry in shown if entry[1] == int(zoomed["seq"])]
    assert [kind for kind, _, _ in last] == ["preview", "full"], shown  # a preview first, then the full view
    assert float(last[0][2]) < float(last[1][2])  # the preview: the same window at a lower scale
    top, left, height, width = (int(v) for v in zoomed["region"].split(","))
    stage = page.locator("#stage").evaluate("s => [s.clientWidth, s.clientHeight]")
    size = int(RES * float(zoomed["scale"]))
    assert (width, height) == (min(stage[0], size), min(stage[1], size))  # just the visible window
    assert zoomed["natural"] == [width, height] and size > max(stage)
    G = load_snapshot(studio_run["snapshot"], networks=("G_ema",)).G_ema
    want = generate.to_uint8(generate.render(G, generate.z_from_seed(0, G.z_dim), None, scale=float(zoomed["scale"]),
                                             region=(top, left, height, width)))[0]
    assert np.abs(shown_image(page).astype(int) - want.astype(int)).max() <= 1
    assert page.locator("#zoom-scale").inner_text().endswith("×")
    page.add_style_tag(content="#stage.zoom { width: 160px; }")  # the window changes size: rendered again
    resized = wait_full(page, int(zoomed["seq"]), mode="zoom")
    stage = page.locator("#stage").evaluate("s => [s.clientWidth, s.clientHeight]")
    assert stage[0] < width and resized["natural"] == [stage[0], min(stage[1], size)]
    assert float(resized["scale"]) == float(zoomed["scale"])


def test_bad_snapshot_shows_its_error_and_the_studio_goes_on(page, studio_run):
    page.click("[data-network='truncated.safetensors']")
    error = page.locator("#net-error")
    error.wait_for(state="visible")
    assert "truncated.safetensors" in error.inner_text() and "not a creps network snapshot" in error.inner_text()
    assert page.locator("#view-img").is_hidden()
    open_snapshot(page, studio_run)
    assert error.is_hidden()


def test_projection_mode_renders_the_picked_file(page, studio_run):
    first = open_snapshot(page, studio_run)
    entry = page.locator("#projections [data-projection='projected_w.npz']")
    assert entry.inner_text() == "projected_w.npz"
    page.check("input[name=mode][value=projection]")
    page.select_option("select[name=projection]", "3:projected_w.npz")  # source 3, the projections folder
    shown = wait_full(page, int(first["seq"]))
    assert shown["mode"] == "projection" and shown["projection"] == "projected_w.npz"
    assert shown["natural"] == [2 * RES, RES]  # the file's two ws in a row
    assert "zoom and pan are for seeds" in page.locator("#projection-note").inner_text()
    assert page.locator("input[name=psi]").is_hidden()  # truncation does not apply to stored ws
    assert "active" in entry.get_attribute("class")
    G = load_snapshot(studio_run["snapshot"], networks=("G_ema",)).G_ema
    image = shown_image(page)
    for i in range(2):
        want = generate.to_uint8(render_ws(G, studio_run["projected_ws"][i:i + 1]))[0]
        assert np.array_equal(image[:, i * RES:(i + 1) * RES], want), i
    page.check("input[name=mode][value=seeds]")
    seeds = wait_full(page, int(shown["seq"]), mode="seeds")
    assert seeds["mode"] == "seeds" and "active" not in entry.get_attribute("class")
    entry.click()  # picked on the left: the Projection mode again
    again = wait_full(page, int(seeds["seq"]), mode="projection")
    assert again["mode"] == "projection" and again["natural"] == [2 * RES, RES]
    assert page.locator("input[name=mode][value=projection]").is_checked()
