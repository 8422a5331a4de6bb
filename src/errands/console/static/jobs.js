// The Jobs view: one page of jobs read from the service (GET /v1/admin/jobs, a keyset
// cursor in the address), their counts per state (GET /v1/admin/counts, counted in SQL),
// and the live changes to that page: the rows shown, through a shape of their ids, and
// on the newest page the jobs that arrive, through a shape of the filter. The tab never
// holds more than a page. Every row, chip and button is made once and then updated in
// place, keyed by job id, so a live change never replaces what the pointer is on.

import { ACTIONS, appliesTo, confirm, perform, report, reportError } from "./actions.js";
import { api, LiveShape, microseconds } from "./api.js";
import { absolute, arrange, badge, between, duration, h, plural, relative, setAttr, setText, shortId, STATES } from "./dom.js";

export const PAGE_SIZE = 50;
const RELATIVE_TIMES_MS = 15_000;
const COUNTS_EVERY_MS = 1_000;
const RANGES = { "15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400, all: null };
export const DEFAULT_RANGE = "24h";
// The list's orders (GET /v1/admin/jobs?sort=): "-" first is descending. A header's
// first click gives its first order here, the next click the other way round.
export const DEFAULT_SORT = "-received";
const FIRST_ORDER = { received: "-received", state: "state", kind: "kind", queue: "queue", run_time: "-run_time" };
const sortOf = (text) => (text && text.replace(/^-/, "") in FIRST_ORDER ? text : DEFAULT_SORT);

/** A datetime-local value (the viewer's time zone) as an ISO timestamp. */
const localToIso = (value) => (value ? new Date(value).toISOString() : null);

/** The cursor of the jobs older than `job`, newest first, as the server writes it
 * (listing.encode_cursor, whose format this repeats: test_jobs.py's newest-page test
 * clicks Older on it): for the newest page, whose last row moves as jobs arrive. */
const olderThan = (job) =>
  btoa(JSON.stringify([DEFAULT_SORT, job.received_at, job.id])).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/**
 * What the address asks for: the filter (as the list's query, the live shapes' `where`
 * and the actions' selection) and the page's cursor. Time windows are on received_at,
 * the server's clock.
 */
export function selectionOf(params, now = Date.now()) {
  const text = (name) => (params.get(name) || "").trim() || null;
  const kind = text("kind");
  const queue = text("queue");
  const owner = text("owner");
  const search = text("q");
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
  if (state) where.push({ column: "state", op: "eq", value: state });
  if (since) where.push({ column: "received_at", op: "gte", value: since });
  if (until) where.push({ column: "received_at", op: "lt", value: until });
  const filter = {
    states: state ? [state] : [],
    kinds: kind ? [kind] : [],
    queues: queue ? [queue] : [],
    owners: owner ? [owner] : [],
    since,
    until,
    search,
  };
  const query = new URLSearchParams();
  for (const [name, values] of Object.entries(filter)) {
    for (const value of [values].flat()) if (value) query.append(name, value);
  }
  const cursor = { after: text("after"), before: text("before") };
  const sort = sortOf(text("sort"));
  const key = JSON.stringify([kind, queue, owner, state, search, range, text("from"), text("to"), sort]);
  return { key, state, range, kind, queue, owner, search, since, until, where, filter, query, cursor, sort };
}

/** The cells of a job's row, made once; `update` fills them from the row's latest state. */
class JobRow {
  constructor(job, onSelect) {
    const link = `#/jobs/${job.id}`;
    this.check = h("input", { type: "checkbox", class: "select", "aria-label": `Select job ${shortId(job.id)}` });
    this.check.addEventListener("change", () => onSelect(job.id, this.check.checked));
    this.badge = badge(job.state);
    this.cancelling = h("span", { class: "faint" }, " cancelling");
    this.attempts = h("td", { "data-label": "Attempts", class: "num hide-narrow" });
    this.bar = h("div", { class: "progress-bar" });
    this.percent = h("span", { class: "progress-text" });
    this.progress = h("div", { class: "progress" }, h("div", { class: "progress-track" }, this.bar), this.percent);
    this.ran = h("span");
    this.received = h("time");
    this.element = h(
      "tr",
      { "data-id": job.id },
      h("td", { class: "select-cell" }, this.check),
      h("td", { "data-label": "State" }, this.badge, this.cancelling),
      h("td", { "data-label": "Kind" }, h("a", { href: link }, job.kind)),
      h("td", { "data-label": "Job", class: "mono hide-narrow" }, h("a", { href: link, title: job.id }, shortId(job.id))),
      h("td", { "data-label": "Owner", class: "hide-narrow" }, job.owner ?? h("span", { class: "faint" }, "—")),
      h("td", { "data-label": "Queue", class: "hide-narrow" }, job.queue),
      this.attempts,
      h("td", { "data-label": "Progress" }, this.progress, this.ran),
      h("td", { "data-label": "Received" }, this.received),
    );
    this.update(job);
  }

  update(job) {
    this.job = job;
    setAttr(this.element, "data-state", job.state);
    setText(this.badge, job.state);
    setAttr(this.badge, "class", `badge badge-${job.state}`);
    setAttr(this.badge, "data-state", job.state);
    this.cancelling.hidden = !(job.cancelled && job.state === "running");
    setText(this.attempts, `${job.attempts}/${job.max_attempts}`);
    const running = job.state === "running";
    this.progress.hidden = !running;
    if (running) {
      const percent = Math.round(job.progress * 100);
      this.bar.style.width = `${percent}%`;
      setText(this.percent, `${percent}%`);
      setAttr(this.progress, "title", job.progress_message || `${percent}%`);
    }
    const ran = between(job.started_at, job.finished_at);
    setText(this.ran, running ? "" : ran !== null ? duration(ran) : "—");
    setAttr(this.ran, "class", ran === null && !running ? "faint" : null);
    this.tick();
  }

  /** Move the relative time on ("3 min ago"). */
  tick() {
    setAttr(this.received, "datetime", this.job.received_at);
    setAttr(this.received, "title", absolute(this.job.received_at));
    setText(this.received, relative(this.job.received_at));
  }
}

/** The Jobs view. */
export class JobsView {
  constructor(root, { onStatus, onError, onAuthError }) {
    this.root = root;
    this.onStatus = onStatus;
    this.onError = onError;
    this.onAuthError = onAuthError;
    this.selection = null;
    this.page = null;
    this.counts = null;
    this.rows = new Map(); // id -> JobRow, the page's rows in `order`
    this.order = [];
    this.chosen = new Set(); // ids ticked for a bulk action
    this.shapes = [];
    this.dirty = new Set();
    this.frame = 0;
    this.loading = null;
    this.countsTimer = 0;
    this.visible = false;
    this.form = root.querySelector("#filters");
    this.body = root.querySelector("#jobs-body");
    this.empty = h("tr", { class: "empty-row" }, h("td", { colspan: 9, class: "empty" }, "Loading…"));
    this.form.addEventListener("input", (event) => this.filterChanged(event));
    this.form.addEventListener("submit", (event) => event.preventDefault());
    this.chips = this.makeChips(root.querySelector("#states"));
    this.buttons = {};
    for (const action of ["retry", "cancel", "reschedule", "delete"]) {
      const button = root.querySelector(`#bulk-${action}`);
      button.addEventListener("click", () => this.bulk(action));
      this.buttons[action] = button;
    }
    this.sorts = [...root.querySelectorAll("button.sort")];
    for (const button of this.sorts) button.addEventListener("click", () => this.sortBy(button.dataset.sort));
    this.all = root.querySelector("#select-page");
    this.all.addEventListener("change", () => this.choosePage(this.all.checked));
    root.querySelector("#page-newer").addEventListener("click", () => this.turn("before", this.page && this.page.newer));
    root.querySelector("#page-older").addEventListener("click", () => this.turn("after", this.page && this.page.older));
    setInterval(() => this.visible && this.rows.forEach((row) => row.tick()), RELATIVE_TIMES_MS);
  }

  /** The state chips, made once; their counts and pressed state change in place. */
  makeChips(parent) {
    const chips = {};
    for (const state of ["", ...STATES]) {
      const count = h("span", { class: "count", "data-count": state || "all" }, "…");
      const chip = h(
        "button",
        { type: "button", class: `chip-button${state ? ` chip-${state}` : ""}`, "data-filter-state": state },
        h("span", { class: "chip-label" }, state || "All"),
        count,
      );
      chip.addEventListener("click", () => this.navigate({ state, after: null, before: null }));
      parent.append(chip);
      chips[state] = { chip, count };
    }
    return chips;
  }

  get shape() {
    return this.shapes[0] || null;
  }

  show(params) {
    this.visible = true;
    const next = selectionOf(params);
    const same =
      this.selection &&
      this.selection.key === next.key &&
      this.selection.cursor.after === next.cursor.after &&
      this.selection.cursor.before === next.cursor.before;
    if (same) return;
    if (!this.selection || this.selection.key !== next.key) this.chosen.clear();
    this.selection = next;
    this.syncForm();
    this.load();
  }

  /** Stop following the page (each shape is one of the operator's live readers); the
   * page is read afresh when the view comes back. */
  hide() {
    this.visible = false;
    for (const shape of this.shapes) shape.close();
    this.shapes = [];
    this.selection = null;
    if (this.loading) this.loading.abort();
    this.loading = null;
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

  turn(direction, cursor) {
    if (!cursor) return;
    this.navigate({ after: direction === "after" ? cursor : null, before: direction === "before" ? cursor : null });
  }

  /** Order the list by a column: its first order, or the other way round if it is the
   * column the list is ordered by now. The first page of that order is read. */
  sortBy(column) {
    const now = this.selection ? this.selection.sort : DEFAULT_SORT;
    let sort = FIRST_ORDER[column];
    if (now.replace(/^-/, "") === column) sort = now.startsWith("-") ? column : `-${column}`;
    this.navigate({ sort: sort === DEFAULT_SORT ? null : sort, after: null, before: null });
  }

  filterChanged(event) {
    const target = event.target;
    if (!target.name) return;
    const apply = () => this.navigate({ [target.name]: target.value, after: null, before: null });
    clearTimeout(this.typing);
    if (target.tagName === "SELECT") apply();
    else this.typing = setTimeout(apply, 300);
    if (target.name === "range") this.form.querySelector("#custom-range").hidden = target.value !== "custom";
  }

  syncForm() {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    for (const name of ["kind", "queue", "owner", "from", "to", "q"]) {
      const input = this.form.elements[name];
      if (document.activeElement !== input) input.value = params.get(name) || "";
    }
    this.form.elements.range.value = this.selection.range;
    this.form.querySelector("#custom-range").hidden = this.selection.range !== "custom";
    for (const [state, { chip }] of Object.entries(this.chips)) {
      setAttr(chip, "aria-pressed", String((this.selection.state || "") === state));
    }
    const sort = this.selection.sort;
    for (const button of this.sorts) {
      const on = sort.replace(/^-/, "") === button.dataset.sort;
      setAttr(button.parentElement, "aria-sort", on ? (sort.startsWith("-") ? "descending" : "ascending") : "none");
    }
  }

  /** Read the page and the counts the address asks for, then follow the page live. */
  async load() {
    if (this.loading) this.loading.abort();
    const loading = new AbortController();
    this.loading = loading;
    this.root.dataset.loaded = "false";
    const { query, cursor } = this.selection;
    const pageQuery = new URLSearchParams(query);
    pageQuery.set("limit", String(PAGE_SIZE));
    if (this.selection.sort !== DEFAULT_SORT) pageQuery.set("sort", this.selection.sort);
    if (cursor.after) pageQuery.set("after", cursor.after);
    if (cursor.before) pageQuery.set("before", cursor.before);
    let page;
    let counts;
    try {
      [page, counts] = await Promise.all([
        api(`v1/admin/jobs?${pageQuery}`, { signal: loading.signal }),
        api(`v1/admin/counts?${query}`, { signal: loading.signal }),
      ]);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (this.loading === loading) this.showNothing(error.message);
      this.onError(error);
      return;
    }
    if (this.loading !== loading) return;
    this.loading = null;
    this.page = page;
    this.emptyText = null;
    this.setPage(page.jobs);
    this.drawCounts(counts);
    this.follow();
    this.root.dataset.loaded = "true";
    this.root.dataset.loads = String(Number(this.root.dataset.loads || 0) + 1);
  }

  /** The page could not be read (a search too broad, say): show no rows and no counts
   * rather than the last filter's, which the bulk buttons would otherwise act on. */
  showNothing(why) {
    this.loading = null;
    for (const shape of this.shapes) shape.close();
    this.shapes = [];
    this.page = null;
    this.counts = null;
    for (const { count } of Object.values(this.chips)) setText(count, "–");
    this.emptyText = `Nothing shown: ${why}`;
    this.setPage([]);
  }

  /** Show these jobs, reusing the row of every job already shown. */
  setPage(jobs) {
    const keep = new Map();
    for (const job of jobs) {
      const row = this.rows.get(job.id);
      if (row) row.update(job);
      keep.set(job.id, row || new JobRow(job, (id, on) => this.choose(id, on)));
    }
    this.rows = keep;
    this.order = jobs.map((job) => job.id);
    this.drawRows();
  }

  drawRows() {
    const rows = this.order.map((id) => this.rows.get(id).element);
    setText(this.empty.firstChild, this.emptyText || "No job matches this filter.");
    arrange(this.body, rows.length ? rows : [this.empty]);
    for (const [id, row] of this.rows) row.check.checked = this.chosen.has(id);
    this.drawSummary();
    this.drawButtons();
  }

  /** Follow the page live: the rows shown (by id) and, on the newest page, new jobs. */
  follow() {
    for (const shape of this.shapes) shape.close();
    this.shapes = [];
    const common = { onStatus: this.onStatus, onAuthError: this.onAuthError };
    // New jobs go on top only of the first page newest first; in another order they
    // would belong anywhere, so that page follows only the rows it shows.
    if (this.onNewestPage() && !this.selection.search) {
      const top = this.order.length ? this.rows.get(this.order[0]).job.received_at : new Date().toISOString();
      const where = [...this.selection.where, { column: "received_at", op: "gte", value: top }];
      this.shapes.push(new LiveShape(where, { ...common, onBatch: (rows, gone) => this.changed(rows, gone, true) }));
    }
    if (this.order.length) {
      const where = [{ column: "id", op: "in", value: [...this.order] }];
      this.shapes.push(new LiveShape(where, { ...common, onBatch: (rows, gone) => this.changed(rows, gone, false) }));
    }
  }

  /** The first page newest first: the one new jobs go on top of. */
  onNewestPage() {
    const { cursor, sort } = this.selection;
    return !cursor.after && !cursor.before && sort === DEFAULT_SORT;
  }

  /** Live changes: rows on the page are updated in place; on the newest page, a new job
   * goes on top and the page keeps its size. */
  changed(rows, gone, arrivals) {
    let moved = false;
    for (const job of rows) {
      const row = this.rows.get(job.id);
      if (row) {
        row.job = job;
        this.dirty.add(job.id);
      } else if (arrivals) {
        this.rows.set(job.id, new JobRow(job, (id, on) => this.choose(id, on)));
        this.order.unshift(job.id);
        moved = true;
      }
    }
    for (const id of gone) {
      // A job stays while another of the page's shapes holds it: the rows' shape keeps
      // (and updates in place) a job of the page that left the arrivals' filter.
      if (this.shapes.some((shape) => shape.rows.has(id))) continue;
      if (this.rows.delete(id)) {
        this.order = this.order.filter((other) => other !== id);
        this.chosen.delete(id);
        moved = true;
      }
    }
    if (moved && this.selection.sort === DEFAULT_SORT) this.order.sort((a, b) => this.newestFirst(a, b));
    const overflow = this.order.length > PAGE_SIZE;
    while (this.order.length > PAGE_SIZE) this.rows.delete(this.order.pop());
    // The page read last ended elsewhere: "Older" goes on from the last row shown now.
    if (moved && this.page && this.onNewestPage() && (overflow || this.page.older)) {
      const last = this.order[this.order.length - 1];
      this.page = { ...this.page, older: last ? olderThan(this.rows.get(last).job) : null };
    }
    this.scheduleDraw(moved);
    this.scheduleCounts();
    // Jobs pushed off the page: follow it afresh a moment later (the arrivals' shape
    // keeps every job that arrived since it began, and the tab must never hold more
    // than a page). The page is not read again: a read begun before the last arrivals
    // would put rows already pushed off back on the screen.
    if (overflow && !this.refollowing) {
      this.refollowing = setTimeout(() => {
        this.refollowing = 0;
        if (this.selection && !this.loading) this.follow();
      }, 1_000);
    }
  }

  newestFirst(a, b) {
    const x = this.rows.get(a).job;
    const y = this.rows.get(b).job;
    return microseconds(y.received_at) - microseconds(x.received_at) || (x.id < y.id ? 1 : -1);
  }

  scheduleDraw(moved) {
    this.moved = this.moved || moved;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!this.selection) return; // the view was left
      for (const id of this.dirty) {
        const row = this.rows.get(id);
        if (row) row.update(row.job);
      }
      this.dirty.clear();
      if (this.moved) this.drawRows();
      else this.drawButtons();
      this.moved = false;
    });
  }

  /** Counts again after live changes, at most once a second. */
  scheduleCounts() {
    if (this.countsTimer) return;
    this.countsTimer = setTimeout(async () => {
      const selection = this.selection;
      this.countsTimer = 0;
      if (!selection) return; // the view was left
      try {
        const counts = await api(`v1/admin/counts?${selection.query}`);
        if (selection === this.selection) this.drawCounts(counts);
      } catch (error) {
        this.onError(error);
      }
    }, COUNTS_EVERY_MS);
  }

  drawCounts(counts) {
    this.counts = counts;
    const estimated = new Set(counts.estimated);
    const number = (n, rough) => (rough ? `~${n.toLocaleString()}` : n.toLocaleString());
    for (const [state, { count }] of Object.entries(this.chips)) {
      const rough = state ? estimated.has(state) : estimated.size > 0;
      setText(count, number(state ? counts.counts[state] : counts.total, rough));
      setAttr(count, "data-estimated", rough ? "true" : null);
      setAttr(count, "title", rough ? `an estimate: more than ${counts.exact_up_to.toLocaleString()}` : null);
    }
    this.drawSummary();
    this.drawButtons();
  }

  /** How many jobs the filter's chosen state holds, from the counts. */
  matching() {
    if (!this.counts) return { n: 0, rough: false };
    const state = this.selection.state;
    const estimated = this.counts.estimated;
    return state
      ? { n: this.counts.counts[state], rough: estimated.includes(state) }
      : { n: this.counts.total, rough: estimated.length > 0 };
  }

  drawSummary() {
    const { n, rough } = this.matching();
    const total = `${rough ? "about " : ""}${plural(n, "job")}`;
    setText(this.root.querySelector("#jobs-summary"), this.order.length ? `${this.order.length} shown of ${total}` : total);
    this.root.querySelector("#page-newer").disabled = !(this.page && this.page.newer);
    this.root.querySelector("#page-older").disabled = !(this.page && this.page.older);
  }

  /** What each bulk button would act on: the ticked rows, or every job of the filter. */
  targets(action) {
    if (this.chosen.size) {
      const jobs = [...this.chosen].map((id) => this.rows.get(id)).filter(Boolean).map((row) => row.job);
      return { mode: "ids", jobs: jobs.filter((job) => appliesTo(action, job)), all: jobs.length };
    }
    const counts = this.counts ? this.counts.counts : {};
    const state = this.selection.state;
    const n = ACTIONS[action].states.filter((s) => !state || s === state).reduce((sum, s) => sum + (counts[s] || 0), 0);
    return { mode: "filter", n };
  }

  drawButtons() {
    for (const [action, button] of Object.entries(this.buttons)) {
      const target = this.targets(action);
      const n = target.mode === "ids" ? target.jobs.length : target.n;
      button.disabled = n === 0;
      setText(button.querySelector(".count"), n.toLocaleString());
      setAttr(button, "data-mode", target.mode);
    }
    setText(this.root.querySelector("#chosen"), this.chosen.size ? `${this.chosen.size} selected` : "");
    this.all.checked = this.order.length > 0 && this.order.every((id) => this.chosen.has(id));
  }

  choose(id, on) {
    if (on) this.chosen.add(id);
    else this.chosen.delete(id);
    this.drawButtons();
  }

  choosePage(on) {
    for (const id of this.order) {
      if (on) this.chosen.add(id);
      else this.chosen.delete(id);
      this.rows.get(id).check.checked = on;
    }
    this.drawButtons();
  }

  /** What the selection is, in words, for the confirmation. */
  describe() {
    const { state, kind, queue, owner, search, range, since, until } = this.selection;
    const parts = [state ? `state ${state}` : "any state"];
    if (kind) parts.push(`kind ${kind}`);
    if (queue) parts.push(`queue ${queue}`);
    if (owner) parts.push(`owner ${owner}`);
    if (search) parts.push(`holding “${search}”`);
    if (range === "custom") {
      if (since) parts.push(`received from ${absolute(since)}`);
      if (until) parts.push(`until ${absolute(until)}`);
    } else if (since) {
      parts.push(`received since ${absolute(since)}`);
    } else {
      parts.push("received any time");
    }
    return parts.join(", ");
  }

  /** "3 failed jobs" for each state the action applies to, from the counts. */
  perState(action) {
    const { counts, estimated } = this.counts;
    const state = this.selection.state;
    return ACTIONS[action].states
      .filter((s) => (!state || s === state) && counts[s] > 0)
      .map((s) => `${estimated.includes(s) ? "about " : ""}${plural(counts[s], `${s} job`)}`);
  }

  async bulk(action) {
    const target = this.targets(action);
    let title;
    let lines;
    let request;
    if (target.mode === "ids") {
      title = `${ACTIONS[action].label} ${plural(target.jobs.length, "selected job")}?`;
      lines = target.jobs.slice(0, 8).map((job) => `${job.kind} ${shortId(job.id)}, ${job.state}`);
      if (target.all > target.jobs.length) lines.push(`${plural(target.all - target.jobs.length, "other selected job")} will be left alone.`);
      request = { ids: target.jobs.map((job) => job.id) };
    } else {
      title = `${ACTIONS[action].label} ${plural(target.n, "job")}?`;
      lines = [`Every job of the filter: ${this.describe()}.`, ...this.perState(action)];
      const where = this.selection.filter;
      const everything = !Object.values(where).some((value) => (Array.isArray(value) ? value.length : value));
      request = { where, all: everything };
    }
    if (!(await confirm({ action, title, lines }))) return;
    try {
      const outcome = await perform(action, request);
      report(action, outcome, target.mode === "ids" ? target.jobs.length : target.n);
      this.chosen.clear();
      this.drawRows();
    } catch (error) {
      reportError(action, error);
    }
    this.scheduleCounts();
  }
}
