// The Charts view: the last hour, day or week from job_events, computed by the service
// in SQL (GET /v1/admin/charts) and drawn here as plain SVG.

import { PolledView } from "./api.js";
import { duration, fill, h, s } from "./dom.js";

const WIDTH = 600;
const HEIGHT = 180;
const PAD = { top: 12, right: 12, bottom: 24, left: 58 };
const REFRESH_MS = 10_000;

/** A y-axis maximum that reads well: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/** The windows an operator can pick: how far back, and how long one bar is. */
export const WINDOWS = {
  "1h": { minutes: 60, bucket: 60, title: "The last hour", per: "minute" },
  "24h": { minutes: 1440, bucket: 900, title: "The last 24 hours", per: "15 minutes" },
  "7d": { minutes: 10080, bucket: 3600, title: "The last 7 days", per: "hour" },
};
let days = false; // the window spans days: time labels name the day too

const minuteLabel = (iso) =>
  days
    ? new Date(iso).toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" })
    : new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });

/** The frame shared by every chart: grid lines, y labels, time labels. */
function frame(minutes, max, format) {
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (plotWidth * i) / Math.max(minutes.length, 1);
  const y = (v) => PAD.top + plotHeight - (plotHeight * v) / max;
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    parts.push(
      s("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }),
      s("text", { class: "axis", x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, format(value)),
    );
  }
  const last = minutes.length - 1;
  for (const i of [0, Math.floor(last / 2), last]) {
    if (i < 0) continue;
    const anchor = i === 0 ? "start" : i === last ? "end" : "middle";
    const at = i === last ? x(i + 1) : x(i);
    parts.push(s("text", { class: "axis", x: at, y: HEIGHT - 6, "text-anchor": anchor }, minuteLabel(minutes[i].minute)));
  }
  return { x, y, parts, slot: plotWidth / Math.max(minutes.length, 1) };
}

function svg(label, ...children) {
  return s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart" }, ...children);
}

function legend(series) {
  return h(
    "ul",
    { class: "legend" },
    series.map(({ name, cls }) => h("li", {}, h("span", { class: `swatch ${cls}` }), name)),
  );
}

/** Stacked bars per minute. `series`: [{key, name, cls}]. */
export function stackedBars(label, minutes, series) {
  const total = (m) => series.reduce((sum, { key }) => sum + m[key], 0);
  const max = niceMax(Math.max(0, ...minutes.map(total)));
  const { x, y, parts, slot } = frame(minutes, max, (v) => String(Math.round(v)));
  const bars = [];
  minutes.forEach((m, i) => {
    let base = 0;
    for (const { key, name, cls } of series) {
      if (!m[key]) continue;
      const top = y(base + m[key]);
      bars.push(
        s(
          "rect",
          { class: `bar ${cls}`, x: x(i) + slot * 0.12, width: slot * 0.76, y: top, height: y(base) - top },
          s("title", {}, `${minuteLabel(m.minute)} · ${m[key]} ${name}`),
        ),
      );
      base += m[key];
    }
  });
  return h("div", {}, svg(label, parts, bars), legend(series));
}

/** Lines over the minutes; null values leave gaps. `series`: [{name, cls, value(m)}]. */
export function lines(label, minutes, series, format) {
  const values = minutes.flatMap((m) => series.map((line) => line.value(m))).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const { x, y, parts, slot } = frame(minutes, max, format);
  const paths = series.map(({ name, cls, value }) => {
    let d = "";
    let pen = "M";
    const dots = [];
    minutes.forEach((m, i) => {
      const v = value(m);
      if (v === null) {
        pen = "M";
        return;
      }
      const cx = x(i) + slot / 2;
      d += `${pen}${cx.toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
      dots.push(s("circle", { class: `dot ${cls}`, cx, cy: y(v), r: 2.5 }, s("title", {}, `${minuteLabel(m.minute)} · ${name} ${format(v)}`)));
    });
    return s("g", {}, s("path", { class: `line ${cls}`, d }), dots);
  });
  return h("div", {}, svg(label, parts, paths), legend(series));
}

const percentile = (key, index) => (m) => (m[key] ? m[key][index] : null);

function card(title, summary, chart, id) {
  return h("section", { class: "card chart-card", "data-chart": id }, h("header", {}, h("h2", {}, title), summary), chart);
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value));
}

function percentiles(totals, key, samplesKey) {
  const p = totals[key];
  return h(
    "div",
    { class: "stats", "data-samples": totals[samplesKey] },
    stat("p50", p ? duration(p[0]) : "—"),
    stat("p95", p ? duration(p[1]) : "—"),
    stat("p99", p ? duration(p[2]) : "—"),
    stat("samples", totals[samplesKey].toLocaleString()),
  );
}

/** A card of p50/p95/p99 over the window and p50/p95 lines per bucket. */
function percentileCard(title, id, key, samplesKey, minutes, totals, per) {
  const line = (name, index, cls) => ({ name, cls, value: percentile(key, index) });
  return card(
    title,
    percentiles(totals, key, samplesKey),
    lines(`${title} per ${per}`, minutes, [line("p50", 0, "s-p50"), line("p95", 1, "s-p95")], duration),
    id,
  );
}

const GROUPS_SHOWN = 6; // the busiest kinds or queues get a colour each; the rest are "other"

/** Each kind's or queue's jobs finished per bucket (the answer's `groups`, with `split`),
 * as stacked bars: the busiest GROUPS_SHOWN by name, the others together. */
function splitCard(data, per) {
  const ended = (g) => g.completed + g.failed + g.cancelled;
  const totals = Object.entries(data.groups).map(([name, buckets]) => [name, buckets.reduce((n, g) => n + ended(g), 0)]);
  totals.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const shown = totals.slice(0, GROUPS_SHOWN).map(([name]) => name);
  const rest = totals.slice(GROUPS_SHOWN).map(([name]) => name);
  const series = shown.map((name, i) => ({ key: `g${i}`, name, cls: `g${i}` }));
  if (rest.length) series.push({ key: "other", name: `${rest.length} other`, cls: "g-other" });
  const rows = data.minutes.map((m, i) => {
    const row = { minute: m.minute, other: 0 };
    shown.forEach((name, n) => (row[`g${n}`] = ended(data.groups[name][i])));
    for (const name of rest) row.other += ended(data.groups[name][i]);
    return row;
  });
  const table = h(
    "ul",
    { class: "split-totals" },
    totals.slice(0, GROUPS_SHOWN).map(([name, n]) => h("li", { "data-group": name }, h("code", {}, name), ` ${n.toLocaleString()}`)),
  );
  return card(
    `Jobs finished per ${per}, by ${data.split}`,
    table,
    stackedBars(`Jobs finished per ${per}, by ${data.split}`, rows, series),
    "split",
  );
}

/** Draw the four charts of `data` (the /v1/admin/charts answer) into `root`, and with
 * `split` a fifth: the jobs finished by kind or by queue. */
export function drawCharts(root, data, window = WINDOWS["1h"]) {
  const { minutes, totals } = data;
  const per = window.per;
  days = window.minutes > 1440;
  const finished = minutes.reduce((sum, m) => sum + m.completed + m.failed + m.cancelled, 0);
  const depthNow = minutes.length ? minutes[minutes.length - 1].queued : 0;
  fill(
    root,
    card(
      `Jobs finished per ${per}`,
      h("div", { class: "stats" }, stat(window.title.replace("The last", "last"), finished.toLocaleString())),
      stackedBars(`Jobs finished per ${per}, by state`, minutes, [
        { key: "completed", name: "completed", cls: "s-completed" },
        { key: "failed", name: "failed", cls: "s-failed" },
        { key: "cancelled", name: "cancelled", cls: "s-cancelled" },
        { key: "retried", name: "retried", cls: "s-retried" },
      ]),
      "finished",
    ),
    card(
      "Queue depth",
      h("div", { class: "stats" }, stat("now", depthNow.toLocaleString())),
      lines("Jobs waiting in the queue", minutes, [{ name: "queued", cls: "s-queued", value: (m) => m.queued }], (v) =>
        String(Math.round(v)),
      ),
      "depth",
    ),
    percentileCard("Pickup latency", "pickup", "pickup_seconds", "pickups", minutes, totals, per),
    percentileCard("Run time", "runtime", "run_seconds", "runs", minutes, totals, per),
    data.split ? splitCard(data, per) : "",
  );
}

/** The Charts view, over the window its select names. */
export class ChartsView extends PolledView {
  constructor(root, { onError }) {
    super(root, "", REFRESH_MS, onError);
    this.grid = root.querySelector("#charts");
    this.select = root.querySelector("#chart-window");
    this.select.addEventListener("change", () => this.pick());
    this.split = root.querySelector("#chart-split");
    this.split.addEventListener("change", () => this.pick());
    this.pick(false);
  }

  pick(refresh = true) {
    this.window = WINDOWS[this.select.value] || WINDOWS["1h"];
    const { minutes, bucket, title, per } = this.window;
    const split = this.split.value ? `&split=${encodeURIComponent(this.split.value)}` : "";
    this.path = `v1/admin/charts?minutes=${minutes}&bucket=${bucket}${split}`;
    this.root.querySelector("#charts-title").textContent = title;
    this.root.querySelector("#charts-per").textContent = per;
    if (refresh) this.refresh();
  }

  draw(data) {
    drawCharts(this.grid, data, this.window);
  }
}
