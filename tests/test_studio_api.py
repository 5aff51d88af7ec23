"""creps studio through its HTTP API: what it lists and reads of run directories, what it renders
(compared with creps.generate), the files it refuses to serve, bad network files, and requests
that replace each other in the one render thread (a slow fake render, driven step by step)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("starlette", reason="the studio extra is not installed (pip install -e '.[studio]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from creps import generate  # noqa: E402
from creps.checkpoint import save_snapshot  # noqa: E402
from creps.cli.studio import studio as studio_cli  # noqa: E402
from creps.config import DatasetInfo, TrainOptions, resolve  # noqa: E402
from creps.project import render_ws, save_projected_w  # noqa: E402
from creps.studio import runs, views  # noqa: E402
from creps.studio.app import Studio, create_app  # noqa: E402
from creps.studio.paths import Forbidden, Sources  # noqa: E402
from creps.studio.worker import Superseded  # noqa: E402
from creps.train.step import build_networks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RES = 16


def tiny_config(cfg: str = "creps"):
    options = TrainOptions(outdir="-", cfg=cfg, data="-", gpus=1, batch=4, gamma=1, aug="noaug", cbase=256, cmax=16,
                           map_depth=1, mbstd_group=2, metrics=(), kimg=1.0)
    info = DatasetInfo(path="shapes.zip", name="shapes", resolution=RES, channels=3, size=32, has_labels=False,
                       label_dim=0)
    return resolve(options, info)


def write_snapshot(path: Path, cfg: str = "creps", kimg: int = 4, noise_strength: float = 0.0):
    """A snapshot of untrained tiny networks; StyleGAN2's noise inputs at `noise_strength` (0 untrained)."""
    config = tiny_config(cfg)
    torch.manual_seed(kimg)
    nets = build_networks(config, torch.device("cpu"))
    with torch.no_grad():
        for name, param in nets.G_ema.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(noise_strength)
    save_snapshot(path, {"G": nets.G, "D": nets.D, "G_ema": nets.G_ema}, training=config, meta={"cur_nimg": kimg * 1000})
    return nets.G_ema


def stats_line(tick: int, kimg: float, g_loss: float, timestamp: float) -> str:
    stat = lambda v: {"num": 4, "mean": v, "std": 0.1}  # noqa: E731
    return json.dumps({"Loss/G/loss": stat(g_loss), "Loss/D/loss": stat(1.5 - g_loss / 10),
                       "Progress/kimg": stat(kimg), "Progress/tick": stat(tick), "Timing/sec_per_kimg": stat(50.0),
                       "Timing/sec_per_tick": stat(0.2), "Timing/total_sec": stat(10.0 * (tick + 1)),
                       "timestamp": timestamp}) + "\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two folders: `runs` (a run with snapshots, stats, metrics, grids and log; a run with no
    snapshot yet; a StyleGAN2 snapshot in a subfolder; bad network files; projection files,
    good and bad) and `outside` (what must never be served)."""
    root = tmp_path_factory.mktemp("studio")
    runs_dir, outside = root / "runs", root / "outside"
    run = runs_dir / "00000-creps-shapes-gpus1-batch4-gamma1"
    run.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"not for the page")
    G = write_snapshot(run / "network-snapshot-000004.safetensors", kimg=4)
    write_snapshot(run / "network-snapshot-000000.safetensors", kimg=0)
    (run / "training_options.json").write_text(tiny_config().to_json())
    now = time.time()
    (run / "stats.jsonl").write_text("".join(stats_line(i, 0.004 * (i + 1), 0.5 + i, now) for i in range(3)))
    metric = {"results": {"fid50k_full": 123.5}, "metric": "fid50k_full", "total_time": 1.0,
              "snapshot_pkl": "network-snapshot-000004.safetensors", "timestamp": now}
    (run / "metric-fid50k_full.jsonl").write_text(json.dumps(metric) + "\n")
    grid = PIL.Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    for name in ("fakes_init.png", "fakes000004.png", "reals.png"):
        grid.save(run / name)
    (run / "log.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    empty = runs_dir / "00001-creps-shapes-gpus1-batch4-gamma1"  # a run that has not written a snapshot yet
    empty.mkdir()
    (empty / "training_options.json").write_text(tiny_config().to_json())
    (empty / "log.txt").write_text("Training for 1 kimg...\n")
    other = runs_dir / "more" / "nets"
    other.mkdir(parents=True)
    G_sg2 = write_snapshot(other / "sg2.safetensors", cfg="stylegan2", noise_strength=0.5)
    projections = write_projections(runs_dir / "projections", G, G_sg2)
    save_projected_w(outside / "projected_w.npz", projections["creps"][0])
    bad = runs_dir / "bad"
    bad.mkdir()
    good_bytes = (run / "network-snapshot-000004.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(good_bytes[: len(good_bytes) // 2])
    marker = root / "payload-ran"
    cmd = f"touch {shlex.quote(str(marker))}".encode()
    (bad / "payload.pkl").write_bytes(b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R.")
    (bad / "garbage.pkl").write_bytes(b"\x80\x04garbage")
    os.symlink(outside / "secret.png", run / "link-out.png")
    os.symlink(run / "fakes_init.png", run / "link-in.png")
    return {"root": root, "runs": runs_dir, "run": run, "empty": empty, "outside": outside, "marker": marker,
            "G": G, "G_sg2": G_sg2, "run_rel": run.name, "projections": projections}


def write_projections(folder: Path, G: torch.nn.Module, G_sg2: torch.nn.Module) -> dict:
    """projected_w.npz files as projector.py writes them: three ws for the CREPS network, two with
    noise maps for the StyleGAN2 one; and bad ones (not an npz, no 'w', shapes of another network)."""
    gen = torch.Generator().manual_seed(5)
    made = {}
    for name, net, count in (("creps", G, 3), ("sg2", G_sg2, 2)):
        z = torch.randn(count, net.z_dim, generator=gen)
        ws = generate.mapped_ws(net, z, None) + 0.1 * torch.randn(count, net.num_ws, net.w_dim, generator=gen)
        noise = {key: torch.randn(buf.shape, generator=gen) for key, buf in generate.noise_buffers(net).items()}
        (folder / name).mkdir(parents=True)
        save_projected_w(folder / name / "projected_w.npz", ws, noise)
        made[name] = (ws, noise)
    bad = folder / "bad"
    bad.mkdir()
    (bad / "text.npz").write_text("not an npz")
    np.savez(bad / "key.npz", latents=np.zeros((1, G.num_ws, G.w_dim), np.float32))
    np.savez(bad / "num_ws.npz", w=np.zeros((1, G.num_ws + 1, G.w_dim), np.float32))
    np.savez(bad / "w_dim.npz", w=np.zeros((1, G.num_ws, G.w_dim + 2), np.float32))
    return made


class Client:
    """Requests to the application in this process (one event loop per request)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.app = create_app(studio)

    async def aget(self, client: "httpx.AsyncClient", url: str, /, **params) -> "httpx.Response":
        return await client.get(url, params={k: str(v) for k, v in params.items()})

    def get(self, url: str, /, **params) -> "httpx.Response":
        async def go():
            async with self.session() as client:
                return await self.aget(client, url, **params)

        return asyncio.run(go())

    def raw(self, url: str) -> "httpx.Response":
        async def go():
            async with self.session() as client:
                return await client.get(url)

        return asyncio.run(go())

    def session(self) -> "httpx.AsyncClient":
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                                 base_url="http://studio")


@pytest.fixture(scope="module")
def client(served):
    studio = Studio(Sources([str(served["runs"])]), torch.device("cpu"), tile=8, preview_seconds=None)
    yield Client(studio)
    studio.close()


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(PIL.Image.open(io.BytesIO(response.content)).convert("RGB"))


def view_info(response) -> dict:
    return json.loads(response.headers["x-studio-view"])


# ---------------------------------------------------------------------------------------------
# The library and run directories


def test_library_lists_runs_snapshots_and_network_files(client, served):
    lib = client.get("/api/library").json()
    by_name = {r["name"]: r for r in lib["runs"]}
    assert set(by_name) == {served["run"].name, served["empty"].name}
    assert [s["kimg"] for s in by_name[served["run"].name]["snapshots"]] == [0, 4]
    assert by_name[served["run"].name]["path"] == served["run_rel"]
    assert by_name[served["empty"].name]["snapshots"] == []
    assert {n["path"] for n in lib["networks"]} == {"more/nets/sg2.safetensors", "bad/truncated.safetensors",
                                                     "bad/payload.pkl", "bad/garbage.pkl"}
    assert lib["sources"] == [{"src": 0, "given": str(served["runs"]), "kind": "dir"}]


def test_run_reads_stats_metrics_grids_log_and_progress(client, served):
    data = client.get("/api/run", src=0, path=served["run_rel"]).json()
    lines = (served["run"] / "stats.jsonl").read_text().splitlines()
    assert [t["values"]["Loss/G/loss"] for t in data["stats"]["ticks"]] == [json.loads(x)["Loss/G/loss"]["mean"]
                                                                            for x in lines]
    assert data["stats"]["next"] == (served["run"] / "stats.jsonl").stat().st_size
    assert data["metrics"] == {"fid50k_full": [{"kimg": 4, "value": 123.5,
                                                "snapshot": "network-snapshot-000004.safetensors"}]}
    assert [g["file"] for g in data["grids"]] == ["fakes_init.png", "fakes000004.png"]
    assert data["log"] == [f"line {i}" for i in range(60, 100)]
    assert data["options"]["cfg"] == "creps" and data["options"]["total_kimg"] == 1.0
    p = data["progress"]
    assert p["kimg"] == pytest.approx(0.012) and p["state"] == "training"
    assert p["sec_left"] == pytest.approx((1.0 - 0.012) * 50.0) and p["fraction"] == pytest.approx(0.012)


def test_run_follows_new_lines_only_when_complete(tmp_path):
    run = tmp_path / "00000-run"
    run.mkdir()
    stats = run / "stats.jsonl"
    stats.write_text(stats_line(0, 0.004, 1.0, time.time()))
    sources = Sources([str(tmp_path)])
    first = runs.read_run(sources, 0, run.name)
    assert len(first["stats"]["ticks"]) == 1
    line = stats_line(1, 0.008, 2.0, time.time())
    with open(stats, "a") as f:
        f.write(line[:20])  # the trainer is writing: half a line
    half = runs.read_run(sources, 0, run.name, first["stats"]["next"])
    assert half["stats"]["ticks"] == [] and half["stats"]["next"] == first["stats"]["next"]
    with open(stats, "a") as f:
        f.write(line[20:])
    rest = runs.read_run(sources, 0, run.name, half["stats"]["next"])
    assert [t["values"]["Loss/G/loss"] for t in rest["stats"]["ticks"]] == [2.0]
    stats.write_text(stats_line(0, 0.004, 7.0, time.time()))  # a new run in the same place: shorter file
    again = runs.read_run(sources, 0, run.name, rest["stats"]["next"])
    assert again["stats"]["restarted"] and [t["values"]["Loss/G/loss"] for t in again["stats"]["ticks"]] == [7.0]


def test_progress_of_a_finished_and_a_stopped_run():
    options = {"total_kimg": 10}
    last = {"t": 1000.0, "values": {"Progress/kimg": 4.0, "Timing/sec_per_kimg": 3.0, "Timing/sec_per_tick": 5.0}}
    assert runs.progress(options, last, [], now=1010.0)["state"] == "training"
    assert runs.progress(options, last, [], now=1010.0)["sec_left"] == pytest.approx(18.0)
    assert runs.progress(options, last, [], now=5000.0)["state"] == "stopped"
    assert runs.progress(options, last, ["tick 3", "Exiting..."], now=1010.0)["state"] == "finished"


# ---------------------------------------------------------------------------------------------
# Serving only what was given


def test_files_of_a_run_are_served(client, served):
    image = png(client.get("/api/file", src=0, path=f"{served['run_rel']}/fakes_init.png"))
    assert image.shape == (32, 32, 3) and (image == 200).all()
    assert client.get("/api/file", src=0, path=f"{served['run_rel']}/link-in.png").status_code == 200


@pytest.mark.parametrize("path", [
    "../outside/secret.png",
    "00000-creps-shapes-gpus1-batch4-gamma1/../../outside/secret.png",
    "{outside}/secret.png",  # absolute
    "00000-creps-shapes-gpus1-batch4-gamma1/link-out.png",  # a symbolic link out of the folder
])
def test_paths_outside_the_served_folders_are_refused(client, served, path):
    path = path.format(outside=served["outside"])
    for endpoint in ("/api/file", "/api/run", "/api/network", "/api/render"):
        response = client.get(endpoint, src=0, path=path)
        assert response.status_code == 403, (endpoint, response.text)
        assert "outside the paths this studio serves" in response.json()["error"]


def test_url_encoded_traversal_is_refused(client):
    response = client.raw("/api/file?src=0&path=%2e%2e%2foutside%2fsecret.png")
    assert response.status_code == 403 and "outside" in response.json()["error"]
    response = client.raw("/api/file?src=0&path=..%252foutside%252fsecret.png")  # double encoded: a plain name
    assert response.status_code in (400, 404)
    assert client.raw("/static/%2e%2e/app.py").status_code == 404
    assert client.raw("/static/..%2f..%2fpaths.py").status_code == 404


def test_only_images_are_served_and_sources_are_checked(client, served):
    response = client.get("/api/file", src=0, path=f"{served['run_rel']}/training_options.json")
    assert response.status_code == 400 and "images of a run only" in response.json()["error"]
    assert client.get("/api/file", src=5, path="x.png").status_code == 404
    assert client.get("/api/file", src="zero", path="x.png").status_code == 400
    assert client.get("/api/file", src=0, path=f"{served['run_rel']}/missing.png").status_code == 404


def test_sources_resolve(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.png").write_bytes(b"x")
    net = tmp_path / "n.safetensors"
    net.write_bytes(b"x")
    sources = Sources([str(tmp_path / "a"), str(net), "https://example.org/nets/x.pkl"])
    assert sources.resolve(0, "f.png") == (tmp_path / "a" / "f.png").resolve()
    assert sources.network_source(1) == str(net.resolve())
    assert sources.network_source(2) == "https://example.org/nets/x.pkl"
    for src, rel in ((0, "../n.safetensors"), (0, "a\x00b"), (1, "anything")):
        with pytest.raises(Forbidden):
            sources.resolve(src, rel)
    from creps.errors import UserError

    with pytest.raises(UserError, match="no such file or directory"):
        Sources([str(tmp_path / "missing")])


# ---------------------------------------------------------------------------------------------
# Networks and renders


def snapshot_rel(served, kimg=4) -> str:
    return f"{served['run_rel']}/network-snapshot-{kimg:06d}.safetensors"


def test_network_info(client, served):
    info = client.get("/api/network", src=0, path=snapshot_rel(served)).json()
    assert info["cfg"] == "creps" and info["resolution"] == RES and info["kimg"] == 4.0
    assert info["any_scale"] is True and info["transform"] is False and info["noise"] is False
    assert info["num_ws"] == served["G"].num_ws and info["c_dim"] == 0
    sg2 = client.get("/api/network", src=0, path="more/nets/sg2.safetensors").json()
    assert sg2["cfg"] == "stylegan2" and sg2["any_scale"] is False and sg2["noise"] is True


def test_seed_grid_is_what_generate_renders(client, served):
    G = served["G"]
    response = client.get("/api/render", src=0, path=snapshot_rel(served), mode="seeds", seed=7, cols=3, rows=2,
                          psi=0.7)
    image = png(response)
    assert image.shape == (2 * RES, 3 * RES, 3)
    info = view_info(response)
    assert info["seeds"] == [7, 8, 9, 10, 11, 12] and info["preview"] is False
    for i, seed in enumerate(info["seeds"]):
        want = generate.to_uint8(generate.render(G, generate.z_from_seed(seed, G.z_dim), None, truncation_psi=0.7))[0]
        r, c = divmod(i, 3)
        got = image[r * RES:(r + 1) * RES, c * RES:(c + 1) * RES]
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_truncation_changes_the_image(client, served):
    a = png(client.get("/api/render", src=0, path=snapshot_rel(served), seed=3, psi=1))
    b = png(client.get("/api/render", src=0, path=snapshot_rel(served), seed=3, psi=0.2))
    c = png(client.get("/api/render", src=0, path=snapshot_rel(served), seed=3, psi=0.2, cutoff=2))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1 and not np.array_equal(b, c)


def test_creps_preview_and_any_size(client, served):
    path = snapshot_rel(served)
    full = client.get("/api/render", src=0, path=path, seed=1, cols=2, rows=1, width=200, height=100)
    assert png(full).shape == (100, 400, 3) and view_info(full)["image_size"] == [100, 200]
    preview = client.get("/api/render", src=0, path=path, seed=1, cols=2, rows=1, width=200, height=100,
                         kind="preview")
    info = view_info(preview)
    assert png(preview).shape == (32, 128, 3) and info["preview"] is True
    assert info["image_size"] == [32, 64] and info["full_size"] == [400, 100]


def test_creps_zoom_renders_just_the_window_at_the_scale(client, served):
    G = served["G"]
    response = client.get("/api/render", src=0, path=snapshot_rel(served), mode="zoom", seed=2, scale=3.5,
                          region="10,20,24,16")
    image = png(response)
    info = view_info(response)
    assert image.shape == (24, 16, 3) and info["scale"] == 3.5 and info["output"] == [56, 56]
    assert info["region"] == [10, 20, 24, 16]
    whole = generate.to_uint8(generate.render(G, generate.z_from_seed(2, G.z_dim), None, scale=3.5))[0]
    assert np.abs(image.astype(int) - whole[10:34, 20:36].astype(int)).max() <= 1
    preview = client.get("/api/render", src=0, path=snapshot_rel(served), mode="zoom", seed=2, scale=40,
                         region="100,200,256,128", kind="preview")
    pinfo = view_info(preview)
    assert pinfo["scale"] == pytest.approx(40 / 4) and pinfo["region"] == [25, 50, 64, 32]
    assert png(preview).shape == (64, 32, 3) and pinfo["full_size"] == [128, 256]


def test_preview_factor_keeps_a_preview_within_its_line_budget():
    assert views.preview_factor(256, 256) == 64 / 256  # no budget: PREVIEW_SIDE a side
    assert views.preview_factor(40, 30) == 1.0  # already small
    k = views.preview_factor(256, 256, count=6, lines=480)
    assert 6 * 2 * 256 * k == pytest.approx(480) and k < 64 / 256  # 6 images of 40x40
    assert views.preview_factor(256, 256, count=6, lines=10) == views.MIN_PREVIEW_SIDE / 256  # the floor
    assert views.preview_factor(256, 256, lines=1e9) == 64 / 256  # a fast network: the usual side


def test_lines_within_fits_what_every_render_costs_and_what_each_line_does():
    assert views.lines_within([(128, 0.25)], 0.2) == pytest.approx(102.4)  # one size: the plain rate
    # 0.11 s whatever the size, plus 1.09 ms a line: 82 lines fit in 0.2 s
    assert views.lines_within([(128, 0.25), (64, 0.18), (96, 0.215)], 0.2) == pytest.approx(82.3, abs=0.1)
    assert views.lines_within([(128, 0.25), (64, 0.18)], 0.1) == 0  # even the fixed cost is over the budget
    assert views.lines_within([(128, 0.2), (64, 0.25)], 0.2) == pytest.approx(0.2 * 192 / 0.45)  # noise: the rate


def test_previews_get_smaller_when_the_network_renders_them_slowly(served):
    """The studio times each preview of a network; the next ones are sized to render in
    preview_seconds at that pace (a slow network or machine: coarser previews, sooner)."""
    studio = Studio(Sources([str(served["runs"])]), torch.device("cpu"), tile=8)
    client = Client(studio)
    try:
        params = dict(src=0, path=snapshot_rel(served), seed=1, cols=3, rows=2, width=200, height=200, kind="preview")
        first = client.get("/api/render", **params)
        assert view_info(first)["image_size"] == [64, 64]  # not timed yet: PREVIEW_SIDE a side
        (source,) = studio.preview_times
        assert list(studio.preview_times[source])[0][0] == 6 * 128  # six images, 64 rows and 64 columns each
        studio.preview_times[source] = deque([(6 * 80, studio.preview_seconds)])  # as if 6 images of 40x40 took that
        slow = client.get("/api/render", **params)
        assert view_info(slow)["image_size"] == [40, 40] and png(slow).shape == (80, 120, 3)
        assert len(studio.preview_times[source]) == 2  # timed again
    finally:
        studio.close()


def test_interpolation_and_style_mixing(client, served):
    G = served["G"]
    path = snapshot_rel(served)
    strip = png(client.get("/api/render", src=0, path=path, mode="interp", seed=4, seed_to=9, steps=4))
    assert strip.shape == (RES, 4 * RES, 3)
    for seed, cell in ((4, strip[:, :RES]), (9, strip[:, -RES:])):
        want = generate.to_uint8(generate.render(G, generate.z_from_seed(seed, G.z_dim), None))[0]
        assert np.abs(cell.astype(int) - want.astype(int)).max() <= 1
    mix = client.get("/api/render", src=0, path=path, mode="mix", row_seeds="1,2", col_seeds="3-5", layers="")
    grid = png(mix)
    assert grid.shape == (3 * RES, 4 * RES, 3) and view_info(mix)["grid"] == [4, 3]
    assert (grid[:RES, :RES] == 0).all()  # the blank corner
    cell = lambda r, c: grid[r * RES:(r + 1) * RES, c * RES:(c + 1) * RES].astype(int)  # noqa: E731
    assert np.abs(cell(1, 0) - cell(1, 2)).max() <= 1  # no layers taken: every mix is its row seed
    mixed = png(client.get("/api/render", src=0, path=path, mode="mix", row_seeds="1,2", col_seeds="3-5",
                           layers=f"0-{G.num_ws - 1}"))
    cellm = lambda r, c: mixed[r * RES:(r + 1) * RES, c * RES:(c + 1) * RES].astype(int)  # noqa: E731
    assert np.abs(cellm(2, 3) - cellm(0, 3)).max() <= 1  # every layer taken: the column seed


def projection_rel(name: str) -> str:
    return f"projections/{name}/projected_w.npz"


def cells(image: np.ndarray, count: int, side: tuple[int, int]) -> list[np.ndarray]:
    """The images of a row grid, left to right."""
    rows, cols = side
    assert image.shape == (rows, count * cols, 3)
    return [image[:, i * cols:(i + 1) * cols] for i in range(count)]


def test_library_lists_projection_files(client, served):
    lib = client.get("/api/library").json()
    assert {p["path"] for p in lib["projections"]} == {
        projection_rel("creps"), projection_rel("sg2"), "projections/bad/text.npz", "projections/bad/key.npz",
        "projections/bad/num_ws.npz", "projections/bad/w_dim.npz"}
    assert all(p["src"] == 0 and p["name"] == p["path"] for p in lib["projections"])
    assert not any(n["path"].endswith(".npz") for n in lib["networks"])


def test_a_projection_file_given_by_itself_is_listed(served):
    npz = served["root"] / "runs" / projection_rel("creps")
    sources = Sources([str(npz), str(served["run"] / "network-snapshot-000004.safetensors")])
    lib = runs.library(sources)
    assert lib["projections"] == [{"src": 0, "path": "", "name": "projected_w.npz"}]
    assert lib["networks"] == [{"src": 1, "path": "", "name": "network-snapshot-000004.safetensors"}]
    studio = Studio(sources, torch.device("cpu"), tile=8)
    try:
        image = png(Client(studio).get("/api/render", src=1, mode="projection", proj_src=0))
        ws, noise = served["projections"]["creps"]
        want = generate.to_uint8(render_ws(served["G"], ws[1:2], noise))[0]
        assert np.array_equal(cells(image, 3, (RES, RES))[1], want)
    finally:
        studio.close()


def test_projection_is_what_render_ws_renders(client, served):
    G = served["G"]
    ws, noise = served["projections"]["creps"]
    response = client.get("/api/render", src=0, path=snapshot_rel(served), mode="projection", proj_src=0,
                          proj_path=projection_rel("creps"), psi=0.3)  # truncation does not apply
    info = view_info(response)
    assert info["mode"] == "projection" and info["grid"] == [3, 1] and info["projection"] == projection_rel("creps")
    assert info["noise_maps"] == 0  # CREPS has no noise inputs
    for i, got in enumerate(cells(png(response), 3, (RES, RES))):
        assert np.array_equal(got, generate.to_uint8(render_ws(G, ws[i:i + 1], noise))[0]), i


def test_creps_projection_at_another_output_size(client, served):
    G = served["G"]
    ws, noise = served["projections"]["creps"]
    params = dict(src=0, path=snapshot_rel(served), mode="projection", proj_src=0, proj_path=projection_rel("creps"),
                  width=40, height=24)
    response = client.get("/api/render", **params)
    assert view_info(response)["image_size"] == [24, 40]
    for i, got in enumerate(cells(png(response), 3, (24, 40))):  # in tiles of 8: a rounding step apart at most
        want = generate.to_uint8(render_ws(G, ws[i:i + 1], noise, size=(24, 40)))[0]
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, i
    preview = client.get("/api/render", **params, kind="preview")
    assert view_info(preview)["preview"] is True and view_info(preview)["full_size"] == [3 * 40, 24]


def test_stylegan2_projection_uses_the_files_noise_maps(client, served):
    G = served["G_sg2"]
    ws, noise = served["projections"]["sg2"]
    response = client.get("/api/render", src=0, path="more/nets/sg2.safetensors", mode="projection", proj_src=0,
                          proj_path=projection_rel("sg2"))
    assert view_info(response)["noise_maps"] == len(generate.noise_buffers(G)) > 0
    for i, got in enumerate(cells(png(response), 2, (RES, RES))):
        assert np.array_equal(got, generate.to_uint8(render_ws(G, ws[i:i + 1], noise))[0]), i
        own_noise = generate.to_uint8(render_ws(G, ws[i:i + 1]))[0]  # the network's stored maps instead
        assert np.abs(got.astype(int) - own_noise.astype(int)).mean() > 1, i


@pytest.mark.parametrize("proj_path, status, words", [
    ("projections/bad/text.npz", 422, "projections/bad/text.npz: not a readable .npz file"),
    ("projections/bad/key.npz", 422, "projections/bad/key.npz: has no array 'w'"),
    ("projections/bad/num_ws.npz", 422, "this network needs floats of shape [N, {num_ws}, {w_dim}]"),
    ("projections/bad/w_dim.npz", 422, "this network needs floats of shape [N, {num_ws}, {w_dim}]"),
    (projection_rel("sg2"), 422, "project into this network first"),  # another network's ws
    ("../outside/projected_w.npz", 403, "outside the paths this studio serves"),
    ("projections/missing.npz", 404, "no such projection file"),
    ("00000-creps-shapes-gpus1-batch4-gamma1/network-snapshot-000004.safetensors", 400, "not a projection file"),
    (None, 400, "pick a projection file"),
])
def test_bad_projection_files_are_errors_and_the_server_goes_on(client, served, proj_path, status, words):
    G = served["G"]
    params = {"src": 0, "path": snapshot_rel(served), "mode": "projection", "proj_src": 0}
    if proj_path is None:
        del params["proj_src"]
    else:
        params["proj_path"] = proj_path
    response = client.get("/api/render", **params)
    error = response.json()["error"]
    assert response.status_code == status and words.format(num_ws=G.num_ws, w_dim=G.w_dim) in error, error
    assert "\n" not in error and "Traceback" not in error
    good = client.get("/api/render", **dict(params, proj_src=0, proj_path=projection_rel("creps")))
    assert good.status_code == 200


@pytest.mark.parametrize("params, words", [
    ({"mode": "zoom", "path": "more/nets/sg2.safetensors"}, "zoom and pan need a CREPS network"),
    ({"width": 64, "height": 64, "path": "more/nets/sg2.safetensors"}, "only CREPS networks render at another"),
    ({"tx": 0.2}, "translate and rotate need a StyleGAN3 network"),
    ({"cutoff": 99}, "cutoff: 99 is out of range"),
    ({"mode": "zoom", "scale": 2, "region": "30,0,8,8"}, "is not inside the 32x32 output"),
    ({"mode": "warp"}, "mode: choose one of"),
    ({"psi": "abc"}, "psi: expected a number"),
    ({"cols": 8, "rows": 8, "width": 8192, "height": 8192}, "megapixels"),
    ({"layers": "x-y", "mode": "mix"}, "layers: expected layer numbers"),
    ({"kind": "huge"}, "kind: choose full or preview"),
    ({"seed": 2**32 - 1, "cols": 2}, "runs past the last seed"),
])
def test_bad_views_are_json_errors(client, served, params, words):
    params = {"src": 0, "path": snapshot_rel(served), **params}
    response = client.get("/api/render", **params)
    assert response.status_code == 400 and words in response.json()["error"], response.text


@pytest.mark.parametrize("path, words", [
    ("bad/truncated.safetensors", "not a creps network snapshot"),
    ("bad/payload.pkl", "os.system"),
    ("bad/garbage.pkl", "garbage.pkl"),
    ("00001-creps-shapes-gpus1-batch4-gamma1/network-snapshot-000000.safetensors", "no such network file"),
    ("00001-creps-shapes-gpus1-batch4-gamma1", "no such network file"),
])
def test_bad_network_files_are_errors_and_the_server_goes_on(client, served, path, words):
    for endpoint in ("/api/network", "/api/render"):
        response = client.get(endpoint, src=0, path=path)
        assert response.status_code in (404, 422), response.text
        error = response.json()["error"]
        assert words in error and "\n" not in error, error
    assert not served["marker"].exists()  # the payload never ran
    assert client.get("/api/render", src=0, path=snapshot_rel(served)).status_code == 200


def test_an_unexpected_failure_is_a_500_and_the_server_goes_on(served):
    class Broken(Studio):
        def render(self, source, view, check):
            if view.seed == 13:
                raise RuntimeError("a bug")
            return super().render(source, view, check)

    studio = Broken(Sources([str(served["runs"])]), torch.device("cpu"))
    try:
        c = Client(studio)
        response = c.get("/api/render", src=0, path=snapshot_rel(served), seed=13)
        assert response.status_code == 500 and "RuntimeError: a bug" in response.json()["error"]
        assert c.get("/api/render", src=0, path=snapshot_rel(served), seed=1).status_code == 200
    finally:
        studio.close()


def test_network_cache_is_bounded_and_sees_rewritten_files(tmp_path):
    loads = []
    for i in range(4):
        write_snapshot(tmp_path / f"n{i}.safetensors", kimg=i)
    studio = Studio(Sources([str(tmp_path)]), torch.device("cpu"), cache_size=2,
                    load=lambda source, device: loads.append(Path(source).name) or _load(source, device))
    try:
        c = Client(studio)
        for name in ("n0", "n1", "n0", "n2", "n3", "n0"):
            assert c.get("/api/network", src=0, path=f"{name}.safetensors").status_code == 200
        assert loads == ["n0.safetensors", "n1.safetensors", "n2.safetensors", "n3.safetensors", "n0.safetensors"]
        assert len(studio.cache) == 2
        write_snapshot(tmp_path / "n0.safetensors", kimg=9)  # rewritten: loaded again
        assert c.get("/api/network", src=0, path="n0.safetensors").json()["kimg"] == 9.0
        assert loads[-1] == "n0.safetensors" and len(loads) == 6
    finally:
        studio.close()


def _load(source, device):
    from creps.checkpoint import load_snapshot

    return load_snapshot(source, device=device, networks=("G_ema",))


# ---------------------------------------------------------------------------------------------
# One render thread: newer requests replace older ones, nothing piles up, the loop stays free


class SlowStudio(Studio):
    """Renders nothing: each render waits until the test lets it go, checking (as the tiled
    render does between tiles) whether a newer request replaced it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gates: dict[int, threading.Event] = {}
        self.rendered: list[int] = []

    def render(self, source, view, check):
        gate = self.gates.setdefault(view.seed, threading.Event())
        assert gate.wait(30), "the test never released this render"
        check()
        self.rendered.append(view.seed)
        return b"\x89PNG fake", {"seed": view.seed}


async def until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_newer_requests_replace_pending_ones_and_the_loop_stays_free(served):
    studio = SlowStudio(Sources([str(served["runs"])]), torch.device("cpu"))
    c = Client(studio)
    worker = studio.worker
    base = {"src": 0, "path": snapshot_rel(served), "view": "page1:main"}

    async def scenario():
        async with c.session() as s:
            get = lambda **p: asyncio.ensure_future(c.aget(s, "/api/render", **{**base, **p}))  # noqa: E731
            a = get(seq=1, seed=101)
            await until(lambda: worker.state()["running"] == ("page1:main", "full", 1), "A to start")
            b = get(seq=2, seed=102)
            await until(lambda: ("page1:main", "full", 2) in worker.state()["pending"], "B to wait")
            # while A renders, the page and the run API answer at once
            t0 = time.monotonic()
            assert (await c.aget(s, "/api/library")).status_code == 200
            assert (await c.aget(s, "/api/run", src=0, path=served["run_rel"])).status_code == 200
            assert time.monotonic() - t0 < 5
            c3 = get(seq=3, seed=103)
            rb = await b  # replaced while it waited: never rendered
            assert rb.status_code == 409 and rb.json()["superseded"] is True
            stale = await c.aget(s, "/api/render", **{**base, "seq": 2, "seed": 104})  # older than what waits
            assert stale.status_code == 409
            other = get(seq=1, seed=105, view="page2:main")  # another view is not touched
            studio.gates.setdefault(101, threading.Event()).set()
            ra = await a  # A was running when B came: it stops at its next check
            assert ra.status_code == 409
            for seed in (103, 105):
                studio.gates.setdefault(seed, threading.Event()).set()
            rc, ro = await c3, await other
            assert rc.status_code == 200 and json.loads(rc.headers["x-studio-view"]) == {"seed": 103}
            assert ro.status_code == 200

    try:
        asyncio.run(scenario())
        assert studio.rendered == [103, 105]
        assert [seq for view, kind, seq in worker.ran if view == "page1:main"] == [1, 3]
    finally:
        for gate in studio.gates.values():
            gate.set()
        studio.close()


def test_previews_go_first_and_a_newer_preview_stops_an_older_full_render(served):
    studio = SlowStudio(Sources([str(served["runs"])]), torch.device("cpu"))
    c = Client(studio)
    worker = studio.worker
    base = {"src": 0, "path": snapshot_rel(served), "view": "v"}

    async def scenario():
        async with c.session() as s:
            get = lambda **p: asyncio.ensure_future(c.aget(s, "/api/render", **{**base, **p}))  # noqa: E731
            blocker = get(seq=1, seed=201, view="other")
            await until(lambda: worker.state()["running"] is not None, "the blocker to start")
            full = get(seq=5, seed=202)
            await until(lambda: len(worker.state()["pending"]) == 1, "the full render to wait")
            preview = get(seq=5, seed=203, kind="preview")
            await until(lambda: len(worker.state()["pending"]) == 2, "the preview to wait")
            for seed in (201, 202, 203):
                studio.gates.setdefault(seed, threading.Event()).set()
            assert (await blocker).status_code == 200
            assert (await preview).status_code == 200 and (await full).status_code == 200
            assert studio.rendered == [201, 203, 202]  # the preview jumped the queue
            studio.rendered.clear()
            for seed in (301, 302):
                studio.gates.pop(seed, None)
            full6 = get(seq=6, seed=301)
            await until(lambda: worker.state()["running"] == ("v", "full", 6), "the full render to start")
            preview7 = get(seq=7, seed=302, kind="preview")  # the view changed: the full render is stale
            await until(lambda: ("v", "preview", 7) in worker.state()["pending"], "the preview to wait")
            studio.gates.setdefault(301, threading.Event()).set()
            studio.gates.setdefault(302, threading.Event()).set()
            assert (await full6).status_code == 409 and (await preview7).status_code == 200
            assert studio.rendered == [302]

    try:
        asyncio.run(scenario())
    finally:
        for gate in studio.gates.values():
            gate.set()
        studio.close()


def test_superseded_is_what_a_stopped_render_raises(served):
    studio = Studio(Sources([str(served["runs"])]), torch.device("cpu"))
    try:
        future = studio.worker.submit("x", "full", 1, lambda check: (time.sleep(0.2), check(), "done")[-1])
        time.sleep(0.05)
        studio.worker.submit("x", "full", 2, lambda check: "newer")
        with pytest.raises(Superseded):
            future.result(10)
    finally:
        studio.close()


# ---------------------------------------------------------------------------------------------
# The command


def run_creps(*args, timeout=60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "creps", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def test_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert studio_cli([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file or directory" in err and err.count("\n") == 1
    assert studio_cli(["--port", "70000"]) == 2
    assert "--port=70000" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    assert studio_cli([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == 'error: the studio needs Starlette and uvicorn: pip install -e ".[studio]"\n'


def test_command_warns_for_another_host(tmp_path, capsys, monkeypatch):
    pytest.importorskip("uvicorn")
    calls = []
    monkeypatch.setattr("creps.studio.server.serve", lambda *a, **k: calls.append((a, k)))
    assert studio_cli([str(tmp_path), "--host", "0.0.0.0", "--port", "0", "--device", "cpu"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert calls and calls[0][1]["host"] == "0.0.0.0"
    assert studio_cli([str(tmp_path), "--port", "0", "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err and calls[1][1]["host"] == "127.0.0.1"


def test_command_serves_until_stopped(served):
    pytest.importorskip("uvicorn")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "creps", "studio", str(served["runs"]), "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("creps studio: serving ") and "rendering on cpu" in lines[0]
        assert lines[1].startswith("open http://127.0.0.1:")
        address = lines[1].split()[1]
        page = httpx.get(address, timeout=30)
        assert page.status_code == 200 and "creps studio" in page.text
        assert httpx.get(address + "static/app.js", timeout=30).status_code == 200
        assert httpx.get(address + "api/library", timeout=30).json()["runs"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # uvicorn shuts down in order, then ends by the signal it got (as servers do)
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err, err
