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
