// The Jobs view (every job, filtered, with counts and bulk actions) and the Job view
// (one job: its row, payload, result, error, attempts and events). Both are live through
// the operator's shapes of background_jobs.

import { ACTIONS, appliesTo, confirm, perform, report, reportError } from "./actions.js";
import { api, LiveShape } from "./api.js";
import { absolute, badge, between, duration, fill, h, json, plural, shortId, STATES, when } from "./dom.js";

const SHOWN_ROWS = 200;
const RELATIVE_TIMES_MS = 15_000;
const RANGES = { "15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400, all: null };
export const DEFAULT_RANGE = "24h";

/** Newest first, as `errands jobs` lists them. */
const newestFirst = (a, b) => (a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : a.id < b.id ? 1 : -1);

/** A datetime-local value (the viewer's time zone) as an ISO timestamp. */
const localToIso = (value) => (value ? new Date(value).toISOString() : null);

/**
 * What the filter form says, from the hash's parameters: the shape's filters (every
 * criterion but the state, so that one shape gives the counts of every state) and the
 * selection bulk actions send (the same criteria, the state included).
 */
export function selectionOf(params, now = Date.now()) {
  const text = (name) => (params.get(name) || "").trim() || null;
  const kind = text("kind");
  const queue = text("queue");
  const owner = text("owner");
  const state = STATES.includes(params.get("state")) ? params.get("state") : null;
  const range = params.get("range") in RANGES || params.get("range") === "custom" ? params.get("range") : DEFAULT_RANGE;
  let since = null;
  let until = null;
  if (range === "custom") {
    since = localToIso(text("from"));
    until = localToIso(text("to"));
  } else if (RANGES[range]) {
    since = new Date(now - RANGES[range] * 1000).toISOString();
  }
  const where = [];
  if (kind) where.push({ column: "kind", op: "eq", value: kind });
  if (queue) where.push({ column: "queue", op: "eq", value: queue });
  if (owner) where.push({ column: "owner", op: "eq", value: owner });
  if (since) where.push({ column: "timestamp", op: "gte", value: since });
  if (until) where.push({ column: "timestamp", op: "lt", value: until });
  const key = JSON.stringify([kind, queue, owner, range, text("from"), text("to")]);
  const filter = { kinds: kind ? [kind] : [], queues: queue ? [queue] : [], owners: owner ? [owner] : [], since, until };
  return { key, state, range, kind, queue, owner, since, until, where, filter };
}

function progress(job) {
  if (job.state !== "running") return null;
  const percent = Math.round(job.progress * 100);
  return h(
    "div",
    { class: "progress", title: job.progress_message || `${percent}%` },
    h("div", { class: "progress-track" }, h("div", { class: "progress-bar", style: { width: `${percent}%` } })),
    h("span", { class: "progress-text" }, `${percent}%`),
  );
}

function jobRow(job) {
  const link = `#/jobs/${job.id}`;
  const ran = between(job.started_at, job.finished_at);
  return h(
    "tr",
    { "data-id": job.id, "data-state": job.state },
    h("td", { "data-label": "State" }, badge(job.state), job.cancelled && job.state === "running" ? h("span", { class: "faint" }, " cancelling") : null),
    h("td", { "data-label": "Kind" }, h("a", { href: link }, job.kind)),
    h("td", { "data-label": "Job", class: "mono hide-narrow" }, h("a", { href: link, title: job.id }, shortId(job.id))),
    h("td", { "data-label": "Owner", class: "hide-narrow" }, job.owner ?? h("span", { class: "faint" }, "—")),
    h("td", { "data-label": "Queue", class: "hide-narrow" }, job.queue),
    h("td", { "data-label": "Attempts", class: "num hide-narrow" }, `${job.attempts}/${job.max_attempts}`),
    h("td", { "data-label": "Progress" }, progress(job) ?? (ran !== null ? duration(ran) : h("span", { class: "faint" }, "—"))),
    h("td", { "data-label": "Submitted" }, when(job.timestamp)),
  );
}

/** The Jobs view. */
export class JobsView {
  constructor(root, { onStatus, onError, onAuthError }) {
    this.root = root;
    this.onStatus = onStatus;
    this.onError = onError;
    this.onAuthError = onAuthError;
    this.shape = null;
    this.selection = null;
    this.kinds = new Set();
    this.visible = false;
    this.frame = 0;
    this.form = root.querySelector("#filters");
    this.form.addEventListener("input", (event) => this.filterChanged(event));
    this.form.addEventListener("submit", (event) => event.preventDefault());
    root.querySelector("#states").addEventListener("click", (event) => {
      const chip = event.target.closest("[data-filter-state]");
      if (chip) this.navigate({ state: chip.dataset.filterState });
    });
    for (const action of Object.keys(ACTIONS)) {
      root.querySelector(`#bulk-${action}`).addEventListener("click", () => this.bulk(action));
    }
    setInterval(() => this.scheduleRender(), RELATIVE_TIMES_MS); // "3 min ago" moves on
  }

  show(params) {
    this.visible = true;
    const next = selectionOf(params);
    // Only the state changed: keep the shape (and a relative range's start) as it is.
    const same = this.selection && this.selection.key === next.key;
    this.selection = same ? { ...this.selection, state: next.state } : next;
    this.syncForm();
    if (!same) {
      if (this.shape) this.shape.close();
      this.root.dataset.loaded = "false";
      this.shape = new LiveShape(this.selection.where, {
        onChange: () => this.scheduleRender(),
        onStatus: this.onStatus,
        onAuthError: this.onAuthError,
      });
    }
    this.render();
  }

  hide() {
    this.visible = false;
  }

  /** Change the filter through the address (#/jobs?...), so that it can be bookmarked. */
  navigate(changes) {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    for (const [name, value] of Object.entries(changes)) {
      if (value) params.set(name, value);
      else params.delete(name);
    }
    location.hash = `#/jobs?${params}`;
  }

  filterChanged(event) {
    const target = event.target;
    const apply = () => this.navigate({ [target.name]: target.value });
    clearTimeout(this.typing);
    if (target.tagName === "SELECT") apply();
    else this.typing = setTimeout(apply, 400);
    if (target.name === "range") this.form.querySelector("#custom-range").hidden = target.value !== "custom";
  }

  syncForm() {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    for (const name of ["kind", "queue", "owner", "from", "to"]) {
      const input = this.form.elements[name];
      if (document.activeElement !== input) input.value = params.get(name) || "";
    }
    this.form.elements.range.value = this.selection.range;
    this.form.querySelector("#custom-range").hidden = this.selection.range !== "custom";
  }

  scheduleRender() {
    if (!this.visible || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /** The rows of the shape in the selected state, newest first. */
  selected() {
    const rows = [...this.shape.rows.values()];
    for (const row of rows) this.kinds.add(row.kind);
    const state = this.selection.state;
    return rows.filter((row) => !state || row.state === state).sort(newestFirst);
  }

  render() {
    if (!this.shape) return;
    const all = [...this.shape.rows.values()];
    const counts = Object.fromEntries(STATES.map((state) => [state, 0]));
    for (const row of all) counts[row.state] += 1;
    const chips = [["", "All", all.length], ...STATES.map((state) => [state, state, counts[state]])];
    fill(
      this.root.querySelector("#states"),
      chips.map(([state, label, count]) =>
        h(
          "button",
          {
            type: "button",
            class: `chip-button${state ? ` chip-${state}` : ""}`,
            "data-filter-state": state,
            "aria-pressed": String((this.selection.state || "") === state),
          },
          h("span", { class: "chip-label" }, label),
          h("span", { class: "count", "data-count": state || "all" }, count.toLocaleString()),
        ),
      ),
    );
    const rows = this.selected();
    const shown = rows.slice(0, SHOWN_ROWS);
    fill(
      this.root.querySelector("#jobs-body"),
      shown.length
        ? shown.map(jobRow)
        : h("tr", {}, h("td", { colspan: 8, class: "empty" }, this.shape.upToDate ? "No job matches this filter." : "Loading…")),
    );
    fill(
      this.root.querySelector("#jobs-summary"),
      rows.length > shown.length
        ? `Showing the newest ${shown.length.toLocaleString()} of ${plural(rows.length, "job")}; narrow the filter to see others.`
        : plural(rows.length, "job"),
    );
    fill(document.getElementById("kind-options"), [...this.kinds].sort().map((kind) => h("option", { value: kind })));
    for (const action of Object.keys(ACTIONS)) {
      const count = rows.filter((row) => appliesTo(action, row)).length;
      const button = this.root.querySelector(`#bulk-${action}`);
      button.disabled = count === 0;
      button.querySelector(".count").textContent = count.toLocaleString();
    }
    if (this.shape.upToDate) this.root.dataset.loaded = "true";
  }

  /** What the selection is, in words, for the confirmation. */
  describe() {
    const { state, kind, queue, owner, range, since, until } = this.selection;
    const parts = [state ? `state ${state}` : "any state"];
    if (kind) parts.push(`kind ${kind}`);
    if (queue) parts.push(`queue ${queue}`);
    if (owner) parts.push(`owner ${owner}`);
    if (range === "custom") {
      if (since) parts.push(`submitted from ${absolute(since)}`);
      if (until) parts.push(`until ${absolute(until)}`);
    } else if (since) {
      parts.push(`submitted since ${absolute(since)}`);
    } else {
      parts.push("submitted any time");
    }
    return parts.join(", ");
  }

  async bulk(action) {
    const rows = this.selected();
    const applicable = rows.filter((row) => appliesTo(action, row));
    const perState = STATES.map((state) => [state, applicable.filter((row) => row.state === state).length]).filter(([, n]) => n);
    const lines = [`Selection: ${this.describe()}.`, ...perState.map(([state, n]) => `${plural(n, `${state} job`)}`)];
    if (rows.length > applicable.length) {
      lines.push(`${plural(rows.length - applicable.length, "other job")} in the selection will be left alone.`);
    }
    const title = `${ACTIONS[action].label} ${plural(applicable.length, "job")}?`;
    if (!(await confirm({ action, title, lines }))) return;
    const { state } = this.selection;
    const where = { ...this.selection.filter, states: state ? [state] : [] };
    try {
      report(action, await perform(action, { where }), applicable.length);
    } catch (error) {
      reportError(action, error);
    }
  }
}

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

function eventsList(events) {
  return h(
    "ol",
    { class: "events", id: "events" },
    events.map((e) =>
      h(
        "li",
        { "data-type": e.type },
        h("span", { class: `dot-marker s-${e.type}` }),
        h("time", { datetime: e.at }, absolute(e.at)),
        h("strong", {}, e.type),
        h("span", { class: "muted" }, `attempt ${e.attempt}`),
        e.worker ? h("code", {}, e.worker) : null,
      ),
    ),
  );
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

/** The Job view: one job, live. */
export class JobView {
  constructor(root, { onError, onAuthError }) {
    this.root = root;
    this.onError = onError;
    this.onAuthError = onAuthError;
    this.shape = null;
    this.id = null;
    this.loading = null;
  }

  show(id) {
    if (this.id === id && this.shape) return;
    this.hide();
    this.id = id;
    this.root.dataset.loaded = "false";
    fill(this.root.querySelector("#job"), h("p", { class: "faint" }, "Loading…"));
    // The job's own shape: every change to the row arrives here; the timeline is read
    // again after each one.
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
    const id = this.id;
    let detail;
    try {
      detail = await api(`v1/admin/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status === 404) {
        this.render404(id);
        return;
      }
      this.onError(error);
      return;
    }
    if (id === this.id) this.render(detail);
  }

  render404(id) {
    fill(
      this.root.querySelector("#job"),
      h("div", { class: "card empty-card" }, h("h2", {}, "No such job"), h("p", {}, `No job has the id ${id}; it may have been deleted.`)),
    );
    this.root.dataset.loaded = "true";
  }

  render({ job, attempts, events }) {
    const buttons = Object.entries(ACTIONS).map(([action, spec]) =>
      h(
        "button",
        {
          type: "button",
          id: `job-${action}`,
          class: spec.danger ? "button danger-outline" : "button",
          disabled: !appliesTo(action, job),
          onclick: () => this.act(action, job),
        },
        spec.label,
      ),
    );
    const error = job.error
      ? h(
          "section",
          { class: "card error-card", id: "job-error" },
          h("h2", {}, "Error"),
          h("p", { class: "error-message" }, h("strong", {}, job.error.type || "Error"), ": ", job.error.message || ""),
          job.error.traceback ? h("pre", { class: "code traceback" }, job.error.traceback) : null,
        )
      : null;
    fill(
      this.root.querySelector("#job"),
      h(
        "div",
        { class: "job-head" },
        h("div", {}, h("h1", {}, job.kind, " ", badge(job.state)), h("code", { class: "job-id" }, job.id)),
        h("div", { class: "actions" }, buttons),
      ),
      h(
        "section",
        { class: "card" },
        h(
          "dl",
          { class: "facts" },
          fact("Owner", job.owner ?? "—"),
          fact("Queue", job.queue),
          fact("Priority", String(job.priority)),
          fact("Attempts", `${job.attempts} of ${job.max_attempts}`),
          fact("Progress", `${Math.round(job.progress * 100)}%${job.progress_message ? ` · ${job.progress_message}` : ""}`),
          fact("Submitted", when(job.timestamp)),
          fact("Received", when(job.received_at)),
          fact("Run at", when(job.run_at)),
          fact("Started", when(job.started_at)),
          fact("Finished", when(job.finished_at)),
          fact("Worker", job.lease_owner ? h("code", {}, job.lease_owner) : "—"),
          fact("Cancel requested", job.cancelled ? "yes" : "no"),
        ),
      ),
      h(
        "div",
        { class: "two-up" },
        h("section", { class: "card", id: "job-payload" }, h("h2", {}, "Payload"), json(job.payload)),
        h("section", { class: "card", id: "job-result" }, h("h2", {}, "Result"), json(job.result)),
      ),
      error,
      h("section", { class: "card" }, h("h2", {}, "Attempts"), attemptsTable(attempts)),
      h("section", { class: "card" }, h("h2", {}, "Timeline"), eventsList(events)),
    );
    this.root.dataset.loaded = "true";
    this.root.dataset.state = job.state;
  }

  async act(action, job) {
    const title = `${ACTIONS[action].label} job ${shortId(job.id)}?`;
    if (!(await confirm({ action, title, lines: [`${job.kind}, ${job.state}, attempt ${job.attempts} of ${job.max_attempts}`] }))) return;
    try {
      report(action, await perform(action, { ids: [job.id] }), 1);
    } catch (error) {
      reportError(action, error);
    }
  }
}
