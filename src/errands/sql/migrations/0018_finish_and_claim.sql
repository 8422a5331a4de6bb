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
