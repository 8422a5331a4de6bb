// errands.js: the errands client for browsers. A dependency-free ES module, served by
// `errands server` at /v1/client/errands.js; types in errands.d.ts beside it.
//
// The same model and guarantees as the Python client (src/errands/client/, and
// docs/design.md): the replica -- synced rows, the outbox, the shape's offset -- lives in
// IndexedDB; a submit or a cancel is one IndexedDB transaction, visible at once and kept
// across reloads, uploaded in order when the server can be reached, each mutation id
// applied at most once by the server. The jobs shape streams in live (server-sent
// events, read with fetch so that the token travels in a header; long polls where a
// proxy spoils the stream). What a page reads is the synced row with the unsettled
// outbox entries on top: a change stays on top until the server acknowledged it AND the
// synced rows caught up with its transaction, so nothing flickers back.
//
// Tabs of one origin share one replica and one connection: a Web Lock elects the tab
// that syncs, and a BroadcastChannel tells every tab of every change at once.

/** The protocol's constants (src/errands/protocol.py; a test holds them equal). */
export const PROTOCOL = Object.freeze({
  PREFIX: "/v1",
  START: "-1",
  JOBS_TABLE: "background_jobs",
  MAX_BATCH: 1000,
  MAX_PAYLOAD_BYTES: 256 * 1024,
  MAX_KIND_LENGTH: 200,
  MAX_BODY_BYTES: 4 * 1024 * 1024,
  LIVE_HOLD_SECONDS: 20,
  BAD_OFFSET: "bad_offset",
});

const { PREFIX, START, JOBS_TABLE } = PROTOCOL;
const BATCH_BYTES = PROTOCOL.MAX_BODY_BYTES / 2; // JSON overhead varies: stay well under
const REFUSED = new Set([400, 413, 422]); // the request itself is wrong: resending cannot help
const REQUEST_SECONDS = 30;
const LIVE_SECONDS = PROTOCOL.LIVE_HOLD_SECONDS + 15; // a live answer (or stream event) is due by then
const FIRST_EVENT_SECONDS = 10; // a stream silent this long is buffered by a proxy: long-poll instead
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
class Refused extends SyncError {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.code = code;
    this.detail = detail;
  }
}
/** The shape's offset is no longer usable: start again from the snapshot. */
class MustRefetch extends SyncError {}
/** The stream gave no event in time (a buffering proxy): use long polls. */
class StreamUnusable extends SyncError {}

const FATAL = [Unauthorized, ReplicaMismatch]; // retrying cannot fix these: sync stops

/** The fatal error that stopped the sync, rebuilt from what the tabs share: {name, message}. */
function fatalError({ name, message }) {
  const kind = FATAL.find((error) => error.name === name) ?? SyncError;
  return new kind(message);
}

// -- pure parts (exported for tests) -------------------------------------------------------

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

// -- the replica: IndexedDB ----------------------------------------------------------------

const DB_VERSION = 1;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** The client's local database: synced rows, the outbox, the shape's offset, and what
 * the replica belongs to. Every method is one IndexedDB transaction. */
export class Replica {
  constructor(db, name, onChange) {
    this.db = db;
    this.name = name;
    this.onChange = onChange;
  }

  /** Open (or create) the replica called `name`; `onChange()` runs after each write. */
  static async open(name, onChange = () => {}) {
    const opening = indexedDB.open(name, DB_VERSION);
    opening.onupgradeneeded = () => {
      const db = opening.result;
      db.createObjectStore("meta");
      db.createObjectStore("shapes");
      db.createObjectStore("synced", { keyPath: "id" }).createIndex("newest", ["sortKey", "id"]);
      db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true }).createIndex("job", "jobId");
    };
    let db;
    try {
      db = await request(opening);
    } catch (error) {
      throw new ReplicaError(`cannot open the replica ${JSON.stringify(name)} in IndexedDB: ${error?.message ?? error}`);
    }
    // Another tab upgrading or deleting the database: step aside rather than block it.
    db.onversionchange = () => db.close();
    return new Replica(db, name, onChange);
  }

  close() {
    this.db.close();
  }

  /** Run `body(stores)` in one transaction; resolve with its result once committed. */
  async transaction(names, mode, body) {
    const tx = this.db.transaction(names, mode, { durability: mode === "readwrite" ? "strict" : "default" });
    const committed = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new ReplicaError("the replica's transaction was aborted"));
    });
    const stores = Object.fromEntries(names.map((name) => [name, tx.objectStore(name)]));
    let result;
    try {
      result = await body(stores);
    } catch (error) {
      try {
        tx.abort();
      } catch {} // it may have ended already
      committed.catch(() => {});
      throw error;
    }
    await committed;
    if (mode === "readwrite") this.onChange();
    return result;
  }

  meta(key) {
    return this.transaction(["meta"], "readonly", ({ meta }) => request(meta.get(key)));
  }

  setMeta(values) {
    return this.transaction(["meta"], "readwrite", async ({ meta }) => {
      for (const [key, value] of Object.entries(values)) meta.put(value, key);
    });
  }

  // -- local writes --

  /** Record a new job and its upload; return the job. */
  async insertJob(kind, payload) {
    checkKind(kind);
    const values = {
      id: uuid7(),
      timestamp: new Date().toISOString(),
      kind,
      payload: JSON.parse(payloadJson(payload)),
      cancelled: false,
    };
    await this.transaction(["outbox"], "readwrite", async ({ outbox }) => {
      addEntry(outbox, values.id, "insert", values);
    });
    return viewJob(null, [{ op: "insert", values, status: "pending", error: null }]);
  }

  /** Record a cancellation request (unless the job ended or one is recorded already);
   * return the job as it now looks. JobNotFound if the replica has no such job. */
  requestCancel(jobId) {
    return this.transaction(["synced", "outbox"], "readwrite", async (stores) => {
      const job = await this.jobIn(stores, jobId);
      if (job === null) throw new JobNotFound(`the replica has no job ${JSON.stringify(jobId)}`);
      if (job.done || job.cancelled) return job;
      addEntry(stores.outbox, jobId, "update", { cancelled: true });
      return this.jobIn(stores, jobId);
    });
  }

  /** Follow the server's database into a new generation (restored from a dump): drop the
   * synced rows and the offset, keep the outbox and upload again what the old one had
   * acknowledged (applied at most once: what the restored database has is not doubled). */
  startGeneration(generation) {
    return this.transaction(["synced", "shapes", "outbox", "meta"], "readwrite", async (stores) => {
      stores.synced.clear();
      stores.shapes.clear();
      for (const entry of await request(stores.outbox.getAll())) {
        if (entry.status === "acked") stores.outbox.put({ ...entry, status: "pending", txid: null });
      }
      stores.meta.put(generation, "generation");
    });
  }

  // -- local reads --

  get(jobId) {
    return this.transaction(["synced", "outbox"], "readonly", (stores) => this.jobIn(stores, jobId));
  }

  async jobIn({ synced, outbox }, jobId) {
    const [stored, entries] = await Promise.all([
      request(synced.get(jobId)),
      request(outbox.index("job").getAll(jobId)),
    ]);
    entries.sort((a, b) => a.seq - b.seq);
    return viewJob(stored?.row ?? null, entries);
  }

  /** The newest `limit` jobs, pending ones included. */
  jobs(limit = 10) {
    return this.transaction(["synced", "outbox"], "readonly", async ({ synced, outbox }) => {
      const newest = [];
      await new Promise((resolve, reject) => {
        const cursor = synced.index("newest").openCursor(null, "prev");
        cursor.onerror = () => reject(cursor.error);
        cursor.onsuccess = () => {
          const at = cursor.result;
          if (at === null || newest.length >= limit) return resolve();
          newest.push(at.value.row);
          at.continue();
        };
      });
      const entries = await request(outbox.getAll()); // few, by design: in seq order
      const ids = [...new Set(entries.map((entry) => entry.jobId))];
      const touched = (await Promise.all(ids.map((id) => request(synced.get(id))))).filter(Boolean).map((s) => s.row);
      return newestJobs(newest, touched, entries, limit);
    });
  }

  /** How many outbox entries wait for upload, and how many were rejected. */
  counts() {
    return this.transaction(["outbox"], "readonly", async ({ outbox }) => {
      const entries = await request(outbox.getAll());
      return {
        pending: entries.filter((e) => e.status === "pending").length,
        rejected: entries.filter((e) => e.status === "rejected").length,
      };
    });
  }

  // -- the write path --

  /** The oldest entries not yet acknowledged, in upload order, as mutations. */
  pendingMutations(limit) {
    return this.transaction(["outbox"], "readonly", async ({ outbox }) => {
      const entries = (await request(outbox.getAll())).filter((e) => e.status === "pending").slice(0, limit);
      return entries.map((e) => ({ id: e.mutationId, table: JOBS_TABLE, op: e.op, key: e.jobId, values: e.values }));
    });
  }

  /** Mark entries acknowledged (with the transaction that applied them) or rejected; settle
   * what the current offset already covers. */
  recordResults(results, txid) {
    return this.transaction(["outbox", "shapes"], "readwrite", async ({ outbox, shapes }) => {
      const byMutation = new Map((await request(outbox.getAll())).map((e) => [e.mutationId, e]));
      for (const result of results) {
        const entry = byMutation.get(result.id);
        if (entry === undefined || entry.status !== "pending") continue;
        if (result.status === "applied") {
          outbox.put({ ...entry, status: "acked", txid });
        } else {
          const error = `${result.code ?? "rejected"}: ${result.message || "the server refused this change"}`;
          outbox.put({ ...entry, status: "rejected", error });
        }
      }
      await settle(outbox, (await request(shapes.get(JOBS_TABLE))) ?? START);
    });
  }

  // -- the read path --

  /** Where to read the shape from next: START if it was never read. */
  async offset() {
    return (await this.transaction(["shapes"], "readonly", ({ shapes }) => request(shapes.get(JOBS_TABLE)))) ?? START;
  }

  /** Apply one shape response atomically, if the shape is still at `readFrom` (another
   * reader may have moved it on); return whether it was applied. A must-refetch drops the
   * offset: the next read starts from the snapshot, which replaces the synced rows. */
  apply(response, readFrom) {
    return this.transaction(["synced", "shapes", "outbox"], "readwrite", async ({ synced, shapes, outbox }) => {
      if (((await request(shapes.get(JOBS_TABLE))) ?? START) !== readFrom) return false;
      if (response.messages.some((m) => m.type === "must-refetch")) {
        shapes.delete(JOBS_TABLE);
        return true;
      }
      if (readFrom === START) synced.clear(); // a new snapshot replaces whatever was synced
      for (const message of response.messages) {
        if (message.type === "upsert") {
          synced.put({ id: message.key, sortKey: sortKey(message.row.timestamp), row: message.row });
        } else if (message.type === "delete") {
          synced.delete(message.key);
        }
      }
      shapes.put(response.offset, JOBS_TABLE);
      await settle(outbox, response.offset);
      return true;
    });
  }
}

function addEntry(outbox, jobId, op, values) {
  outbox.add({ mutationId: uuid7(), jobId, op, values, status: "pending", txid: null, error: null });
}

/** Drop acknowledged entries whose effect the synced rows now contain. */
async function settle(outbox, offsetText) {
  if (offsetText === START) return;
  const offset = decodeOffset(offsetText);
  if (offset.afterKey !== null) return; // mid-snapshot: not every row is here yet
  for (const entry of await request(outbox.getAll())) {
    if (entry.status === "acked" && entry.txid !== null && covers(offset, entry.txid)) outbox.delete(entry.seq);
  }
}

// -- talking to the server -----------------------------------------------------------------

function sleep(seconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** One connected session with the server: who am I, push, pull; knows the protocol and
 * nothing of retries (the Client runs it again after a failure). */
class Session {
  constructor(client, signal) {
    this.client = client;
    this.replica = client.replica;
    this.signal = signal;
  }

  async call(method, path, { params, body, seconds = REQUEST_SECONDS, accept = "application/json" } = {}) {
    const url = new URL(this.client.server + path);
    for (const [key, value] of Object.entries(params ?? {})) url.searchParams.set(key, value);
    const headers = { Accept: accept };
    if (this.client.token) headers.Authorization = `Bearer ${this.client.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const signal = seconds === null ? this.signal : AbortSignal.any([this.signal, AbortSignal.timeout(seconds * 1000)]);
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: "no-store" });
    } catch (error) {
      this.signal.throwIfAborted();
      throw new ServerUnreachable(`cannot reach ${this.client.server}: ${error?.message ?? error}`);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      let detail;
      try {
        detail = JSON.parse(text).error;
      } catch {} // not errands' error body (a proxy's page, say)
      throw errorFor(response.status, detail?.code ?? `http_${response.status}`, detail?.message ?? (text.slice(0, 200) || response.statusText));
    }
    return response;
  }

  async json(method, path, options) {
    const response = await this.call(method, path, options);
    try {
      return await response.json();
    } catch (error) {
      this.signal.throwIfAborted();
      throw new SyncError(`the server sent a body that is not JSON: ${error?.message ?? error}`);
    }
  }

  /** Ask who the token is; refuse a replica of another user or server; follow the same
   * server into a new database generation (re-sync, outbox kept). */
  async checkIdentity() {
    const me = await this.json("GET", `${PREFIX}/me`);
    const [generation, user, server] = await Promise.all(["generation", "user", "server"].map((key) => this.replica.meta(key)));
    if (generation === undefined) {
      await this.replica.setMeta({ generation: me.generation, user: me.user, server: this.client.server });
    } else if (user !== me.user) {
      throw new ReplicaMismatch(`the replica ${JSON.stringify(this.replica.name)} belongs to user ${JSON.stringify(user)}, but the token is ${JSON.stringify(me.user)}'s; nothing was uploaded or changed`);
    } else if (generation !== me.generation && server !== this.client.server) {
      throw new ReplicaMismatch(`the replica belongs to another server (database generation ${generation}, but ${this.client.server} serves ${me.generation}); nothing was uploaded or changed`);
    } else if (generation !== me.generation) {
      console.warn(`errands: ${this.client.server} serves a new database generation: re-syncing, uploading the outbox again`);
      await this.replica.startGeneration(me.generation);
    }
    return me;
  }

  // -- write path --

  /** Upload the outbox in order until it is empty. A batch refused as a whole is sent
   * again one mutation at a time, so one bad mutation is rejected alone, never wedging
   * the rest. */
  async push() {
    let mutations;
    while ((mutations = await this.replica.pendingMutations(PROTOCOL.MAX_BATCH)).length) {
      const batch = fitBatch(mutations);
      try {
        await this.upload(batch);
      } catch (error) {
        if (!(error instanceof Refused)) throw error;
        if (batch.length === 1) await this.reject(batch[0], error);
        else for (const mutation of batch) await this.uploadAlone(mutation);
      }
    }
  }

  async uploadAlone(mutation) {
    try {
      await this.upload([mutation]);
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      await this.reject(mutation, error);
    }
  }

  reject(mutation, refused) {
    console.warn(`errands: the server refused mutation ${mutation.id}: ${refused.message}`);
    return this.replica.recordResults([{ id: mutation.id, status: "rejected", code: refused.code, message: refused.detail }], null);
  }

  async upload(batch) {
    const answer = await this.json("POST", `${PREFIX}/mutations`, { body: { mutations: batch } });
    const answered = new Set((answer.results ?? []).map((r) => r.id));
    const missing = batch.filter((m) => !answered.has(m.id)).map((m) => m.id);
    if (missing.length) throw new SyncError(`the server did not answer for mutations ${missing.join(", ")}`);
    await this.replica.recordResults(answer.results, answer.txid);
  }

  // -- read path --

  /** Follow the jobs shape for as long as the session lasts. */
  async pullForever() {
    for (;;) {
      const readFrom = await this.replica.offset();
      try {
        if (this.client.live === "long-poll") await this.pollUntilFailure(readFrom);
        else await this.stream(readFrom);
      } catch (error) {
        if (error instanceof StreamUnusable) {
          console.warn(`errands: ${error.message}; following the jobs with long polls instead`);
          this.client.live = "long-poll";
        } else if (error instanceof MustRefetch) {
          console.warn(`errands: must-refetch (${error.message}): rebuilding the synced rows, keeping the outbox`);
          await this.replica.apply({ messages: [{ type: "must-refetch" }], offset: START }, await this.replica.offset());
        } else {
          throw error;
        }
      }
    }
  }

  async pollUntilFailure(readFrom) {
    let upToDate = false;
    for (;;) {
      const live = upToDate && readFrom !== START;
      const params = live ? { offset: readFrom, live: "true" } : { offset: readFrom };
      const answer = await this.json("GET", `${PREFIX}/shapes/${JOBS_TABLE}`, { params, seconds: live ? LIVE_SECONDS : REQUEST_SECONDS });
      if (!(await this.replica.apply(answer, readFrom))) return; // moved on meanwhile: read again
      upToDate = answer.messages.some((m) => m.type === "up-to-date");
      readFrom = answer.offset;
    }
  }

  /** Server-sent events, read with fetch (EventSource cannot send the token): each event
   * is one shape response, applied atomically. Returns to be called again. */
  async stream(readFrom) {
    const idle = new AbortController();
    const signal = AbortSignal.any([this.signal, idle.signal]);
    let silence = setTimeout(() => idle.abort(new StreamUnusable("the event stream sent nothing")), FIRST_EVENT_SECONDS * 1000);
    const watch = (seconds, reason) => {
      clearTimeout(silence);
      silence = setTimeout(() => idle.abort(reason), seconds * 1000);
    };
    try {
      const response = await new Session(this.client, signal).call("GET", `${PREFIX}/shapes/${JOBS_TABLE}/stream`, {
        params: { offset: readFrom },
        seconds: null,
        accept: "text/event-stream",
      });
      if (!response.body || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
        throw new StreamUnusable(`the event stream came back as ${response.headers.get("content-type") || "nothing"}`);
      }
      const parser = new EventStreamParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read().catch((error) => {
          signal.throwIfAborted();
          throw new ServerUnreachable(`the event stream broke: ${error?.message ?? error}`);
        });
        if (done) throw new ServerUnreachable("the server ended the event stream");
        for (const data of parser.push(value)) {
          watch(LIVE_SECONDS, new ServerUnreachable("the event stream went silent"));
          const answer = JSON.parse(data);
          if (answer.messages.some((m) => m.type === "must-refetch")) throw new MustRefetch("the server said so");
          if (!(await this.replica.apply(answer, readFrom))) return; // moved on meanwhile
          readFrom = answer.offset;
        }
      }
    } catch (error) {
      if (idle.signal.aborted && !this.signal.aborted) throw idle.signal.reason;
      throw error;
    } finally {
      clearTimeout(silence);
      idle.abort();
    }
  }
}

// -- tabs ----------------------------------------------------------------------------------

/** The tabs sharing one replica: a channel that reaches the others, and a lock that lets
 * one of them hold the connection. Without these APIs, a tab is on its own. */
class Tabs {
  constructor(name, onMessage) {
    this.lockName = `errands-sync ${name}`;
    this.channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(`errands ${name}`) : null;
    if (this.channel) this.channel.onmessage = (event) => onMessage(event.data);
    this.released = new AbortController();
  }

  post(message) {
    this.channel?.postMessage(message);
  }

  /** Call `lead()` once this tab holds the connection (at once, or when the tab holding
   * it goes); it keeps it until close(). */
  elect(lead) {
    if (!globalThis.navigator?.locks) {
      lead();
      return;
    }
    const released = this.released.signal;
    navigator.locks
      .request(this.lockName, { signal: released }, () => {
        lead();
        return new Promise((resolve) => released.addEventListener("abort", resolve, { once: true }));
      })
      .catch(() => {}); // aborted by close() before this tab got the lock
  }

  close() {
    this.released.abort();
    this.channel?.close();
  }
}

// -- the client ----------------------------------------------------------------------------

/** A local-first client of the errands sync service, in the browser. See errands.d.ts. */
export class Client {
  constructor({ server, token = null, replica, maxBackoff = 10, live = "auto" } = {}) {
    this.server = (server ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    if (!/^https?:\/\//.test(this.server)) throw new ErrandsError(`the server must be an http(s) URL, not ${JSON.stringify(server)}`);
    this.token = token || null;
    this.name = replica ?? replicaName(this.server, this.token);
    this.live = live;
    this.backoff = new Backoff({ cap: maxBackoff });
    this.replica = null;
    this.leader = false;
    this.closed = false;
    this.link = { enabled: false, connected: false, reason: "not connected", fatal: null };
    this.counts = { pending: 0, rejected: 0 };
    this.subscriptions = new Set();
    this.statusWatchers = new Set();
    this.changeWaiters = new Set();
    this.refreshing = null;
    this.dirty = false;
    this.running = null; // the leader's sync loop: {stop: AbortController, done: Promise}
    this.wake = new AbortController(); // aborted to cut a backoff wait short
    this.outboxChanged = () => {};
    this.tabs = new Tabs(this.name, (message) => this.onTabMessage(message));
    this.onOnline = () => this.wakeUp();
    this.onOffline = () => this.running?.session?.abort(new ServerUnreachable("the browser is offline"));
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    this.ready = Replica.open(this.name, () => this.changed(true)).then((replica) => {
      this.replica = replica;
      this.tabs.post({ type: "hello" });
      this.tabs.elect(() => this.lead());
      this.changed(false);
    });
    this.ready.catch((error) => console.error(`errands: ${error.message}`));
  }

  // -- reads and writes: local, instant, offline too --

  /** Create a job locally; it uploads when connected. */
  async submit(kind, payload) {
    await this.ready;
    return this.replica.insertJob(kind, payload);
  }

  /** Request the job's cancellation, locally first; JobNotFound if unknown. */
  async cancel(jobId) {
    await this.ready;
    return this.replica.requestCancel(String(jobId));
  }

  /** The newest jobs first, pending ones included. */
  async jobs({ limit = 10 } = {}) {
    await this.ready;
    return this.replica.jobs(limit);
  }

  /** One job, or null. */
  async get(jobId) {
    await this.ready;
    return this.replica.get(String(jobId));
  }

  /** Resolve with the job once it is completed, failed, cancelled or rejected; WaitTimeout
   * after `timeout` seconds; the sync's fatal error if it stops for good. */
  async wait(jobId, { timeout = 30 } = {}) {
    await this.ready;
    return new Promise((resolve, reject) => {
      let timer;
      const finish = (settle, value) => {
        clearTimeout(timer);
        this.changeWaiters.delete(check);
        settle(value);
      };
      const check = async () => {
        const job = await this.replica.get(String(jobId));
        if (job?.done) finish(resolve, job);
        else if (this.link.fatal) finish(reject, fatalError(this.link.fatal));
      };
      timer = setTimeout(async () => {
        const job = await this.replica.get(String(jobId));
        const where = job ? `is still ${job.state}` : "is not in the replica";
        finish(reject, new WaitTimeout(`job ${jobId} ${where} after ${timeout}s (${describeStatus(this.status)})`));
      }, timeout * 1000);
      this.changeWaiters.add(check);
      check().catch((error) => finish(reject, error));
    });
  }

  /** Call `callback(jobs)` now with jobs({limit}), then whenever that list changes -- a
   * local write, rows from the server, a change made in another tab. Returns unsubscribe. */
  subscribe(callback, { limit = 10 } = {}) {
    const subscription = { callback, limit, last: undefined };
    this.subscriptions.add(subscription);
    this.ready.then(() => this.deliver(subscription)).catch((error) => console.error(error));
    return () => this.subscriptions.delete(subscription);
  }

  /** Where the client stands: connected, or disconnected and why; pending and rejected
   * counts; `enabled`, whether connect() is in effect. */
  get status() {
    const { enabled, connected, reason } = this.link;
    return Object.freeze({
      state: connected ? "connected" : "disconnected",
      connected,
      reason: connected ? null : reason,
      enabled,
      pending: this.counts.pending,
      rejected: this.counts.rejected,
    });
  }

  /** Call `callback(status)` now and whenever the status changes; returns unsubscribe. */
  subscribeStatus(callback) {
    const watcher = { callback, last: undefined };
    this.statusWatchers.add(watcher);
    this.tellStatus(watcher);
    return () => this.statusWatchers.delete(watcher);
  }

  // -- connectivity: one connection for every tab of the replica --

  /** Sync: upload the outbox, follow the jobs live, reconnect with backoff. For every tab
   * of this replica: they share one connection. */
  connect() {
    this.setEnabled(true, true);
  }

  /** Stop syncing (every tab of this replica) until connect(). Local reads and writes go on. */
  disconnect() {
    this.setEnabled(false, true);
  }

  /** Leave: stop syncing if this tab held the connection (another tab takes it over). */
  async close() {
    if (this.closed) return;
    this.closed = true;
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    await this.stopSync("the client was closed");
    this.tabs.close();
    await this.ready.catch(() => {});
    this.replica?.close();
  }

  // -- inside --

  setEnabled(enabled, tell) {
    const changed = this.link.enabled !== enabled;
    this.link.enabled = enabled;
    if (tell) this.tabs.post({ type: "enabled", enabled });
    if (this.leader) {
      if (enabled) this.startSync();
      else this.stopSync("disconnected by the application");
    } else if (!enabled) {
      this.link.connected = false;
      this.link.reason = "disconnected by the application";
    }
    if (changed) this.statusChanged();
  }

  onTabMessage(message) {
    switch (message.type) {
      case "changed":
        this.changed(false);
        break;
      case "enabled":
        this.setEnabled(message.enabled, false);
        break;
      case "hello": // a new tab: tell it where the connection stands
        if (this.leader) this.postLink();
        break;
      case "link":
        if (!this.leader) {
          Object.assign(this.link, message.link);
          this.statusChanged();
        }
        break;
    }
  }

  postLink() {
    this.tabs.post({ type: "link", link: { ...this.link } });
  }

  /** The replica changed (here, or in another tab): refresh subscribers; wake the upload. */
  changed(here) {
    if (here) this.tabs.post({ type: "changed" });
    this.outboxChanged();
    this.dirty = true;
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = null;
    });
  }

  async refresh() {
    await this.ready;
    while (this.dirty && !this.closed) {
      this.dirty = false;
      this.counts = await this.replica.counts();
      this.statusChanged();
      for (const subscription of [...this.subscriptions]) await this.deliver(subscription);
    }
  }

  async deliver(subscription) {
    const jobs = await this.replica.jobs(subscription.limit);
    const text = JSON.stringify(jobs);
    if (text === subscription.last || !this.subscriptions.has(subscription)) return;
    subscription.last = text;
    try {
      subscription.callback(jobs);
    } catch (error) {
      console.error("errands: a subscriber's callback threw", error);
    }
  }

  statusChanged() {
    for (const watcher of [...this.statusWatchers]) this.tellStatus(watcher);
    for (const check of [...this.changeWaiters]) check().catch(() => {});
  }

  tellStatus(watcher) {
    const status = this.status;
    const text = JSON.stringify(status);
    if (text === watcher.last) return;
    watcher.last = text;
    try {
      watcher.callback(status);
    } catch (error) {
      console.error("errands: a status callback threw", error);
    }
  }

  setLink(connected, reason, fatal = null) {
    Object.assign(this.link, { connected, reason, fatal });
    this.postLink();
    this.statusChanged();
  }

  /** This tab now holds the connection (the first tab, or the one after it closed). */
  lead() {
    if (this.closed) return;
    this.leader = true;
    if (this.link.enabled) this.startSync();
    else this.setLink(false, "disconnected by the application");
  }

  startSync() {
    if (this.running || this.closed) return;
    const stop = new AbortController();
    this.running = { stop, session: null, done: null };
    this.running.done = this.runForever(stop.signal).finally(() => {
      this.running = null;
    });
  }

  async stopSync(reason) {
    const running = this.running;
    if (!running) return;
    running.stop.abort(new ErrandsError(reason));
    await running.done;
    this.setLink(false, reason);
  }

  wakeUp() {
    this.backoff.reset();
    this.wake.abort();
    this.wake = new AbortController();
  }

  async runForever(stopped) {
    await this.ready;
    this.setLink(false, "connecting");
    while (!stopped.aborted) {
      const session = new AbortController();
      this.running.session = session;
      const signal = AbortSignal.any([stopped, session.signal]);
      try {
        await this.connectedSession(new Session(this, signal), session);
      } catch (error) {
        if (stopped.aborted) break;
        const reason = session.signal.aborted ? session.signal.reason : error;
        if (FATAL.some((kind) => reason instanceof kind)) {
          console.error(`errands: sync stopped: ${reason.message}`);
          this.setLink(false, reason.message, { name: reason.name, message: reason.message });
          return;
        }
        if (!(reason instanceof ErrandsError)) console.error("errands: sync: unexpected error", reason);
        this.setLink(false, reason?.message ?? String(reason));
      } finally {
        session.abort();
      }
      const delay = this.backoff.next();
      await sleep(delay, AbortSignal.any([stopped, this.wake.signal]));
    }
  }

  async connectedSession(session, controller) {
    await session.checkIdentity();
    this.backoff.reset();
    this.setLink(true, null);
    // Both loops run until one fails; then the other is cut off with it.
    const failed = (error) => {
      controller.abort(error);
      throw error;
    };
    await Promise.all([this.pushForever(session).catch(failed), session.pullForever().catch(failed)]);
  }

  async pushForever(session) {
    let poke = () => {};
    this.outboxChanged = () => poke();
    session.signal.addEventListener("abort", () => poke(), { once: true });
    for (;;) {
      const poked = new Promise((resolve) => {
        poke = resolve;
      });
      await session.push();
      await poked;
      session.signal.throwIfAborted();
    }
  }
}
