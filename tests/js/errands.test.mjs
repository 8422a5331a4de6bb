// Unit tests of errands.js's pure parts (model.js) and the page's job view, with Node's test runner:
// node --test tests/js/  (tests/js/test_node.py runs them under pytest).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Backoff,
  EventStreamParser,
  InvalidKind,
  PayloadError,
  QuestionClosed,
  ServerUnreachable,
  Unauthorized,
  checkAnswer,
  checkKind,
  covers,
  decodeOffset,
  errorFor,
  fitBatch,
  jobDependencies,
  jobOptions,
  newestJobs,
  payloadJson,
  replicaName,
  sameJson,
  sortKey,
  tokenUser,
  uuid7,
  viewJob,
} from "../../src/errands/web/model.js";
import { jobView } from "../../src/errands/ui/static/view.js";

const ROW = { id: "a", timestamp: "2026-12-01T10:00:00.000001+00:00", kind: "k", payload: {}, state: "running", cancelled: false, completed: false, progress: 0.5 };
const pending = (op, values) => ({ op, values, status: "pending", error: null });

describe("uuid7", () => {
  // Each test's milliseconds are above the one before's: ids rise across all of them.
  test("puts the milliseconds first, then version 7 and the RFC 4122 variant", () => {
    const id = uuid7(0x0fedcba98765, new Uint8Array(10).fill(0xff));
    assert.equal(id, "0fedcba9-8765-7fff-bfff-ffffffffffff");
  });

  test("sorts by creation time, and differs within one millisecond", () => {
    assert.ok(uuid7(0x0fedcba98770) < uuid7(0x0fedcba98771));
    assert.notEqual(uuid7(0x0fedcba98772), uuid7(0x0fedcba98772));
  });

  test("rises within one millisecond, whatever the random bits say", () => {
    const ids = Array.from({ length: 50 }, (_, i) => uuid7(0x0fedcba98780, new Uint8Array(10).fill(50 - i)));
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
    assert.ok(ids.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)));
    const top = new Uint8Array(10).fill(0xff); // every random bit set: the step carries into the milliseconds
    const [first, second] = [uuid7(0x0fedcba98790, top), uuid7(0x0fedcba98790, top)];
    assert.equal(first, "0fedcba9-8790-7fff-bfff-ffffffffffff");
    assert.equal(second.slice(0, 13), "0fedcba9-8791");
  });
});

describe("offsets", () => {
  test("decode as protocol.Offset does", () => {
    assert.deepEqual(decodeOffset("g1_10_15_11.13~key-9"), { generation: "g1", xmin: 10, xmax: 15, xip: [11, 13], afterKey: "key-9" });
    assert.deepEqual(decodeOffset("g1_10_10_").xip, []);
  });

  for (const bad of ["", "-1", "g_1_2", "g_3_2_", "g_1_5_7", "g_0_5_", "g_1_x_", "g!_1_2_"]) {
    test(`refuse ${JSON.stringify(bad)}`, () => assert.throws(() => decodeOffset(bad), /not an offset/));
  }

  test("cover what the snapshot sees: below xmin, or below xmax and not in progress", () => {
    const offset = decodeOffset("g_10_15_11.13");
    assert.deepEqual([9, 10, 11, 12, 13, 14, 15].map((txid) => covers(offset, txid)), [true, true, false, true, false, true, false]);
  });
});

describe("sortKey", () => {
  test("keeps microseconds and time zones", () => {
    assert.equal(sortKey("1970-01-01T00:00:01.000002+00:00"), 1_000_002);
    assert.equal(sortKey("1970-01-01T01:00:00+01:00"), 0);
    assert.equal(sortKey("1970-01-01T00:00:00.5Z"), 500_000);
  });

  test("refuses what is not a timestamp", () => assert.throws(() => sortKey("yesterday"), /not a timestamp/));
});

describe("payloads and kinds", () => {
  test("no payload is {}", () => {
    assert.equal(payloadJson(undefined), "{}");
    assert.equal(payloadJson(null), "{}");
    assert.equal(payloadJson({ a: [1, "é", true, null] }), '{"a":[1,"é",true,null]}');
  });

  for (const [what, value] of [
    ["NaN", { n: NaN }],
    ["Infinity", [Infinity]],
    ["a NUL", { s: "a\u0000b" }],
    ["a lone surrogate", { s: "\ud800" }],
    ["a Date", { when: new Date(0) }],
    ["a function", { f() {} }],
    ["undefined inside", { u: undefined }],
  ]) {
    test(`refuse ${what}`, () => assert.throws(() => payloadJson(value), PayloadError));
  }

  test("refuse a payload over the server's limit, counted in UTF-8 bytes", () => {
    assert.throws(() => payloadJson({ s: "é".repeat(140 * 1024) }), /bytes of JSON/);
    assert.equal(payloadJson({ s: "e".repeat(140 * 1024) }).length, 140 * 1024 + 8);
  });

  test("kinds of 1 to 200 characters", () => {
    assert.equal(checkKind("x".repeat(200)), "x".repeat(200));
    for (const bad of ["", "x".repeat(201), 7, null]) assert.throws(() => checkKind(bad), InvalidKind);
  });
});

describe("job options: protocol.check_job_options's rules", () => {
  test("good values pass, run_at becomes UTC ISO text, unset ones are left out", () => {
    assert.deepEqual(
      jobOptions({ priority: -1000, queue: "emails é", run_at: "2026-12-01T10:30:00+01:00", max_attempts: 100, unique_key: "k" }),
      { priority: -1000, queue: "emails é", run_at: "2026-12-01T09:30:00.000Z", max_attempts: 100, unique_key: "k" },
    );
    assert.deepEqual(jobOptions({ run_at: new Date(Date.UTC(2027, 0, 2)), priority: null }), { run_at: "2027-01-02T00:00:00.000Z" });
    assert.deepEqual(jobOptions(), {});
  });

  test("run_at without a time zone is UTC, as the service reads it (protocol.parse_timestamp)", () => {
    assert.deepEqual(jobOptions({ run_at: "2026-12-01T10:30" }), { run_at: "2026-12-01T10:30:00.000Z" });
  });

  for (const [options, message] of [
    [{ priority: 1001 }, /priority must be a whole number from -1000 to 1000, not 1001/],
    [{ priority: 1.5 }, /priority must be a whole number/],
    [{ priority: "3" }, /priority must be a whole number/],
    [{ max_attempts: 0 }, /max_attempts must be a whole number from 1 to 100, not 0/],
    [{ queue: "" }, /queue must be 1 to 200 printable characters/],
    [{ queue: "a".repeat(201) }, /queue must be 1 to 200 printable characters/],
    [{ unique_key: "tab\there" }, /unique_key must be 1 to 200 printable characters/],
    [{ run_at: "tomorrow" }, /run_at must be a Date or an ISO 8601 time/],
    [{ run_at: "10000-01-01T00:00:00Z" }, /run_at must be a Date or an ISO 8601 time of years 1 to 9999/],
    [{ run_at: new Date("nonsense") }, /run_at must be/],
  ]) {
    test(`refuses ${JSON.stringify(options)}`, () => {
      assert.throws(() => jobOptions(options), { name: "RangeError", message });
    });
  }

  test("an unknown option is a TypeError", () => {
    assert.throws(() => jobOptions({ priorty: 1 }), { name: "TypeError", message: /unknown job option "priorty"/ });
  });
});

describe("the view of a job: synced row with the outbox on top", () => {
  test("a job only in the outbox is queued and pending", () => {
    const job = viewJob(null, [pending("insert", { id: "a", timestamp: ROW.timestamp, kind: "k", payload: {}, cancelled: false })]);
    assert.deepEqual([job.state, job.pending, job.progress, job.done], ["queued", true, 0, false]);
  });

  test("a pending cancel stays on top of a server row that has not seen it", () => {
    const job = viewJob(ROW, [pending("update", { cancelled: true })]);
    assert.deepEqual([job.state, job.cancelled, job.pending, job.progress], ["running", true, true, 0.5]);
  });

  test("an acknowledged entry is still applied, but no longer pending", () => {
    const job = viewJob(ROW, [{ op: "update", values: { cancelled: true }, status: "acked", error: null }]);
    assert.deepEqual([job.cancelled, job.pending], [true, false]);
  });

  test("a refused insert is a rejected job; a refused cancel is reverted", () => {
    const refused = { op: "insert", values: { id: "b", timestamp: ROW.timestamp, kind: "k" }, status: "rejected", error: "validation_error: no" };
    assert.deepEqual([viewJob(null, [refused]).state, viewJob(null, [refused]).rejected, viewJob(null, [refused]).done], ["rejected", "validation_error: no", true]);
    const job = viewJob(ROW, [{ op: "update", values: { cancelled: true }, status: "rejected", error: "forbidden: no" }]);
    assert.deepEqual([job.cancelled, job.rejected, job.pending], [false, "forbidden: no", false]);
  });

  test("an update without a row or insert shows nothing", () => assert.equal(viewJob(null, [pending("update", { cancelled: true })]), null));

  test("newest first, ties by id, pending ones included, limited", () => {
    const older = { ...ROW, id: "old", timestamp: "2026-12-01T09:00:00+00:00" };
    const sameTime = { ...ROW, id: "b" };
    const local = pending("insert", { id: "new", timestamp: "2026-12-01T11:00:00Z", kind: "k", payload: {} });
    const views = [viewJob(ROW, []), viewJob(sameTime, []), viewJob(older, []), viewJob(null, [local])];
    const jobs = newestJobs(views, 3);
    assert.deepEqual(jobs.map((j) => j.id), ["new", "b", "a"]);
  });

  test("the page's job view matches errands/ui/views.py", () => {
    const view = jobView(viewJob({ ...ROW, id: "0190b4a1-2c3d-7e4f-8a9b-0c1d2e3f4a5b", state: "failed", error: "boom" }, []));
    assert.deepEqual([view.short_id, view.ended, view.cancel_requested, view.error], ["2e3f4a5b", true, false, { type: null, message: "boom", traceback: null }]);
  });
});

describe("a workflow: the jobs a new job runs after", () => {
  const A = "0190b4a1-2c3d-7e4f-8a9b-0c1d2e3f4a5b";
  const B = "0190B4A1-2C3D-7E4F-8A9B-0C1D2E3F4A5C";

  test("jobs or ids, lower-cased, each once, in order; on_failure defaults to cancel", () => {
    assert.deepEqual(jobDependencies([{ id: A }, B, A]), { after: [A, B.toLowerCase()], on_failure: "cancel" });
    assert.deepEqual(jobDependencies([A], "run"), { after: [A], on_failure: "run" });
    assert.deepEqual(jobDependencies(undefined), {});
    assert.deepEqual(jobDependencies([]), {});
  });

  test("refused as the service refuses them", () => {
    assert.throws(() => jobDependencies(["nope"]), RangeError);
    assert.throws(() => jobDependencies(A), RangeError); // one id, not a list
    assert.throws(() => jobDependencies(Array(101).fill(A)), /at most 100/);
    assert.throws(() => jobDependencies([A], "maybe"), /on_failure/);
  });

  test("a job not delivered yet waits for every job it runs after but the ended ones", () => {
    const insert = pending("insert", { id: "c", timestamp: ROW.timestamp, kind: "k", payload: {}, after: [A, B], on_failure: "cancel" });
    assert.equal(viewJob(null, [insert]).waiting_for, 2);
    assert.equal(viewJob(null, [insert], 1).waiting_for, 1);
    assert.equal(viewJob(null, [{ ...insert, status: "rejected", error: "unknown_dependency: no" }]).waiting_for, 0);
  });

  test("a synced job says what the service says; the page's view carries it", () => {
    const job = viewJob({ ...ROW, state: "queued", waiting_for: 3 }, []);
    assert.equal(job.waiting_for, 3);
    assert.equal(jobView(job).waiting_for, 3);
    assert.equal(viewJob(ROW, []).waiting_for, 0);
  });
});

describe("questions: protocol.check_answer's rules", () => {
  const asking = { ...ROW, state: "queued", question: { name: "ask 1", text: "Charge 40 EUR?", choices: ["yes", "no"], asked_at: "2026-12-01T10:00:01+00:00" } };

  test("a job with a pending question is asking; answered locally, it is not", () => {
    const job = viewJob(asking, []);
    assert.equal(job.asking, true);
    assert.equal(checkAnswer(job, "yes"), "yes");
    const answered = viewJob(asking, [pending("update", { answer: "yes" })]);
    assert.deepEqual([answered.asking, answered.answer, answered.pending], [false, "yes", true]);
    assert.throws(() => checkAnswer(answered, "no"), QuestionClosed);
    assert.deepEqual(jobView(job).question, { text: "Charge 40 EUR?", choices: ["yes", "no"], deadline: null });
    assert.equal(jobView(answered).question, null);
  });

  test("only one of the choices; without choices, a bounded text; never null", () => {
    const job = viewJob(asking, []);
    assert.throws(() => checkAnswer(job, "maybe"), RangeError);
    assert.throws(() => checkAnswer(job, null), RangeError);
    const open = viewJob({ ...asking, question: { ...asking.question, choices: null } }, []);
    assert.equal(checkAnswer(open, "Ada"), "Ada");
    assert.throws(() => checkAnswer(open, { name: "Ada" }), RangeError);
    assert.throws(() => checkAnswer(open, "x".repeat(10_001)), RangeError);
  });

  test("no question, a timed out one, or an ended job: closed", () => {
    assert.throws(() => checkAnswer(viewJob(ROW, []), "yes"), QuestionClosed);
    const late = viewJob({ ...asking, question: { ...asking.question, timed_out: true } }, []);
    assert.throws(() => checkAnswer(late, "yes"), QuestionClosed);
    assert.throws(() => checkAnswer(viewJob({ ...asking, state: "cancelled" }, []), "yes"), QuestionClosed);
  });

  test("JSON equality: a boolean is not a number, keys in any order", () => {
    assert.equal(sameJson(1, 1.0), true);
    assert.equal(sameJson(true, 1), false);
    assert.equal(sameJson({ a: 1, b: [2] }, { b: [2], a: 1 }), true);
    assert.equal(sameJson({ a: 1 }, { a: 1, b: 2 }), false);
    assert.equal(sameJson([1], 1), false);
  });
});

describe("uploads", () => {
  test("a batch stops before the byte limit, but always holds one mutation", () => {
    const mutations = Array.from({ length: 5 }, (_, i) => ({ id: String(i), values: { s: "x".repeat(100) } }));
    const one = new TextEncoder().encode(JSON.stringify(mutations[0])).length;
    assert.equal(fitBatch(mutations, one * 3).length, 3);
    assert.equal(fitBatch(mutations, 1).length, 1);
    assert.equal(fitBatch(mutations).length, 5);
  });

  test("answers become the errors the sync acts on", () => {
    assert.ok(errorFor(401, "unauthorized", "no") instanceof Unauthorized);
    assert.equal(errorFor(409, "must_refetch", "old").constructor.name, "MustRefetch");
    assert.equal(errorFor(400, "bad_offset", "bad").constructor.name, "MustRefetch");
    const refused = errorFor(422, "validation_error", "kind too long");
    assert.deepEqual([refused.constructor.name, refused.code, refused.detail], ["Refused", "validation_error", "kind too long"]);
    for (const status of [404, 500, 502, 503]) assert.ok(errorFor(status, "x", "y") instanceof ServerUnreachable);
  });
});

describe("Backoff", () => {
  test("full jitter under a ceiling that doubles up to the cap, reset after a success", () => {
    const backoff = new Backoff({ base: 0.1, cap: 1, random: () => 1 });
    assert.deepEqual(Array.from({ length: 6 }, () => backoff.next()), [0.1, 0.2, 0.4, 0.8, 1, 1]);
    backoff.reset();
    assert.equal(backoff.next(), 0.1);
    const jittered = new Backoff({ base: 0.1, cap: 1, random: () => 0.25 });
    assert.equal(jittered.next(), 0.025);
  });
});

describe("EventStreamParser", () => {
  test("events split across chunks and line endings", () => {
    const parser = new EventStreamParser();
    assert.deepEqual(parser.push('data: {"a"'), []);
    assert.deepEqual(parser.push(": 1}\n\n: keepalive\n\nevent: x\r\ndata: 2\r"), ['{"a": 1}']);
    assert.deepEqual(parser.push("\n\r\ndata:3\ndata: 4\n\n"), ["2", "3\n4"]);
  });
});

describe("replica names", () => {
  const token = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.s`;

  test("one replica per server and user (the token's subject)", () => {
    assert.equal(tokenUser(token({ sub: "zoë" })), "zoë");
    assert.equal(replicaName("http://h:1/", token({ sub: "alice" })), "errands http://h:1 alice");
    assert.equal(replicaName("http://h:1", null), "errands http://h:1 (no token)");
  });

  test("a token that is not a JWT names no user", () => {
    for (const bad of ["", "abc", "a.!!!.b", token({ sub: 7 })]) assert.equal(tokenUser(bad), null);
  });
});
