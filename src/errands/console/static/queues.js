// The Queues view: each queue's depth, running jobs, oldest waiting job and the last
// hour's throughput, with a pause / resume button (GET /v1/admin/queues, POST
// /v1/admin/queues/{name}/{pause|resume}); and each periodic schedule's last run
// (GET /v1/admin/schedules). Rows are keyed by queue name and updated in place.

import { api } from "./api.js";
import { arrange, fill, h, setAttr, setText, shortId, when } from "./dom.js";

const REFRESH_MS = 2_000;

/** A queue's row, made once; `update` fills it from the latest read. */
class QueueRow {
  constructor(name, onToggle) {
    this.cells = {};
    const cell = (key, cls) => (this.cells[key] = h("td", { "data-label": key, class: cls }));
    this.button = h("button", { type: "button", class: "button small act", "data-queue": name });
    this.button.addEventListener("click", () => onToggle(name, this.queue.paused));
    this.element = h(
      "tr",
      { "data-queue": name },
      h("td", { "data-label": "Queue" }, h("a", { href: `#/jobs?queue=${encodeURIComponent(name)}` }, name)),
      cell("ready", "num"),
      cell("scheduled", "num"),
      cell("running", "num"),
      cell("oldest"),
      cell("done", "num"),
      cell("state"),
      h("td", {}, this.button),
    );
  }

  update(queue) {
    this.queue = queue;
    setAttr(this.element, "data-paused", String(queue.paused));
    setText(this.cells.ready, queue.ready.toLocaleString());
    setText(this.cells.scheduled, queue.scheduled.toLocaleString());
    setText(this.cells.running, queue.running.toLocaleString());
    const oldest = queue.oldest_waiting ? when(queue.oldest_waiting) : h("span", { class: "faint" }, "—");
    if (this.cells.oldest.textContent !== oldest.textContent) fill(this.cells.oldest, oldest);
    setText(this.cells.done, `${queue.completed_last_hour.toLocaleString()} ok · ${queue.failed_last_hour.toLocaleString()} failed`);
    setText(this.cells.state, queue.paused ? `paused by ${queue.paused_by}` : "running");
    setAttr(this.cells.state, "class", queue.paused ? "paused" : null);
    setText(this.button, queue.paused ? "Resume" : "Pause");
  }
}

/** The Queues view, read every few seconds while shown. */
export class QueuesView {
  constructor(root, { onError }) {
    this.root = root;
    this.onError = onError;
    this.rows = new Map();
    this.timer = null;
  }

  show() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    clearInterval(this.timer);
  }

  async refresh() {
    let queues;
    let schedules;
    try {
      [{ queues }, { schedules }] = await Promise.all([api("v1/admin/queues"), api("v1/admin/schedules")]);
    } catch (error) {
      this.onError(error);
      return;
    }
    this.draw(queues);
    this.drawSchedules(schedules);
    this.root.dataset.loaded = "true";
  }

  draw(queues) {
    const shown = new Map();
    for (const queue of queues) {
      const row = this.rows.get(queue.name) || new QueueRow(queue.name, (name, paused) => this.toggle(name, paused));
      row.update(queue);
      shown.set(queue.name, row);
    }
    this.rows = shown;
    const body = this.root.querySelector("#queues-body");
    const empty = h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No queue has jobs yet."));
    arrange(body, shown.size ? [...shown.values()].map((row) => row.element) : [empty]);
  }

  drawSchedules(schedules) {
    fill(
      this.root.querySelector("#schedules-body"),
      schedules.length
        ? schedules.map((s) =>
            h(
              "tr",
              { "data-schedule": s.name },
              h("td", {}, h("code", {}, s.name), s.kind ? h("div", { class: "muted" }, s.kind) : ""),
              h("td", {}, s.cron ? h("code", {}, s.cron) : "", s.timezone && s.timezone !== "UTC" ? ` (${s.timezone})` : ""),
              h("td", {}, s.last_tick ? when(s.last_tick) : "never"),
              h("td", { "data-next": "" }, s.next_run ? when(s.next_run) : "not declared"),
              h("td", {}, s.job_id ? [h("a", { href: `#/jobs/${s.job_id}`, class: "mono" }, shortId(s.job_id)), " ", s.job_state || "pruned"] : ""),
            ),
          )
        : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No periodic schedule is declared or has run yet.")),
    );
  }

  async toggle(name, paused) {
    try {
      await api(`v1/admin/queues/${encodeURIComponent(name)}/${paused ? "resume" : "pause"}`, { method: "POST" });
    } catch (error) {
      this.onError(error);
    }
    this.refresh();
  }
}
