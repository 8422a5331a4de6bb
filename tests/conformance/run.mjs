// errands.js's side of the conformance suite: every vector of tests/conformance/*.json
// through model.js's checks, one JSON line of outcomes per file on stdout
// ({name, refused: code} or {name, accepted: true, ...}). test_conformance.py compares.
import { readFileSync } from "node:fs";

import {
  InvalidKind,
  MustRefetch,
  Refused,
  Unauthorized,
  PayloadTooLarge,
  QuestionClosed,
  RULES,
  checkAnswer,
  checkKind,
  decodeOffset,
  errorFor,
  jobDependencies,
  jobOptions,
  payloadJson,
  viewJob,
} from "../../src/errands/web/model.js";

const CODES = RULES.error_codes;

/** The macros of README.md, written out. */
function expand(value) {
  if (Array.isArray(value)) return value.map(expand);
  if (value === null || typeof value !== "object") return value;
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === "$repeat") return value.$repeat[0].repeat(value.$repeat[1]);
  if (keys.length === 1 && keys[0] === "$list") return Array(value.$list[1]).fill(expand(value.$list[0]));
  if (keys.length === 1 && keys[0] === "$nest") {
    let nested = [];
    for (let i = 1; i < value.$nest; i++) nested = [nested];
    return nested;
  }
  return Object.fromEntries(keys.map((key) => [key, expand(value[key])]));
}

/** The code the service answers for what a client refused with `error`. */
function codeOf(error) {
  if (error instanceof PayloadTooLarge) return CODES.payload_too_large;
  if (error instanceof QuestionClosed) return CODES.question_closed;
  if (error instanceof InvalidKind || error instanceof RangeError || error?.name === "PayloadError") return CODES.validation_error;
  throw error; // not a refusal: a bug
}

function outcome(name, body) {
  try {
    return { name, accepted: true, ...body() };
  } catch (error) {
    return { name, refused: codeOf(error) };
  }
}

const load = (file) => JSON.parse(readFileSync(new URL(`${file}.json`, import.meta.url), "utf-8")).cases;

const jobs = load("jobs").map(({ name, submit }) =>
  outcome(name, () => {
    const { kind, payload, options } = expand(submit);
    checkKind(kind);
    const text = payloadJson(payload);
    jobOptions(options ?? {});
    return { payload: JSON.parse(text) };
  }),
);

const dependencies = load("dependencies").map(({ name, after, on_failure: onFailure }) =>
  outcome(name, () => ({ after: jobDependencies(expand(after), onFailure).after ?? [] })),
);

const offsets = load("offsets").map(({ name, offset }) =>
  outcome(name, () => {
    try {
      const { generation, xmin, xmax, xip, afterKey } = decodeOffset(offset);
      return { decoded: { generation, xmin, xmax, xip, after_key: afterKey } };
    } catch (error) {
      if (error?.name !== "SyncError") throw error;
      return { refusedAs: CODES.bad_offset };
    }
  }),
).map(({ refusedAs, ...rest }) => (refusedAs ? { name: rest.name, refused: refusedAs } : rest));

/** What errands.js does with an error answer: the error errorFor() makes of it. */
function action(status, code) {
  const error = errorFor(status, code ?? `http_${status}`, "a message");
  if (error instanceof Unauthorized) return "unauthorized";
  if (error instanceof Refused) return "refused";
  if (error instanceof MustRefetch) return "must_refetch";
  return "retry";
}

const answers = load("answers").map(({ name, status, code }) => ({ name, action: action(status, code) }));
const exchanges = load("exchanges").map(({ name, expect }) => ({ name, action: action(expect.status, expect.code) }));

const questions = load("questions").map(({ name, job, value }) =>
  outcome(name, () => {
    const synced = { id: "a", timestamp: "2026-12-04T10:00:00+00:00", kind: "charge", payload: {}, ...job };
    checkAnswer(viewJob(synced, []), expand(value));
    return {};
  }),
);

console.log(JSON.stringify({ jobs, dependencies, offsets, answers, exchanges, questions }));
