"use strict";
// creps studio page: the library on the left, "Explore network" (renders through the server's
// render thread) and "Watch run" (polls the run directory) on the right. Everything the files
// hold is shown as text, never as markup.

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

const POLL_MS = Number(new URLSearchParams(location.search).get("poll")) || 2000;
const LIBRARY_MS = 10000;
const CLIENT = Math.random().toString(36).slice(2, 10); // this page's views on the server
const PREVIEW_SIDE = 64; // pixels a side of a preview (the server's views.PREVIEW_SIDE)
const form = $("#controls");

// ---------------------------------------------------------------------------------------------
// Talking to the server

class ApiError extends Error {
  constructor(message, status, superseded) {
    super(message);
    this.status = status;
    this.superseded = superseded;
  }
}

async function api(path, params) {
  let response;
  try {
    response = await fetch(`${path}?${new URLSearchParams(params)}`);
  } catch (err) {
    serverState(false);
    throw new ApiError("the studio server does not answer (stopped?)", 0, false);
  }
  serverState(true);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new ApiError(body.error || `HTTP ${response.status}`, response.status, !!body.superseded);
  return body;
}

function serverState(up) {
  const node = $("#server-state");
  node.textContent = up ? "connected" : "disconnected";
  node.classList.toggle("down", !up);
}

function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

function text(tag, content, className) {
  const node = document.createElement(tag);
  if (content !== undefined) node.textContent = content;
  if (className) node.className = className;
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.round(seconds);
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// ---------------------------------------------------------------------------------------------
// Tabs, and what the address remembers (#run=SRC:PATH&net=SRC:PATH)

function showTab(name) {
  for (const tab of $$(".tabs button")) tab.setAttribute("aria-selected", String(tab.dataset.panel === name));
  $("#panel-explore").hidden = name !== "explore";
  $("#panel-watch").hidden = name !== "watch";
  if (name === "watch") for (const chart of watch.charts.values()) chart.draw();
}
for (const tab of $$(".tabs button")) tab.addEventListener("click", () => showTab(tab.dataset.panel));

function remember() {
  const parts = [];
  if (watch.run) parts.push(`run=${encodeURIComponent(`${watch.run.src}:${watch.run.path}`)}`);
  if (ex.net) parts.push(`net=${encodeURIComponent(`${ex.net.src}:${ex.net.path}`)}`);
  history.replaceState(null, "", `${location.pathname}${location.search}${parts.length ? "#" + parts.join("&") : ""}`);
}

function recalled() {
  const out = {};
  for (const [key, value] of new URLSearchParams(location.hash.slice(1))) {
    const i = value.indexOf(":");
    if (i > 0) out[key] = { src: Number(value.slice(0, i)), path: value.slice(i + 1) };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The library (left)

let library = null;

async function loadLibrary() {
  try {
    library = await api("/api/library", {});
  } catch (err) {
    return;
  }
  drawLibrary();
}

function drawLibrary() {
  const runs = $("#runs"), nets = $("#networks"), projs = $("#projections");
  runs.textContent = "";
  nets.textContent = "";
  projs.textContent = "";
  for (const run of library.runs) {
    const li = document.createElement("li");
    const button = text("button", run.name, "item");
    button.dataset.run = run.path;
    button.title = run.path || run.name;
    button.classList.toggle("active", !!watch.run && watch.run.src === run.src && watch.run.path === run.path);
    button.addEventListener("click", () => { openRun(run); showTab("watch"); });
    li.appendChild(button);
    const snaps = text("div", undefined, "snaps");
    for (const snap of run.snapshots) snaps.appendChild(snapshotChip(run, snap));
    if (!run.snapshots.length) snaps.appendChild(text("span", "no snapshot yet", "muted small"));
    li.appendChild(snaps);
    runs.appendChild(li);
  }
  for (const net of library.networks) {
    const li = document.createElement("li");
    const button = text("button", net.name, "item");
    button.dataset.network = net.path;
    button.title = net.path || net.name;
    button.classList.toggle("active", !!ex.net && ex.net.src === net.src && ex.net.path === net.path);
    button.addEventListener("click", () => { openNetwork(net.src, net.path, net.name); showTab("explore"); });
    li.appendChild(button);
    nets.appendChild(li);
  }
  const chosen = modeName() === "projection" ? projectionValue() : "";
  for (const proj of library.projections) {
    const li = document.createElement("li");
    const button = text("button", proj.name, "item");
    button.dataset.projection = proj.path;
    button.title = proj.path || proj.name;
    button.classList.toggle("active", chosen === `${proj.src}:${proj.path}`);
    button.addEventListener("click", () => pickProjection(proj));
    li.appendChild(button);
    projs.appendChild(li);
  }
  projectionOptions();
  $("#no-runs").hidden = library.runs.length > 0;
  $("#no-networks").hidden = library.networks.length > 0;
  $("#no-projections").hidden = library.projections.length > 0;
  $("#sources").textContent = `Serving ${library.sources.map((s) => s.given).join(", ")}`;
}

// The projection files (projected_w.npz) in the Projection mode's list, as "SRC:PATH"; the
// chosen one stays chosen while it is listed.
function projectionOptions() {
  const select = form.elements.projection;
  const keep = select.value;
  select.textContent = "";
  for (const proj of library.projections) {
    select.appendChild(new Option(proj.path || proj.name, `${proj.src}:${proj.path}`));
  }
  if (library.projections.some((proj) => `${proj.src}:${proj.path}` === keep)) select.value = keep;
}

function projectionValue() {
  return form.elements.projection.value;
}

// A projection picked on the left: the Projection mode shows it with the open network.
function pickProjection(proj) {
  form.elements.projection.value = `${proj.src}:${proj.path}`;
  form.elements.mode.value = "projection";
  showMode();
  drawLibrary();
  showTab("explore");
  if (ex.info) render(true);
  else if (!ex.net) {
    $("#explore-empty").textContent =
      `Pick the network to render ${proj.path || proj.name} with: a snapshot of a run, or a network file, on the left.`;
  }
}

function snapshotChip(run, snap) {
  const path = run.path ? `${run.path}/${snap.file}` : snap.file;
  const chip = text("button", `${snap.kimg} kimg`, "chip");
  chip.dataset.snapshot = snap.file;
  chip.title = snap.file;
  chip.classList.toggle("active", !!ex.net && ex.net.src === run.src && ex.net.path === path);
  chip.addEventListener("click", () => {
    openNetwork(run.src, path, `${run.name} · ${snap.kimg} kimg`);
    if (!watch.run || watch.run.path !== run.path || watch.run.src !== run.src) openRun(run);
    showTab("explore");
  });
  return chip;
}

// ---------------------------------------------------------------------------------------------
// Watch a run

const CHART_GROUPS = [
  { title: "Loss", stats: ["Loss/G/loss", "Loss/D/loss"] },
  { title: "Scores", stats: ["Loss/scores/real", "Loss/scores/fake"] },
  { title: "Regularisers", stats: ["Loss/r1_penalty", "Loss/pl_penalty"] },
  { title: "Augment p", stats: ["Progress/augment"] },
  { title: "Speed (s/kimg)", stats: ["Timing/sec_per_kimg"] },
  { title: "Memory (GB)", stats: ["Resources/peak_gpu_mem_gb", "Resources/peak_gpu_mem_reserved_gb", "Resources/peak_cpu_mem_gb"] },
];

const watch = { run: null, next: 0, ticks: [], present: new Set(), metrics: "", timer: null, token: 0,
                charts: new Map(), added: [], gridCount: 0, gridFollow: true };

function shortName(stat) {
  const parts = stat.split("/");
  return parts.length > 1 ? parts.slice(1).join(" ") : stat;
}

function openRun(run) {
  watch.run = { src: run.src, path: run.path, name: run.name };
  watch.next = 0;
  watch.ticks = [];
  watch.present = new Set();
  watch.metrics = "";
  watch.token += 1;
  const select = $("#add-chart");
  while (select.options.length > 1) select.remove(1);
  watch.gridCount = 0;
  watch.gridFollow = true;
  for (const chart of watch.charts.values()) chart.root.remove();
  watch.charts.clear();
  $("#watch-empty").hidden = true;
  $("#watch").hidden = false;
  $("#run-name").textContent = run.name;
  $("#where").textContent = run.path || run.name;
  showError($("#run-error"), "");
  clearTimeout(watch.timer);
  remember();
  if (library) drawLibrary();
  pollRun();
}

async function pollRun() {
  const token = watch.token;
  const run = watch.run;
  try {
    const data = await api("/api/run", { src: run.src, path: run.path, stats_from: watch.next });
    if (token !== watch.token) return;
    if (data.stats.restarted) watch.ticks = [];
    watch.ticks.push(...data.stats.ticks);
    for (const tick of data.stats.ticks) for (const name of Object.keys(tick.values)) watch.present.add(name);
    watch.next = data.stats.next;
    showError($("#run-error"), "");
    drawRun(data);
  } catch (err) {
    if (token !== watch.token) return;
    showError($("#run-error"), err.message);
  }
  watch.timer = setTimeout(pollRun, POLL_MS);
}

function xOf(tick, index) {
  const kimg = tick.values["Progress/kimg"];
  return kimg === undefined ? index : kimg;
}

function chartFor(key, title, removable) {
  let chart = watch.charts.get(key);
  if (!chart) {
    chart = new Charts.LineChart(title, removable ? {
      onClose: () => {
        chart.root.remove();
        watch.charts.delete(key);
        watch.added = watch.added.filter((name) => `stat:${name}` !== key);
      },
    } : {});
    watch.charts.set(key, chart);
    $("#charts").appendChild(chart.root);
  }
  return chart;
}

function statSeries(stats) {
  return stats.map((name) => ({
    name, label: shortName(name),
    points: watch.ticks.flatMap((tick, i) => (name in tick.values ? [[xOf(tick, i), tick.values[name]]] : [])),
  })).filter((s) => s.points.length);
}

function drawRun(data) {
  const metrics = JSON.stringify(data.metrics);
  if (data.stats.ticks.length || data.stats.restarted || metrics !== watch.metrics || !watch.charts.size) {
    watch.metrics = metrics;  // the charts change only when there is something new
    for (const group of CHART_GROUPS) {
      const series = statSeries(group.stats);
      if (series.length) chartFor(`group:${group.title}`, group.title).setData(series);
    }
    for (const [key, points] of Object.entries(data.metrics)) {
      const series = [{ name: key, label: key, points: points.filter((p) => p.kimg !== null).map((p) => [p.kimg, p.value]) }];
      chartFor(`metric:${key}`, `Metric ${key}`).setData(series);
    }
    for (const name of watch.added) chartFor(`stat:${name}`, name, true).setData(statSeries([name]));
    const select = $("#add-chart");
    const known = new Set(Array.from(select.options).map((o) => o.value));
    for (const name of Array.from(watch.present).sort()) {
      if (!known.has(name)) select.appendChild(new Option(name, name));
    }
  }

  const p = data.progress;
  const state = $("#run-state");
  state.textContent = p.state;
  state.className = `badge ${p.state}`;
  $("#progress-bar").style.width = `${Math.min(100, 100 * (p.fraction || 0))}%`;
  const bits = [];
  if (p.kimg !== null) bits.push(`kimg ${Charts.fmt(p.kimg)}${p.total_kimg ? ` of ${p.total_kimg}` : ""}`);
  if (p.sec_per_kimg) bits.push(`${Charts.fmt(p.sec_per_kimg)} s/kimg`);
  if (p.elapsed_sec !== null && p.elapsed_sec !== undefined) bits.push(`elapsed ${duration(p.elapsed_sec)}`);
  if (p.sec_left !== null && p.sec_left !== undefined) bits.push(`${duration(p.sec_left)} left`);
  if (p.updated) bits.push(`last tick ${new Date(p.updated * 1000).toLocaleTimeString()}`);
  $("#progress-text").textContent = bits.join(" · ") || "no tick yet";

  const opts = $("#run-options");
  opts.textContent = "";
  const o = data.options;
  for (const [label, value] of [["cfg", o.cfg], ["res", o.resolution], ["batch", o.batch], ["gpus", o.gpus], ["gamma", o.gamma]]) {
    if (value !== null && value !== undefined) opts.appendChild(text("span", `${label} ${value}`, "badge"));
  }

  const chips = $("#snapshot-chips");
  chips.textContent = "";
  for (const snap of data.snapshots) chips.appendChild(snapshotChip(data, snap));
  if (!data.snapshots.length) chips.appendChild(text("span", "no snapshot yet", "muted small"));

  const pick = $("#grid-pick");
  const grids = data.grids;
  watch.grids = grids;
  pick.max = Math.max(0, grids.length - 1);
  pick.disabled = grids.length < 2;
  if (watch.gridFollow || grids.length !== watch.gridCount && Number(pick.value) >= grids.length) pick.value = pick.max;
  watch.gridCount = grids.length;
  showGrid(watch.ticks.length);

  const log = $("#log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = data.log.join("\n");
  if (atBottom) log.scrollTop = log.scrollHeight;

  if (library) {  // new snapshots appear in the sidebar as well
    const entry = library.runs.find((r) => r.src === data.src && r.path === data.path);
    if (entry && entry.snapshots.length !== data.snapshots.length) {
      entry.snapshots = data.snapshots;
      drawLibrary();
    }
  }
}

function showGrid(version) {
  const grids = watch.grids || [];
  const img = $("#grid-img");
  const grid = grids[Number($("#grid-pick").value)];
  if (!grid) {
    img.removeAttribute("src");
    $("#grid-label").textContent = "none yet";
    return;
  }
  const path = watch.run.path ? `${watch.run.path}/${grid.file}` : grid.file;
  const src = `/api/file?${new URLSearchParams({ src: watch.run.src, path, v: version })}`;
  if (img.getAttribute("src") !== src) img.src = src;
  $("#grid-label").textContent = grid.kimg === null ? "at start" : `at ${grid.kimg} kimg`;
}

$("#grid-pick").addEventListener("input", (e) => {
  watch.gridFollow = Number(e.target.value) === Number(e.target.max);
  showGrid(watch.ticks.length);
});

$("#add-chart").addEventListener("change", (e) => {
  const name = e.target.value;
  e.target.value = "";
  if (!name || watch.added.includes(name)) return;
  watch.added.push(name);
  chartFor(`stat:${name}`, name, true).setData(statSeries([name]));
});

// ---------------------------------------------------------------------------------------------
// Explore a network

const ex = { net: null, info: null, netSeq: 0, seq: 0, shown: { seq: -1, kind: "" }, url: null, blob: null,
             zoom: { scale: 1, cx: 0.5, cy: 0.5 }, lens: { k: 1, tx: 0, ty: 0 }, fullTimer: null, frame: 0,
             busy: false, dirty: false };
const img = $("#view-img");
const stage = $("#stage");

async function openNetwork(src, path, label) {
  ex.net = { src, path, label };
  ex.info = null;
  const seq = ++ex.netSeq;
  remember();
  if (library) drawLibrary();
  $("#explore-empty").hidden = true;
  $("#explore").hidden = false;
  $("#net-name").textContent = label || path;
  $("#net-badges").textContent = "";
  showError($("#net-error"), "");
  showError($("#render-error"), "");
  $("#render-status").textContent = "loading the network…";
  form.hidden = true;
  stage.hidden = true;
  img.removeAttribute("src");  // the last network's image does not stay
  ex.shown = { seq: ex.seq, kind: "full" };  // what is still on its way for the last one is not shown
  $("#save-png").disabled = true;
  let info;
  try {
    info = await api("/api/network", { src, path, view: `${CLIENT}:net`, seq });
  } catch (err) {
    if (err.superseded || seq !== ex.netSeq) return;
    showError($("#net-error"), err.message);
    $("#render-status").textContent = "";
    return;
  }
  if (seq !== ex.netSeq) return;
  ex.info = info;
  setUpControls(info);
  form.hidden = false;
  stage.hidden = false;
  fitZoom();
  render(true);
}

function setUpControls(info) {
  const badges = $("#net-badges");
  const add = (label, on) => badges.appendChild(text("span", label, on ? "badge on" : "badge"));
  if (info.cfg) add(info.cfg, false);
  add(`${info.resolution}×${info.resolution}`, false);
  if (info.kimg !== null && info.kimg !== undefined) add(`${Charts.fmt(info.kimg)} kimg`, false);
  if (info.any_scale) add("any scale", true);
  if (info.transform) add("translate / rotate", true);
  if (info.noise) add("noise inputs", true);
  if (info.c_dim) add(`${info.c_dim} classes`, true);
  add(info.device, false);

  const needs = { any_scale: info.any_scale, transform: info.transform, noise: info.noise, conditional: info.c_dim > 0 };
  for (const node of $$("[data-needs]", form)) node.hidden = !needs[node.dataset.needs];
  const classes = form.elements.class;
  classes.textContent = "";
  for (let i = 0; i < info.c_dim; i++) classes.appendChild(new Option(String(i), String(i)));
  form.elements.cutoff.max = info.num_ws;
  form.elements.layers.placeholder = `e.g. 0-${Math.max(0, Math.floor(info.num_ws / 2) - 1)} (of 0-${info.num_ws - 1})`;
  if (!info.any_scale && modeName() === "zoom") form.elements.mode.value = "seeds";
  form.elements.width.value = "";
  form.elements.height.value = "";
  form.elements.width.placeholder = form.elements.height.placeholder = String(info.resolution);
  const chips = $("#size-chips");
  chips.textContent = "";
  for (const k of [0.5, 1, 2, 4]) {
    const chip = text("button", `${k}× (${Math.round(info.resolution * k)})`, "chip");
    chip.type = "button";
    chip.addEventListener("click", () => {
      form.elements.width.value = form.elements.height.value = String(Math.round(info.resolution * k));
      render(true);
    });
    chips.appendChild(chip);
  }
  showMode();
}

function modeName() {
  return form.elements.mode.value;
}

function showMode() {
  const mode = modeName();
  for (const node of $$("fieldset[data-mode]", form)) {
    const needs = node.dataset.needs;
    const allowed = !needs || (needs === "any_scale" && ex.info && ex.info.any_scale) ||
      (needs === "transform" && ex.info && ex.info.transform);
    node.hidden = !allowed || !node.dataset.mode.split(" ").includes(mode);
  }
  stage.classList.toggle("zoom", mode === "zoom");
  resetLens();
}

// The parameters of the view on screen.
function viewParams() {
  const f = form.elements;
  const mode = modeName();
  const p = { src: ex.net.src, path: ex.net.path, view: `${CLIENT}:main`, mode, psi: f.psi.value, noise: f.noise.value };
  if (f.cutoff.value !== "") p.cutoff = f.cutoff.value;
  if (ex.info.c_dim) p.class = f.class.value || "0";
  if (ex.info.transform) Object.assign(p, { tx: f.tx.value, ty: f.ty.value, rotate: f.rotate.value });
  if (ex.info.any_scale && mode !== "zoom" && f.width.value && f.height.value) Object.assign(p, { width: f.width.value, height: f.height.value });
  if (mode === "seeds") Object.assign(p, { seed: f.seed.value || "0", cols: f.cols.value || "1", rows: f.rows.value || "1" });
  if (mode === "interp") Object.assign(p, { seed: f.seed_a.value || "0", seed_to: f.seed_to.value || "1", steps: f.steps.value || "5" });
  if (mode === "mix") Object.assign(p, { row_seeds: f.row_seeds.value, col_seeds: f.col_seeds.value, layers: f.layers.value });
  if (mode === "projection" && projectionValue()) {
    const value = projectionValue(), i = value.indexOf(":");
    Object.assign(p, { proj_src: value.slice(0, i), proj_path: value.slice(i + 1) });
  }
  if (mode === "zoom") {
    const g = zoomGeometry();
    ex.zoomStage = `${g.vw}x${g.vh}`;
    Object.assign(p, { seed: f.seed.value || "0", scale: String(ex.zoom.scale), region: `${g.top},${g.left},${g.h},${g.w}` });
  }
  return p;
}

// A new view: CREPS networks get a quick preview first (the same view, about 64 pixels a side),
// then the full render unless `full` is false (while a slider moves); the server drops what a
// newer request makes stale.
function render(full) {
  if (!ex.info) return Promise.resolve();
  if (full) {  // this one is complete: what was scheduled is older
    cancelAnimationFrame(ex.frame);
    ex.frame = 0;
    ex.dirty = false;
    clearTimeout(ex.fullTimer);
  }
  const seq = ++ex.seq;
  const params = viewParams();
  const preview = ex.info.any_scale && largestSide(params) > PREVIEW_SIDE;
  const ask = (kind) => fetchView({ ...params, seq, kind }).catch(() => {});
  if (!preview) return ask("full");
  // the full render is asked for once the preview is there (so it never overtakes it), unless
  // the view has changed meanwhile
  return ask("preview").then(() => (full && seq === ex.seq ? ask("full") : undefined));
}

// Pixels a side of the view's largest image (a zoom: its window): a preview of a view this small
// would be the view itself.
function largestSide(params) {
  if (params.mode === "zoom") return Math.max(...params.region.split(",").slice(2).map(Number));
  return params.width ? Math.max(Number(params.width), Number(params.height)) : ex.info.resolution;
}

// While something moves: one request at a time (the latest state is sent when it returns), at
// most one per animation frame.
function renderSoon() {
  if (ex.busy) { ex.dirty = true; return; }
  if (ex.frame) return;
  ex.frame = requestAnimationFrame(() => {
    ex.frame = 0;
    ex.busy = true;
    render(false).finally(() => {
      ex.busy = false;
      if (ex.dirty) { ex.dirty = false; renderSoon(); }
    });
  });
}

function renderFullLater(ms = 250) {
  clearTimeout(ex.fullTimer);
  ex.fullTimer = setTimeout(() => render(true), ms);
}

async function fetchView(params) {
  const { seq, kind } = params;
  const status = $("#render-status");
  if (kind === "full") {
    status.textContent = img.getAttribute("src") ? `${status.textContent.replace(/ · rendering.*$/, "")} · rendering…` : "rendering…";
  }
  let response;
  try {
    response = await fetch(`/api/render?${new URLSearchParams(params)}`);
  } catch (err) {
    serverState(false);
    showError($("#render-error"), "the studio server does not answer (stopped?)");
    return;
  }
  serverState(true);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    if (response.status === 409 || seq !== ex.seq) return;  // replaced by a newer view
    showError($("#render-error"), body.error || `HTTP ${response.status}`);
    status.textContent = "";
    return;
  }
  const info = JSON.parse(response.headers.get("X-Studio-View") || "{}");
  const blob = await response.blob();
  if (seq < ex.shown.seq || (seq === ex.shown.seq && ex.shown.kind === "full")) return;  // older than what is on screen
  ex.shown = { seq, kind };
  showError($("#render-error"), "");
  if (ex.url) URL.revokeObjectURL(ex.url);
  ex.url = URL.createObjectURL(blob);
  ex.blob = blob;
  ex.shownInfo = info;
  await new Promise((resolve) => {
    img.onload = img.onerror = resolve;
    img.src = ex.url;
  });
  placeImage(info, kind);
  img.classList.toggle("preview", kind === "preview");
  Object.assign(img.dataset, { kind, mode: info.mode, seq: String(seq), width: String(info.width), height: String(info.height),
                               psi: String(info.psi), scale: info.scale === undefined ? "" : String(info.scale),
                               region: info.region ? info.region.join(",") : "", projection: info.projection || "" });
  $("#save-png").disabled = false;
  const bits = [`${info.width}×${info.height}`, kind === "preview" ? "preview" : "full"];
  if (info.mode === "zoom") bits.push(`window of ${info.output[1]}×${info.output[0]} at ${Charts.fmt(info.scale)}×`);
  else if (info.image_size) bits.push(`${info.image_size[1]}×${info.image_size[0]} each`);
  if (info.mode === "projection") {
    bits.push(`${info.grid[0]} w of ${info.projection}${info.noise_maps ? " with its noise maps" : ""}`);
  }
  bits.push(`${Math.round(info.ms)} ms`);
  status.textContent = bits.join(" · ") + (kind === "preview" && seq === ex.seq ? " · rendering full…" : "");
}

// ---------------------------------------------------------------------------------------------
// Zoom and pan (CREPS): the stage is a window on the output at ex.zoom.scale, centred on
// (cx, cy) in [0, 1]; only that window renders. Until the new image comes, the old one is
// stretched and moved (the "lens") so the page answers at once.

function zoomGeometry() {
  const res = ex.info.resolution;
  const size = Math.max(2, Math.floor(res * ex.zoom.scale));
  const vw = Math.max(2, Math.floor(stage.clientWidth)), vh = Math.max(2, Math.floor(stage.clientHeight));
  const w = Math.min(vw, size), h = Math.min(vh, size);
  const left = Math.max(0, Math.min(size - w, Math.round(ex.zoom.cx * size - w / 2)));
  const top = Math.max(0, Math.min(size - h, Math.round(ex.zoom.cy * size - h / 2)));
  return { size, vw, vh, w, h, left, top, offX: Math.floor((vw - w) / 2), offY: Math.floor((vh - h) / 2) };
}

function clampZoom() {
  const g = zoomGeometry();
  ex.zoom.cx = (g.left + g.w / 2) / g.size;
  ex.zoom.cy = (g.top + g.h / 2) / g.size;
}

function scaleLimits() {
  const res = ex.info.resolution;
  return [Math.max(1 / 16, 8 / res), 64];
}

function fitZoom() {
  if (!ex.info) return;
  const vw = stage.clientWidth || 512, vh = stage.clientHeight || 512;
  const [lo, hi] = scaleLimits();
  ex.zoom = { scale: Math.min(hi, Math.max(lo, Math.min(vw, vh) / ex.info.resolution)), cx: 0.5, cy: 0.5 };
  $("#zoom-scale").textContent = `${Charts.fmt(ex.zoom.scale)}×`;
}

function zoomAt(mx, my, factor) {
  const g = zoomGeometry();
  const [lo, hi] = scaleLimits();
  const scale = Math.min(hi, Math.max(lo, ex.zoom.scale * factor));
  factor = scale / ex.zoom.scale;
  if (factor === 1) return;
  const ux = (g.left + Math.min(g.w, Math.max(0, mx - g.offX))) / g.size;
  const uy = (g.top + Math.min(g.h, Math.max(0, my - g.offY))) / g.size;
  const size = Math.max(2, Math.floor(ex.info.resolution * scale));
  ex.zoom = { scale, cx: ux + (g.vw / 2 - mx) / size, cy: uy + (g.vh / 2 - my) / size };
  clampZoom();
  $("#zoom-scale").textContent = `${Charts.fmt(scale)}×`;
  lensZoom(mx, my, factor);
  renderSoon();
  renderFullLater();
}

function lensZoom(mx, my, f) {
  const l = ex.lens;
  ex.lens = { k: l.k * f, tx: f * l.tx + (1 - f) * mx, ty: f * l.ty + (1 - f) * my };
  applyLens();
}

function lensPan(dx, dy) {
  ex.lens.tx += dx;
  ex.lens.ty += dy;
  applyLens();
}

function applyLens() {
  if (modeName() !== "zoom") { img.style.transform = ""; return; }
  const { k, tx, ty } = ex.lens;
  const offX = parseFloat(img.style.left) || 0, offY = parseFloat(img.style.top) || 0;
  img.style.transform = `translate(${(k - 1) * offX + tx}px, ${(k - 1) * offY + ty}px) scale(${k})`;
}

function resetLens() {
  ex.lens = { k: 1, tx: 0, ty: 0 };
  img.style.transform = "";
  if (modeName() !== "zoom") { img.style.left = img.style.top = img.style.width = ""; }
}

function placeImage(info, kind) {
  if (info.mode !== "zoom" || modeName() !== "zoom") {
    // a preview shows at the size of the full view; small images are enlarged a whole number of times
    resetLens();
    const [fw, fh] = info.full_size || [info.width, info.height];
    const room = [stage.clientWidth - 24, Math.max(320, window.innerHeight * 0.72)];
    const k = Math.max(1, Math.floor(Math.min(room[0] / fw, room[1] / fh)));
    img.style.width = `${fw * k}px`;
    img.classList.toggle("pixelated", kind === "full" && k > 1);
    return;
  }
  img.classList.remove("pixelated");
  const g = zoomGeometry();
  // the image fills the window it was rendered for (a preview is stretched to it)
  const w = info.region[3] * (g.size / info.output[1]);
  img.style.width = `${w}px`;
  img.style.left = `${g.offX}px`;
  img.style.top = `${g.offY}px`;
  ex.lens = { k: 1, tx: 0, ty: 0 };
  img.style.transform = "";
}

stage.addEventListener("wheel", (e) => {
  if (modeName() !== "zoom" || !ex.info) return;
  e.preventDefault();
  const rect = stage.getBoundingClientRect();
  zoomAt(e.clientX - rect.left, e.clientY - rect.top, e.deltaY < 0 ? 1.25 : 0.8);
}, { passive: false });

let drag = null;
stage.addEventListener("pointerdown", (e) => {
  if (modeName() !== "zoom" || !ex.info || e.button !== 0) return;
  drag = { x: e.clientX, y: e.clientY };
  stage.setPointerCapture(e.pointerId);
  stage.classList.add("dragging");
});
stage.addEventListener("pointermove", (e) => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  drag = { x: e.clientX, y: e.clientY };
  const g = zoomGeometry();
  ex.zoom.cx -= dx / g.size;
  ex.zoom.cy -= dy / g.size;
  const before = zoomGeometry();
  clampZoom();
  const moved = zoomGeometry();
  lensPan(g.left - moved.left, g.top - moved.top);
  if (before.left !== g.left || before.top !== g.top) renderSoon();
});
const endDrag = () => {
  if (!drag) return;
  drag = null;
  stage.classList.remove("dragging");
  render(true);
};
stage.addEventListener("pointerup", endDrag);
stage.addEventListener("pointercancel", endDrag);
stage.addEventListener("keydown", (e) => {
  if (modeName() !== "zoom" || !ex.info) return;
  const c = [stage.clientWidth / 2, stage.clientHeight / 2];
  if (e.key === "+" || e.key === "=") zoomAt(c[0], c[1], 1.25);
  else if (e.key === "-") zoomAt(c[0], c[1], 0.8);
});
$("#zoom-in").addEventListener("click", () => zoomAt(stage.clientWidth / 2, stage.clientHeight / 2, 1.25));
$("#zoom-out").addEventListener("click", () => zoomAt(stage.clientWidth / 2, stage.clientHeight / 2, 0.8));
$("#zoom-reset").addEventListener("click", () => { fitZoom(); resetLens(); render(true); });
if (window.ResizeObserver) {  // a window of another size than the last zoom request's: render it again
  new ResizeObserver(() => {
    if (!ex.info || modeName() !== "zoom") return;
    const g = zoomGeometry();
    if (`${g.vw}x${g.vh}` !== ex.zoomStage) renderFullLater(300);
  }).observe(stage);
}

// ---------------------------------------------------------------------------------------------
// Controls

function showOutputs() {
  const f = form.elements;
  f.psi_out.value = Number(f.psi.value).toFixed(2);
  f.tx_out.value = Number(f.tx.value).toFixed(2);
  f.ty_out.value = Number(f.ty.value).toFixed(2);
  f.rotate_out.value = `${f.rotate.value}°`;
}

form.addEventListener("input", (e) => {
  showOutputs();
  if (e.target.type === "range") renderSoon();  // a slider moves: previews only (CREPS), or replacing renders
});
form.addEventListener("change", (e) => {
  if (e.target.name === "mode" || e.target.name === "projection") {
    showMode();
    if (modeName() === "zoom") fitZoom();
    if (library) drawLibrary();  // the projection shown is marked on the left
  }
  render(true);
});
for (const button of $$("[data-step]", form)) {
  button.addEventListener("click", () => {
    const input = form.elements[button.dataset.for];
    input.value = String(Math.max(0, Number(input.value || 0) + Number(button.dataset.step)));
    render(true);
  });
}

$("#save-png").addEventListener("click", () => {
  if (!ex.url) return;
  const info = ex.shownInfo || {};
  const base = (ex.net.path || ex.net.label || "network").split("/").pop().replace(/\.[^.]*$/, "");
  const what = info.mode === "zoom" ? `seed${info.seeds[0]}-x${Charts.fmt(info.scale)}` :
    info.seeds ? `seed${info.seeds[0]}` :
    info.projection ? info.projection.split("/").slice(-2).join("-").replace(/\.[^.]*$/, "") : info.mode;
  const a = document.createElement("a");
  a.href = ex.url;
  a.download = `${base}-${info.mode || "view"}-${what}.png`;
  document.body.appendChild(a);
  a.click();
  a.remove();
});

// ---------------------------------------------------------------------------------------------
// Start

(async function start() {
  showOutputs();
  await loadLibrary();
  setInterval(loadLibrary, LIBRARY_MS);
  const want = recalled();
  const runs = library ? library.runs : [];
  const run = want.run && runs.find((r) => r.src === want.run.src && r.path === want.run.path);
  if (run) openRun(run);
  if (want.net) {
    openNetwork(want.net.src, want.net.path, want.net.path.split("/").pop());
    showTab("explore");
  } else if (run) {
    showTab("watch");
  } else if (runs.length === 1) {
    openRun(runs[0]);
    showTab("watch");
  }
})();
