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
