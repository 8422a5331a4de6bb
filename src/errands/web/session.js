// errands.js's conversations with the sync service: who am I, push the outbox, follow the
// jobs shape (server-sent events read with fetch, long polls where a proxy spoils them).
import {
  Backoff,
  EventStreamParser,
  MustRefetch,
  PROTOCOL,
  Refused,
  ReplicaMismatch,
  ServerUnreachable,
  StreamUnusable,
  SyncError,
  Unauthorized,
  errorFor,
  fitBatch,
} from "./model.js";

const { PREFIX, START, JOBS_TABLE } = PROTOCOL;
const REQUEST_SECONDS = 30;
const LIVE_SECONDS = PROTOCOL.LIVE_HOLD_SECONDS + 15; // a live answer (or stream event) is due by then
const FIRST_EVENT_SECONDS = 10; // a stream silent this long is buffered by a proxy: long-poll instead

// -- talking to the server -----------------------------------------------------------------

export function sleep(seconds, signal) {
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
export class Session {
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
    if (this.client.user !== null && me.user !== this.client.user) {
      throw new ReplicaMismatch(`this client keeps ${JSON.stringify(this.client.user)}'s replica, but the token is ${JSON.stringify(me.user)}'s; nothing was uploaded or changed`);
    }
    this.user = me.user;
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
    while ((mutations = await this.replica.pendingMutations(PROTOCOL.MAX_BATCH, this.user)).length) {
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

  /** The shape's query from `readFrom`: the offset, and the client's filter if it has one
   * (a LiveShape's; errands.js's Client follows every job the token may read). */
  shapeParams(readFrom) {
    const where = this.client.where;
    return where ? { offset: readFrom, where: JSON.stringify(where) } : { offset: readFrom };
  }

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
      const params = live ? { ...this.shapeParams(readFrom), live: "true" } : this.shapeParams(readFrom);
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
        params: this.shapeParams(readFrom),
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

// -- a shape held in memory ------------------------------------------------------------------

/**
 * The rows of one filtered shape of the jobs, kept live in memory, for a page that follows
 * a filter of its own (the operator console's page of jobs, one job): the same stream,
 * long polls, must-refetch handling and backoff as the Client's replica, without one.
 * `token`: a string, or a function called at each connection. Callbacks:
 * `onBatch(upserted rows, deleted keys)` after each change (after a must-refetch, the
 * new snapshot arrives as upserts), `onChange(shape)` after each change, each restart
 * and on becoming up to date (not for a batch that changed none of its rows),
 * `onStatus("connecting" | "live" | "offline")`, and `onFatal(error)` when the service
 * refuses the token (401) or the page (403): the shape stops then.
 */
export class LiveShape {
  constructor({ server, token = null, where = null, live = "auto", backoff = {}, onBatch, onChange, onStatus, onFatal } = {}) {
    this.server = String(server).replace(/\/+$/, "");
    this.tokenOf = typeof token === "function" ? token : () => token;
    this.where = where;
    this.live = live;
    this.replica = this; // what a Session reads from and applies to: offset() and apply()
    this.rows = new Map();
    this.at = START;
    this.upToDate = false;
    this.backoff = new Backoff({ base: 0.5, cap: 15, ...backoff });
    this.callbacks = { onBatch, onChange, onStatus, onFatal };
    this.stopped = new AbortController();
    this.done = this.run();
  }

  /** The token of the next request (Session reads `client.token`). */
  get token() {
    return this.tokenOf();
  }

  get closed() {
    return this.stopped.signal.aborted;
  }

  /** Stop following (the request in flight is cut off). */
  close() {
    this.stopped.abort();
  }

  tell(name, ...args) {
    try {
      this.callbacks[name]?.(...args);
    } catch (error) {
      console.error(`errands: a LiveShape's ${name} threw`, error);
    }
  }

  async run() {
    const signal = this.stopped.signal;
    while (!signal.aborted) {
      this.tell("onStatus", "connecting");
      try {
        await new Session(this, signal).pullForever();
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof Unauthorized || error.status === 403) {
          this.close();
          this.tell("onFatal", error);
          return;
        }
        if (!(error instanceof SyncError)) console.error("errands: a LiveShape failed", error);
      }
      this.tell("onStatus", "offline");
      await sleep(this.backoff.next(), signal);
    }
  }

  // -- what a Session sees as the replica --

  async offset() {
    return this.at;
  }

  /** Apply one shape answer read from `readFrom`: false if the shape moved on meanwhile. */
  async apply(answer, readFrom) {
    if (readFrom !== this.at || this.closed) return false;
    if (answer.messages.some((m) => m.type === "must-refetch")) {
      this.rows.clear();
      this.at = START;
      this.upToDate = false;
      this.tell("onChange", this);
      return true;
    }
    const restarted = readFrom === START;
    if (restarted) this.rows.clear(); // a new snapshot replaces what was held
    const wasUpToDate = this.upToDate;
    const upserted = [];
    const deleted = [];
    for (const message of answer.messages) {
      if (message.type === "upsert") {
        this.rows.set(message.key, message.row);
        upserted.push(message.row);
      } else if (message.type === "delete") {
        // The service says "delete" for every changed job outside the filter (it cannot
        // tell which ones this reader held): only a row held here is news.
        if (this.rows.delete(message.key)) deleted.push(message.key);
      } else if (message.type === "up-to-date") {
        this.upToDate = true;
      }
    }
    this.at = answer.offset;
    this.backoff.reset(); // the service answers: the next failure starts from short waits
    if (this.upToDate) this.tell("onStatus", "live");
    if (upserted.length || deleted.length) this.tell("onBatch", upserted, deleted);
    if (upserted.length || deleted.length || restarted || this.upToDate !== wasUpToDate) this.tell("onChange", this);
    return true;
  }
}
