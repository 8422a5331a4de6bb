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
SELECT e.id, e.job_id, e.at, e.type, e.attempt, e.worker, e.error
FROM job_events e WHERE e.job_id = %(id)s ORDER BY e.id

-- name: cancel_jobs
-- A cancellation request, as a client makes it: a queued job ends at once (trigger),
-- a running one is asked to stop. Jobs that already ended are left alone.
UPDATE background_jobs AS j SET cancelled = true
WHERE {selection} AND j.state IN ('queued', 'running') AND NOT j.cancelled
RETURNING j.id

-- name: retry_jobs
-- A failed or cancelled job goes back to the queue for one more attempt; job_events
-- keeps every earlier attempt (the trigger records the transition as 'retried').
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
WHERE {selection} AND j.state IN ('failed', 'cancelled')
RETURNING j.id

-- name: delete_jobs
-- Deleting leaves tombstones (trigger), so replicas drop the rows too.
DELETE FROM background_jobs AS j WHERE {selection} RETURNING j.id

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
