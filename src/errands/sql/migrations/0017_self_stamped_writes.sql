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
