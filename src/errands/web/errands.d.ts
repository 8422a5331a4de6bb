// Types of errands.js, the errands client for browsers (served at /v1/client/errands.js).

/** A job as the application sees it: the synced row with local changes on top. */
export interface Job {
  readonly id: string;
  /** When the client asked (ISO 8601). */
  readonly timestamp: string;
  readonly kind: string;
  readonly payload: unknown;
  readonly owner: string | null;
  readonly state: "queued" | "running" | "completed" | "failed" | "cancelled" | "rejected";
  /** A cancellation was requested. */
  readonly cancelled: boolean;
  readonly completed: boolean;
  /** 0..1 */
  readonly progress: number;
  readonly progress_message: string | null;
  readonly result: unknown;
  readonly error: { type?: string; message?: string; traceback?: string; attempt?: number } | null;
  readonly attempts: number;
  readonly max_attempts: number | null;
  readonly run_at: string | null;
  readonly priority: number;
  readonly queue: string | null;
  /** At most one unfinished job of its owner has this key. */
  readonly unique_key: string | null;
  readonly received_at: string | null;
  readonly started_at: string | null;
  readonly finished_at: string | null;
  /** How many of the jobs it runs after (`after`) have not ended yet: while above 0,
   * the job waits ("waiting for 2 jobs"). */
  readonly waiting_for: number;
  /** The question the job asks its owner (ctx.ask): name, text, choices (absent or null:
   * any text), asked_at, and deadline / default if the handler gave them; timed_out once
   * its deadline passed. Null if it asks none. */
  readonly question: {
    readonly name: string;
    readonly text: string;
    readonly choices?: readonly unknown[] | null;
    readonly asked_at: string;
    readonly deadline?: string;
    readonly default?: unknown;
    readonly timed_out?: boolean;
  } | null;
  /** The answer given to `question`, until the job runs on with it. */
  readonly answer: unknown;
  /** The job waits for its owner's answer to `question`. */
  readonly asking: boolean;
  /** A local change to this job is not yet acknowledged by the server. */
  readonly pending: boolean;
  /** Why the server refused a local change ("code: message"); a refused insert leaves the
   * job in state "rejected", a refused cancellation is reverted. */
  readonly rejected: string | null;
  /** Completed, failed, cancelled or rejected: it never changes again. */
  readonly done: boolean;
}

export interface Status {
  readonly state: "connected" | "disconnected";
  readonly connected: boolean;
  /** Why not connected, or null. */
  readonly reason: string | null;
  /** Whether connect() is in effect (the client tries to be connected). */
  readonly enabled: boolean;
  /** Local changes waiting for upload. */
  readonly pending: number;
  /** Local changes the server refused. */
  readonly rejected: number;
}

/** What a client may ask for a job besides its kind and payload (the Python client's
 * SubmitOptions); left out, each takes the default the kind's handler registered. */
export interface SubmitOptions {
  /** Higher runs first (-1000 to 1000). */
  priority?: number;
  /** Workers started with --queue take only their queues' jobs (1 to 200 characters). */
  queue?: string;
  /** Not before this moment: a Date, or ISO 8601 text (without a time zone: UTC). */
  run_at?: Date | string;
  /** How many times the job is tried before it fails (1 to 100). */
  max_attempts?: number;
  /** At most one unfinished job of yours per key: while one is queued or running,
   * submitting again returns it (1 to 200 characters). */
  unique_key?: string;
  /** Jobs of yours (or their ids) this one runs after, at most 100, offline too: it waits
   * until every one of them ended. The service refuses an id that is not a job of yours
   * ("unknown_dependency") and a circle ("dependency_cycle"). */
  after?: Array<Job | string>;
  /** When a job it runs after fails or is cancelled: "cancel" (the default) ends this one
   * as cancelled, its error naming the cause; "run" runs it all the same. */
  on_failure?: "cancel" | "run";
}

/** A question one of my jobs asks me (Client.questions()). */
export interface Question {
  /** The job's id: answer with client.answer(job, value). */
  readonly job: string;
  readonly text: string;
  /** The answers it takes; null: any text. */
  readonly choices: readonly unknown[] | null;
  readonly asked_at: string | null;
  /** When it stops waiting (the job goes on without an answer); null: never. */
  readonly deadline: string | null;
}

export interface ClientOptions {
  /** The sync service's URL; default: the page's origin. */
  server?: string;
  /** A bearer token (`errands token`); null for a server run with --insecure. Or a
   * function that fetches one (from your backend): called before the first request,
   * and again whenever the service answers that the token expired. */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** The user the service verified (its /v1/me) whose replica this is: it names the
   * replica, every session is checked against it (ReplicaMismatch otherwise), and each
   * local change is uploaded only under it. Required with a token function (or give
   * `replica`); default: the user the token names, read, not verified. */
  user?: string | null;
  /** The IndexedDB database of the replica; default: one per server and user. */
  replica?: string;
  /** Longest wait between reconnection attempts, in seconds (default 10). */
  maxBackoff?: number;
  /** "auto" (server-sent events, long polls if a proxy spoils them) or "long-poll". */
  live?: "auto" | "long-poll";
}

/** A local-first client of the errands sync service. Reads and writes go to the replica
 * in IndexedDB and never wait for the network; tabs of one origin share the replica and
 * one connection. */
export class Client {
  constructor(options?: ClientOptions);
  readonly server: string;
  /** Resolves once the replica is open (every method waits for it). */
  readonly ready: Promise<void>;
  /** Create a job locally (instant, offline too); it uploads when connected. `payload`
   * defaults to {}. InvalidKind, PayloadError, or a RangeError naming a bad option, if
   * the server would refuse it. */
  submit(kind: string, payload?: unknown, options?: SubmitOptions): Promise<Job>;
  /** Request the job's cancellation, locally first; JobNotFound if unknown. Nothing
   * happens to a job that has ended. */
  cancel(jobId: string): Promise<Job>;
  /** The questions my jobs ask me and wait for, oldest first, local answers applied. */
  questions(): Promise<Question[]>;
  /** Answer the job's question, locally first (offline too); it uploads when connected.
   * JobNotFound if unknown; QuestionClosed if it asks nothing now; RangeError for a value
   * the question does not take (not one of its choices; without choices, not a text). */
  answer(jobId: string, value: unknown): Promise<Job>;
  /** The newest jobs first, pending ones included. */
  jobs(options?: { limit?: number }): Promise<Job[]>;
  /** One job, or null. */
  get(jobId: string): Promise<Job | null>;
  /** The job once it has ended; WaitTimeout after `timeout` seconds (default 30). */
  wait(jobId: string, options?: { timeout?: number }): Promise<Job>;
  /** Call back now with jobs({limit}), then whenever that list changes (a local write,
   * rows from the server, a change in another tab). Returns unsubscribe. */
  subscribe(callback: (jobs: Job[]) => void, options?: { limit?: number }): () => void;
  /** Call back now with get(jobId) (null while the replica has no such job), then
   * whenever that job changes. Returns unsubscribe. */
  subscribeJob(jobId: string, callback: (job: Job | null) => void): () => void;
  readonly status: Status;
  /** Call back now with the status, then whenever it changes. Returns unsubscribe. */
  subscribeStatus(callback: (status: Status) => void): () => void;
  /** Sync (every tab of this replica): upload, follow live, reconnect with backoff. */
  connect(): void;
  /** Stop syncing (every tab of this replica) until connect(). */
  disconnect(): void;
  /** Close this tab's client; another tab takes the connection over. */
  close(): Promise<void>;
  /** Stop syncing and delete the replica (synced rows, offsets, the outbox) in every tab
   * of it, then close: for signing out. Local changes not yet uploaded are lost:
   * `status.pending` says how many. The other tabs' clients stop with a ReplicaError. */
  clearLocalData(): Promise<void>;
}

/** One shape filter: `{column, op, value}` (the service's shape filters). */
export interface ShapeFilter {
  column: string;
  op: string;
  value: unknown;
}

export interface LiveShapeOptions {
  /** The service's base URL (its origin, and any path it is served under). */
  server: string;
  /** The token, or a function giving the token of each new connection. */
  token?: string | null | (() => string | null);
  /** The filters (all must hold); none: every job the token may read. */
  where?: ShapeFilter[] | null;
  /** "auto" (server-sent events, long polls where a proxy spoils them) or "long-poll". */
  live?: "auto" | "long-poll";
  /** The reconnection backoff, seconds: defaults {base: 0.5, cap: 15}. */
  backoff?: { base?: number; cap?: number };
  /** The rows a batch upserted and the keys of held rows it deleted. */
  onBatch?: (upserted: Record<string, unknown>[], deleted: string[]) => void;
  /** After each change, each restart, and on becoming up to date. */
  onChange?: (shape: LiveShape) => void;
  onStatus?: (status: "connecting" | "live" | "offline") => void;
  /** The service refused the token (401) or this reader (403): the shape has stopped. */
  onFatal?: (error: SyncError & { status?: number }) => void;
}

/** The rows of one filtered shape of the jobs, live, in memory (no replica, no outbox):
 * the Client's stream, long polls, must-refetch handling and backoff, for a page that
 * follows a filter of its own (the operator console does). */
export class LiveShape {
  constructor(options: LiveShapeOptions);
  /** The rows by key, as the service last sent them. */
  readonly rows: Map<string, Record<string, unknown>>;
  /** Whether the snapshot has been read in full. */
  readonly upToDate: boolean;
  readonly closed: boolean;
  close(): void;
}

export class ErrandsError extends Error {}
export class JobNotFound extends ErrandsError {}
export class InvalidKind extends ErrandsError {}
export class PayloadError extends ErrandsError {}
export class PayloadTooLarge extends PayloadError {}
export class WaitTimeout extends ErrandsError {}
export class QuestionClosed extends ErrandsError {}
export class ReplicaError extends ErrandsError {}
export class ReplicaMismatch extends ReplicaError {}
export class SyncError extends ErrandsError {}
export class ServerUnreachable extends SyncError {}
export class Unauthorized extends SyncError {
  /** The service's code: "token_expired" when the token is only out of date. */
  readonly code: string;
}

/** Every rule the client applies before the service does, as errands/protocol.py
 * exports it (rules.js, generated by `python -m errands.protocol_export`): limits,
 * job option ranges, the kind rule, text lengths in code points, error codes. */
export const RULES: { readonly [name: string]: any };

/** The protocol's constants (errands/protocol.py, read from RULES). */
export const PROTOCOL: {
  readonly PREFIX: string;
  readonly START: string;
  readonly JOBS_TABLE: string;
  readonly MAX_BATCH: number;
  readonly MAX_PAYLOAD_BYTES: number;
  readonly MAX_KIND_LENGTH: number;
  readonly MAX_PRIORITY: number;
  readonly MAX_ATTEMPTS: number;
  readonly MAX_NAME_LENGTH: number;
  readonly MAX_BODY_BYTES: number;
  readonly LIVE_HOLD_SECONDS: number;
  readonly BAD_OFFSET: string;
};
