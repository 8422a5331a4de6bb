// errands: the Background Jobs page's view, shared by its two homes. Plain JavaScript,
// no build step. It renders the jobs and the connection and hands the user's actions to
// a data source: the local API of `errands ui` (app.js), or errands.js in the browser
// when `errands server` hosts the page (hosted.js). A source is
//
//   { kinds(): Promise<[{name, example}]>,     the kinds the form offers
//     submit(kind, payload, options): Promise<JobView>,  options: priority, queue,
//                                              run_at (ISO 8601, UTC), max_attempts, unique_key
//     cancel(id): Promise<void>,
//     setOnline(online): Promise<StatusView?>, the Wi-Fi switch
//     listen({ jobs, status, live }) }          calls back with JobView[] and StatusView
//
// (JobView and StatusView: see jobView below and errands/ui/views.py.) The option fields
// are checked with errands.js's model.js, by the rules protocol.py exports (rules.js):
// both are served beside this file.
import { RULES, checkOption, textLength } from "./model.js";

const $ = (selector) => document.querySelector(selector);

let ui;
function find() {
  return {
  form: $("#submit-form"),
  kind: $("#kind"),
  payload: $("#payload"),
  payloadError: $("#payload-error"),
  submit: $("#submit"),
  submitNote: $("#submit-note"),
  options: $("#options"),
  optionsSummary: $("#options-summary"),
  rows: $("#jobs"),
  empty: $("#empty"),
  template: $("#row-template"),
  live: $("#live"),
  wifi: $("#connectivity"),
  wifiState: $("#connectivity-state"),
  wifiDetail: $("#connectivity-detail"),
  pendingCount: $("#pending-count"),
  };
}

const ICONS = {
  check: '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10" fill="currentColor" opacity=".14"/><path d="M7.5 12.5l3 3 6-7" fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  dash: '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10" fill="currentColor" opacity=".14"/><path d="M8 12h8" stroke="currentColor" stroke-width="2.4" stroke-linecap="round"/></svg>',
  error: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 3.2 22 20.5H2z" fill="currentColor" opacity=".14" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/><path d="M12 9.5v5" stroke="currentColor" stroke-width="2.2" stroke-linecap="round"/><circle cx="12" cy="17.4" r="1.2" fill="currentColor"/></svg>',
  clock: '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="1.8"/><path d="M12 7.5V12l3 2" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round"/></svg>',
  retry: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M20 11a8 8 0 1 0-2.3 5.7M20 5v6h-6" fill="none" stroke="currentColor" stroke-width="1.9" stroke-linecap="round" stroke-linejoin="round"/></svg>',
};

const state = { kinds: [], lastExample: "", rendered: false, source: null };

// -- submitting --------------------------------------------------------------------------

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** The payload as a value, or an error message saying why it is not valid JSON. */
function readPayload() {
  const text = ui.payload.value.trim();
  if (text === "") return { value: {} };
  try {
    return { value: JSON.parse(text) };
  } catch (error) {
    return { error: `The payload is not valid JSON: ${error.message}` };
  }
}

function showPayloadError(message) {
  ui.payloadError.textContent = message || "";
  ui.payloadError.hidden = !message;
  ui.payload.setAttribute("aria-invalid", message ? "true" : "false");
}

async function loadKinds() {
  const kinds = await state.source.kinds();
  state.kinds = kinds;
  ui.kind.replaceChildren(
    ...kinds.map((kind) => new Option(kind.name, kind.name)),
  );
  useExample();
}

/** Put the chosen kind's example in the editor, unless the user has edited it. */
function useExample() {
  const kind = state.kinds.find((k) => k.name === ui.kind.value);
  const untouched = ui.payload.value.trim() === "" || ui.payload.value === state.lastExample;
  if (kind && untouched) {
    state.lastExample = pretty(kind.example);
    ui.payload.value = state.lastExample;
    showPayloadError("");
  }
}

// -- the job's options: the protocol's rules (model.js, from rules.js), in the page's words

const wholeNumber = (label, name) => (input) => {
  const text = input.value.trim();
  const { min, max } = RULES.job_options[name];
  const problem = { error: `${label} must be a whole number from ${min} to ${max}.` };
  if (input.validity.badInput || (text !== "" && !/^[+-]?\d+$/.test(text))) return problem;
  return checked(name, text === "" ? undefined : Number(text), problem);
};

const shortName = (label, name) => (input) => {
  const text = input.value.trim();
  const { max_length: most } = RULES.job_options[name];
  const length = textLength(text);
  const problem = length > most
    ? { error: `${label} must be at most ${most} characters (it has ${length}).` }
    : { error: `${label} must hold only printable characters (no tabs, line breaks or invisible ones).` };
  return checked(name, text === "" ? undefined : text, problem);
};

/** `value` if the protocol's rule for option `name` takes it, else `problem`. */
function checked(name, value, problem) {
  if (value === undefined) return { value };
  try {
    return { value: checkOption(name, value) };
  } catch (error) {
    if (error instanceof RangeError) return problem;
    throw error;
  }
}

/** A datetime-local field (the user's own time) as an ISO 8601 moment in UTC. */
function moment(input) {
  const when = input.value ? new Date(input.value) : null;
  const problem = { error: "Run at needs a complete date and time." };
  if (input.validity.badInput || (when !== null && Number.isNaN(when.getTime()))) return problem;
  return checked("run_at", when?.toISOString(), problem);
}

const OPTIONS = [
  { name: "priority", id: "option-priority", read: wholeNumber("Priority", "priority") },
  { name: "max_attempts", id: "option-max-attempts", read: wholeNumber("Max attempts", "max_attempts") },
  { name: "queue", id: "option-queue", read: shortName("The queue", "queue") },
  { name: "run_at", id: "option-run-at", read: moment },
  { name: "unique_key", id: "option-unique-key", read: shortName("The unique key", "unique_key") },
];

function showOptionError(option, message) {
  const input = $(`#${option.id}`);
  const error = $(`#${option.id}-error`);
  error.textContent = message || "";
  error.hidden = !message;
  input.setAttribute("aria-invalid", message ? "true" : "false");
}

/** The options set, as the source's submit takes them, and the fields found bad (their
 * messages shown). */
function readOptions() {
  const values = {};
  const bad = [];
  for (const option of OPTIONS) {
    const { value, error } = option.read($(`#${option.id}`));
    showOptionError(option, error);
    if (error) bad.push($(`#${option.id}`));
    else if (value !== undefined) values[option.name] = value;
  }
  return { values, bad };
}

/** Say on the closed "Options" which are set. */
function summarizeOptions() {
  const set = OPTIONS.filter((option) => $(`#${option.id}`).value.trim() !== "").length;
  ui.optionsSummary.textContent = set === 0 ? "defaults" : `${set} set`;
  ui.options.classList.toggle("has-values", set > 0);
}

function watchOptions() {
  for (const option of OPTIONS) {
    const input = $(`#${option.id}`);
    input.addEventListener("input", () => {
      summarizeOptions();
      if (input.getAttribute("aria-invalid") === "true") showOptionError(option, option.read(input).error);
    });
  }
}

async function submitJob(event) {
  event.preventDefault();
  ui.submitNote.textContent = "";
  const payload = readPayload();
  const options = readOptions();
  showPayloadError(payload.error);
  if (payload.error || options.bad.length > 0) {
    if (options.bad.length > 0) ui.options.open = true;
    (payload.error ? ui.payload : options.bad[0]).focus();
    ui.submitNote.textContent = "Nothing submitted: fix the marked fields.";
    return;
  }
  ui.submit.disabled = true;
  try {
    const job = await state.source.submit(ui.kind.value, payload.value, options.values);
    ui.submitNote.textContent = `Submitted ${job.short_id}.`;
  } catch (error) {
    showPayloadError(error.message);
  } finally {
    ui.submit.disabled = false;
  }
}

// -- connectivity ------------------------------------------------------------------------

function renderStatus(status) {
  const online = status.connected;
  const wanted = status.enabled;
  const mode = online ? "online" : wanted ? "connecting" : "offline";
  ui.wifi.disabled = false;
  ui.wifi.dataset.state = mode;
  ui.wifi.setAttribute("aria-checked", String(wanted));
  ui.wifiState.textContent = { online: "Online", connecting: "Reconnecting…", offline: "Offline" }[mode];
  const detail = online ? ""
    : wanted ? `Not syncing: ${status.reason || "connecting"}. New jobs wait on this machine.`
    : "Sync is off. New jobs wait on this machine until you switch it back on.";
  ui.wifiDetail.textContent = detail;
  ui.wifiDetail.hidden = !detail;
  const waiting = status.pending;
  ui.pendingCount.hidden = waiting === 0;
  ui.pendingCount.textContent = `${waiting} ${waiting === 1 ? "change" : "changes"} to upload`;
}

async function toggleConnectivity() {
  const online = ui.wifi.getAttribute("aria-checked") !== "true";
  ui.wifi.disabled = true;
  try {
    const status = await state.source.setOnline(online);
    if (status) renderStatus(status);
  } catch (error) {
    ui.wifiDetail.textContent = error.message;
    ui.wifiDetail.hidden = false;
  } finally {
    ui.wifi.disabled = false;
  }
}

// -- the jobs table ----------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function progressHtml(job) {
  const percent = Math.floor(job.progress * 100);
  switch (job.state) {
    case "completed":
      return `<span class="state state-done" title="Completed">${ICONS.check}100%</span>`;
    case "cancelled":
      return `<span class="state state-cancelled" title="Cancelled">${ICONS.dash}Cancelled</span>`;
    case "failed":
    case "rejected": {
      const attempts = job.state === "failed" && job.attempts
        ? `<span class="state-sub">after ${job.attempts} ${job.attempts === 1 ? "attempt" : "attempts"}</span>` : "";
      const label = job.state === "failed" ? "Failed" : "Rejected";
      return `<span class="state state-failed" title="${label}">${ICONS.error}<span>${label}${attempts}</span></span>`;
    }
    case "running": {
      const message = job.cancel_requested ? "Cancelling…" : job.progress_message || "Running";
      return `<div class="progress${job.cancel_requested ? " is-cancelling" : ""}">
          <div class="progress-top"><span class="percent">${percent}%</span>
            <div class="bar" role="progressbar" aria-label="Progress" aria-valuemin="0" aria-valuemax="100"
                 aria-valuenow="${percent}"><div class="bar-fill"></div></div></div>
          <span class="progress-message" title="${escapeHtml(message)}">${escapeHtml(message)}</span>
        </div>`;
    }
    default: {
      if (job.error && job.attempts > 0) {
        const of = job.max_attempts ? ` of ${job.max_attempts}` : "";
        return `<span class="state state-retrying">${ICONS.retry}<span>Retrying<span class="state-sub">attempt ${job.attempts}${of} failed</span></span></span>`;
      }
      const label = job.pending ? "Waiting to upload" : job.cancel_requested ? "Cancelling…" : "Queued";
      return `<span class="state state-waiting">${ICONS.clock}${label}</span>`;
    }
  }
}

function resultHtml(job) {
  if (job.state === "cancelled") return '<span class="result-cancelled">cancelled</span>';
  if (job.state === "rejected") {
    return `<span class="result-error">${escapeHtml(job.rejected || "the server refused this job")}</span>`;
  }
  if (job.state === "failed" && job.error) {
    const type = job.error.type ? `<span class="error-type">${escapeHtml(job.error.type)}:</span> ` : "";
    const trace = job.error.traceback
      ? `<details class="traceback"><summary>Traceback</summary><pre>${escapeHtml(job.error.traceback)}</pre></details>` : "";
    return `<div class="result-error">${type}${escapeHtml(job.error.message)}</div>${trace}`;
  }
  if (job.state === "completed") {
    // One line with spaces (it wraps between values) when short; indented when long.
    // JSON escapes newlines inside strings, so only the layout's own newlines go.
    const oneLine = JSON.stringify(job.result, null, 1).replace(/\n\s*/g, " ");
    const text = oneLine.length > 80 ? pretty(job.result) : oneLine;
    return `<code class="result-json">${escapeHtml(text)}</code>`;
  }
  return "";
}

/** Set a cell's HTML only when it changed, so focus and open <details> survive updates. */
function setHtml(element, html) {
  if (element.dataset.html !== html) {
    element.dataset.html = html;
    element.innerHTML = html;
  }
}

function createRow(job) {
  const row = ui.template.content.firstElementChild.cloneNode(true);
  row.dataset.id = job.id;
  row.querySelector(".cancel").addEventListener("click", () => cancelJob(row));
  if (state.rendered) {  // it arrived while the page was open: highlight it for a moment
    row.classList.add("fresh");
    row.addEventListener("animationend", () => row.classList.remove("fresh"), { once: true });
  }
  return row;
}

function updateRow(row, job) {
  row.dataset.state = job.state;
  row.classList.toggle("is-pending", job.pending);
  const id = row.querySelector(".job-id");
  id.textContent = job.short_id;
  id.title = job.id;
  row.querySelector(".job-kind").textContent = job.kind;
  row.querySelector(".badge-pending").hidden = !job.pending;
  row.querySelector(".badge-pending").title = "Saved on this machine; it uploads when the sync is back.";

  const when = new Date(job.timestamp);
  const time = row.querySelector("time");
  time.dateTime = job.timestamp;
  time.title = when.toLocaleString();
  const today = when.toDateString() === new Date().toDateString();
  setHtml(time, `${timeFormat.format(when)}${today ? "" : `<span class="date">${dateFormat.format(when)}</span>`}`);

  setHtml(row.querySelector(".cell-progress"), progressHtml(job));
  const fill = row.querySelector(".bar-fill"); // set here: the pages' CSP allows no inline style
  if (fill) fill.style.width = `${Math.floor(job.progress * 100)}%`;
  setHtml(row.querySelector(".cell-result"), resultHtml(job));

  const cancel = row.querySelector(".cancel");
  cancel.disabled = job.ended || job.cancel_requested;
  cancel.setAttribute("aria-label", `Cancel job ${job.short_id}`);
  cancel.title = job.ended ? "This job has ended" : job.cancel_requested ? "Cancellation requested" : "Ask the worker to stop this job";
}

function renderJobs(jobs) {
  const existing = new Map([...ui.rows.children].map((row) => [row.dataset.id, row]));
  jobs.forEach((job, index) => {
    let row = existing.get(job.id);
    if (row) existing.delete(job.id);
    else row = createRow(job);
    updateRow(row, job);
    if (ui.rows.children[index] !== row) ui.rows.insertBefore(row, ui.rows.children[index] || null);
  });
  for (const row of existing.values()) row.remove();
  state.rendered = true;
  ui.empty.hidden = jobs.length > 0;
}

async function cancelJob(row) {
  const button = row.querySelector(".cancel");
  button.disabled = true;
  try {
    await state.source.cancel(row.dataset.id);
  } catch (error) {
    button.title = error.message;
    ui.submitNote.textContent = error.message;
  }
}

// -- live updates ------------------------------------------------------------------------

function setLive(live, text) {
  ui.live.dataset.live = String(live);
  if (ui.live.textContent !== text) ui.live.textContent = text;  // a status region: say it once
}

// -- start -------------------------------------------------------------------------------

/** Render the page from `source` (see the top of this file) and wire up the controls. */
export function startPage(source) {
  state.source = source;
  ui = find();
  ui.form.addEventListener("submit", submitJob);
  ui.kind.addEventListener("change", useExample);
  ui.payload.addEventListener("input", () => {
    if (!ui.payloadError.hidden) showPayloadError(readPayload().error || "");
  });
  ui.payload.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.form.requestSubmit();
  });
  watchOptions();
  ui.wifi.addEventListener("click", toggleConnectivity);
  loadKinds().catch((error) => showPayloadError(error.message));
  source.listen({ jobs: renderJobs, status: renderStatus, live: setLive });
}

/** A job of errands.js as the table shows it (what errands/ui/views.py makes of a Job). */
export function jobView(job) {
  return {
    id: job.id,
    // UUIDv7 ids start with the time, so jobs made together share their first
    // characters; the random tail tells them apart.
    short_id: job.id.replace(/-/g, "").slice(-8),
    kind: job.kind,
    payload: job.payload,
    timestamp: job.timestamp,
    state: job.state,
    ended: job.done,
    cancel_requested: job.cancelled,
    progress: job.progress,
    progress_message: job.progress_message,
    result: job.result,
    error: errorView(job.error),
    rejected: job.rejected,
    attempts: job.attempts,
    max_attempts: job.max_attempts,
    pending: job.pending,
  };
}

function errorView(error) {
  if (!error) return null;
  if (typeof error !== "object" || Array.isArray(error)) return { type: null, message: String(error), traceback: null };
  return { type: error.type ?? null, message: error.message || error.type || "failed", traceback: error.traceback ?? null };
}
