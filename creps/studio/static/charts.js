"use strict";
// Line charts in SVG for the studio: a few series against one x axis (kimg), a legend with each
// series' last value, a crosshair with the values under the pointer. No dependencies.

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#6cb4ff", "#ff9f5a", "#5fd38d", "#d48cff", "#f2c14e", "#ff6b8b", "#4fd1c5", "#b0b8c4"];
  const HEIGHT = 170;
  const MARGIN = { left: 46, right: 10, top: 8, bottom: 20 };

  // A number as people read it in a chart: 4 significant digits, exponent when far from 1.
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  // About `count` round tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  class LineChart {
    // title: shown above; options.onClose: adds a close button; options.xLabel: the x axis' name.
    constructor(title, options = {}) {
      this.title = title;
      this.xLabel = options.xLabel || "kimg";
      this.series = [];
      this.root = document.createElement("figure");
      this.root.className = "chart";
      this.root.dataset.chart = title;
      const cap = document.createElement("figcaption");
      const name = document.createElement("span");
      name.className = "title";
      name.textContent = title;
      cap.appendChild(name);
      if (options.onClose) {
        const close = document.createElement("button");
        close.className = "close";
        close.title = "remove this chart";
        close.textContent = "×";
        close.addEventListener("click", options.onClose);
        cap.appendChild(close);
      }
      this.legend = document.createElement("div");
      this.legend.className = "legend";
      this.svg = el("svg", { role: "img", "aria-label": title });
      this.tip = document.createElement("div");
      this.tip.className = "tip";
      this.tip.hidden = true;
      this.root.append(cap, this.svg, this.legend, this.tip);
      this.svg.addEventListener("pointermove", (e) => this.hover(e));
      this.svg.addEventListener("pointerleave", () => this.unhover());
      if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(this.root);
    }

    // series: [{name, label, points: [[x, y], ...]}], points in x order.
    setData(series) {
      this.series = series.map((s, i) => ({ ...s, color: COLORS[i % COLORS.length] }));
      this.draw();
      this.drawLegend();
    }

    drawLegend() {
      this.legend.textContent = "";
      for (const s of this.series) {
        const item = document.createElement("span");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = s.color;
        const value = document.createElement("span");
        value.className = "legend-value";
        const last = s.points.length ? s.points[s.points.length - 1][1] : null;
        value.dataset.series = s.name;
        value.dataset.value = last === null ? "" : String(last);
        value.textContent = fmt(last);
        item.append(swatch, document.createTextNode(s.label || s.name), value);
        item.title = s.name;
        this.legend.appendChild(item);
      }
    }

    draw() {
      const svg = this.svg;
      svg.textContent = "";
      const width = Math.max(200, svg.clientWidth || 320);
      svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
      const all = this.series.flatMap((s) => s.points);
      if (!all.length) {
        el("text", { x: width / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "axis", fill: "#8b929b" }, svg).textContent = "no data yet";
        return;
      }
      let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
      let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
      if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.06;
      y0 -= pad; y1 += pad;
      const px = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * (width - MARGIN.left - MARGIN.right);
      const py = (y) => HEIGHT - MARGIN.bottom - ((y - y0) / (y1 - y0)) * (HEIGHT - MARGIN.top - MARGIN.bottom);
      this.scale = { px, py, x0, x1, width };

      const grid = el("g", { class: "grid" }, svg);
      const axis = el("g", { class: "axis" }, svg);
      for (const t of ticks(y0, y1, 4)) {
        el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: py(t), y2: py(t) }, grid);
        el("text", { x: MARGIN.left - 6, y: py(t) + 3, "text-anchor": "end" }, axis).textContent = fmt(t);
      }
      for (const t of ticks(x0, x1, Math.max(2, Math.floor(width / 90)))) {
        el("text", { x: px(t), y: HEIGHT - 5, "text-anchor": "middle" }, axis).textContent = fmt(t);
      }
      el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom }, axis);
      el("text", { x: width - MARGIN.right, y: HEIGHT - MARGIN.bottom - 4, "text-anchor": "end" }, axis).textContent = this.xLabel;

      for (const s of this.series) {
        if (!s.points.length) continue;
        const pts = s.points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
        el("polyline", { points: pts, stroke: s.color, "data-series": s.name, "data-count": s.points.length }, svg);
        const last = s.points[s.points.length - 1];
        el("circle", { class: "dot", cx: px(last[0]), cy: py(last[1]), r: s.points.length === 1 ? 3 : 2.2, fill: s.color }, svg);
      }
      this.hoverLayer = el("g", { class: "hover" }, svg);
    }

    hover(event) {
      if (!this.scale || !this.series.some((s) => s.points.length)) return;
      const rect = this.svg.getBoundingClientRect();
      const { px, py, x0, x1, width } = this.scale;
      const fx = ((event.clientX - rect.left) / rect.width) * width;
      const x = x0 + ((fx - MARGIN.left) / (width - MARGIN.left - MARGIN.right)) * (x1 - x0);
      const rows = [];
      let at = null;
      this.hoverLayer.textContent = "";
      for (const s of this.series) {
        if (!s.points.length) continue;
        let best = s.points[0];
        for (const p of s.points) if (Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
        at = at === null || Math.abs(best[0] - x) < Math.abs(at - x) ? best[0] : at;
        const row = document.createElement("div");
        const dot = document.createElement("span");
        dot.style.color = s.color;
        dot.textContent = "● ";
        row.append(dot, document.createTextNode(`${s.label || s.name}: ${fmt(best[1])}`));
        rows.push(row);
        el("circle", { cx: px(best[0]), cy: py(best[1]), r: 3.5, fill: s.color }, this.hoverLayer);
      }
      el("line", { x1: px(at), x2: px(at), y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }, this.hoverLayer);
      this.tip.textContent = `${this.xLabel} ${fmt(at)}`;
      this.tip.append(...rows);
      this.tip.hidden = false;
      const left = Math.min((px(at) / width) * rect.width + 14, rect.width - this.tip.offsetWidth);
      this.tip.style.left = `${Math.max(0, left)}px`;
      this.tip.style.top = "30px";
    }

    unhover() {
      this.tip.hidden = true;
      if (this.hoverLayer) this.hoverLayer.textContent = "";
    }
  }

  return { LineChart, fmt };
})();
