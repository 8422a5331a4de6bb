-- The whole errands schema as the migrations leave it (tests/test_migrations.py holds
-- the two equal). Read this file to learn the schema; change it with a new migration.


CREATE TABLE background_jobs (
    -- The recipe's columns: a row with only these set is a valid job of kind 'default'.
    id uuid PRIMARY KEY,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    cancelled boolean NOT NULL DEFAULT false,
    completed boolean NOT NULL DEFAULT false,
    progress real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    result jsonb,
    -- What errands adds.
    kind text NOT NULL DEFAULT 'default',
    owner text,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    progress_message text,
    error jsonb,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds real CHECK (timeout_seconds > 0),
    run_at timestamptz NOT NULL DEFAULT now(),
    priority integer NOT NULL DEFAULT 0,
    queue text NOT NULL DEFAULT 'default',
    lease_owner text,
    received_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);

-- The claim query walks this index in its order and stops at LIMIT (queue and kind
-- are filters: a leading queue column would force a sort of every queued row when a
-- worker serves all queues).
CREATE INDEX background_jobs_claim_idx
    ON background_jobs (priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX background_jobs_running_idx
    ON background_jobs (lease_owner) WHERE state = 'running';
CREATE INDEX background_jobs_owner_idx ON background_jobs (owner, "timestamp" DESC);

-- A queue table churns: analyse and vacuum it sooner than the defaults would.
ALTER TABLE background_jobs SET (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_scale_factor = 0.02
);

-- Append-only: one row per transition, written by triggers so that every writer (the
-- worker, the sync service, plain SQL) leaves the same trail.
CREATE TABLE job_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES background_jobs (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL
        CHECK (type IN ('queued', 'started', 'retried', 'failed', 'cancelled', 'completed')),
    attempt integer NOT NULL,
    worker text,
    error jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- A worker's lease covers every job whose lease_owner is this worker: one heartbeat per
-- worker, not one write per running job (which would also churn the synced rows).
CREATE TABLE errands_workers (
    id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues text[],
    kinds text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
);

-- Claiming, as a function so that it can pin its plan: on a table filled moments ago
-- and not yet analysed, the planner guesses the kind filter keeps one row and sorts
-- every queued job on every claim (12 ms instead of 0.4 ms at 20,000 queued; a drain
-- turns quadratic). Without sorts, it walks the claim index in order and stops at the
-- limit. Highest priority first, then oldest run_at; locked rows are skipped.
CREATE FUNCTION errands_claim(worker text, kinds text[], queues text[], max_jobs integer)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
AS $$
    WITH claimable AS (
        SELECT id FROM background_jobs
        WHERE state = 'queued'
          AND run_at <= now()
          AND kind = ANY(kinds)
          AND (queues IS NULL OR queue = ANY(queues))
        ORDER BY priority DESC, run_at, id
        LIMIT max_jobs
        FOR UPDATE SKIP LOCKED
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.*
$$;

-- The recipe's cancellation request: a queued job that is cancelled never starts.
CREATE FUNCTION errands_cancel_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.cancelled AND NEW.state = 'queued' THEN
        NEW.state := 'cancelled';
        NEW.finished_at := now();
    END IF;
    NEW.completed := NEW.state = 'completed';
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_cancel_queued
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_cancel_queued();

-- One NOTIFY per statement, not per row: a per-row pg_notify serialises commits.
CREATE FUNCTION errands_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    INSERT INTO job_events (job_id, at, type, attempt)
    SELECT id, received_at, state, attempts FROM new_rows
    WHERE state IN ('queued', 'cancelled');
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE state = 'queued';
    IF queues IS NOT NULL THEN
        PERFORM pg_notify('errands_jobs', queues);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_after_insert
    AFTER INSERT ON background_jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_after_insert();

CREATE FUNCTION errands_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
    cancels integer;
BEGIN
    INSERT INTO job_events (job_id, type, attempt, worker, error)
    SELECT n.id,
           CASE WHEN n.state = 'running' THEN 'started'
                WHEN n.state = 'queued' THEN 'retried'
                ELSE n.state END,
           n.attempts,
           coalesce(n.lease_owner, o.lease_owner),
           CASE WHEN n.state IN ('queued', 'failed') THEN n.error END
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IS DISTINCT FROM o.state;

    SELECT string_agg(DISTINCT n.queue, ',') FILTER (WHERE n.state = 'queued'),
           count(*) FILTER (WHERE n.state = 'running' AND n.cancelled)
    INTO queues, cancels
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.state = 'queued' AND o.state <> 'queued')
       OR (n.state = 'running' AND n.cancelled AND NOT o.cancelled);
    IF queues IS NOT NULL THEN
        PERFORM pg_notify('errands_jobs', queues);
    END IF;
    IF cancels > 0 THEN
        PERFORM pg_notify('errands_cancel', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_after_update
    AFTER UPDATE ON background_jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_after_update();


-- Change capture for the sync service: snapshot-diff cursors, no logical replication.
--
-- Every row version carries the id of the transaction that wrote it (_txid); a shape's
-- offset is a pg_current_snapshot(); the changes after an offset are the rows whose
-- _txid that snapshot could not see. Deletes leave tombstones with the same _txid.
-- Nothing here needs a superuser, a replication role or wal_level=logical.

ALTER TABLE background_jobs ADD COLUMN _txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX background_jobs_txid_idx ON background_jobs (_txid);

CREATE FUNCTION errands_sync_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW._txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_sync_stamp
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_sync_stamp();

-- A deleted row leaves its key, its owner (so only those who could see it hear of the
-- delete) and the deleting transaction.
CREATE TABLE errands_tombstones (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    key text NOT NULL,
    owner text,
    _txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX errands_tombstones_txid_idx ON errands_tombstones (table_name, _txid);

CREATE FUNCTION errands_sync_record_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO errands_tombstones (table_name, key, owner)
    SELECT TG_TABLE_NAME, id::text, owner FROM changed_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_sync_tombstones
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_record_deletes();

-- One wake-up per statement that changed rows (never per row: NOTIFY serialises
-- commits); Postgres folds equal notifications of one transaction into one. A hint
-- only: the service also polls.
CREATE FUNCTION errands_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM changed_rows) THEN
        PERFORM pg_notify('errands_sync', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_sync_notify_insert
    AFTER INSERT ON background_jobs REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();
CREATE TRIGGER background_jobs_sync_notify_update
    AFTER UPDATE ON background_jobs REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();
CREATE TRIGGER background_jobs_sync_notify_delete
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();

-- The database's generation: offsets of another generation mean nothing here. A dump
-- restored elsewhere copies this row, so the database's oid is kept beside it and a
-- mismatch starts a new generation (errands_sync_check_generation). pruned_below is the
-- retention horizon: tombstones of transactions below it are gone, so an offset whose
-- xmin is below it can no longer be answered exactly.
CREATE TABLE errands_sync_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation text NOT NULL,
    database_oid oid NOT NULL,
    pruned_below xid8 NOT NULL
);
INSERT INTO errands_sync_state (generation, database_oid, pruned_below)
SELECT replace(gen_random_uuid()::text, '-', ''), oid, '1'::xid8
FROM pg_database WHERE datname = current_database();

CREATE FUNCTION errands_sync_check_generation() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state errands_sync_state;
BEGIN
    SELECT * INTO state FROM errands_sync_state FOR UPDATE;
    IF state.database_oid <> (SELECT oid FROM pg_database WHERE datname = current_database())
       OR state.pruned_below > pg_current_xact_id() THEN
        -- Nothing is pruned in the new generation; ids from another cluster's history
        -- mean nothing here, so rows stamped "in the future" are stamped now.
        UPDATE errands_sync_state
        SET generation = replace(gen_random_uuid()::text, '-', ''),
            database_oid = (SELECT oid FROM pg_database WHERE datname = current_database()),
            pruned_below = '1'::xid8
        RETURNING * INTO state;
        DELETE FROM errands_tombstones WHERE _txid >= pg_current_xact_id();
        UPDATE background_jobs SET _txid = pg_current_xact_id()
        WHERE _txid > pg_current_xact_id();
    END IF;
    RETURN state.generation;
END
$$;

-- Mutations already applied, by (owner, client mutation id): a retried batch gets the
-- recorded results and applies nothing twice.
CREATE TABLE errands_sync_mutations (
    owner text NOT NULL,
    id text NOT NULL,
    status text NOT NULL DEFAULT 'applied' CHECK (status IN ('applied', 'rejected')),
    code text,
    message text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, id)
);
CREATE INDEX errands_sync_mutations_recorded_idx ON errands_sync_mutations (recorded_at);

-- Forget tombstones and mutation records older than the retention; move the horizon
-- past every pruned tombstone. Returns how many tombstones went.
CREATE FUNCTION errands_sync_prune(retention interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    horizon xid8;
    pruned integer;
BEGIN
    SELECT max(_txid) INTO horizon FROM errands_tombstones
    WHERE deleted_at < now() - retention;
    DELETE FROM errands_sync_mutations WHERE recorded_at < now() - retention;
    IF horizon IS NULL THEN
        RETURN 0;
    END IF;
    -- xid8 has no arithmetic: the next id is found through its text form.
    horizon := (horizon::text::numeric + 1)::text::xid8;
    UPDATE errands_sync_state SET pruned_below = greatest(pruned_below, horizon);
    DELETE FROM errands_tombstones WHERE _txid < horizon;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;

-- 0003_mutation_fingerprints: a digest of each recorded mutation's content, so that an
-- id reused for another change is refused rather than replayed.
ALTER TABLE errands_sync_mutations ADD COLUMN fingerprint text;



-- Per-kind settings from the workers' registries, unique jobs, limits on how many jobs
-- of a kind run at once, and the ticks of periodic schedules (docs: README "Write jobs").

-- What the handlers registered for each kind say, written by every worker as it starts
-- (the newest registration wins): the defaults of jobs that do not set their own, and
-- how many jobs of the kind may run at once across every worker (NULL: no limit).
CREATE TABLE errands_kinds (
    kind text PRIMARY KEY,
    max_attempts integer CHECK (max_attempts >= 1),
    priority integer,
    queue text,
    max_running integer CHECK (max_running >= 1),
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- A job that leaves max_attempts, priority or queue unset (NULL, or absent from the
-- INSERT) takes its kind's registered default, else the built-in one. BEFORE triggers
-- run before NOT NULL is checked, so every row still has all three.
ALTER TABLE background_jobs
    ALTER COLUMN max_attempts DROP DEFAULT,
    ALTER COLUMN priority DROP DEFAULT,
    ALTER COLUMN queue DROP DEFAULT;

CREATE FUNCTION errands_kind_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    registered errands_kinds;
BEGIN
    IF NEW.max_attempts IS NULL OR NEW.priority IS NULL OR NEW.queue IS NULL THEN
        SELECT * INTO registered FROM errands_kinds WHERE kind = NEW.kind;
        NEW.max_attempts := coalesce(NEW.max_attempts, registered.max_attempts, 3);
        NEW.priority := coalesce(NEW.priority, registered.priority, 0);
        NEW.queue := coalesce(NEW.queue, registered.queue, 'default');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_kind_defaults
    BEFORE INSERT ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_kind_defaults();

-- Unique jobs: at most one unfinished (queued or running) job per key and owner. Per
-- owner, so that one user's keys can neither reveal nor block another's jobs; jobs
-- enqueued without an owner share one space.
ALTER TABLE background_jobs ADD COLUMN unique_key text
    CHECK (length(unique_key) BETWEEN 1 AND 200);
CREATE UNIQUE INDEX background_jobs_unique_key_idx
    ON background_jobs ((coalesce(owner, '')), unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

-- Periodic schedules: a tick becomes a job only through its row here, and the primary
-- key lets exactly one worker insert it, however many run the schedule (no leader to
-- elect, none to lose). The newest tick of each schedule is kept for good: it is where
-- the schedule resumes after every worker was stopped.
CREATE TABLE errands_schedule_ticks (
    schedule text NOT NULL,
    tick timestamptz NOT NULL,
    job_id uuid NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);

-- The claim walks, for each kind the worker handles, that kind's queued jobs in claim
-- order (highest priority first, then oldest run_at), and takes the best of them. With
-- 0001's index (no kind), a worker's claim read past every queued job of kinds it does
-- not handle: 220 ms a claim behind a backlog of 100,000 jobs of another kind.
DROP INDEX background_jobs_claim_idx;
CREATE INDEX background_jobs_claim_idx
    ON background_jobs (kind, priority DESC, run_at, id) WHERE state = 'queued';

-- Claiming for the given kinds. Each kind's best jobs are locked (SKIP LOCKED: another
-- worker's claim is never waited for) and the best max_jobs of all of them are claimed;
-- the others' locks end with the claiming transaction, moments later. The plan is pinned
-- (a function's plan cannot see max_jobs, and guesses thousands of rows): enable_sort =
-- off keeps each kind on the index order (see 0001); no hash or merge join, which would
-- read the whole table to update a few rows (330 ms at 100,000 rows); and no JIT, which
-- the sort left (of a few rows), priced high by enable_sort = off, would set off (0.9 s).
CREATE FUNCTION errands_claim_kinds(worker text, kinds text[], queues text[], max_jobs integer)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
    WITH claimable AS (
        SELECT best.id
        FROM unnest(kinds) AS handled (kind)
        CROSS JOIN LATERAL (
            SELECT id, priority, run_at FROM background_jobs
            WHERE state = 'queued'
              AND kind = handled.kind
              AND run_at <= now()
              AND (queues IS NULL OR queue = ANY(queues))
            ORDER BY priority DESC, run_at, id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ) AS best
        ORDER BY best.priority DESC, best.run_at, best.id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.*
$$;

-- Claiming, with max_running enforced in the claim itself. Claims of a limited kind take
-- turns on a transaction-level advisory lock (held until the claiming transaction
-- commits), and the running jobs are counted only once the turn has come, by a new
-- statement with a new snapshot: it sees every claim committed before, on any host.
-- Kinds without a limit take no lock and are claimed as before.
CREATE OR REPLACE FUNCTION errands_claim(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
AS $$
DECLARE
    limited record;
    free integer;
    claimed integer := 0;
    taken integer;
BEGIN
    FOR limited IN
        SELECT kind, max_running FROM errands_kinds
        WHERE kind = ANY(kinds) AND max_running IS NOT NULL
        ORDER BY kind  -- one order for every worker: no deadlock between the locks
    LOOP
        kinds := array_remove(kinds, limited.kind);
        CONTINUE WHEN claimed >= max_jobs;
        PERFORM pg_advisory_xact_lock(hashtextextended('errands_kind:' || limited.kind, 0));
        SELECT limited.max_running - count(*) INTO free
        FROM background_jobs WHERE state = 'running' AND kind = limited.kind;
        CONTINUE WHEN free <= 0;
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, ARRAY[limited.kind], queues, least(free, max_jobs - claimed));
        GET DIAGNOSTICS taken = ROW_COUNT;
        claimed := claimed + taken;
    END LOOP;
    IF claimed < max_jobs AND cardinality(kinds) > 0 THEN
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, kinds, queues, max_jobs - claimed);
    END IF;
END
$$;


-- A cancel that reaches a job already finished leaves it as it ended: a completed job
-- is not reported as cancelled (before, it ended `completed` with `cancelled = true`).
-- A cancel requested while the job ran is kept: the job may still end completed.
CREATE OR REPLACE FUNCTION errands_cancel_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.cancelled AND NOT OLD.cancelled
       AND OLD.state IN ('completed', 'failed', 'cancelled') AND NEW.state = OLD.state THEN
        NEW.cancelled := false;
    END IF;
    IF NEW.cancelled AND NEW.state = 'queued' THEN
        NEW.state := 'cancelled';
        NEW.finished_at := now();
    END IF;
    NEW.completed := NEW.state = 'completed';
    RETURN NEW;
END
$$;


-- The operator's side: retention, the console's charts, and tracing.

-- Pruning walks finished jobs oldest first and stops at its batch size.
CREATE INDEX background_jobs_finished_idx
    ON background_jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');

-- The console's charts read the last hour of transitions.
CREATE INDEX job_events_at_idx ON job_events (at);

-- One trace per job (errands.tracing): the W3C trace context of the span that submitted
-- it, written by the client; the service, the worker and the client join that trace.
ALTER TABLE background_jobs ADD COLUMN traceparent text
    CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');


-- Tenancy: a client asks, the server decides (docs/design.md, "Tenancy").
--
-- * A kind is a capability: the service accepts a client's job only for kinds declared
--   for clients (registered with clients=True, or named by the service's operator).
-- * A kind may publish its payload's JSON Schema; the service checks client payloads
--   against it at the door.
-- * Clients cannot buy precedence: their priority is capped by the kind, their run_at is
--   never before the server's clock, and among runnable jobs of one priority the claim
--   takes turns between owners (below).
-- * A kind may cap how many of one owner's jobs run at once, across every worker.

ALTER TABLE errands_kinds
    ADD COLUMN clients boolean NOT NULL DEFAULT false,
    ADD COLUMN client_priority integer,
    ADD COLUMN payload_schema jsonb,
    ADD COLUMN max_running_per_owner integer CHECK (max_running_per_owner >= 1);

-- Who asked for the job: a client through the sync service, an operator, or the server
-- (errands.enqueue, schedules, plain SQL). Handlers read it as ctx.submitted_by.
ALTER TABLE background_jobs
    ADD COLUMN submitted_by text NOT NULL DEFAULT 'server'
        CHECK (submitted_by IN ('client', 'operator', 'server'));

-- Turns: fair queueing between owners (start-time fair queueing, as network schedulers
-- share a link). A runnable job's turn is the later of the service's frontier (the
-- newest turn being served) and one past its owner's last queued turn. One owner's
-- backlog thus holds turns frontier, frontier+1, ... and another owner's new job takes
-- the frontier itself: it runs after at most about one job per busy slot, however long
-- the backlog. Turns are counted across kinds, so claims over several kinds stay fair.
--
-- A job that is not runnable yet (run_at later, a retry waiting out its backoff) has no
-- turn: it takes one when it comes due (the claim stages due jobs, errands_stage_due),
-- so a job scheduled long ago cannot jump ahead of everyone who asked since.
ALTER TABLE background_jobs ADD COLUMN turn bigint;

-- An owner's queued jobs: its last turn, and how many it has (the service's quota).
CREATE INDEX background_jobs_owner_turn_idx
    ON background_jobs ((coalesce(owner, '')), turn NULLS FIRST) WHERE state = 'queued';
CREATE INDEX background_jobs_running_turn_idx
    ON background_jobs (turn) WHERE state = 'running';
CREATE INDEX background_jobs_due_idx
    ON background_jobs (run_at) WHERE state = 'queued' AND turn IS NULL;

-- The claim walks each kind's runnable jobs in turn order.
DROP INDEX background_jobs_claim_idx;
CREATE INDEX background_jobs_claim_idx
    ON background_jobs (kind, priority DESC, turn, id)
    WHERE state = 'queued' AND turn IS NOT NULL;

-- The frontier: the newest turn running now, else the turn of the job that finished
-- last (so the frontier does not fall back to zero when the workers idle), else zero.
CREATE FUNCTION errands_next_turn(job_owner text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT greatest(
        coalesce(
            (SELECT max(turn) FROM background_jobs WHERE state = 'running'),
            (SELECT turn FROM background_jobs
             WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1),
            0),
        (SELECT max(turn) + 1 FROM background_jobs
         WHERE state = 'queued' AND turn IS NOT NULL
           AND coalesce(owner, '') = coalesce(job_owner, '')))
$$;

-- A job takes its turn as it becomes runnable: on insert, when it goes back to the
-- queue (a retry, a recovered job), and when it comes due. Every writer (sync service,
-- worker, errands.enqueue, plain SQL) goes through here. Fires after the other BEFORE
-- triggers (by name), so it sees the state they leave.
CREATE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF NEW.run_at > now() THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_take_turn
    BEFORE INSERT OR UPDATE OF state, run_at, turn ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_take_turn();

-- Jobs waiting without a turn whose time has come take one (through the trigger
-- above); the claim calls this first. A bounded batch, skipping rows another claim is
-- staging.
CREATE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND run_at <= now()) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;

-- Claiming for kinds without limits: each kind's first jobs in turn order are locked
-- (SKIP LOCKED: another worker's claim is never waited for) and the first max_jobs of
-- all of them are claimed. The plan is pinned as before (0004).
CREATE OR REPLACE FUNCTION errands_claim_kinds(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
    WITH claimable AS (
        SELECT best.id
        FROM unnest(kinds) AS handled (kind)
        CROSS JOIN LATERAL (
            SELECT id, priority, turn FROM background_jobs
            WHERE state = 'queued'
              AND turn IS NOT NULL
              AND kind = handled.kind
              AND (queues IS NULL OR queue = ANY(queues))
            ORDER BY priority DESC, turn, id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ) AS best
        ORDER BY best.priority DESC, best.turn, best.id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.*
$$;

-- Claiming for a kind whose jobs run at most per_owner at once per owner. The caller
-- holds the kind's advisory lock, so no other claim of the kind runs meanwhile and the
-- counts below are exact; it looks at the kind's first 1,000 runnable jobs in turn
-- order (turns interleave owners, so an owner at its cap hides few others' jobs).
CREATE FUNCTION errands_claim_per_owner(
    worker text, claimed_kind text, queues text[], max_jobs integer, per_owner integer
)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET jit = off
AS $$
    WITH running AS (
        SELECT coalesce(owner, '') AS owner, count(*) AS n FROM background_jobs
        WHERE state = 'running' AND kind = claimed_kind
        GROUP BY 1
    ), candidates AS (
        SELECT id, coalesce(owner, '') AS owner, priority, turn FROM background_jobs
        WHERE state = 'queued'
          AND turn IS NOT NULL
          AND kind = claimed_kind
          AND (queues IS NULL OR queue = ANY(queues))
        ORDER BY priority DESC, turn, id
        LIMIT 1000
    ), ranked AS (
        SELECT c.id, c.priority, c.turn,
               coalesce(r.n, 0)
               + row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.turn, c.id)
               AS nth
        FROM candidates c LEFT JOIN running r USING (owner)
    ), chosen AS (
        SELECT id FROM ranked WHERE nth <= per_owner
        ORDER BY priority DESC, turn, id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM chosen
    WHERE j.id = chosen.id AND j.state = 'queued'
    RETURNING j.*
$$;

-- Claiming: due jobs take their turns first; then kinds with limits (max_running,
-- max_running_per_owner) take turns on a transaction-level advisory lock each, and
-- count their running jobs only once the turn has come (a new statement, a new
-- snapshot: every claim committed before, on any host, is seen); the others are
-- claimed together, without a lock.
CREATE OR REPLACE FUNCTION errands_claim(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
AS $$
DECLARE
    limited record;
    free integer;
    claimed integer := 0;
    taken integer;
BEGIN
    PERFORM errands_stage_due(greatest(max_jobs, 100));
    FOR limited IN
        SELECT kind, max_running, max_running_per_owner FROM errands_kinds
        WHERE kind = ANY(kinds)
          AND (max_running IS NOT NULL OR max_running_per_owner IS NOT NULL)
        ORDER BY kind  -- one order for every worker: no deadlock between the locks
    LOOP
        kinds := array_remove(kinds, limited.kind);
        CONTINUE WHEN claimed >= max_jobs;
        PERFORM pg_advisory_xact_lock(hashtextextended('errands_kind:' || limited.kind, 0));
        free := max_jobs - claimed;
        IF limited.max_running IS NOT NULL THEN
            SELECT least(free, limited.max_running - count(*)) INTO free
            FROM background_jobs WHERE state = 'running' AND kind = limited.kind;
        END IF;
        CONTINUE WHEN free <= 0;
        IF limited.max_running_per_owner IS NULL THEN
            RETURN QUERY SELECT * FROM errands_claim_kinds(
                worker, ARRAY[limited.kind], queues, free);
        ELSE
            RETURN QUERY SELECT * FROM errands_claim_per_owner(
                worker, limited.kind, queues, free, limited.max_running_per_owner);
        END IF;
        GET DIAGNOSTICS taken = ROW_COUNT;
        claimed := claimed + taken;
    END LOOP;
    IF claimed < max_jobs AND cardinality(kinds) > 0 THEN
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, kinds, queues, max_jobs - claimed);
    END IF;
END
$$;

-- A statement that queues jobs in thousands of queues at once (a bulk insert from SQL)
-- failed: its wake-up named every queue, past NOTIFY's 8000-byte payload. Past about
-- 7000 bytes the wake-up now says '*': every worker looks.
CREATE FUNCTION errands_wake(queues text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('errands_jobs', CASE WHEN length(queues) > 7000 THEN '*' ELSE queues END)
$$;

CREATE OR REPLACE FUNCTION errands_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    INSERT INTO job_events (job_id, at, type, attempt)
    SELECT id, received_at, state, attempts FROM new_rows
    WHERE state IN ('queued', 'cancelled');
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE state = 'queued';
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION errands_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
    cancels integer;
BEGIN
    INSERT INTO job_events (job_id, type, attempt, worker, error)
    SELECT n.id,
           CASE WHEN n.state = 'running' THEN 'started'
                WHEN n.state = 'queued' THEN 'retried'
                ELSE n.state END,
           n.attempts,
           coalesce(n.lease_owner, o.lease_owner),
           CASE WHEN n.state IN ('queued', 'failed') THEN n.error END
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IS DISTINCT FROM o.state;

    SELECT string_agg(DISTINCT n.queue, ',') FILTER (WHERE n.state = 'queued'),
           count(*) FILTER (WHERE n.state = 'running' AND n.cancelled)
    INTO queues, cancels
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.state = 'queued' AND o.state <> 'queued')
       OR (n.state = 'running' AND n.cancelled AND NOT o.cancelled);
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    IF cancels > 0 THEN
        PERFORM pg_notify('errands_cancel', '');
    END IF;
    RETURN NULL;
END
$$;


-- The operator's console at a million jobs, accountable operator actions, and paused
-- queues (docs/operators.md).

-- The console lists jobs newest first by received_at (the server's clock: a client's
-- timestamp never decides what an operator sees), a page at a time from a keyset
-- cursor; with a state chosen it walks the second index, which also counts the jobs
-- of each state in a time window without reading the table: it carries kind, queue and
-- owner (never changed after the insert, so they cost only space) for the filters, a
-- count of 130,000 jobs of a kind then takes 45 ms instead of 260.
CREATE INDEX background_jobs_received_idx ON background_jobs (received_at, id);
CREATE INDEX background_jobs_state_received_idx ON background_jobs (state, received_at, id)
    INCLUDE (kind, queue, owner);

-- Who acted: an operator's change is recorded under the operator's name (the token's
-- subject, or the command line's user), never under the worker that last ran the job.
-- Two events need no state change: a cancellation requested while the job runs, and a
-- waiting job moved to another run time.
ALTER TABLE job_events ADD COLUMN operator text;
ALTER TABLE job_events DROP CONSTRAINT job_events_type_check;
ALTER TABLE job_events ADD CONSTRAINT job_events_type_check CHECK (type IN (
    'queued', 'started', 'retried', 'failed', 'cancelled', 'completed',
    'cancel_requested', 'rescheduled'
));

-- The operator of the current transaction (errands.operations sets it with
-- set_config(..., true) before it acts), or NULL for every other writer.
CREATE FUNCTION errands_operator() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('errands.operator', true), '')
$$;

CREATE OR REPLACE FUNCTION errands_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
    cancels integer;
    operator text := errands_operator();
BEGIN
    INSERT INTO job_events (job_id, type, attempt, worker, error, operator)
    SELECT n.id,
           CASE WHEN n.state = 'running' THEN 'started'
                WHEN n.state = 'queued' THEN 'retried'
                ELSE n.state END,
           n.attempts,
           CASE WHEN operator IS NULL THEN coalesce(n.lease_owner, o.lease_owner) END,
           CASE WHEN n.state IN ('queued', 'failed') THEN n.error END,
           operator
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IS DISTINCT FROM o.state;

    SELECT string_agg(DISTINCT n.queue, ',') FILTER (WHERE n.state = 'queued'),
           count(*) FILTER (WHERE n.state = 'running' AND n.cancelled)
    INTO queues, cancels
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.state = 'queued' AND o.state <> 'queued')
       OR (n.state = 'running' AND n.cancelled AND NOT o.cancelled);
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    IF cancels > 0 THEN
        PERFORM pg_notify('errands_cancel', '');
    END IF;
    RETURN NULL;
END
$$;

-- Paused queues: a queue with a row here is not claimed from by any worker (its running
-- jobs run on); resuming deletes the row and wakes the workers.
CREATE TABLE errands_queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text NOT NULL
);

-- 0007's claims, with one condition more: nothing of a paused queue. The array is read
-- once per claim (an InitPlan), so the walk of the claim index is unchanged.
CREATE OR REPLACE FUNCTION errands_claim_kinds(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
    WITH claimable AS (
        SELECT best.id
        FROM unnest(kinds) AS handled (kind)
        CROSS JOIN LATERAL (
            SELECT id, priority, turn FROM background_jobs
            WHERE state = 'queued'
              AND turn IS NOT NULL
              AND kind = handled.kind
              AND (queues IS NULL OR queue = ANY(queues))
              AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
            ORDER BY priority DESC, turn, id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ) AS best
        ORDER BY best.priority DESC, best.turn, best.id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.*
$$;

CREATE OR REPLACE FUNCTION errands_claim_per_owner(
    worker text, claimed_kind text, queues text[], max_jobs integer, per_owner integer
)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET jit = off
AS $$
    WITH running AS (
        SELECT coalesce(owner, '') AS owner, count(*) AS n FROM background_jobs
        WHERE state = 'running' AND kind = claimed_kind
        GROUP BY 1
    ), candidates AS (
        SELECT id, coalesce(owner, '') AS owner, priority, turn FROM background_jobs
        WHERE state = 'queued'
          AND turn IS NOT NULL
          AND kind = claimed_kind
          AND (queues IS NULL OR queue = ANY(queues))
          AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
        ORDER BY priority DESC, turn, id
        LIMIT 1000
    ), ranked AS (
        SELECT c.id, c.priority, c.turn,
               coalesce(r.n, 0)
               + row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.turn, c.id)
               AS nth
        FROM candidates c LEFT JOIN running r USING (owner)
    ), chosen AS (
        SELECT id FROM ranked WHERE nth <= per_owner
        ORDER BY priority DESC, turn, id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM chosen
    WHERE j.id = chosen.id AND j.state = 'queued'
    RETURNING j.*
$$;



-- Lighter rows: what every enqueue, claim and finish writes besides the job itself
-- (bench/README.md, "Where a job's time goes", has the measurements).

-- job_events keeps no foreign key to its job. The key cost every event a lookup of the
-- job and a row lock on it (FOR KEY SHARE), in the very statement that had just written
-- that job: 33 of the 71 ms of a batched enqueue of 1,000 jobs. Events are written only
-- by the triggers on background_jobs, for the rows they change, so none can name a
-- missing job; the cascade it gave is kept by a statement trigger, once per DELETE.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;

CREATE FUNCTION errands_delete_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_delete_events
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_delete_events();

-- The console's charts read the last hour of events. job_events is append-only and
-- `at` grows with it, so a BRIN index (a few pages for millions of events) finds the
-- last hour as well as a B-tree did, and costs an event almost nothing to maintain.
DROP INDEX job_events_at_idx;
CREATE INDEX job_events_at_idx ON job_events USING brin (at);

-- Row triggers only where they have something to do. A plpgsql call per row was most
-- of a batched insert's cost after the events: kind defaults are filled in only when a
-- job leaves one unset (the enqueue queries fill them in themselves), and the
-- cancellation rule runs only for a row that is cancelled or whose `completed` does
-- not match its state (exactly the rows errands_cancel_queued changes).
DROP TRIGGER background_jobs_kind_defaults ON background_jobs;
CREATE TRIGGER background_jobs_kind_defaults
    BEFORE INSERT ON background_jobs
    FOR EACH ROW
    WHEN (NEW.max_attempts IS NULL OR NEW.priority IS NULL OR NEW.queue IS NULL)
    EXECUTE FUNCTION errands_kind_defaults();

DROP TRIGGER background_jobs_cancel_queued ON background_jobs;
CREATE TRIGGER background_jobs_cancel_queued
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW
    WHEN (NEW.cancelled OR NEW.completed IS DISTINCT FROM (NEW.state = 'completed'))
    EXECUTE FUNCTION errands_cancel_queued();



-- Workflows (docs/workflows.md): jobs that run after other jobs, and durable steps.

-- A job runs after the jobs it depends on. An edge is added only as its job is created,
-- and only to jobs that exist already (errands_wait_for), so the graph cannot hold a
-- cycle. `position` keeps the order the caller named them in (a chain's results, a
-- group's members). No foreign key on depends_on: deleting a dependency is handled by
-- errands_dependencies_deleted (its waiting dependents end cancelled), which a cascade
-- would have run after the edges were gone.
CREATE TABLE job_dependencies (
    job_id uuid NOT NULL REFERENCES background_jobs (id) ON DELETE CASCADE,
    depends_on uuid NOT NULL,
    position integer NOT NULL,
    on_failure text NOT NULL DEFAULT 'cancel' CHECK (on_failure IN ('cancel', 'run')),
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_depends_on_idx ON job_dependencies (depends_on);

-- How many of the job's dependencies have not ended yet. While it is above zero the job
-- has no turn, so no claim sees it (the claim index holds only jobs with a turn) and
-- the claim's staging skips it: jobs without dependencies are claimed exactly as before.
ALTER TABLE background_jobs ADD COLUMN waiting_for integer NOT NULL DEFAULT 0
    CHECK (waiting_for >= 0);

DROP INDEX background_jobs_due_idx;
CREATE INDEX background_jobs_due_idx
    ON background_jobs (run_at) WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0;

-- The number of a job's dependencies that are still queued or running.
CREATE FUNCTION errands_unfinished_dependencies(job uuid) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM job_dependencies e
    JOIN background_jobs d ON d.id = e.depends_on
    WHERE e.job_id = job AND d.state IN ('queued', 'running')
$$;

-- 0007's rule, and: a job waiting for dependencies (or an answer) has no turn. A job
-- sent back to the queue after it ended (an operator's retry) counts what it still
-- waits for again: a dependency that failed no longer holds it (the operator asked for
-- it to run); a question still unanswered does.
CREATE OR REPLACE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IN ('completed', 'failed', 'cancelled') THEN
        NEW.waiting_for := errands_unfinished_dependencies(NEW.id)
                           + (NEW.question IS NOT NULL AND NEW.answer IS NULL)::integer;
    END IF;
    IF NEW.run_at > now() OR NEW.waiting_for > 0 THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;

-- 0007's staging, skipping jobs that still wait for dependencies.
CREATE OR REPLACE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;

-- Adds the dependencies `after` to `jobs`, which the caller has just inserted in this
-- transaction. The dependencies are locked (FOR SHARE, in id order) until the caller
-- commits: one that ends meanwhile waits, and its release (below) then sees the new
-- edges; one that ended before is counted as ended here. Refused: an unknown
-- dependency, a job depending on itself, and new dependencies of a job that others
-- already wait for (the only way to close a cycle).
CREATE FUNCTION errands_wait_for(jobs uuid[], after uuid[], on_failure text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM FROM background_jobs WHERE id = ANY(after) ORDER BY id FOR SHARE;
    SELECT a INTO missing FROM unnest(after) AS a
    WHERE NOT EXISTS (SELECT FROM background_jobs WHERE id = a) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'job % does not exist: a job can only run after jobs that exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF jobs && after OR EXISTS (SELECT FROM job_dependencies WHERE depends_on = ANY(jobs)) THEN
        RAISE EXCEPTION 'a job can take dependencies only as it is created'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO job_dependencies (job_id, depends_on, position, on_failure)
    SELECT job.id, named.id, named.position, errands_wait_for.on_failure
    FROM unnest(jobs) AS job (id)
    CROSS JOIN (SELECT id, min(n)::integer AS position
                FROM unnest(after) WITH ORDINALITY AS a (id, n) GROUP BY id) AS named
    ON CONFLICT DO NOTHING;
    -- Waiting for the unfinished ones; ended already if one failed (unless told to run).
    UPDATE background_jobs AS j
    SET waiting_for = s.unfinished,
        turn = NULL,
        cancelled = j.cancelled OR s.cause IS NOT NULL,
        error = coalesce(s.cause, j.error)
    FROM (SELECT count(*) FILTER (WHERE d.state IN ('queued', 'running')) AS unfinished,
                 (array_agg(errands_dependency_error(d.id, d.kind, d.state, d.error))
                  FILTER (WHERE d.state IN ('failed', 'cancelled')
                            AND errands_wait_for.on_failure = 'cancel'))[1] AS cause
          FROM background_jobs d WHERE d.id = ANY(after)) AS s
    WHERE j.id = ANY(jobs) AND j.state = 'queued';
END
$$;

-- What a job cancelled because of a dependency says: which one, and how it ended.
CREATE FUNCTION errands_dependency_error(dependency uuid, kind text, state text, error jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'type', 'DependencyFailed',
        'message', format('job %s (%s) it runs after %s', dependency, kind,
                          CASE WHEN state = 'failed' THEN 'failed' ELSE 'was ' || state END)
                   || coalesce(': ' || (error ->> 'message'), ''),
        'dependency', dependency)
$$;

-- Dependencies that ended (or went away: 'deleted'): their waiting dependents are
-- released or cancelled, in one pass whatever the depth of the graph.
-- * a dependent is cancelled, with an error naming the cause, when a dependency failed
--   or was cancelled and its edge says 'cancel'; so are, in the same statement, the
--   jobs that wait for it along 'cancel' edges, transitively (a nested trigger per level
--   would run out of stack on a long chain);
-- * otherwise the dependent waits for one fewer; at zero it takes a turn (the turn
--   trigger) and the workers are woken.
-- The dependents are locked in id order first, so two transactions releasing the same
-- jobs cannot deadlock each other.
CREATE FUNCTION errands_end_dependencies(ids uuid[], states text[], kinds text[], errors jsonb[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    PERFORM FROM background_jobs
    WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ANY(ids))
      AND state = 'queued'
    ORDER BY id FOR UPDATE;

    WITH RECURSIVE ended AS (
        SELECT * FROM unnest(ids, states, kinds, errors) AS e (id, state, kind, error)
    ), doomed (id, cause) AS (
        SELECT e.job_id, errands_dependency_error(ended.id, ended.kind, ended.state, ended.error)
        FROM ended JOIN job_dependencies e ON e.depends_on = ended.id
        WHERE ended.state <> 'completed' AND e.on_failure = 'cancel'
        UNION
        SELECT e.job_id, doomed.cause
        FROM doomed JOIN job_dependencies e ON e.depends_on = doomed.id
        JOIN background_jobs j ON j.id = e.job_id
        WHERE e.on_failure = 'cancel' AND j.state = 'queued'
    )
    UPDATE background_jobs AS j
    SET cancelled = true, error = first.cause
    FROM (SELECT DISTINCT ON (id) id, cause FROM doomed ORDER BY id) AS first
    WHERE j.id = first.id AND j.state = 'queued';

    WITH released AS (
        UPDATE background_jobs AS j
        SET waiting_for = greatest(j.waiting_for - r.n, 0), turn = NULL
        FROM (SELECT e.job_id, count(*)::integer AS n
              FROM unnest(ids, states) AS ended (id, state)
              JOIN job_dependencies e ON e.depends_on = ended.id
              WHERE ended.state = 'completed' OR e.on_failure = 'run'
              GROUP BY e.job_id) AS r
        WHERE j.id = r.job_id AND j.state = 'queued'
        RETURNING j.queue, j.waiting_for
    )
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM released WHERE waiting_for = 0;
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
END
$$;

-- Jobs that ended in this statement release their dependents. One call per statement;
-- a statement that ends no job with dependents returns after one look at its rows.
CREATE FUNCTION errands_dependencies_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ended record;
BEGIN
    SELECT array_agg(n.id) AS ids, array_agg(n.state) AS states, array_agg(n.kind) AS kinds,
           array_agg(n.error) AS errors
    INTO ended
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IN ('completed', 'failed', 'cancelled')
      AND o.state NOT IN ('completed', 'failed', 'cancelled')
      -- only jobs something waits for: a finish of jobs without dependents (nearly
      -- every finish) stops here, after one index probe per job
      AND EXISTS (SELECT FROM job_dependencies e WHERE e.depends_on = n.id);
    IF ended.ids IS NOT NULL THEN
        PERFORM errands_end_dependencies(ended.ids, ended.states, ended.kinds, ended.errors);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_dependencies_ended
    AFTER UPDATE ON background_jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_dependencies_ended();

-- A dependency deleted before it ended (an operator's delete) counts as cancelled for
-- its dependents; then every edge to a deleted job goes (pruning finished jobs too).
CREATE FUNCTION errands_dependencies_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    SELECT array_agg(id) AS ids, array_agg('deleted'::text) AS states, array_agg(kind) AS kinds,
           array_agg(NULL::jsonb) AS errors
    INTO gone
    FROM old_rows WHERE state IN ('queued', 'running');
    IF gone.ids IS NOT NULL THEN
        PERFORM errands_end_dependencies(gone.ids, gone.states, gone.kinds, gone.errors);
    END IF;
    DELETE FROM job_dependencies WHERE depends_on IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_dependencies_deleted
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_dependencies_deleted();

-- Durable steps: a step's result, stored before ctx.step returns, so a later attempt of
-- the job gets it back instead of running the step again. ctx.sleep stores its wake-up
-- time as a step too.
CREATE TABLE job_steps (
    job_id uuid NOT NULL REFERENCES background_jobs (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    result jsonb,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Questions to the job's owner (ctx.ask): the question pending on the job, and its
-- answer once given. While a question waits, the job waits for one more thing
-- (waiting_for), so it has no turn and holds no slot; the answer gives it back. A
-- column of the row, not a table of its own, so that it can sync to the owner with the
-- rest of the job (the client's side is not built yet: docs/workflows.md).
ALTER TABLE background_jobs
    ADD COLUMN question jsonb,
    ADD COLUMN answer jsonb;


-- The console at a million jobs, continued (docs/operators.md): sorts of the jobs
-- list, charts read from per-minute rollups, and the periodic schedules the workers run.

-- The jobs list sorted by run time (errands.listing.SORTS["run_time"], the listing.sql
-- "page" query with ORDER BY finished_at - started_at, received_at, id): walked in
-- order from a keyset cursor, 2 ms a page at 1,000,000 jobs instead of 330-850 ms.
-- Partial: only a job that ran to an end has a run time, and its entry is written once,
-- by the update that finishes it (already a non-HOT update: its state changes);
-- progress and lease writes leave these columns alone. The other sorts take no index
-- of their own: by state walks background_jobs_state_received_idx (0008); by kind or
-- by queue reads the filter's rows and keeps the top of them (60-100 ms in the
-- console's default window of 24 hours, 260-440 ms over all of 1,000,000 jobs,
-- bench/README.md), which costs the writers nothing.
CREATE INDEX background_jobs_run_time_idx
    ON background_jobs ((finished_at - started_at), received_at, id)
    WHERE finished_at IS NOT NULL AND started_at IS NOT NULL;

-- The charts read rollups of job_events instead of every event of the window (21-80 s
-- for a day or a week at 1,000,000 jobs). A minute is rolled up once it is over
-- (errands.charts.roll_up_async, run by the service's maintenance and before a chart is
-- read; nothing is added to any writer's work) into rows of a minute, a quarter of an
-- hour and an hour (`width`, in seconds: a chart reads the widest its bars allow, so a
-- week per hour reads 168 rows per kind and queue, not 10,080), by kind and queue: jobs
-- that ended each way, that entered the queue (new or retried) and left it (started,
-- or ended while waiting), and histograms of pickup latency and run time (48 buckets,
-- a factor of the square root of two apart from 1 ms: a percentile read from them is
-- within 19% of the exact one). Rollups outlive the jobs: pruning leaves them.
CREATE TABLE errands_chart_rollups (
    width integer NOT NULL CHECK (width IN (60, 900, 3600)),
    start timestamptz NOT NULL,
    kind text NOT NULL,
    queue text NOT NULL,
    completed integer NOT NULL,
    failed integer NOT NULL,
    cancelled integer NOT NULL,
    retried integer NOT NULL,
    entered integer NOT NULL,
    left_queue integer NOT NULL,
    pickups integer[] NOT NULL,
    runs integer[] NOT NULL,
    PRIMARY KEY (width, start, kind, queue)
);

-- How far the rollups reach: every event before `upto` is in them (one row).
CREATE TABLE errands_chart_rollup (
    upto timestamptz NOT NULL
);

-- A histogram's bucket for a duration in seconds (see above).
CREATE FUNCTION errands_histogram_bucket(seconds float8) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN seconds <= 0.001 THEN 0
                ELSE least(47, ceil(2 * log(2, (seconds * 1000)::numeric)))::integer END
$$;

-- The histogram (48 counts) of a list of bucket numbers.
CREATE FUNCTION errands_histogram(buckets integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(n.count, 0)::integer ORDER BY b)
    FROM generate_series(0, 47) AS b
    LEFT JOIN (SELECT x, count(*) FROM unnest(buckets) AS x GROUP BY x) AS n ON n.x = b
$$;

-- Two histograms added bucket by bucket (an empty one is all zeros).
CREATE FUNCTION errands_histogram_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY n)
    FROM unnest(a, b) WITH ORDINALITY AS t (x, y, n)
$$;

-- The histograms of a two-dimensional array (array_agg of histograms) added up: one
-- call per chart bar, where an aggregate calling errands_histogram_add per row took
-- 1.6 s for the 28,600 minute rollups of a day.
CREATE FUNCTION errands_histogram_total(histograms integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(s.total ORDER BY s.bucket), array_fill(0, ARRAY[48]))
    FROM (
        SELECT (n - 1) % 48 AS bucket, sum(x)::integer AS total
        FROM unnest(histograms) WITH ORDINALITY AS u (x, n)
        GROUP BY 1
    ) AS s
$$;

-- The periodic schedules of the workers' registries: each worker that runs schedules
-- writes its own here when it starts, so the console and `errands schedules` can show
-- every schedule with its next run without the registry's code.
CREATE TABLE errands_schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    timezone text NOT NULL,
    kind text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);


-- Leaner writes: what every enqueue, claim and finish pays for besides the job itself
-- (bench/README.md, "Bytes per job: the index audit", has the measurements).

-- A job's events are read by job (`errands show`, the console's job page: a handful of
-- rows, sorted by id after the read) and deleted by job. A B-tree on job_id alone
-- stores each job once with a list of its events (deduplication); (job_id, id) stored
-- one entry per event: 151 bytes per job after a drain, 79 now.
DROP INDEX job_events_job_idx;
CREATE INDEX job_events_job_idx ON job_events (job_id);

-- Nothing reads an event by its id (no foreign key points here, the readers go by job
-- or by time): its unique index cost 70 bytes per job. The id stays, as the events'
-- order within a job.
ALTER TABLE job_events DROP CONSTRAINT job_events_pkey;

-- The owner's index serves the sync service's per-user reads (`owner = $user`, the
-- snapshot pages in id order, keyset by id) and the operators' owner filter
-- (`owner = ANY(...)`): every one names an owner. Jobs without an owner (the server's
-- own) leave it alone, and a user's snapshot walks it in page order instead of sorting
-- every job of the user by id.
DROP INDEX background_jobs_owner_idx;
CREATE INDEX background_jobs_owner_idx ON background_jobs (owner, id) WHERE owner IS NOT NULL;

-- Row triggers only where they have something to do (as 0009 did for two others). The
-- sync stamp: an insert already takes the transaction's id from the column's default,
-- so the function runs only where the row would otherwise keep another one.
DROP TRIGGER background_jobs_sync_stamp ON background_jobs;
CREATE TRIGGER background_jobs_sync_stamp
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW
    WHEN (NEW._txid IS DISTINCT FROM pg_current_xact_id())
    EXECUTE FUNCTION errands_sync_stamp();

-- Turns: errands_take_turn returns at once for a row that is not queued (every claim
-- and finish), and an insert that arrives with its turn, runnable now and waiting for
-- nothing (enqueue_many gives the batch its turns) is left as it is. One trigger per
-- event, since a WHEN clause of an insert cannot name OLD. The names keep them after
-- the other BEFORE triggers (they fire by name).
DROP TRIGGER background_jobs_take_turn ON background_jobs;
CREATE TRIGGER background_jobs_take_turn
    BEFORE UPDATE OF state, run_at, turn ON background_jobs
    FOR EACH ROW
    WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION errands_take_turn();
CREATE TRIGGER background_jobs_take_turn_on_insert
    BEFORE INSERT ON background_jobs
    FOR EACH ROW
    WHEN (NEW.state = 'queued'
          AND (NEW.turn IS NULL OR NEW.run_at > now() OR NEW.waiting_for > 0))
    EXECUTE FUNCTION errands_take_turn();
-- Questions to the job's owner, from the owner's side (docs/workflows.md): answered
-- through the sync service like any change (the door checks who and what, the query
-- below checks again as it applies), and questions that stop waiting at a deadline.

-- When an unanswered question stops waiting (ctx.ask(timeout=...)); NULL without one.
-- A column, not a field of `question`, so that the claim's staging finds due questions
-- on an index that holds only them (a cast of jsonb text to a time cannot be indexed).
ALTER TABLE background_jobs ADD COLUMN question_deadline timestamptz;
CREATE INDEX background_jobs_question_deadline_idx ON background_jobs (question_deadline)
    WHERE question_deadline IS NOT NULL;

-- An answer is an event of its own (no state changes), naming the operator who gave it
-- (NULL: the job's owner, through the sync service).
ALTER TABLE job_events DROP CONSTRAINT job_events_type_check;
ALTER TABLE job_events ADD CONSTRAINT job_events_type_check CHECK (type IN (
    'queued', 'started', 'retried', 'failed', 'cancelled', 'completed',
    'cancel_requested', 'rescheduled', 'answered'
));

-- Whether a question waits for its answer: asked, not answered, and not past its
-- deadline (then `timed_out` is in it, and the job runs again without an answer).
CREATE FUNCTION errands_question_pending(question jsonb, answer jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT question IS NOT NULL AND answer IS NULL AND NOT (question ? 'timed_out')
$$;

-- Whether `value` answers `question`: not null, and equal (as JSON) to one of its
-- choices, or, for a question without choices, a text of at most max_length characters
-- (errands.protocol's QUESTION_ANSWER_RULE and check_answer: the limit is passed in,
-- so that it is written once).
CREATE FUNCTION errands_answers(question jsonb, value jsonb, max_length integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(value) <> 'null' AND CASE WHEN jsonb_typeof(question -> 'choices') = 'array'
                THEN EXISTS (SELECT FROM jsonb_array_elements(question -> 'choices') AS c (choice)
                             WHERE c.choice = value)
                ELSE jsonb_typeof(value) = 'string' AND length(value #>> '{}') <= max_length
           END
$$;

-- 0010's rule, with "unanswered" meaning errands_question_pending: a question that
-- timed out no longer holds a job an operator sends back to the queue.
CREATE OR REPLACE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IN ('completed', 'failed', 'cancelled') THEN
        NEW.waiting_for := errands_unfinished_dependencies(NEW.id)
                           + errands_question_pending(NEW.question, NEW.answer)::integer;
    END IF;
    IF NEW.run_at > now() OR NEW.waiting_for > 0 THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;

-- Questions past their deadline stop waiting: marked `timed_out`, the job waits for one
-- thing fewer (and takes its turn when it waits for nothing), and its next attempt's
-- ctx.ask returns the default or raises QuestionTimedOut. A deadline whose question
-- was settled otherwise (the job ended meanwhile) is only cleared, so that no deadline
-- stays due for ever.
CREATE FUNCTION errands_time_out_questions(max_jobs integer) RETURNS void
LANGUAGE sql AS $$
    UPDATE background_jobs AS j
    SET question_deadline = NULL,
        question = CASE WHEN due.waits THEN j.question || '{"timed_out": true}' ELSE j.question END,
        waiting_for = j.waiting_for - due.waits::integer,
        turn = CASE WHEN due.waits AND j.state = 'queued' THEN NULL ELSE j.turn END
    FROM (SELECT id, state IN ('queued', 'running')
                     AND errands_question_pending(question, answer) AS waits
          FROM background_jobs
          WHERE question_deadline <= now()
          ORDER BY question_deadline LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id
$$;

-- 0010's staging, and first the questions past their deadline. Claims of jobs without
-- questions pay one more cached probe, of an index that holds only questions with a
-- deadline (bench/questions_bench.py).
CREATE OR REPLACE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM background_jobs WHERE question_deadline <= now()) THEN
        PERFORM errands_time_out_questions(max_jobs);
    END IF;
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;


-- The console's state index holds only the states it cannot find another way
-- (bench/README.md, "Third round"). Keyed by state, it took a new
-- entry for every version of every job (queued, running, completed), each in another
-- part of the index: 311 bytes per job after a drain, a fifth of all a job wrote. Now:
-- - queued, failed and cancelled jobs are here (a backlog, and the rare ends an
--   operator looks for: one entry a job that succeeds, at its insert);
-- - running jobs are found on background_jobs_running_idx (as many as workers run);
-- - completed jobs, most of any table, on background_jobs_received_idx, newest first,
--   the state read from the row.
-- Counts and lists by state name the state as a constant (sql/listing.sql), so the
-- planner can match it to this predicate. A sort by state now reads like a sort by kind
-- or queue (no index of its own: 0.2 s over a million jobs).
DROP INDEX background_jobs_state_received_idx;
CREATE INDEX background_jobs_state_received_idx ON background_jobs (state, received_at, id)
    INCLUDE (kind, queue, owner)
    WHERE state IN ('queued', 'failed', 'cancelled');


-- Cheaper claims: what every claim paid besides claiming (bench/README.md, "Third
-- round"; measured with track_functions and auto_explain during a drain of 20,000 jobs
-- on a fresh table).

-- 0013's staging probed for questions past their deadline with
-- `question_deadline <= now()`. Before the table's first ANALYZE (a new table, or a
-- busy one between two autovacuums) the planner guesses a third of the rows match, and
-- with EXISTS's LIMIT 1 a sequential scan looks cheapest: it read the whole table on
-- every claim (2.6 ms at 20,000 jobs, growing with the history; a claim of 16 jobs
-- otherwise takes under 1 ms). min() over an indexed column is always read from the
-- index's first entry, whatever the statistics say; both probes now ask for it.
CREATE OR REPLACE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT min(question_deadline) FROM background_jobs) <= now() THEN
        PERFORM errands_time_out_questions(max_jobs);
    END IF;
    -- Most claims find nothing to stage: one index probe, not an UPDATE to plan.
    IF NOT coalesce((SELECT min(run_at) FROM background_jobs
                     WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0) <= now(),
                    false) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;

-- The claims themselves, with their plans kept. A SQL function that writes (or carries
-- SET options) is never inlined, and Postgres plans its statement again at every call:
-- a millisecond of planning for a claim of 16 jobs that runs in 0.4 ms (auto_explain
-- during a drain: errands_claim_kinds 1.0-1.7 ms, the UPDATE in it 0.35-0.7). A
-- PL/pgSQL function prepares its statement once per connection and keeps the plan. The
-- statements are 0008's, unchanged.
CREATE OR REPLACE FUNCTION errands_claim_kinds(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH claimable AS (
            SELECT best.id
            FROM unnest(kinds) AS handled (kind)
            CROSS JOIN LATERAL (
                SELECT id, priority, turn FROM background_jobs
                WHERE state = 'queued'
                  AND turn IS NOT NULL
                  AND kind = handled.kind
                  AND (queues IS NULL OR queue = ANY(queues))
                  AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
                ORDER BY priority DESC, turn, id
                LIMIT max_jobs
                FOR UPDATE SKIP LOCKED
            ) AS best
            ORDER BY best.priority DESC, best.turn, best.id
            LIMIT max_jobs
        )
        UPDATE background_jobs AS j
        SET state = 'running',
            attempts = j.attempts + 1,
            lease_owner = worker,
            started_at = now(),
            error = NULL
        FROM claimable
        WHERE j.id = claimable.id
        RETURNING j.*;
END
$$;

CREATE OR REPLACE FUNCTION errands_claim_per_owner(
    worker text, claimed_kind text, queues text[], max_jobs integer, per_owner integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH running AS (
            SELECT coalesce(owner, '') AS owner, count(*) AS n FROM background_jobs
            WHERE state = 'running' AND kind = claimed_kind
            GROUP BY 1
        ), candidates AS (
            SELECT id, coalesce(owner, '') AS owner, priority, turn FROM background_jobs
            WHERE state = 'queued'
              AND turn IS NOT NULL
              AND kind = claimed_kind
              AND (queues IS NULL OR queue = ANY(queues))
              AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
            ORDER BY priority DESC, turn, id
            LIMIT 1000
        ), ranked AS (
            SELECT c.id, c.priority, c.turn,
                   coalesce(r.n, 0)
                   + row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.turn, c.id)
                   AS nth
            FROM candidates c LEFT JOIN running r USING (owner)
        ), chosen AS (
            SELECT id FROM ranked WHERE nth <= per_owner
            ORDER BY priority DESC, turn, id
            LIMIT max_jobs
        )
        UPDATE background_jobs AS j
        SET state = 'running',
            attempts = j.attempts + 1,
            lease_owner = worker,
            started_at = now(),
            error = NULL
        FROM chosen
        WHERE j.id = chosen.id AND j.state = 'queued'
        RETURNING j.*;
END
$$;


-- One statement trigger after an update instead of two (bench/README.md, "Third
-- round"). errands_after_update (events, wake-ups, the cancel signal; 0008) joined the
-- statement's new rows to its old ones twice, and errands_dependencies_ended (0010) a
-- third time: every claim and every finish paid three joins of its transition tables,
-- 23 us a job of the 142 Postgres spent on a drained job (track_functions). Now one
-- join, read once, feeds the events, the wake-ups, the cancel signal and the release
-- of dependents, in that order, by the same rules as before.
DROP TRIGGER background_jobs_dependencies_ended ON background_jobs;
DROP FUNCTION errands_dependencies_ended();

CREATE OR REPLACE FUNCTION errands_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    operator text := errands_operator();
    queues text;
    cancels integer;
    ended_ids uuid[];
    ended_states text[];
    ended_kinds text[];
    ended_errors jsonb[];
BEGIN
    WITH changed AS MATERIALIZED (
        SELECT n.id, n.state, o.state AS was, n.attempts, n.kind, n.queue, n.error,
               coalesce(n.lease_owner, o.lease_owner) AS worker,
               n.cancelled AND NOT o.cancelled AS cancel_asked,
               -- only jobs something waits for release dependents: a finish of jobs
               -- without any (nearly every finish) costs one index probe per job
               n.state IN ('completed', 'failed', 'cancelled')
                   AND o.state NOT IN ('completed', 'failed', 'cancelled')
                   AND EXISTS (SELECT FROM job_dependencies e WHERE e.depends_on = n.id)
                   AS releases
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE n.state IS DISTINCT FROM o.state OR (n.cancelled AND NOT o.cancelled)
    ), logged AS (
        INSERT INTO job_events (job_id, type, attempt, worker, error, operator)
        SELECT id,
               CASE WHEN state = 'running' THEN 'started'
                    WHEN state = 'queued' THEN 'retried'
                    ELSE state END,
               attempts,
               CASE WHEN operator IS NULL THEN worker END,
               CASE WHEN state IN ('queued', 'failed') THEN error END,
               operator
        FROM changed
        WHERE state IS DISTINCT FROM was
    )
    SELECT string_agg(DISTINCT queue, ',') FILTER (WHERE state = 'queued' AND was <> 'queued'),
           count(*) FILTER (WHERE state = 'running' AND cancel_asked),
           array_agg(id) FILTER (WHERE releases),
           array_agg(state) FILTER (WHERE releases),
           array_agg(kind) FILTER (WHERE releases),
           array_agg(error) FILTER (WHERE releases)
    INTO queues, cancels, ended_ids, ended_states, ended_kinds, ended_errors
    FROM changed;
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    IF cancels > 0 THEN
        PERFORM pg_notify('errands_cancel', '');
    END IF;
    IF ended_ids IS NOT NULL THEN
        PERFORM errands_end_dependencies(ended_ids, ended_states, ended_kinds, ended_errors);
    END IF;
    RETURN NULL;
END
$$;

-- Claims and finishes stamp their rows themselves (bench/README.md, "Fourth round").
-- errands_sync_stamp (0002; its WHEN, 0012) is a row trigger that fires when a row's
-- _txid is not the writing transaction's, errands_cancel_queued (0001; 0009) one that
-- fires when `completed` disagrees with the state: a claim fired the first for every
-- job, a finish both, three PL/pgSQL calls a job (2.8 and 2.3 us each, track_functions,
-- during a drain). A statement that sets _txid and `completed` itself skips them; the
-- triggers stay for every other writer, and a cancelled row still goes through
-- cancel_queued. The claims are 0015's, with _txid set.
CREATE OR REPLACE FUNCTION errands_claim_kinds(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH claimable AS (
            SELECT best.id
            FROM unnest(kinds) AS handled (kind)
            CROSS JOIN LATERAL (
                SELECT id, priority, turn FROM background_jobs
                WHERE state = 'queued'
                  AND turn IS NOT NULL
                  AND kind = handled.kind
                  AND (queues IS NULL OR queue = ANY(queues))
                  AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
                ORDER BY priority DESC, turn, id
                LIMIT max_jobs
                FOR UPDATE SKIP LOCKED
            ) AS best
            ORDER BY best.priority DESC, best.turn, best.id
            LIMIT max_jobs
        )
        UPDATE background_jobs AS j
        SET state = 'running',
            attempts = j.attempts + 1,
            lease_owner = worker,
            started_at = now(),
            error = NULL,
            _txid = pg_current_xact_id()
        FROM claimable
        WHERE j.id = claimable.id
        RETURNING j.*;
END
$$;

CREATE OR REPLACE FUNCTION errands_claim_per_owner(
    worker text, claimed_kind text, queues text[], max_jobs integer, per_owner integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
BEGIN
    RETURN QUERY
        WITH running AS (
            SELECT coalesce(owner, '') AS owner, count(*) AS n FROM background_jobs
            WHERE state = 'running' AND kind = claimed_kind
            GROUP BY 1
        ), candidates AS (
            SELECT id, coalesce(owner, '') AS owner, priority, turn FROM background_jobs
            WHERE state = 'queued'
              AND turn IS NOT NULL
              AND kind = claimed_kind
              AND (queues IS NULL OR queue = ANY(queues))
              AND queue <> ALL (ARRAY(SELECT p.queue FROM errands_queue_pauses p))
            ORDER BY priority DESC, turn, id
            LIMIT 1000
        ), ranked AS (
            SELECT c.id, c.priority, c.turn,
                   coalesce(r.n, 0)
                   + row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.turn, c.id)
                   AS nth
            FROM candidates c LEFT JOIN running r USING (owner)
        ), chosen AS (
            SELECT id FROM ranked WHERE nth <= per_owner
            ORDER BY priority DESC, turn, id
            LIMIT max_jobs
        )
        UPDATE background_jobs AS j
        SET state = 'running',
            attempts = j.attempts + 1,
            lease_owner = worker,
            started_at = now(),
            error = NULL,
            _txid = pg_current_xact_id()
        FROM chosen
        WHERE j.id = chosen.id AND j.state = 'queued'
        RETURNING j.*;
END
$$;

-- A busy worker's one statement: the outcomes of the jobs that just ended, then the
-- next claim (bench/README.md, "Fourth round"). The worker sent them as two statements
-- in a pipelined transaction (BEGIN, finish, claim, COMMIT): one round trip, but four
-- protocol messages to parse, plan and answer, and psycopg's pipeline machinery on the
-- worker's side, about half its CPU per job. One call of a function does the same
-- in the same order in one statement, its plans kept: a loop of claims and finishes of
-- 16 ran 1.16-1.33x as fast, the client's CPU a job 56 -> 28 us.

-- The statement queries.sql's finish_jobs was (with 0017's stamps): ends a batch of jobs.
-- Only the worker holding a job may end it: a worker whose lease was lost and taken
-- over cannot overwrite the new attempt. Returns the ids it ended.
CREATE FUNCTION errands_finish(
    worker text, ids uuid[], states text[], results jsonb[], errors jsonb[],
    retry_in float8[]
)
RETURNS SETOF uuid
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY
        UPDATE background_jobs AS j
        SET state = f.state,
            completed = f.state = 'completed',
            result = f.result,
            error = f.error,
            progress = CASE WHEN f.state = 'completed' THEN 1 ELSE j.progress END,
            run_at = coalesce(now() + make_interval(secs => f.retry_in), j.run_at),
            lease_owner = CASE WHEN f.state = 'queued' THEN NULL ELSE j.lease_owner END,
            finished_at = CASE WHEN f.state = 'queued' THEN NULL ELSE now() END,
            _txid = pg_current_xact_id()
        FROM unnest(ids, states, results, errors, retry_in)
             AS f (id, state, result, error, retry_in)
        WHERE j.id = f.id AND j.lease_owner = worker AND j.state = 'running'
        RETURNING j.id;
END
$$;

-- Ends the jobs in `ids` (errands_finish; none: nothing is written), then claims up to
-- max_jobs (errands_claim), after the finish, so that the jobs it ended make room. When
-- it ended any, the first row carries their ids alone (`finished`, the rest NULL); each
-- claimed job follows, with what the worker needs to run it.
CREATE FUNCTION errands_finish_and_claim(
    worker text, ids uuid[], states text[], results jsonb[], errors jsonb[],
    retry_in float8[], kinds text[], queues text[], max_jobs integer
)
RETURNS TABLE (
    finished uuid[], id uuid, kind text, payload jsonb, attempts integer,
    max_attempts integer, timeout_seconds real, cancelled boolean, traceparent text,
    owner text, submitted_by text, pickup_seconds float8
)
LANGUAGE plpgsql
AS $$
BEGIN
    IF cardinality(ids) > 0 THEN
        RETURN QUERY
            SELECT coalesce(array_agg(ended), '{}'), NULL::uuid, NULL, NULL::jsonb,
                   NULL::integer, NULL::integer, NULL::real, NULL::boolean, NULL, NULL,
                   NULL, NULL::float8
            FROM errands_finish(worker, ids, states, results, errors, retry_in) AS ended;
    END IF;
    RETURN QUERY
        SELECT NULL::uuid[], c.id, c.kind, c.payload, c.attempts, c.max_attempts,
               c.timeout_seconds, c.cancelled, c.traceparent, c.owner, c.submitted_by,
               extract(epoch FROM c.started_at - greatest(c.run_at, c.received_at))::float8
        FROM errands_claim(worker, kinds, queues, max_jobs) AS c;
END
$$;
