-- The operator's queries (errands.operations), by name. Values are always parameters.
-- Queries that select jobs are templates: {selection} is filled with the
-- job_selection block below, so every list, count and bulk action filters the same way;
-- {columns} is the columns of errands.operations.JobRecord.

-- name: job_selection
-- A JobFilter: each NULL parameter means "any".
    (%(ids)s::uuid[] IS NULL OR j.id = ANY(%(ids)s::uuid[]))
AND (%(states)s::text[] IS NULL OR j.state = ANY(%(states)s::text[]))
AND (%(kinds)s::text[] IS NULL OR j.kind = ANY(%(kinds)s::text[]))
AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
AND (%(owners)s::text[] IS NULL OR j.owner = ANY(%(owners)s::text[]))
AND (%(since)s::timestamptz IS NULL OR j."timestamp" >= %(since)s::timestamptz)
AND (%(until)s::timestamptz IS NULL OR j."timestamp" < %(until)s::timestamptz)
AND (%(received_since)s::timestamptz IS NULL OR j.received_at >= %(received_since)s::timestamptz)
AND (%(received_until)s::timestamptz IS NULL OR j.received_at < %(received_until)s::timestamptz)
AND (%(search)s::text IS NULL
     OR strpos(lower(j.payload::text), %(search)s::text) > 0
     OR strpos(lower(j.result::text), %(search)s::text) > 0
     OR strpos(lower(j.error::text), %(search)s::text) > 0)

-- name: get_job
SELECT {columns} FROM background_jobs j WHERE j.id = %(id)s

-- name: find_ids
-- Full ids whose text ends with a short id, as `errands jobs` shows it.
SELECT j.id FROM background_jobs j WHERE j.id::text LIKE '%%' || %(suffix)s ORDER BY j.id LIMIT 2

-- name: list_jobs
SELECT {columns} FROM background_jobs j
WHERE {selection}
ORDER BY j."timestamp" DESC, j.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_jobs
SELECT j.state, count(*) FROM background_jobs j WHERE {selection} GROUP BY j.state

-- name: timeline
SELECT e.id, e.job_id, e.at, e.type, e.attempt, e.worker, e.error, e.operator
FROM job_events e WHERE e.job_id = %(id)s ORDER BY e.id

-- name: set_operator
-- Who the rest of the transaction acts for: the triggers and the actions below record
-- them in job_events (errands_operator()); '' when the action is over.
SELECT set_config('errands.operator', %(operator)s, true)

-- name: cancel_jobs
-- A cancellation request, as a client makes it: a queued job ends at once (trigger,
-- which records the operator), a running one is asked to stop, which no state change
-- records: a 'cancel_requested' event names the operator. Jobs that already ended are
-- left alone. The two states are an OR, not an IN: each is then found on its own
-- partial index (queued and running jobs have no index in common).
WITH asked AS (
    UPDATE background_jobs AS j SET cancelled = true
    WHERE {selection} AND (j.state = 'queued' OR j.state = 'running') AND NOT j.cancelled
    RETURNING j.id, j.state, j.attempts
),
noted AS (
    INSERT INTO job_events (job_id, type, attempt, operator)
    SELECT a.id, 'cancel_requested', a.attempts, errands_operator()
    FROM asked a WHERE a.state = 'running'
)
SELECT a.id, NULL::text AS held_key FROM asked a

-- name: retry_jobs
-- A failed or cancelled job goes back to the queue for one more attempt; job_events
-- keeps every earlier attempt (the trigger records the transition as 'retried').
-- A job whose unique_key an unfinished job of its owner holds (or one retried in the
-- same statement: the newest of the selection's jobs with that key) is left alone and
-- returned with held_key set, so that one such job never fails the whole retry.
WITH selected AS (
    SELECT j.id, j.owner, j.unique_key, j.received_at
    FROM background_jobs j
    WHERE {selection} AND j.state IN ('failed', 'cancelled')
    FOR UPDATE
),
ranked AS (
    SELECT s.id, s.unique_key,
           s.unique_key IS NULL OR (
               row_number() OVER (
                   PARTITION BY coalesce(s.owner, ''), s.unique_key
                   ORDER BY s.received_at DESC, s.id DESC
               ) = 1
               AND NOT EXISTS (
                   SELECT FROM background_jobs h
                   WHERE coalesce(h.owner, '') = coalesce(s.owner, '')
                     AND h.unique_key = s.unique_key
                     AND h.state IN ('queued', 'running')
               )
           ) AS free
    FROM selected s
),
retried AS (
    UPDATE background_jobs AS j
    SET state = 'queued',
        cancelled = false,
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        run_at = now(),
        progress = 0,
        progress_message = NULL,
        result = NULL,
        error = NULL,
        lease_owner = NULL,
        started_at = NULL,
        finished_at = NULL
    FROM ranked r
    WHERE j.id = r.id AND r.free
    RETURNING j.id
)
SELECT r.id, CASE WHEN NOT r.free THEN r.unique_key END AS held_key
FROM ranked r LEFT JOIN retried USING (id)
WHERE retried.id IS NOT NULL OR NOT r.free

-- name: reschedule_jobs
-- A waiting (queued) job runs at another time: now ("run now") or later. A
-- 'rescheduled' event names the operator; the workers are woken.
WITH moved AS (
    UPDATE background_jobs AS j SET run_at = coalesce(%(run_at)s::timestamptz, now())
    WHERE {selection} AND j.state = 'queued'
    RETURNING j.id, j.attempts, j.queue
),
noted AS (
    INSERT INTO job_events (job_id, type, attempt, operator)
    SELECT m.id, 'rescheduled', m.attempts, errands_operator() FROM moved m
)
SELECT m.id, NULL::text AS held_key
FROM moved m, LATERAL (SELECT pg_notify('errands_jobs', m.queue)) AS woken

-- name: delete_jobs
-- Deleting leaves tombstones (trigger), so replicas drop the rows too. The job's events
-- go with it (ON DELETE CASCADE): the service logs who deleted what.
DELETE FROM background_jobs AS j WHERE {selection} RETURNING j.id, NULL::text AS held_key

-- name: prunable
SELECT j.state, count(*) FROM background_jobs j
WHERE j.state IN ('completed', 'failed', 'cancelled')
  AND j.state = ANY(%(states)s::text[])
  AND j.finished_at < now() - make_interval(secs => %(older_than)s)
GROUP BY j.state

-- name: prune_batch
-- One batch of finished jobs, oldest first; their events go with them (ON DELETE
-- CASCADE). Never a queued or running job, whatever the caller asked for.
WITH doomed AS (
    SELECT j.id FROM background_jobs j
    WHERE j.state IN ('completed', 'failed', 'cancelled')
      AND j.state = ANY(%(states)s::text[])
      AND j.finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY j.finished_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM background_jobs AS j USING doomed WHERE j.id = doomed.id
RETURNING j.id

-- name: counts_by_kind
SELECT j.kind, j.state, count(*) FROM background_jobs j GROUP BY j.kind, j.state
ORDER BY j.kind, j.state

-- name: queue_depth
-- Per queue: jobs ready to run now, jobs scheduled later, since when the oldest ready
-- one has waited (received by the server, or come due: never the client's own
-- timestamp), and how long ago that is by the database's clock (a host's may differ).
SELECT j.queue,
       count(*) FILTER (WHERE j.run_at <= now()) AS ready,
       count(*) FILTER (WHERE j.run_at > now()) AS scheduled,
       min(greatest(j.received_at, j.run_at)) FILTER (WHERE j.run_at <= now()) AS oldest,
       extract(epoch FROM now() - min(greatest(j.received_at, j.run_at))
                                  FILTER (WHERE j.run_at <= now()))::float8 AS oldest_age
FROM background_jobs j
WHERE j.state = 'queued'
GROUP BY j.queue ORDER BY j.queue

-- name: workers
-- Every registered worker and the jobs it holds now; a lease holder that is not
-- registered (it stopped and was forgotten) still shows, so no running job is hidden.
WITH holders AS (
    SELECT j.lease_owner AS id, array_agg(j.id ORDER BY j.started_at) AS running
    FROM background_jobs j WHERE j.state = 'running' AND j.lease_owner IS NOT NULL
    GROUP BY j.lease_owner
)
SELECT coalesce(w.id, h.id) AS id, w.hostname, w.pid, w.kinds, w.queues, w.started_at,
       w.lease_expires_at, coalesce(w.lease_expires_at > now(), false) AS alive,
       coalesce(h.running, '{}'::uuid[]) AS running
FROM errands_workers w FULL JOIN holders h ON h.id = w.id
ORDER BY w.started_at NULLS LAST, 1

-- name: listen
LISTEN errands_sync

-- name: unlisten
UNLISTEN errands_sync
