// errands.js's replica: synced rows, the outbox and the shape's offset in IndexedDB. Every
// method is one transaction; what a page reads is the synced row with the outbox on top.
//
// A write costs the same however long the outbox grows (offline for days): the outbox is
// read through indexes -- by status (what to upload, in order), by mutation id (the
// server's answers), by job, by the new jobs' timestamps (the newest jobs) -- and the
// pending and rejected counts are kept up to date in the write's own transaction,
// never counted.
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

const DB_VERSION = 2;
const COUNTS = "counts"; // meta: {pending, rejected}, kept by every write that changes them
const NO_COUNTS = Object.freeze({ pending: 0, rejected: 0 });

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

  /** Open (or create) the replica called `name`; `onChange()` runs after each write.
   * `owner`: the verified user whose changes this client records (null: whoever the
   * service says the replica belongs to). */
  static async open(name, onChange = () => {}, owner = null) {
    const opening = indexedDB.open(name, DB_VERSION);
    opening.onupgradeneeded = (event) => upgrade(opening.result, opening.transaction, event.oldVersion);
    let db;
    try {
      db = await request(opening);
    } catch (error) {
      throw new ReplicaError(`cannot open the replica ${JSON.stringify(name)} in IndexedDB: ${error?.message ?? error}`);
    }
    // Another tab upgrading or deleting the database: step aside rather than block it.
    db.onversionchange = () => db.close();
    const replica = new Replica(db, name, onChange);
    replica.owner = owner;
    return replica;
  }

  /** Delete the replica called `name` (once every tab has closed it). */
  static delete(name) {
    return new Promise((resolve, reject) => {
      const deleting = indexedDB.deleteDatabase(name);
      deleting.onsuccess = () => resolve();
      deleting.onerror = () => reject(new ReplicaError(`cannot delete the replica ${JSON.stringify(name)}: ${deleting.error?.message}`));
    });
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
    return this.transaction(["synced", "outbox", "meta"], "readwrite", async (stores) => {
      if (values.unique_key !== undefined) {
        const existing = await this.unfinishedWithKey(stores, values.unique_key);
        if (existing !== null) return existing;
      }
      await this.addEntry(stores, values.id, "insert", values);
      return viewJob(null, [{ op: "insert", values, status: "pending", error: null }]);
    });
  }

  /** A job here, queued or running, that has `uniqueKey`; or null. */
  async unfinishedWithKey(stores, uniqueKey) {
    const [rows, entries] = await Promise.all([
      request(stores.synced.index("uniqueKey").getAllKeys(uniqueKey)),
      request(stores.outbox.index("uniqueKey").getAll(uniqueKey)),
    ]);
    const ids = new Set([...rows, ...entries.map((entry) => entry.jobId)]);
    for (const id of ids) {
      const job = await this.jobIn(stores, id);
      if (job?.unique_key === uniqueKey && (job.state === "queued" || job.state === "running")) return job;
    }
    return null;
  }

  /** Record a cancellation request (unless the job ended or one is recorded already);
   * return the job as it now looks. JobNotFound if the replica has no such job. */
  requestCancel(jobId) {
    return this.transaction(["synced", "outbox", "meta"], "readwrite", async (stores) => {
      const job = await this.jobIn(stores, jobId);
      if (job === null) throw new JobNotFound(`the replica has no job ${JSON.stringify(jobId)}`);
      if (job.done || job.cancelled) return job;
      await this.addEntry(stores, jobId, "update", { cancelled: true });
      return this.jobIn(stores, jobId);
    });
  }

  /** Add an outbox entry, written by this client's owner, and count it pending. */
  async addEntry({ outbox, meta }, jobId, op, values) {
    const entry = { mutationId: uuid7(), jobId, op, values, status: "pending", txid: null, error: null, user: this.owner };
    if (op === "insert") entry.insertKey = [sortKey(values.timestamp), jobId];
    outbox.add(entry);
    await bump(meta, { pending: 1 });
  }

  /** Follow the server's database into a new generation (restored from a dump): drop the
   * synced rows and the offset, keep the outbox and upload again what the old one had
   * acknowledged (applied at most once: what the restored database has is not doubled). */
  startGeneration(generation) {
    return this.transaction(["synced", "shapes", "outbox", "meta"], "readwrite", async (stores) => {
      stores.synced.clear();
      stores.shapes.clear();
      const acked = await request(stores.outbox.index("status").getAll("acked"));
      for (const entry of acked) stores.outbox.put({ ...entry, status: "pending", txid: null });
      await bump(stores.meta, { pending: acked.length });
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

  /** The newest `limit` jobs, pending ones included: the newest synced rows and the
   * newest jobs only the outbox has, each with its outbox entries on top. */
  jobs(limit = 10) {
    return this.transaction(["synced", "outbox"], "readonly", async (stores) => {
      const [synced, inserted] = await Promise.all([
        newest(stores.synced.index("newest"), limit),
        newest(stores.outbox.index("newest"), limit),
      ]);
      const ids = new Set([...synced.map((stored) => stored.id), ...inserted.map((entry) => entry.jobId)]);
      const jobs = await Promise.all([...ids].map((id) => this.jobIn(stores, id)));
      return newestJobs(jobs.filter(Boolean), limit);
    });
  }

  /** How many outbox entries wait for upload, and how many were rejected. */
  async counts() {
    return (await this.meta(COUNTS)) ?? NO_COUNTS;
  }

  // -- the write path --

  /** The oldest entries not yet acknowledged, in upload order, as mutations: those that
   * `user` (the user the service verified) wrote, never another's. */
  pendingMutations(limit, user) {
    const mine = (entry) => entry.user === undefined || entry.user === null || entry.user === user;
    return this.transaction(["outbox"], "readonly", async ({ outbox }) => {
      const entries = await oldest(outbox.index("status"), "pending", mine, limit);
      return entries.map((e) => ({ id: e.mutationId, table: JOBS_TABLE, op: e.op, key: e.jobId, values: e.values }));
    });
  }

  /** Mark entries acknowledged (with the transaction that applied them) or rejected; settle
   * what the current offset already covers. */
  recordResults(results, txid) {
    return this.transaction(["outbox", "shapes", "meta"], "readwrite", async ({ outbox, shapes, meta }) => {
      const entries = await Promise.all(results.map((result) => request(outbox.index("mutation").get(result.id))));
      const change = { pending: 0, rejected: 0 };
      results.forEach((result, index) => {
        const entry = entries[index];
        if (entry === undefined || entry.status !== "pending") return;
        change.pending -= 1;
        if (result.status === "applied") {
          outbox.put({ ...entry, status: "acked", txid });
        } else {
          const error = `${result.code ?? "rejected"}: ${result.message || "the server refused this change"}`;
          outbox.put({ ...entry, status: "rejected", error });
          change.rejected += 1;
        }
      });
      await bump(meta, change);
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

/** Create the stores and indexes of DB_VERSION, from `oldVersion` (0: a new replica). */
function upgrade(db, tx, oldVersion) {
  if (oldVersion < 1) {
    db.createObjectStore("meta");
    db.createObjectStore("shapes");
    db.createObjectStore("synced", { keyPath: "id" }).createIndex("newest", ["sortKey", "id"]);
    db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true }).createIndex("job", "jobId");
  }
  if (oldVersion < 2) {
    tx.objectStore("synced").createIndex("uniqueKey", "row.unique_key");
    const outbox = tx.objectStore("outbox");
    outbox.createIndex("status", "status");
    outbox.createIndex("mutation", "mutationId", { unique: true });
    outbox.createIndex("newest", "insertKey"); // inserts only: [sortKey, jobId]
    outbox.createIndex("uniqueKey", "values.unique_key");
    const counts = { pending: 0, rejected: 0 };
    const cursor = outbox.openCursor();
    cursor.onsuccess = () => {
      const at = cursor.result;
      if (at === null) {
        tx.objectStore("meta").put(counts, COUNTS);
        return;
      }
      const entry = at.value;
      if (entry.status in counts) counts[entry.status] += 1;
      if (entry.op === "insert") at.update({ ...entry, insertKey: [sortKey(entry.values.timestamp), entry.jobId] });
      at.continue();
    };
  }
}

/** The values of the last `limit` keys of `index`, newest first. */
function newest(index, limit) {
  return new Promise((resolve, reject) => {
    const found = [];
    const cursor = index.openCursor(null, "prev");
    cursor.onerror = () => reject(cursor.error);
    cursor.onsuccess = () => {
      const at = cursor.result;
      if (at === null || found.length >= limit) return resolve(found);
      found.push(at.value);
      at.continue();
    };
  });
}

/** The values of the first `limit` records under `key` in `index` that `wanted` takes. */
function oldest(index, key, wanted, limit) {
  return new Promise((resolve, reject) => {
    const found = [];
    const cursor = index.openCursor(key);
    cursor.onerror = () => reject(cursor.error);
    cursor.onsuccess = () => {
      const at = cursor.result;
      if (at === null || found.length >= limit) return resolve(found);
      if (wanted(at.value)) found.push(at.value);
      at.continue();
    };
  });
}

/** Add `change` ({pending, rejected}: differences) to the counts, in the caller's transaction. */
async function bump(meta, change) {
  const counts = { ...((await request(meta.get(COUNTS))) ?? NO_COUNTS) };
  for (const [name, difference] of Object.entries(change)) counts[name] += difference;
  meta.put(counts, COUNTS);
}

/** Drop acknowledged entries whose effect the synced rows now contain. */
async function settle(outbox, offsetText) {
  if (offsetText === START) return;
  const offset = decodeOffset(offsetText);
  if (offset.afterKey !== null) return; // mid-snapshot: not every row is here yet
  for (const entry of await request(outbox.index("status").getAll("acked"))) {
    if (entry.txid !== null && covers(offset, entry.txid)) outbox.delete(entry.seq);
  }
}
