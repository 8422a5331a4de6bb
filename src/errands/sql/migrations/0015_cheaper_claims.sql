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
