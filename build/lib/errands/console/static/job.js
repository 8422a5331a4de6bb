// The Job view: one job, live through its own shape, with its payload, result, error,
// attempts and timeline (GET /v1/admin/jobs/{id}, read again after each change). The
// page is built once per job and updated in place: its buttons stay the same elements
// while progress streams in, so a click on them always lands.

import { ACTIONS, appliesTo, confirm, perform, report, reportError } from "./actions.js";
import { api, LiveShape } from "./api.js";
import { absolute, badge, duration, fill, h, json, setAttr, setText, shortId, when } from "./dom.js";

const FACTS = [
  ["Owner", (job) => job.owner ?? "—"],
  ["Queue", (job) => job.queue],
  ["Priority", (job) => String(job.priority)],
  ["Attempts", (job) => `${job.attempts} of ${job.max_attempts}`],
  ["Progress", (job) => `${Math.round(job.progress * 100)}%${job.progress_message ? ` · ${job.progress_message}` : ""}`],
  ["Submitted", (job) => when(job.timestamp)],
  ["Received", (job) => when(job.received_at)],
  ["Run at", (job) => when(job.run_at)],
  ["Started", (job) => when(job.started_at)],
  ["Finished", (job) => when(job.finished_at)],
  ["Worker", (job) => (job.lease_owner ? h("code", {}, job.lease_owner) : "—")],
  ["Cancel requested", (job) => (job.cancelled ? "yes" : "no")],
];

/** The attempts table: one row per attempt, from the service's timeline. */
function attemptsTable(attempts) {
  if (attempts.length === 0) return h("p", { class: "faint" }, "Not started yet.");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table", id: "attempts" },
      h("thead", {}, h("tr", {}, ["#", "Worker", "Started", "Ended", "Duration", "Outcome", "Error"].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        attempts.map((a) =>
          h(
            "tr",
            { "data-attempt": a.attempt },
            h("td", { "data-label": "#", class: "num" }, a.attempt),
            h("td", { "data-label": "Worker" }, a.worker ? h("code", {}, a.worker) : "—"),
            h("td", { "data-label": "Started" }, h("time", { datetime: a.started_at }, absolute(a.started_at))),
            h("td", { "data-label": "Ended" }, a.ended_at ? h("time", { datetime: a.ended_at }, absolute(a.ended_at)) : "—"),
            h("td", { "data-label": "Duration", class: "num" }, duration(a.seconds)),
            h("td", { "data-label": "Outcome" }, badge(a.outcome)),
            h("td", { "data-label": "Error", class: "error-cell" }, a.error ? `${a.error.type}: ${a.error.message}` : ""),
          ),
        ),
      ),
    ),
  );
}

/** The timeline; an operator's action names the operator, a worker's the worker. */
function eventsList(events) {
  return h(
    "ol",
    { class: "events", id: "events" },
    events.map((e) =>
      h(
        "li",
        { "data-type": e.type, "data-operator": e.operator },
        h("span", { class: `dot-marker s-${e.type}` }),
        h("time", { datetime: e.at }, absolute(e.at)),
        h("strong", {}, e.type.replace("_", " ")),
        h("span", { class: "muted" }, `attempt ${e.attempt}`),
        e.worker ? h("code", {}, e.worker) : null,
        e.operator ? h("span", { class: "operator" }, "by ", h("strong", {}, e.operator)) : null,
      ),
    ),
  );
}

/** A part of the page that is redrawn only when what it shows changed. */
class Part {
  constructor(element, draw) {
    this.element = element;
    this.draw = draw;
    this.shown = undefined;
  }

  update(value) {
    const key = JSON.stringify(value);
    if (key === this.shown) return;
    this.shown = key;
    fill(this.element, this.draw(value));
  }
}

/** The Job view: one job, live. */
export class JobView {
  constructor(root, { onError, onAuthError }) {
    this.root = root;
    this.onError = onError;
    this.onAuthError = onAuthError;
    this.shape = null;
    this.id = null;
    this.job = null;
    this.reading = false;
    this.again = false;
  }

  show(id) {
    if (this.id === id && this.shape) return;
    this.hide();
    this.id = id;
    this.built = null;
    this.root.dataset.loaded = "false";
    fill(this.root.querySelector("#job"), h("p", { class: "faint" }, "Loading…"));
    // The job's own shape: every change to the row arrives here; the timeline is read
    // again after each one (one read at a time, the latest change last).
    this.shape = new LiveShape([{ column: "id", op: "eq", value: id }], {
      onChange: (shape) => shape.upToDate && this.load(),
      onAuthError: this.onAuthError,
    });
  }

  hide() {
    if (this.shape) this.shape.close();
    this.shape = null;
    this.id = null;
  }

  async load() {
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    const id = this.id;
    try {
      const detail = await api(`v1/admin/jobs/${encodeURIComponent(id)}`);
      if (id === this.id) this.render(detail);
    } catch (error) {
      if (error.status === 404 && id === this.id) this.render404(id);
      else if (error.status !== 404) this.onError(error);
    } finally {
      this.reading = false;
      if (this.again && id === this.id) {
        this.again = false;
        this.load();
      }
    }
  }

  render404(id) {
    this.built = null;
    fill(
      this.root.querySelector("#job"),
      h("div", { class: "card empty-card" }, h("h2", {}, "No such job"), h("p", {}, `No job has the id ${id}; it may have been deleted.`)),
    );
    this.root.dataset.loaded = "true";
  }

  /** The page's elements for the job `this.id`, made once. */
  build(job) {
    const buttons = {};
    for (const [action, spec] of Object.entries(ACTIONS)) {
      buttons[action] = h(
        "button",
        { type: "button", id: `job-${action}`, class: `act ${spec.danger ? "button danger-outline" : "button"}` },
        spec.label,
      );
      buttons[action].addEventListener("click", () => this.act(action));
    }
    const facts = FACTS.map(([label]) => [h("dt", {}, label), h("dd", {})]);
    const title = badge(job.state);
    const error = h("section", { class: "card error-card", id: "job-error" });
    const parts = {
      payload: new Part(h("div"), json),
      result: new Part(h("div"), json),
      attempts: new Part(h("div"), attemptsTable),
      events: new Part(h("div"), eventsList),
      error: new Part(error, (e) => [
        h("h2", {}, "Error"),
        h("p", { class: "error-message" }, h("strong", {}, e ? e.type || "Error" : ""), ": ", e ? e.message || "" : ""),
        e && e.traceback ? h("pre", { class: "code traceback" }, e.traceback) : null,
      ]),
    };
    fill(
      this.root.querySelector("#job"),
      h(
        "div",
        { class: "job-head" },
        h("div", {}, h("h1", {}, job.kind, " ", title), h("code", { class: "job-id" }, job.id)),
        h("div", { class: "actions" }, Object.values(buttons)),
      ),
      h("section", { class: "card" }, h("dl", { class: "facts" }, facts.flat())),
      h(
        "div",
        { class: "two-up" },
        h("section", { class: "card", id: "job-payload" }, h("h2", {}, "Payload"), parts.payload.element),
        h("section", { class: "card", id: "job-result" }, h("h2", {}, "Result"), parts.result.element),
      ),
      error,
      h("section", { class: "card" }, h("h2", {}, "Attempts"), parts.attempts.element),
      h("section", { class: "card" }, h("h2", {}, "Timeline"), parts.events.element),
    );
    return { id: job.id, buttons, facts, title, error, parts };
  }

  render({ job, attempts, events }) {
    if (!this.built || this.built.id !== job.id) this.built = this.build(job);
    const { buttons, facts, title, error, parts } = this.built;
    this.job = job;
    setText(title, job.state);
    setAttr(title, "class", `badge badge-${job.state}`);
    setAttr(title, "data-state", job.state);
    for (const [action, button] of Object.entries(buttons)) {
      button.disabled = !appliesTo(action, job);
    }
    FACTS.forEach(([, value], i) => {
      const shown = value(job);
      const dd = facts[i][1];
      if (typeof shown === "string") setText(dd, shown);
      else if (dd.textContent !== shown.textContent) fill(dd, shown);
    });
    parts.payload.update(job.payload);
    parts.result.update(job.result);
    parts.attempts.update(attempts);
    parts.events.update(events);
    error.hidden = !job.error;
    if (job.error) parts.error.update(job.error);
    this.root.dataset.loaded = "true";
    this.root.dataset.state = job.state;
  }

  async act(action) {
    const job = this.job;
    const title = `${ACTIONS[action].label} job ${shortId(job.id)}?`;
    if (!(await confirm({ action, title, lines: [`${job.kind}, ${job.state}, attempt ${job.attempts} of ${job.max_attempts}`] }))) return;
    try {
      report(action, await perform(action, { ids: [job.id] }), 1);
    } catch (error) {
      reportError(action, error);
    }
  }
}
