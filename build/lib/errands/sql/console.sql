-- The console's charts (errands.sync.console), by name: the last %(minutes)s minutes of
-- job_events, in buckets of %(bucket)s seconds (a column still named "minute": the
-- bucket's start). Values are always parameters.

-- name: charts
-- One row per minute, oldest first: jobs finished (by how they ended), queue depth at
-- the end of the minute, and pickup latency and run time percentiles of the attempts
-- that started (pickup) or ended (run time) in it; then one row with minute NULL that
-- holds the percentiles over the whole window (GROUPING SETS: a percentile of the
-- window is not a mean of per-minute ones).
WITH bounds AS (
    SELECT date_bin(make_interval(secs => %(bucket)s), now(), timestamptz '2001-01-01')
               - make_interval(secs => %(minutes)s * 60 - %(bucket)s) AS since,
           now() AS until,
           make_interval(secs => %(bucket)s) AS width
),
minutes AS (
    SELECT generate_series(
               since, date_bin(width, until, timestamptz '2001-01-01'), width
           ) AS minute
    FROM bounds
),
-- Every job with an event in the window, or waiting in the queue now (its 'queued'
-- event may be older than the window): all that any series below can count.
-- The window's start is written out, not read from bounds: the planner then sees how
-- few events it holds (from bounds it guesses a third of the table, and walks every
-- job's events: 35 s at 3,000,000 events).
jobs AS (
    SELECT e.job_id FROM job_events e
    WHERE e.at >= date_bin(make_interval(secs => %(bucket)s), now(), timestamptz '2001-01-01')
                  - make_interval(secs => %(minutes)s * 60 - %(bucket)s)
    UNION
    SELECT j.id FROM background_jobs j WHERE j.state = 'queued'
),
-- Each event with its neighbours in the job's history: a job sits in the queue from a
-- 'queued' or 'retried' event to the next event; an attempt runs from 'started' to
-- the next event.
events AS (
    SELECT e.job_id, e.type, e.at, e.attempt,
           lag(e.type) OVER history AS previous_type,
           lag(e.at) OVER history AS previous_at,
           lag(e.error) OVER history AS previous_error,
           lead(e.at) OVER history AS next_at
    FROM job_events e
    WHERE e.job_id IN (SELECT job_id FROM jobs)
      AND e.type NOT IN ('cancel_requested', 'rescheduled')  -- an operator's notes
    WINDOW history AS (PARTITION BY e.job_id ORDER BY e.id)
),
-- Pickup latency: from when the attempt could run to its start. The latest attempt
-- could run from the row's run_at (a schedule, or a retry's backoff); an earlier one
-- from its 'queued' event, or after a retry from the 'retried' event plus the backoff
-- the worker wrote in its error (retry_in). Attempts whose start is unknown (a retry
-- without retry_in, e.g. an operator's) are left out rather than guessed.
pickups AS (
    SELECT date_bin(bounds.width, e.at, timestamptz '2001-01-01') AS minute,
           extract(epoch FROM e.at - CASE
               WHEN e.attempt = j.attempts THEN greatest(e.previous_at, j.run_at)
               WHEN e.previous_type = 'queued' THEN e.previous_at
               WHEN jsonb_typeof(e.previous_error -> 'retry_in') = 'number'
               THEN e.previous_at
                    + make_interval(secs => (e.previous_error ->> 'retry_in')::float8)
           END) AS seconds
    FROM events e JOIN background_jobs j ON j.id = e.job_id, bounds
    WHERE e.type = 'started' AND e.at >= bounds.since
),
runs AS (
    SELECT date_bin(bounds.width, e.next_at, timestamptz '2001-01-01') AS minute,
           extract(epoch FROM e.next_at - e.at) AS seconds
    FROM events e, bounds
    WHERE e.type = 'started' AND e.next_at >= bounds.since
),
finished AS (
    SELECT date_bin(bounds.width, e.at, timestamptz '2001-01-01') AS minute,
           count(*) FILTER (WHERE e.type = 'completed') AS completed,
           count(*) FILTER (WHERE e.type = 'failed') AS failed,
           count(*) FILTER (WHERE e.type = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE e.type = 'retried') AS retried
    FROM events e, bounds
    WHERE e.type IN ('completed', 'failed', 'cancelled', 'retried') AND e.at >= bounds.since
    GROUP BY 1
),
-- Queue depth at each bucket's end: the queue stays (from a 'queued' or 'retried' event
-- to the next event) that cover that moment, as one running sum over time of +1 at each
-- stay's start and -1 at its end, read at the bucket ends (a change at the very moment
-- counts first). One pass in time order, not a join of every bucket with every stay.
depth_timeline AS (
    SELECT e.at AS at, 1 AS delta, NULL::timestamptz AS minute
    FROM events e WHERE e.type IN ('queued', 'retried')
    UNION ALL
    SELECT e.next_at, -1, NULL
    FROM events e WHERE e.type IN ('queued', 'retried') AND e.next_at IS NOT NULL
    UNION ALL
    SELECT least(m.minute + bounds.width, bounds.until), 0, m.minute
    FROM minutes m, bounds
),
depth AS (
    SELECT minute, queued FROM (
        SELECT minute,
               sum(delta) OVER (ORDER BY at, minute NULLS FIRST ROWS UNBOUNDED PRECEDING)
                   AS queued
        FROM depth_timeline
    ) AS running
    WHERE minute IS NOT NULL
),
pickup_stats AS (
    SELECT minute, count(*) AS samples,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY seconds) AS p
    FROM pickups WHERE seconds >= 0  -- NULL: unknown start; < 0: run_at moved since
    GROUP BY GROUPING SETS ((minute), ())
),
run_stats AS (
    SELECT minute, count(*) AS samples,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY seconds) AS p
    FROM runs
    GROUP BY GROUPING SETS ((minute), ())
),
rows AS (
    SELECT m.minute FROM minutes m
    UNION ALL
    SELECT NULL
)
SELECT r.minute,
       coalesce(f.completed, 0) AS completed,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled,
       coalesce(f.retried, 0) AS retried,
       coalesce(d.queued, 0) AS queued,
       coalesce(p.samples, 0) AS pickups,
       p.p AS pickup_seconds,
       coalesce(x.samples, 0) AS runs,
       x.p AS run_seconds
FROM rows r
LEFT JOIN finished f ON f.minute = r.minute
LEFT JOIN depth d ON d.minute = r.minute
LEFT JOIN pickup_stats p ON p.minute IS NOT DISTINCT FROM r.minute
LEFT JOIN run_stats x ON x.minute IS NOT DISTINCT FROM r.minute
ORDER BY r.minute NULLS LAST

-- name: running_jobs
-- What the workers run now (errands.operations.workers names them by id).
SELECT j.id, j.kind, j.started_at, j.progress
FROM background_jobs j
WHERE j.state = 'running'
ORDER BY j.started_at
