// errands.js's model: the protocol's constants, the error tree, and the pure parts --
// ids, offsets, payload checks, the view of a job (synced row + outbox on top), batches,
// backoff, the event-stream parser. No I/O: Node's test runner tests it (tests/js/).

/** The protocol's constants (src/errands/protocol.py; a test holds them equal). */
export const PROTOCOL = Object.freeze({
  PREFIX: "/v1",
  START: "-1",
  JOBS_TABLE: "background_jobs",
  MAX_BATCH: 1000,
  MAX_PAYLOAD_BYTES: 256 * 1024,
  MAX_KIND_LENGTH: 200,
  MAX_PRIORITY: 1000,
  MAX_ATTEMPTS: 100,
  MAX_NAME_LENGTH: 200,
  MAX_BODY_BYTES: 4 * 1024 * 1024,
  LIVE_HOLD_SECONDS: 20,
  BAD_OFFSET: "bad_offset",
});

const BATCH_BYTES = PROTOCOL.MAX_BODY_BYTES / 2; // JSON overhead varies: stay well under
const REFUSED = new Set([400, 413, 422]); // the request itself is wrong: resending cannot help
const FINAL_STATES = new Set(["completed", "failed", "cancelled", "rejected"]);
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
/** The sync service refused the token; sign in again. */
export class Unauthorized extends SyncError {}

/** The server refused a request as wrong (REFUSED): its mutations are rejected. */
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

/** A new UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. */
export function uuid7(now = Date.now(), random = crypto.getRandomValues(new Uint8Array(10))) {
  const bytes = new Uint8Array(16);
  let millis = now;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = millis % 256;
    millis = Math.floor(millis / 256);
  }
  bytes.set(random.subarray(0, 10), 6);
  bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
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
 * (what Postgres' jsonb refuses too: NaN and Infinity, NUL, lone surrogates). No payload
 * (undefined or null) means `{}`, as for a row inserted without one. */
export function payloadJson(payload) {
  const value = payload ?? {};
  checkJson(value, "payload");
  const text = JSON.stringify(value);
  const size = new TextEncoder().encode(text).length;
  if (size > PROTOCOL.MAX_PAYLOAD_BYTES) {
    throw new PayloadError(`the payload is ${size} bytes of JSON; the most the server takes is ${PROTOCOL.MAX_PAYLOAD_BYTES}`);
  }
  return text;
}

function checkJson(value, where, depth = 0) {
  if (depth > 100) throw new PayloadError(`the ${where} is nested too deeply`);
  if (value === null || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new PayloadError(`the ${where} holds ${value}, which JSON cannot store`);
    return;
  }
  if (typeof value === "string") {
    if (value.includes("\u0000")) throw new PayloadError(`the ${where} contains a NUL character, which jsonb cannot store`);
    if (!value.isWellFormed()) throw new PayloadError(`the ${where} contains a lone surrogate, which JSON cannot store`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, index) => checkJson(item, `${where}[${index}]`, depth + 1));
    return;
  }
  const proto = typeof value === "object" ? Object.getPrototypeOf(value) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new PayloadError(`the ${where} is a ${typeof value === "object" ? value.constructor?.name : typeof value}, not JSON; use objects, arrays, strings, numbers, booleans and null`);
  }
  for (const [key, item] of Object.entries(value)) {
    checkJson(key, `${where} key`, depth + 1);
    checkJson(item, `${where}.${key}`, depth + 1);
  }
}

/** The kind, checked as the server will (InvalidKind if it would refuse it). */
export function checkKind(kind) {
  if (typeof kind !== "string" || kind.length === 0 || kind.length > PROTOCOL.MAX_KIND_LENGTH) {
    throw new InvalidKind(`a job's kind must be a string of 1 to ${PROTOCOL.MAX_KIND_LENGTH} characters`);
  }
  return kind;
}

const JOB_OPTIONS = ["priority", "queue", "run_at", "max_attempts", "unique_key"];
const UNPRINTABLE = /[\p{C}\p{Z}]/u; // what Python's str.isprintable() refuses, but the space

/** The options of a new job (the Python client's SubmitOptions: priority, queue, run_at,
 * max_attempts, unique_key), checked as the server will (protocol.check_job_options), as
 * the insert's values; `run_at` (a Date, or an ISO 8601 text with a time zone) as ISO
 * text. RangeError naming the first bad one; an unknown name is a TypeError. */
export function jobOptions(options = {}) {
  const values = {};
  for (const [name, value] of Object.entries(options ?? {})) {
    if (!JOB_OPTIONS.includes(name)) throw new TypeError(`unknown job option ${JSON.stringify(name)}; use ${JOB_OPTIONS.join(", ")}`);
    if (value !== undefined && value !== null) values[name] = value;
  }
  for (const [name, low, high] of [
    ["priority", -PROTOCOL.MAX_PRIORITY, PROTOCOL.MAX_PRIORITY],
    ["max_attempts", 1, PROTOCOL.MAX_ATTEMPTS],
  ]) {
    const value = values[name];
    if (value !== undefined && !(Number.isInteger(value) && low <= value && value <= high)) {
      throw new RangeError(`${name} must be a whole number from ${low} to ${high}, not ${JSON.stringify(value)}`);
    }
  }
  for (const name of ["queue", "unique_key"]) {
    const value = values[name];
    if (value !== undefined && !printableName(value)) {
      throw new RangeError(`${name} must be 1 to ${PROTOCOL.MAX_NAME_LENGTH} printable characters, not ${JSON.stringify(value).slice(0, 80)}`);
    }
  }
  if (values.run_at !== undefined) values.run_at = isoMoment(values.run_at);
  return values;
}

function printableName(value) {
  if (typeof value !== "string") return false;
  const length = [...value].length; // in characters, as Python counts them
  return length > 0 && length <= PROTOCOL.MAX_NAME_LENGTH && !UNPRINTABLE.test(value.replaceAll(" ", ""));
}

/** A moment as ISO 8601 text in UTC: a Date, or a text that names its time zone. */
function isoMoment(value) {
  const zoned = typeof value === "string" && /(Z|[+-]\d\d:?\d\d)$/i.test(value.trim());
  const moment = value instanceof Date ? value : zoned ? new Date(value) : null;
  if (moment === null || Number.isNaN(moment.getTime())) {
    throw new RangeError(`run_at must be a Date or an ISO 8601 time with a time zone, not ${JSON.stringify(value)}`);
  }
  return moment.toISOString();
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
    pending,
    rejected,
  };
  job.done = FINAL_STATES.has(job.state);
  for (const name of TIMES) if (job[name] !== null && job[name] !== undefined) job[name] = String(job[name]);
  return Object.freeze(job);
}

/** The job the application sees: the synced row (or null) with the job's outbox entries
 * ({op, values, status, error}, in upload order) on top; null if there is no job. */
export function viewJob(synced, entries) {
  let row = synced ? { ...synced } : null;
  let pending = false;
  let rejected = null;
  for (const entry of entries) {
    if (entry.status === "rejected") {
      rejected = entry.error;
      if (entry.op === "insert" && row === null) row = { ...newRow(entry.values), state: "rejected" };
      continue;
    }
    pending ||= entry.status === "pending";
    if (row === null) {
      if (entry.op !== "insert") continue;
      row = newRow(entry.values);
    }
    Object.assign(row, entry.values);
  }
  return row === null ? null : toJob(row, pending, rejected);
}

/** A job the server has not delivered yet, as it will look once queued. */
function newRow(values) {
  return { state: "queued", completed: false, progress: 0, attempts: 0, ...values };
}

/** The newest `limit` jobs: the newest synced rows, the rows the outbox touches, and the
 * outbox entries (in upload order) on top. */
export function newestJobs(newest, touched, entries, limit) {
  const synced = new Map(newest.map((row) => [row.id, row]));
  for (const row of touched) synced.set(row.id, row);
  const byJob = new Map();
  for (const entry of entries) {
    if (!byJob.has(entry.jobId)) byJob.set(entry.jobId, []);
    byJob.get(entry.jobId).push(entry);
  }
  const jobs = [];
  for (const id of new Set([...synced.keys(), ...byJob.keys()])) {
    const job = viewJob(synced.get(id) ?? null, byJob.get(id) ?? []);
    if (job !== null) jobs.push(job);
  }
  jobs.sort(newestFirst);
  return jobs.slice(0, limit);
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

/** The error for a failed answer: status, and the body's {"error": {code, message}}. */
export function errorFor(status, code, message) {
  if (status === 401) return new Unauthorized(`the server refused the token: ${message}`);
  if (status === 409 || code === PROTOCOL.BAD_OFFSET) return new MustRefetch(message);
  if (REFUSED.has(status)) return new Refused(code, message);
  // Anything else (a 5xx, a 404 from a proxy...) may pass: retried, never rejected.
  return new ServerUnreachable(`the server answered ${status}: ${message}`);
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

/** The IndexedDB database a client of `server` with `token` keeps its replica in. */
export function replicaName(server, token) {
  return `errands ${server.replace(/\/+$/, "")} ${tokenUser(token) ?? "(no token)"}`;
}

/** What a client's status says, in one line. */
export function describeStatus(status) {
  const where = status.connected ? "connected" : `disconnected (${status.reason})`;
  return `${where}, ${status.pending} pending`;
}
