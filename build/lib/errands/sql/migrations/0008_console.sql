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
