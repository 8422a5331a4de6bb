// errands.js's LiveShape (session.js): a filtered shape kept in memory on the Client's own
// stream reader, must-refetch handling and backoff -- what the operator console follows
// its lists and job pages with. fetch is a stub serving scripted answers.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { LiveShape } from "../../src/errands/web/session.js";

const SERVER = "http://service.test/base";
const row = (id, state = "queued") => ({ id, state });
const upsert = (id, state) => ({ type: "upsert", key: id, row: row(id, state) });
const UP_TO_DATE = { type: "up-to-date" };
const original = globalThis.fetch;

/** A stream answer whose events are these shape answers, then held open until the
 * request is aborted (as fetch's own body does). */
function stream(...answers) {
  return (signal) => {
    const text = answers.map((answer) => `data: ${JSON.stringify(answer)}\n\n`).join("");
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(text));
        signal.addEventListener("abort", () => controller.error(signal.reason), { once: true });
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  };
}

const refusal = (status, code) => new Response(JSON.stringify({ error: { code, message: `said ${status}` } }), { status });

/** Serve `script` (answers, or functions of the request) in order; record each request. */
function serve(script) {
  const asked = [];
  globalThis.fetch = async (url, init) => {
    const next = script.shift();
    asked.push({ url: new URL(url), headers: init.headers, signal: init.signal });
    if (next === undefined) {
      return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
    }
    return typeof next === "function" ? next(init.signal) : next;
  };
  return asked;
}

function until(check, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const look = () => {
      if (check()) resolve();
      else if (Date.now() - started > 2000) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(look, 5);
    };
    look();
  });
}

let shape = null;
afterEach(() => {
  shape?.close();
  globalThis.fetch = original;
});

describe("LiveShape", () => {
  test("follows its filter with the token of the moment, and applies each event once", async () => {
    const where = [{ column: "queue", op: "eq", value: "q1" }];
    const asked = serve([stream({ messages: [upsert("a"), upsert("b"), UP_TO_DATE], offset: "o1" }, { messages: [upsert("a", "running"), { type: "delete", key: "b" }], offset: "o2" })]);
    const batches = [];
    const statuses = [];
    let token = "t1";
    shape = new LiveShape({ server: `${SERVER}/`, token: () => token, where, onBatch: (rows, gone) => batches.push([rows.map((r) => r.id), gone]), onStatus: (s) => statuses.push(s) });
    await until(() => batches.length === 2, "two batches");
    token = "t2";
    assert.equal(asked[0].url.pathname, "/base/v1/shapes/background_jobs/stream");
    assert.equal(asked[0].url.searchParams.get("offset"), "-1");
    assert.deepEqual(JSON.parse(asked[0].url.searchParams.get("where")), where);
    assert.equal(asked[0].headers.Authorization, "Bearer t1");
    assert.deepEqual(batches, [[["a", "b"], []], [["a"], ["b"]]]);
    assert.deepEqual([...shape.rows.keys()], ["a"]);
    assert.equal(shape.rows.get("a").state, "running");
    assert.equal(shape.upToDate, true);
    assert.deepEqual(statuses, ["connecting", "live", "live"]);
  });

  test("a delete of a row it never held (a change outside the filter) is no news", async () => {
    serve([stream({ messages: [upsert("a"), UP_TO_DATE], offset: "o1" }, { messages: [{ type: "delete", key: "x" }, UP_TO_DATE], offset: "o2" }, { messages: [{ type: "delete", key: "a" }, UP_TO_DATE], offset: "o3" })]);
    const batches = [];
    const changes = [];
    shape = new LiveShape({ server: SERVER, token: "t", onBatch: (rows, gone) => batches.push([rows.map((r) => r.id), gone]), onChange: (s) => changes.push(s.at) });
    await until(() => shape.at === "o3", "the third answer");
    assert.deepEqual(batches, [[["a"], []], [[], ["a"]]]);
    assert.deepEqual(changes, ["o1", "o3"]);
    assert.equal(shape.rows.size, 0);
  });

  test("a must-refetch drops the rows and reads the snapshot again from the start", async () => {
    const asked = serve([
      stream({ messages: [upsert("a"), UP_TO_DATE], offset: "o1" }, { messages: [{ type: "must-refetch" }], offset: "-1" }),
      stream({ messages: [upsert("c"), UP_TO_DATE], offset: "o9" }),
    ]);
    const changes = [];
    shape = new LiveShape({ server: SERVER, token: "t", onChange: (s) => changes.push([...s.rows.keys()]) });
    await until(() => asked.length === 2 && shape.rows.has("c"), "the second snapshot");
    assert.equal(asked[1].url.searchParams.get("offset"), "-1");
    assert.deepEqual(changes, [["a"], [], ["c"]]);
  });

  test("a 409 starts over at once; a 503 is retried after the backoff", async () => {
    const asked = serve([refusal(409, "must_refetch"), refusal(503, "unavailable"), stream({ messages: [upsert("b"), UP_TO_DATE], offset: "o2" })]);
    const statuses = [];
    shape = new LiveShape({ server: SERVER, backoff: { base: 0.001, cap: 0.002 }, onStatus: (s) => statuses.push(s) });
    await until(() => shape.rows.has("b"), "the rows after the failures");
    assert.deepEqual(statuses, ["connecting", "offline", "connecting", "live"]); // the 409 is no failure
    assert.deepEqual(asked.map((a) => a.url.searchParams.get("offset")), ["-1", "-1", "-1"]);
  });

  test("a refused token or reader (401, 403) stops it and says so, with the status", async () => {
    for (const [status, code] of [
      [401, "unauthorized"],
      [403, "operator_required"],
    ]) {
      const asked = serve([refusal(status, code), stream({ messages: [UP_TO_DATE], offset: "o1" })]);
      let fatal = null;
      shape = new LiveShape({ server: SERVER, token: "t", backoff: { base: 0.001 }, onFatal: (error) => (fatal = error) });
      await until(() => fatal !== null, "the refusal");
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(fatal.status, status);
      assert.equal(asked.length, 1, "no request after the refusal");
      assert.equal(shape.closed, true);
    }
  });
});
