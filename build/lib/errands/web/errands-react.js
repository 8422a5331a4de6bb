// errands-react.js: React hooks over errands.js, served beside it by `errands server` at
// /v1/client/errands-react.js; types in errands-react.d.ts. No dependency and no bundler
// needed: the page hands in its own React (React is a peer, never a copy of ours).
//
//   import * as React from "react";
//   import { Client } from "https://jobs.example.com/v1/client/errands.js";
//   import { createHooks } from "https://jobs.example.com/v1/client/errands-react.js";
//   const { useJobs, useJob, useClientStatus } = createHooks(React);
//
// Each hook reads the client's local replica through useSyncExternalStore, so a component
// re-renders when its jobs change -- a local submit or cancel, rows from the server, a
// change in another tab -- and never tears between two renders of one update.

const NO_JOBS = Object.freeze([]);

/** A value kept up to date by one of the client's subscribe functions, in the shape
 * useSyncExternalStore takes: subscribe(onChange) -> unsubscribe, and get(). */
function followed(subscribeTo, initial) {
  let current = initial;
  return {
    subscribe(onChange) {
      return subscribeTo((value) => {
        current = value;
        onChange();
      });
    },
    get: () => current,
  };
}

/** A value that never changes (a hook asked about nothing). */
function fixed(value) {
  return { subscribe: () => () => {}, get: () => value };
}

/** The hooks, for the page's React (anything with useMemo and useSyncExternalStore: React
 * 18 or later). */
export function createHooks(React) {
  const { useMemo, useSyncExternalStore } = React;
  if (typeof useSyncExternalStore !== "function") {
    throw new TypeError("errands-react needs React 18 or later (useSyncExternalStore)");
  }

  function use(store) {
    return useSyncExternalStore(store.subscribe, store.get, store.get);
  }

  /** The newest `limit` jobs (pending ones included), live; [] until the replica is read. */
  function useJobs(client, { limit = 10 } = {}) {
    const store = useMemo(
      () => followed((onChange) => client.subscribe(onChange, { limit }), NO_JOBS),
      [client, limit],
    );
    return use(store);
  }

  /** One job, live; null while the replica has no such job (or `jobId` is null). */
  function useJob(client, jobId) {
    const store = useMemo(
      () => (jobId == null ? fixed(null) : followed((onChange) => client.subscribeJob(jobId, onChange), null)),
      [client, jobId],
    );
    return use(store);
  }

  /** The client's status, live: connected or not and why, pending and rejected counts. */
  function useClientStatus(client) {
    const store = useMemo(() => followed((onChange) => client.subscribeStatus(onChange), client.status), [client]);
    return use(store);
  }

  return { useJobs, useJob, useClientStatus };
}
