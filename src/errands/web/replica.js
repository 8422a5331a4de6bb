// errands.js's replica: synced rows, the outbox and the shape's offset in IndexedDB. Every
// method is one transaction; what a page reads is the synced row with the outbox on top.
import {
  JobNotFound,
  PROTOCOL,
  ReplicaError,
  checkKind,
  covers,
  decodeOffset,
  jobOptions,
  newestJobs,
  payloadJson,
  sortKey,
  uuid7,
  viewJob,
} from "./model.js";

const { START, JOBS_TABLE } = PROTOCOL;

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

  /** Record a new job and its upload; return the job. `options` are checked by
   * jobOptions; with a `unique_key` an unfinished job here already has, that job is
   * returned and nothing is recorded (as the Python client does). */
  async insertJob(kind, payload, options = {}) {
    checkKind(kind);
    const values = {
      id: uuid7(),
      timestamp: new Date().toISOString(),
      kind,
      payload: JSON.parse(payloadJson(payload)),
      cancelled: false,
      ...jobOptions(options),
    };
    return this.transaction(["synced", "outbox"], "readwrite", async (stores) => {
      if (values.unique_key !== undefined) {
        const existing = await this.unfinishedWithKey(stores, values.unique_key);
        if (existing !== null) return existing;
      }
      addEntry(stores.outbox, values.id, "insert", values);
      return viewJob(null, [{ op: "insert", values, status: "pending", error: null }]);
    });
  }

  /** A job here, queued or running, that has `uniqueKey`; or null. */
  async unfinishedWithKey(stores, uniqueKey) {
    const [rows, entries] = await Promise.all([request(stores.synced.getAll()), request(stores.outbox.getAll())]);
    const ids = new Set([
      ...rows.filter((stored) => stored.row.unique_key === uniqueKey).map((stored) => stored.id),
      ...entries.filter((entry) => entry.op === "insert" && entry.values.unique_key === uniqueKey).map((e) => e.jobId),
    ]);
    for (const id of ids) {
      const job = await this.jobIn(stores, id);
      if (job?.unique_key === uniqueKey && (job.state === "queued" || job.state === "running")) return job;
    }
    return null;
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
