// The Workers view: every registered worker, its lease and the jobs it runs now
// (GET /v1/admin/workers), refreshed every few seconds while shown.

import { PolledView } from "./api.js";
import { fill, h, plural, relative, shortId, when } from "./dom.js";

const REFRESH_MS = 2_000;

function list(values, empty) {
  if (!values || values.length === 0) return h("span", { class: "faint" }, empty);
  return h("span", { class: "chips" }, values.map((v) => h("code", { class: "chip" }, v)));
}

function lease(worker) {
  if (!worker.lease_expires_at) return h("span", { class: "faint" }, "not registered");
  if (!worker.alive) {
    return h("span", { class: "lease lease-expired", title: worker.lease_expires_at }, `expired ${relative(worker.lease_expires_at)}`);
  }
  // Alive as the database saw it: never "ago", whatever this browser's clock says.
  const left = Math.max(0, Math.round((Date.parse(worker.lease_expires_at) - Date.now()) / 1000));
  return h("span", { class: "lease", title: worker.lease_expires_at }, `expires in ${left} s`);
}

function running(worker, jobs) {
  if (worker.running.length === 0) return h("span", { class: "faint" }, "idle");
  return h(
    "ul",
    { class: "running-jobs" },
    worker.running.map((id) =>
      h(
        "li",
        {},
        h("a", { href: `#/jobs/${id}`, class: "mono" }, shortId(id)),
        " ",
        h("span", { class: "muted" }, jobs.get(id)?.kind ?? ""),
      ),
    ),
  );
}

function row(worker, jobs) {
  return h(
    "tr",
    { "data-worker": worker.id, class: worker.alive ? "" : "dead" },
    h("td", { "data-label": "Worker" }, h("code", {}, worker.id)),
    h("td", { "data-label": "Host" }, worker.hostname ?? "—"),
    h("td", { "data-label": "PID", class: "num" }, worker.pid ?? "—"),
    h("td", { "data-label": "Kinds" }, list(worker.kinds, "—")),
    h("td", { "data-label": "Queues" }, list(worker.queues, "all")),
    h("td", { "data-label": "Up since" }, when(worker.started_at)),
    h("td", { "data-label": "Lease" }, lease(worker)),
    h("td", { "data-label": "Running now" }, running(worker, jobs)),
  );
}

/** The Workers view. */
export class WorkersView extends PolledView {
  constructor(root, { onError }) {
    super(root, "v1/admin/workers", REFRESH_MS, onError);
    this.body = root.querySelector("#workers-body");
    this.summary = root.querySelector("#workers-summary");
  }

  draw({ workers, jobs }) {
    const running = new Map(jobs.map((job) => [job.id, job]));
    const alive = workers.filter((w) => w.alive);
    const busy = workers.reduce((sum, w) => sum + w.running.length, 0);
    this.summary.textContent = `${plural(alive.length, "live worker")}, ${plural(busy, "running job")}`;
    if (workers.length === 0) {
      fill(this.body, h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No worker is registered. Start one with errands worker.")));
    } else {
      fill(this.body, workers.map((w) => row(w, running)));
    }
  }
}
