// errands-react.js's hooks rendered by React in Node (react-dom on happy-dom's DOM), over a
// client that follows errands.js's subscription contract: the value now, then each change.
// node --test tests/react/  (tests/react/test_node.py runs them under pytest).
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { Window } from "happy-dom";
import * as React from "react";
import { createRoot } from "react-dom/client";
import { renderToString } from "react-dom/server";

import { createHooks } from "../../src/errands/web/errands-react.js";

const { useJobs, useJob, useClientStatus } = createHooks(React);
const h = React.createElement;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

/** A client with errands.js's subscribe functions, whose changes the test makes. */
class FakeClient {
  constructor() {
    this.listeners = new Set();
    this.status = Object.freeze({ state: "disconnected", connected: false, reason: "connecting", pending: 0 });
    this.jobsById = new Map();
  }

  listen(read, callback) {
    const listener = { read, callback };
    this.listeners.add(listener);
    queueMicrotask(() => this.listeners.has(listener) && callback(read()));
    return () => this.listeners.delete(listener);
  }

  subscribe(callback, { limit = 10 } = {}) {
    return this.listen(() => [...this.jobsById.values()].slice(-limit).reverse(), callback);
  }

  subscribeJob(jobId, callback) {
    return this.listen(() => this.jobsById.get(jobId) ?? null, callback);
  }

  subscribeStatus(callback) {
    return this.listen(() => this.status, callback);
  }

  put(job) {
    this.jobsById.set(job.id, job);
    this.tell();
  }

  setStatus(changes) {
    this.status = Object.freeze({ ...this.status, ...changes });
    this.tell();
  }

  tell() {
    for (const { read, callback } of [...this.listeners]) callback(read());
  }
}

let window;
let container;
let root;

beforeEach(() => {
  window = new Window();
  globalThis.window = window;
  globalThis.document = window.document;
  container = document.createElement("div");
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(async () => {
  await React.act(async () => root.unmount());
  await window.happyDOM.close();
});

async function render(element) {
  await React.act(async () => root.render(element));
}

const settle = () => React.act(async () => {});

function JobList({ client, limit }) {
  const jobs = useJobs(client, { limit });
  return h("ul", null, jobs.map((job) => h("li", { key: job.id }, `${job.id}:${job.state}`)));
}

function OneJob({ client, id }) {
  const job = useJob(client, id);
  return h("p", null, job ? `${job.id} ${Math.round(job.progress * 100)}%` : "none");
}

function Connectivity({ client }) {
  const status = useClientStatus(client);
  return h("p", null, status.connected ? "connected" : `offline: ${status.reason}`);
}

const text = () => container.textContent;
const job = (id, state = "queued", progress = 0) => ({ id, state, progress });

describe("useJobs", () => {
  test("renders [] at first, then the client's jobs, and again on each change", async () => {
    const client = new FakeClient();
    client.put(job("a"));
    await render(h(JobList, { client, limit: 10 }));
    await settle();
    assert.equal(text(), "a:queued");
    await React.act(async () => client.put(job("b", "running")));
    assert.equal(text(), "b:runninga:queued");
    await React.act(async () => client.put(job("a", "completed")));
    assert.equal(text(), "b:runninga:completed");
  });

  test("asks for `limit` jobs, and follows anew when the limit changes", async () => {
    const client = new FakeClient();
    for (const id of ["a", "b", "c"]) client.put(job(id));
    await render(h(JobList, { client, limit: 1 }));
    await settle();
    assert.equal(text(), "c:queued");
    await render(h(JobList, { client, limit: 2 }));
    await settle();
    assert.equal(text(), "c:queuedb:queued");
    assert.equal(client.listeners.size, 1); // the old subscription is gone
  });

  test("unsubscribes when the component goes", async () => {
    const client = new FakeClient();
    await render(h(JobList, { client, limit: 5 }));
    assert.equal(client.listeners.size, 1);
    await render(h("p", null, "gone"));
    assert.equal(client.listeners.size, 0);
  });
});

describe("useJob", () => {
  test("is null until the job is known, then follows it", async () => {
    const client = new FakeClient();
    await render(h(OneJob, { client, id: "x" }));
    await settle();
    assert.equal(text(), "none");
    await React.act(async () => client.put(job("x", "running", 0.25)));
    assert.equal(text(), "x 25%");
    await React.act(async () => client.put(job("y", "running", 0.5))); // another job
    await React.act(async () => client.put(job("x", "running", 0.75)));
    assert.equal(text(), "x 75%");
  });

  test("with no id, subscribes to nothing", async () => {
    const client = new FakeClient();
    await render(h(OneJob, { client, id: null }));
    assert.equal(text(), "none");
    assert.equal(client.listeners.size, 0);
  });
});

describe("useClientStatus", () => {
  test("starts from client.status and follows its changes", async () => {
    const client = new FakeClient();
    await render(h(Connectivity, { client }));
    assert.equal(text(), "offline: connecting");
    await React.act(async () => client.setStatus({ connected: true, state: "connected", reason: null }));
    assert.equal(text(), "connected");
    await React.act(async () => client.setStatus({ connected: false, reason: "disconnected by the application" }));
    assert.equal(text(), "offline: disconnected by the application");
  });
});

describe("createHooks", () => {
  test("renders on the server with the values known before any subscription", () => {
    const client = new FakeClient();
    const html = renderToString(h("div", null, h(JobList, { client, limit: 3 }), h(Connectivity, { client })));
    assert.equal(html, "<div><ul></ul><p>offline: connecting</p></div>");
  });

  test("refuses a React without useSyncExternalStore", () => {
    assert.throws(() => createHooks({ useMemo: React.useMemo }), /React 18 or later/);
  });
});
