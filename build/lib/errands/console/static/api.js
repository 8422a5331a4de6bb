// The console's side of the service: the operator's token, JSON requests, and live
// shapes read as server-sent events. EventSource cannot send an Authorization header,
// so the stream is read with fetch and parsed here.

const KEY = "errands.console.token";

/** Where the token lives: this tab only (sessionStorage), or this browser if asked. */
export const session = {
  get token() {
    return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
  },
  save(token, remember) {
    this.forget();
    (remember ? localStorage : sessionStorage).setItem(KEY, token);
  },
  forget() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
  /** A token handed over in the URL fragment (#token=...), which browsers never send
   * to the server; it is taken out of the address bar and history at once. */
  takeFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("token");
    if (!token) return null;
    history.replaceState(null, "", `${location.pathname}${location.search}#/jobs`);
    return token;
  },
};

/** A refusal from the service: HTTP status and the error's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON request with the operator's token; ApiError for any non-2xx answer. */
export async function api(path, { method = "GET", body, token = session.token, signal } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "the service cannot be reached");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_" + response.status, message: text };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

const RETRY_MIN = 500;
const RETRY_MAX = 15_000;

/**
 * The rows of one shape of background_jobs, kept live: the snapshot, then every change,
 * over /v1/shapes/background_jobs/stream. `onChange(shape)` is called after each batch is
 * applied, `onBatch(upserted rows, deleted keys)` with what the batch changed (after a
 * must-refetch, the new snapshot arrives as upserts); `onStatus(status)` with
 * "connecting", "live" or "offline". Reconnects with exponential backoff and full jitter,
 * from the last offset; a must-refetch starts over.
 */
export class LiveShape {
  constructor(where, { onChange = () => {}, onBatch = () => {}, onStatus = () => {}, onAuthError = () => {} } = {}) {
    this.where = where;
    this.rows = new Map();
    this.offset = "-1";
    this.upToDate = false;
    this.onChange = onChange;
    this.onBatch = onBatch;
    this.onStatus = onStatus;
    this.onAuthError = onAuthError;
    this.controller = new AbortController();
    this.run();
  }

  close() {
    this.controller.abort();
  }

  get closed() {
    return this.controller.signal.aborted;
  }

  async run() {
    let failures = 0;
    while (!this.closed) {
      this.onStatus("connecting");
      try {
        await this.readStream();
        failures = 0;
      } catch (error) {
        if (this.closed) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          this.onAuthError(error);
          return;
        }
        failures += 1;
      }
      if (this.closed) return;
      this.onStatus("offline");
      const ceiling = Math.min(RETRY_MAX, RETRY_MIN * 2 ** failures);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
    }
  }

  async readStream() {
    const query = new URLSearchParams({ offset: this.offset, where: JSON.stringify(this.where) });
    const response = await fetch(`v1/shapes/background_jobs/stream?${query}`, {
      headers: { Authorization: `Bearer ${session.token}` },
      signal: this.controller.signal,
    });
    if (response.status === 409) {
      this.restart();
      return;
    }
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      const error = data.error || { code: "http_" + response.status, message: response.statusText };
      throw new ApiError(response.status, error.code, error.message);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // the server ended the stream (it is stopping): reconnect
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (data) this.apply(JSON.parse(data));
      }
    }
  }

  /** Apply one ShapeResponse: all its messages, then tell the listener once. */
  apply(answer) {
    const upserted = [];
    const deleted = [];
    for (const message of answer.messages) {
      if (message.type === "upsert") {
        this.rows.set(message.key, message.row);
        upserted.push(message.row);
      } else if (message.type === "delete") {
        this.rows.delete(message.key);
        deleted.push(message.key);
      } else if (message.type === "must-refetch") return this.restart();
      else if (message.type === "up-to-date") this.upToDate = true;
    }
    this.offset = answer.offset;
    if (this.upToDate) this.onStatus("live");
    if (upserted.length || deleted.length) this.onBatch(upserted, deleted);
    this.onChange(this);
  }

  restart() {
    this.rows.clear();
    this.offset = "-1";
    this.upToDate = false;
    this.onChange(this);
  }
}

/** A view that reads `path` when shown and every `interval` ms while it stays shown;
 * subclasses draw each answer (`draw(data)`). */
export class PolledView {
  constructor(root, path, interval, onError) {
    this.root = root;
    this.path = path;
    this.interval = interval;
    this.onError = onError;
    this.timer = null;
  }

  show() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), this.interval);
  }

  hide() {
    clearInterval(this.timer);
  }

  async refresh() {
    let data;
    try {
      data = await api(this.path);
    } catch (error) {
      this.onError(error);
      return;
    }
    this.draw(data);
    this.root.dataset.loaded = "true";
  }
}
