// Stacked bar charts drawn as plain SVG: one bar per time bucket, one segment per series.

import { axisTime, compact, utc } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const HEIGHT = 200;
const MARGIN = { left: 56, right: 8, top: 10, bottom: 24 };

function svg(name, attrs = {}, parent = null, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

/** A round step for about `ticks` grid lines up to `max`: 1, 2, 2.5 or 5 times a power of ten. */
export function step(max, ticks = 4) {
  if (!(max > 0)) return 1;
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const factor = [1, 2, 2.5, 5, 10].find((f) => f * power >= rough);
  return factor * power;
}

function grid(root, top, gap, plot, format) {
  for (let k = 0; k * gap <= top + gap / 2; k += 1) {
    const value = k * gap;
    const y = MARGIN.top + plot.height - (value / top) * plot.height;
    svg("line", { x1: MARGIN.left, x2: MARGIN.left + plot.width, y1: y, y2: y, class: "grid" }, root);
    svg("text", { x: MARGIN.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, root, format(value));
  }
}

function timeAxis(root, times, daily, plot, slot) {
  const every = Math.max(1, Math.ceil(64 / slot));  // labels at least 64 px apart
  for (let i = 0; i < times.length; i += every) {
    const x = MARGIN.left + slot * (i + 0.5);
    svg("text", { x, y: HEIGHT - 6, class: "tick", "text-anchor": "middle" }, root, axisTime(times[i], daily));
  }
}

function bars(root, times, series, top, plot, format) {
  const slot = plot.width / times.length;
  const gap = slot > 6 ? Math.min(slot * 0.2, 4) : 0;
  times.forEach((time, i) => {
    let y = MARGIN.top + plot.height;
    for (const s of series) {
      const value = s.values[i];
      if (!(value > 0)) continue;
      const h = Math.max((value / top) * plot.height, 0.5);
      y -= h;
      const rect = svg("rect", { x: MARGIN.left + slot * i + gap / 2, y, width: Math.max(slot - gap, 0.5),
                                 height: h, fill: s.color, class: "seg" }, root);
      svg("title", {}, rect, `${s.key} · ${utc(time)}: ${format(value)}`);
    }
  });
  return slot;
}

/**
 * Draw into `host` (emptied first) a stacked bar chart sized to the host's width.
 *   times:  the buckets' start times (RFC 3339); series: [{key, color, values[]}], drawn bottom up.
 */
export function stackedBars(host, { title, times, daily, series, format = compact }) {
  host.replaceChildren();
  const width = Math.max(host.clientWidth || 0, 240);
  const plot = { width: width - MARGIN.left - MARGIN.right, height: HEIGHT - MARGIN.top - MARGIN.bottom };
  const root = svg("svg", { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img",
                            "aria-label": title }, host);
  const totals = times.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const max = Math.max(0, ...totals);
  const gap = step(max);
  const top = max > 0 ? Math.ceil(max / gap) * gap : gap;
  grid(root, top, gap, plot, format);
  const slot = bars(root, times, series, top, plot, format);
  timeAxis(root, times, daily, plot, slot);
  if (max === 0) {
    svg("text", { x: MARGIN.left + plot.width / 2, y: MARGIN.top + plot.height / 2, class: "nodata",
                  "text-anchor": "middle" }, root, "Nothing in this window");
  }
  return root;
}
