// errands.js's conversations with the sync service: who am I, push the outbox, follow the
// jobs shape (server-sent events read with fetch, long polls where a proxy spoils them).
import {
  EventStreamParser,
  MustRefetch,
  PROTOCOL,
  Refused,
  ReplicaMismatch,
  ServerUnreachable,
  StreamUnusable,
  SyncError,
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
