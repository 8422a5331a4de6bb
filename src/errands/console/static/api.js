// The console's side of the service: the operator's token, JSON requests, and live
// shapes, followed by errands.js (served by the same service at /v1/client/).

import { LiveShape as Follower } from "../v1/client/errands.js";

/** Microseconds since 1970 of an ISO timestamp, as Postgres orders them (errands.js's
 * rule: Date.parse stops at milliseconds, and jobs received in one would come in any
 * order). */
export { sortKey as microseconds } from "../v1/client/model.js";

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

/** The service's base URL: where /console is served from (an origin, or a path under
 * one behind a proxy). */
const SERVER = new URL("..", import.meta.url).href.replace(/\/+$/, "");

/**
 * The rows of one shape of background_jobs, kept live: errands.js's LiveShape (the same
 * event stream, long polls, must-refetch handling and backoff as every errands.js
 * client), with the operator's token. `onChange(shape)` is called after each batch that
 * changed its rows, `onBatch(upserted rows, deleted keys)` with what it changed (after a
 * must-refetch, the new snapshot arrives as upserts); `onStatus(status)` with
 * "connecting", "live" or "offline"; `onAuthError(error)` when the token is refused
 * (401 or 403, with `error.status`), and the shape stops.
 */
export class LiveShape extends Follower {
  constructor(where, { onChange = () => {}, onBatch = () => {}, onStatus = () => {}, onAuthError = () => {} } = {}) {
    super({ server: SERVER, token: () => session.token, where, onChange, onBatch, onStatus, onFatal: onAuthError });
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
    const path = this.path;
    let data;
    try {
      data = await api(path);
    } catch (error) {
      this.onError(error);
      return;
    }
    // The view asked for something else meanwhile (another window or split): that
    // answer draws; this late one would draw the old choice over it.
    if (path !== this.path) return;
    this.draw(data);
    this.root.dataset.loaded = "true";
  }
}
