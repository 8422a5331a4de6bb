// errands.js's model: the protocol's rules, the error tree, and the pure parts -- ids,
// offsets, payload checks, the view of a job (synced row + outbox on top), batches,
// backoff, the event-stream parser. No I/O: Node's test runner tests it (tests/js/), and
// tests/conformance/ holds its checks to the service's.
import RULES from "./rules.js";

export { RULES };

/** The protocol's constants, read from the rules protocol.py exports (rules.js). */
export const PROTOCOL = Object.freeze({
  PREFIX: RULES.prefix,
  START: RULES.start,
  JOBS_TABLE: RULES.jobs_table,
  MAX_BATCH: RULES.max_batch,
  MAX_PAYLOAD_BYTES: RULES.max_payload_bytes,
  MAX_KIND_LENGTH: RULES.kind.max_length,
  MAX_PRIORITY: RULES.job_options.priority.max,
  MAX_ATTEMPTS: RULES.job_options.max_attempts.max,
  MAX_NAME_LENGTH: RULES.job_options.queue.max_length,
  MAX_BODY_BYTES: RULES.max_body_bytes,
  LIVE_HOLD_SECONDS: RULES.live_hold_seconds,
  BAD_OFFSET: RULES.error_codes.bad_offset,
});

const BATCH_BYTES = PROTOCOL.MAX_BODY_BYTES / 2; // JSON overhead varies: stay well under
const FINAL_STATES = new Set(["completed", "failed", "cancelled", "rejected"]);
const ANSWERABLE_STATES = new Set(["queued", "running"]);
const TIMES = ["timestamp", "run_at", "received_at", "started_at", "finished_at"];

// -- errors (the Python client's tree: errands/exceptions.py) ------------------------------

/** Something went wrong in errands. */
export class ErrandsError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
/** The replica has no job with this id. */
export class JobNotFound extends ErrandsError {}
/** A job's kind must be a string of 1 to 200 characters. */
export class InvalidKind extends ErrandsError {}
/** The payload cannot be stored as JSON. */
export class PayloadError extends ErrandsError {}
/** The payload's JSON is larger than the service takes; send a reference to the data. */
export class PayloadTooLarge extends PayloadError {}
/** wait() gave up before the job ended; it may still be running. */
export class WaitTimeout extends ErrandsError {}
/** The replica (IndexedDB) is unusable. */
export class ReplicaError extends ErrandsError {}
/** The replica belongs to another server or user. */
export class ReplicaMismatch extends ReplicaError {}
/** The sync service could not be used. */
export class SyncError extends ErrandsError {}
/** No answer from the sync service; local changes wait in the outbox (retried). */
export class ServerUnreachable extends SyncError {}
/** The sync service refused the token; sign in again. `code`: the service's reason
 * (RULES.error_codes.token_expired when the token is only out of date). */
export class Unauthorized extends SyncError {
  constructor(message, code = RULES.error_codes.unauthorized) {
    super(message);
    this.code = code;
  }
}

/** The job has no question waiting for an answer: answered already, timed out, or never
 * asked (protocol.QuestionClosed). */
export class QuestionClosed extends ErrandsError {}

/** The server refused a request as wrong (RULES.answers: "refused"): its mutations are rejected. */
export class Refused extends SyncError {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.code = code;
    this.detail = detail;
  }
}
/** The shape's offset is no longer usable: start again from the snapshot. */
export class MustRefetch extends SyncError {}
/** The stream gave no event in time (a buffering proxy): use long polls. */
export class StreamUnusable extends SyncError {}

// -- pure parts ---------------------------------------------------------------------------

/** The last id `uuid7` made, as 48 bits of milliseconds then 74 random bits. */
let lastId = 0n;

/** A new UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Each id is
 * above the one before (RFC 9562's monotonic random, 6.2 method 2), as errands.ids makes
 * them: where it would not be, it is the last plus a random step of up to 2**40 (so jobs
 * submitted in one millisecond list in the order they were submitted, and an id is not
 * guessable from the one before). */
export function uuid7(now = Date.now(), random = crypto.getRandomValues(new Uint8Array(10))) {
  const noise = BigInt(`0x${[...random.subarray(0, 10)].map((b) => b.toString(16).padStart(2, "0")).join("")}`);
  let value = (BigInt(now) << 74n) | (noise & ((1n << 74n) - 1n));
  if (value <= lastId) value = lastId + 1n + (noise & ((1n << 40n) - 1n));
  lastId = value;
  const millis = value >> 74n;
  const randomA = (value >> 62n) & 0xfffn;
  const randomB = value & ((1n << 62n) - 1n);
  const id = (millis << 80n) | (0x7n << 76n) | (randomA << 64n) | (0x2n << 62n) | randomB; // version 7, RFC 4122 variant
  const hex = id.toString(16).padStart(32, "0");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A shape offset, `GENERATION_XMIN_XMAX_XIP1.XIP2...[~KEY]`, decoded; throws if it is not one. */
export function decodeOffset(text) {
  const tilde = text.indexOf("~");
  const body = tilde < 0 ? text : text.slice(0, tilde);
  const parts = body.split("_");
  const number = /^\d+$/;
  const bad = () => new SyncError(`not an offset: ${JSON.stringify(text.slice(0, 80))}`);
  if (parts.length !== 4 || !/^[A-Za-z0-9]+$/.test(parts[0])) throw bad();
  const [generation, xmin, xmax, xip] = parts;
  const xips = xip ? xip.split(".") : [];
  if (![xmin, xmax, ...xips].every((x) => number.test(x))) throw bad();
  const offset = {
    generation,
    xmin: Number(xmin),
    xmax: Number(xmax),
    xip: xips.map(Number),
    afterKey: tilde < 0 ? null : text.slice(tilde + 1),
  };
  if (!(offset.xmin > 0 && offset.xmin <= offset.xmax) || offset.xip.some((x) => x < offset.xmin || x >= offset.xmax)) {
    throw bad();
  }
  return offset;
}

/** Whether the effects of transaction `txid` are visible at `offset` (protocol.Offset.covers).
 * Transaction ids are xid8 numbers, exact as JavaScript numbers below 2**53. */
export function covers(offset, txid) {
  return txid < offset.xmin || (txid < offset.xmax && !offset.xip.includes(txid));
}

/** Microseconds since the epoch of an ISO 8601 timestamp, for ordering jobs newest first. */
export function sortKey(timestamp) {
  const text = String(timestamp);
  const match = /^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?([zZ]|[+-]\d\d:?\d\d)?$/.exec(text);
  const seconds = match ? Date.parse(`${match[1].replace(" ", "T")}${match[3] ?? "Z"}`) : NaN;
  if (Number.isNaN(seconds)) throw new SyncError(`not a timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  const fraction = (match[2] || "").padEnd(6, "0").slice(0, 6);
  return seconds * 1000 + Number(fraction);
}

/** `payload` as the JSON text the server stores, or PayloadError saying why it cannot be
 * (what the service refuses too: NaN and Infinity, NUL, lone surrogates, nesting deeper
 * than RULES.max_json_depth; PayloadTooLarge past RULES.max_payload_bytes). No payload
 * (undefined or null) means `{}`, as for a row inserted without one. */
export function payloadJson(payload) {
  const value = payload ?? {};
  checkJson(value, "payload");
  const text = JSON.stringify(value);
  const size = new TextEncoder().encode(text).length;
  if (size > RULES.max_payload_bytes) {
    throw new PayloadTooLarge(`the payload is ${size} bytes of JSON; the most the server takes is ${RULES.max_payload_bytes}`);
  }
  return text;
}

/** Whether `text` holds what no Postgres text can: NUL, or a lone surrogate. */
export function unstorable(text) {
  return text.includes("\u0000") || !text.isWellFormed();
}

/** A text's length in the rules' unit (RULES.length_unit): code points, as Python counts. */
export function textLength(text) {
  let length = 0;
  for (const _ of text) length++;
  return length;
}

/** Walked without recursion, as protocol.json_depth_problem: `[]` is 1 deep. */
function checkJson(root, where) {
  const stack = [[root, 0, where]];
  while (stack.length) {
    const [value, depth, at] = stack.pop();
    if (value === null || typeof value === "boolean") continue;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new PayloadError(`the ${at} holds ${value}, which JSON cannot store`);
      continue;
    }
    if (typeof value === "string") {
      if (unstorable(value)) throw new PayloadError(`the ${at} contains a NUL character or a lone surrogate, which the server cannot store`);
      continue;
    }
    const proto = typeof value === "object" ? Object.getPrototypeOf(value) : undefined;
    if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) {
      throw new PayloadError(`the ${at} is a ${typeof value === "object" ? value.constructor?.name : typeof value}, not JSON; use objects, arrays, strings, numbers, booleans and null`);
    }
    if (depth >= RULES.max_json_depth) {
      throw new PayloadError(`the ${where} is nested too deeply: arrays and objects are nested more than ${RULES.max_json_depth} deep`);
    }
    if (Array.isArray(value)) {
      value.forEach((item, index) => stack.push([item, depth + 1, `${at}[${index}]`]));
      continue;
    }
    for (const [key, item] of Object.entries(value)) {
      if (unstorable(key)) throw new PayloadError(`the ${at} has a key with a NUL character or a lone surrogate`);
      stack.push([item, depth + 1, `${at}.${key}`]);
    }
  }
}

/** The kind, checked as the server will (RULES.kind; InvalidKind if it would refuse it). */
export function checkKind(kind) {
  const { min_length: low, max_length: high } = RULES.kind;
  if (typeof kind !== "string" || !(low <= textLength(kind) && textLength(kind) <= high) || unstorable(kind)) {
    throw new InvalidKind(`a job's kind must be a string of ${low} to ${high} characters, without NUL or lone surrogates`);
  }
  return kind;
}

const UNPRINTABLE = /[\p{C}\p{Z}]/u; // what Python's str.isprintable() refuses, but the space

/** Whether `value` is a name of the rule's length, all printable (str.isprintable()). */
function printableName(value, { min_length: low, max_length: high }) {
  if (typeof value !== "string") return false;
  const length = textLength(value);
  return length >= low && length <= high && !UNPRINTABLE.test(value.replaceAll(" ", ""));
}

/** One option's value checked against its rule (RULES.job_options); RangeError if bad.
 * Returns the value as the insert carries it (`run_at` as ISO text in UTC). */
export function checkOption(name, value) {
  const rule = RULES.job_options[name];
  if (rule.type === "integer") {
    if (!(Number.isInteger(value) && rule.min <= value && value <= rule.max)) {
      throw new RangeError(`${name} must be a whole number from ${rule.min} to ${rule.max}, not ${JSON.stringify(value)}`);
    }
    return value;
  }
  if (rule.type === "name") {
    if (!printableName(value, rule)) {
      throw new RangeError(`${name} must be ${rule.min_length} to ${rule.max_length} printable characters, not ${String(JSON.stringify(value)).slice(0, 80)}`);
    }
    return value;
  }
  return isoMoment(name, value);
}

/** The options of a new job (the Python client's SubmitOptions: priority, queue, run_at,
 * max_attempts, unique_key), checked as the server will (RULES.job_options, the rules of
 * protocol.check_job_options), as the insert's values. RangeError naming the first bad
 * one; an unknown name is a TypeError. */
export function jobOptions(options = {}) {
  const names = Object.keys(RULES.job_options);
  const values = {};
  for (const [name, value] of Object.entries(options ?? {})) {
    if (!names.includes(name)) throw new TypeError(`unknown job option ${JSON.stringify(name)}; use ${names.join(", ")}`);
    if (value !== undefined && value !== null) values[name] = checkOption(name, value);
  }
  return values;
}

const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A new job's dependencies as its insert carries them (protocol.check_dependencies, by
 * RULES.dependencies): `after`, jobs (or their ids) it runs after, at most
 * `max_items`, as lower-case ids, each once, in the order named; `on_failure`, "cancel"
 * (the default) or "run". `{}` when it runs after nothing. RangeError if bad. */
export function jobDependencies(after, onFailure) {
  const { after: rule, on_failure: choices } = RULES.dependencies;
  const failure = onFailure ?? choices.default;
  if (!choices.choices.includes(failure)) {
    throw new RangeError(`on_failure must be one of ${choices.choices.join(", ")}, not ${String(JSON.stringify(onFailure)).slice(0, 80)}`);
  }
  if (after === undefined || after === null) return {};
  if (!Array.isArray(after) || after.length > rule.max_items) {
    throw new RangeError(`after must be a list of at most ${rule.max_items} job ids`);
  }
  const ids = new Set();
  for (const job of after) {
    const id = job !== null && typeof job === "object" && typeof job.id === "string" ? job.id : job;
    if (typeof id !== "string" || !JOB_ID.test(id)) {
      throw new RangeError(`after holds ${String(JSON.stringify(id)).slice(0, 80)}, which is not a job id (a UUID)`);
    }
    ids.add(id.toLowerCase());
  }
  return ids.size ? { after: [...ids], on_failure: failure } : {};
}

/** A moment as ISO 8601 text in UTC: a Date, or an ISO 8601 text (without a time zone: UTC,
 * as protocol.parse_timestamp reads it), between RULES.earliest and RULES.latest. */
function isoMoment(name, value) {
  let moment = value instanceof Date ? value : null;
  if (typeof value === "string") {
    const text = value.trim();
    const match = /^\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)?(Z|[+-]\d\d:?\d\d)?$/i.exec(text);
    if (match) moment = new Date(match[1] || !text.includes(":") ? text.replace(" ", "T") : `${text.replace(" ", "T")}Z`);
  }
  const ok = moment !== null && !Number.isNaN(moment.getTime())
    && moment >= new Date(RULES.earliest) && moment <= new Date(RULES.latest);
  if (!ok) {
    throw new RangeError(`${name} must be a Date or an ISO 8601 time of years 1 to 9999, not ${String(JSON.stringify(value)).slice(0, 80)}`);
  }
  return moment.toISOString();
}

// -- questions (protocol.py's QUESTION_ANSWER_RULE and check_answer) ------------------------

/** Whether `question` (a job's question column) waits for an answer: asked, not
 * answered, not timed out. */
export function questionPending(question, answer) {
  return question !== null && typeof question === "object" && !Array.isArray(question)
    && (answer === null || answer === undefined) && !("timed_out" in question);
}

/** Whether two JSON values are equal as JSON (Postgres jsonb =): numbers by value, a
 * boolean never a number, objects whatever their keys' order. */
export function sameJson(a, b) {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => sameJson(item, b[i]));
  }
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object") {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key], b[key]));
  }
  return a === b;
}

/** `value` if it answers the job's pending question (`job`: {state, question, answer}),
 * checked as the service will: QuestionClosed if none waits; RangeError if the value is
 * not one of its choices (or, without choices, not a text of at most
 * RULES.question_answer.max_length characters); PayloadError if it is not JSON. */
export function checkAnswer(job, value) {
  if (!ANSWERABLE_STATES.has(job.state) || !questionPending(job.question, job.answer)) {
    throw new QuestionClosed("the job has no question waiting for an answer (answered already, timed out, or never asked)");
  }
  if (value === null || value === undefined) throw new RangeError("an answer is not null");
  checkJson(value, "answer");
  const { choices } = job.question;
  if (Array.isArray(choices)) {
    if (!choices.some((choice) => sameJson(value, choice))) {
      throw new RangeError(`${JSON.stringify(value).slice(0, 80)} is not one of the question's choices: ${choices.map((c) => JSON.stringify(c)).join(", ").slice(0, 300)}`);
    }
    return value;
  }
  const longest = RULES.question_answer.max_length;
  if (typeof value !== "string" || textLength(value) > longest) {
    throw new RangeError(`the question has no choices: its answer is a text of at most ${longest} characters, without NUL or lone surrogates`);
  }
  return value;
}

/** A job as the application sees it: the row's columns, `pending` (a local change not yet
 * acknowledged), `rejected` (why the server refused one) and `done`. */
export function toJob(row, pending, rejected) {
  const job = {
    id: String(row.id),
    timestamp: row.timestamp,
    kind: row.kind ?? "default",
    payload: row.payload ?? null,
    owner: row.owner ?? null,
    state: row.state ?? "queued",
    cancelled: Boolean(row.cancelled),
    completed: Boolean(row.completed),
    progress: Number(row.progress || 0),
    progress_message: row.progress_message ?? null,
    result: row.result ?? null,
    error: row.error ?? null,
    attempts: row.attempts ?? 0,
    max_attempts: row.max_attempts ?? null,
    run_at: row.run_at ?? null,
    priority: row.priority ?? 0,
    queue: row.queue ?? null,
    unique_key: row.unique_key ?? null,
    received_at: row.received_at ?? null,
    started_at: row.started_at ?? null,
    finished_at: row.finished_at ?? null,
    // How many of the jobs it runs after have not ended yet.
    waiting_for: Number(row.waiting_for || 0),
    question: row.question ?? null,
    answer: row.answer ?? null,
    pending,
    rejected,
  };
  job.done = FINAL_STATES.has(job.state);
  job.asking = ANSWERABLE_STATES.has(job.state) && questionPending(job.question, job.answer);
  for (const name of TIMES) if (job[name] !== null && job[name] !== undefined) job[name] = String(job[name]);
  return Object.freeze(job);
}

/** The job the application sees: the synced row (or null) with the job's outbox entries
 * ({op, values, status, error}, in upload order) on top; null if there is no job.
 * `ended`: how many of the jobs a job not yet delivered runs after are known to have
 * ended (it waits for the others). */
export function viewJob(synced, entries, ended = 0) {
  let row = synced ? { ...synced } : null;
  let pending = false;
  let rejected = null;
  for (const entry of entries) {
    if (entry.status === "rejected") {
      rejected = entry.error;
      if (entry.op === "insert" && row === null) row = { ...newRow(entry.values), state: "rejected", waiting_for: 0 };
      continue;
    }
    pending ||= entry.status === "pending";
    if (row === null) {
      if (entry.op !== "insert") continue;
      row = newRow(entry.values, ended);
    }
    Object.assign(row, entry.values);
  }
  return row === null ? null : toJob(row, pending, rejected);
}

/** A job the server has not delivered yet, as it will look once queued: waiting for
 * the jobs it runs after, but the `ended` ones. */
function newRow(values, ended = 0) {
  const waiting = Math.max((values.after ?? []).length - ended, 0);
  return { state: "queued", completed: false, progress: 0, attempts: 0, ...values, waiting_for: waiting };
}

/** The newest `limit` of `jobs` (as viewJob makes them), newest first; equal times by id. */
export function newestJobs(jobs, limit) {
  return [...jobs].sort(newestFirst).slice(0, limit);
}

function newestFirst(a, b) {
  return sortKey(b.timestamp) - sortKey(a.timestamp) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** The longest prefix of `mutations` whose JSON stays under `maxBytes` (at least one). */
export function fitBatch(mutations, maxBytes = BATCH_BYTES) {
  let size = 0;
  for (let count = 0; count < mutations.length; count++) {
    size += new TextEncoder().encode(JSON.stringify(mutations[count])).length;
    if (size > maxBytes && count > 0) return mutations.slice(0, count);
  }
  return mutations;
}

/** Exponential backoff with full jitter: wait a random time between 0 and
 * min(cap, base * 2**attempt), so reconnecting clients spread out. Seconds. */
export class Backoff {
  constructor({ base = 0.1, cap = 10, random = Math.random } = {}) {
    Object.assign(this, { base, cap, random, attempt: 0 });
  }

  /** The time to wait before the next attempt. */
  next() {
    const ceiling = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 60);
    return this.random() * ceiling;
  }

  /** After a success: start again from short waits. */
  reset() {
    this.attempt = 0;
  }
}

/** Server-sent events, parsed from text chunks as they arrive: `push(chunk)` returns the
 * data of every event the chunk completed. */
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      if (this.buffer[newline] === "\r" && width === 1 && newline + 1 === this.buffer.length) break; // "\r" may begin "\r\n"
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length) events.push(this.data.join("\n"));
        this.data = [];
      } else if (line.startsWith("data:")) {
        this.data.push(line.slice(line[5] === " " ? 6 : 5));
      } // comments (":"), event names, ids and retry hints carry nothing errands uses
    }
    return events;
  }
}

/** What a client does with an error answer: the first of RULES.answers (protocol.py's
 * ANSWER_RULES) whose status or code matches; none: "retry". */
export function clientAction(status, code) {
  const rule = RULES.answers.find((r) => r.status === status || (code != null && r.code === code));
  return rule ? rule.action : "retry";
}

/** The error for a failed answer: status, and the body's {"error": {code, message}}. */
export function errorFor(status, code, message) {
  const error = errorOf(clientAction(status, code), status, code, message);
  error.status = status; // a page may tell a 403 (not an operator, say) from a 503
  return error;
}

function errorOf(action, status, code, message) {
  switch (action) {
    case "unauthorized":
      return new Unauthorized(`the server refused the token: ${message}`, code);
    case "refused":
      return new Refused(code, message);
    case "must_refetch":
      return new MustRefetch(message);
    default: // a 5xx, a 404 from a proxy...: it may pass, so retried, never rejected
      return new ServerUnreachable(`the server answered ${status}: ${message}`);
  }
}

/** The user a token names (its JWT subject, read, not verified: the server checks it), or
 * null; it names the replica, so that each user of a browser has one of their own. */
export function tokenUser(token) {
  if (!token) return null;
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    const subject = JSON.parse(text).sub;
    return typeof subject === "string" ? subject : null;
  } catch {
    return null;
  }
}

/** The IndexedDB database a client of `server` keeps the replica of `user` in (by
 * default, the user its token names: pass the user the service verified where a token
 * could be forged, as the hosted page does). */
export function replicaName(server, token, user = null) {
  const owner = user ?? (typeof token === "string" ? tokenUser(token) : null);
  return `errands ${server.replace(/\/+$/, "")} ${owner ?? "(no token)"}`;
}

/** What a client's status says, in one line. */
export function describeStatus(status) {
  const where = status.connected ? "connected" : `disconnected (${status.reason})`;
  return `${where}, ${status.pending} pending`;
}
