// Types of errands-react.js, React hooks over errands.js (served at
// /v1/client/errands-react.js, beside errands.js).
import type { Client, Job, Status } from "./errands.js";

/** What the hooks need of React (18 or later): pass the page's own React. */
export interface ReactLike {
  useMemo<T>(factory: () => T, deps: readonly unknown[]): T;
  useSyncExternalStore<T>(
    subscribe: (onChange: () => void) => () => void,
    getSnapshot: () => T,
    getServerSnapshot?: () => T,
  ): T;
}

export interface Hooks {
  /** The newest `limit` jobs (default 10), pending ones included, live; [] until read. */
  useJobs(client: Client, options?: { limit?: number }): readonly Job[];
  /** One job, live; null while the replica has no such job (or jobId is null). */
  useJob(client: Client, jobId: string | null | undefined): Job | null;
  /** The client's status, live. */
  useClientStatus(client: Client): Status;
}

/** The hooks, bound to the page's React. */
export function createHooks(react: ReactLike): Hooks;
