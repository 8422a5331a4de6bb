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

import {
  Backoff,
  ErrandsError,
  RULES,
  ReplicaError,
  ReplicaMismatch,
  ServerUnreachable,
  SyncError,
  Unauthorized,
  WaitTimeout,
  describeStatus,
  replicaName,
} from "./model.js";
import { Replica } from "./replica.js";
import { Session, sleep } from "./session.js";

export {
  ErrandsError,
  InvalidKind,
  JobNotFound,
  PROTOCOL,
  PayloadError,
  PayloadTooLarge,
  RULES,
  ReplicaError,
  ReplicaMismatch,
  ServerUnreachable,
  SyncError,
  Unauthorized,
  WaitTimeout,
} from "./model.js";

const FATAL = [Unauthorized, ReplicaMismatch, ReplicaError]; // retrying cannot fix these: sync stops
const CLEARED = "the local data was cleared (signed out?): open a new client";

/** The fatal error that stopped the sync, rebuilt from what the tabs share: {name, message}. */
function fatalError({ name, message }) {
  const kind = FATAL.find((error) => error.name === name) ?? SyncError;
  return new kind(message);
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
  constructor({ server, token = null, user = null, replica, maxBackoff = 10, live = "auto" } = {}) {
    this.server = (server ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    if (!/^https?:\/\//.test(this.server)) throw new ErrandsError(`the server must be an http(s) URL, not ${JSON.stringify(server)}`);
    this.tokenSource = typeof token === "function" ? token : null;
    if (this.tokenSource && user === null && replica === undefined) {
      throw new ErrandsError("with a token function, say whose replica this is: pass `user` (the user the service verified) or `replica`");
    }
    this.token = this.tokenSource ? null : token || null;
    this.user = user;
    this.name = replica ?? replicaName(this.server, token, user);
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
    this.ready = Replica.open(this.name, () => this.changed(true), user).then((replica) => {
      this.replica = replica;
      this.tabs.post({ type: "hello" });
      this.tabs.elect(() => this.lead());
      this.changed(false);
    });
    this.ready.catch((error) => console.error(`errands: ${error.message}`));
  }

  // -- reads and writes: local, instant, offline too --

  /** Create a job locally; it uploads when connected. `options`: priority, queue,
   * run_at, max_attempts, unique_key (the Python client's names and rules). */
  async submit(kind, payload, options = {}) {
    await this.ready;
    return this.replica.insertJob(kind, payload, options);
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
    return this.follow(callback, () => this.replica.jobs(limit));
  }

  /** Call `callback(job)` now with get(jobId) (null while the replica has no such job),
   * then whenever that job changes. Returns unsubscribe. */
  subscribeJob(jobId, callback) {
    return this.follow(callback, () => this.replica.get(String(jobId)));
  }

  /** Call `callback(await read())` now, then whenever the replica changes and what `read`
   * gives differs from the last call. Returns unsubscribe. */
  follow(callback, read) {
    const subscription = { callback, read, last: undefined };
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

  /** Stop syncing and delete this replica -- synced rows, offsets and the outbox, in
   * every tab of it -- then close: for signing out. Changes not yet uploaded are lost
   * (status.pending says how many). Other tabs' clients of the replica stop. */
  async clearLocalData() {
    this.tabs.post({ type: "cleared" });
    await this.close();
    await Replica.delete(this.name);
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
      case "cleared": // another tab deleted the replica: stop, and say so
        this.close().then(() => this.setLink(false, CLEARED, { name: "ReplicaError", message: CLEARED }));
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
    const value = await subscription.read();
    const text = JSON.stringify(value);
    if (text === subscription.last || !this.subscriptions.has(subscription)) return;
    subscription.last = text;
    try {
      subscription.callback(value);
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

  /** Ask the token function for a token (again); whether it gave another one. */
  async renewToken() {
    if (!this.tokenSource) return false;
    const previous = this.token;
    try {
      this.token = (await this.tokenSource()) || null;
    } catch (error) {
      throw new ServerUnreachable(`the token function failed: ${error?.message ?? error}`);
    }
    return this.token !== previous;
  }

  async runForever(stopped) {
    await this.ready;
    this.setLink(false, "connecting");
    while (!stopped.aborted) {
      const session = new AbortController();
      this.running.session = session;
      const signal = AbortSignal.any([stopped, session.signal]);
      try {
        if (this.tokenSource && this.token === null) await this.renewToken();
        await this.connectedSession(new Session(this, signal), session);
      } catch (error) {
        if (stopped.aborted) break;
        const reason = session.signal.aborted ? session.signal.reason : error;
        const expired = reason instanceof Unauthorized && reason.code === RULES.error_codes.token_expired;
        if (expired && (await this.renewToken().catch(() => false))) {
          this.setLink(false, "the token expired: trying a new one");
        } else if (FATAL.some((kind) => reason instanceof kind)) {
          console.error(`errands: sync stopped: ${reason.message}`);
          this.setLink(false, reason.message, { name: reason.name, message: reason.message });
          return;
        } else {
          if (!(reason instanceof ErrandsError)) console.error("errands: sync: unexpected error", reason);
          this.setLink(false, reason?.message ?? String(reason));
        }
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
