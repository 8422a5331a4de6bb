-- The job row, the audit trail of its transitions, the workers that hold leases, and
-- the wake-up triggers.

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
