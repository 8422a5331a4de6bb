-- The console's charts (errands.charts), by name: rollups of job_events
-- (errands_chart_rollups, 0011) and the reads over them. Values are always parameters.

-- name: minutes
-- The rollup of the events in [events_from, events_to), one row per minute, kind and queue.
-- Each event is read with the event before it in its job's history (one probe of
-- job_events_job_idx; an operator's notes are not transitions and are skipped): a job
-- enters the queue with a 'queued' or 'retried' event and leaves it with the next; an
-- attempt runs from 'started' to the next event. Pickup latency is from when the
-- attempt could run to its start: the latest attempt from the row's run_at (a
-- schedule, or a retry's backoff); an earlier one from its 'queued' event, or after a
-- retry from the 'retried' event plus the backoff the worker wrote in its error
-- (retry_in). Attempts whose start is unknown (a retry without retry_in, such as an
-- operator's) are left out rather than guessed. Events of deleted jobs are gone (and
-- were not rolled up if they went before their minute was).
SELECT date_trunc('minute', e.at) AS minute, j.kind, j.queue,
       count(*) FILTER (WHERE e.type = 'completed')::integer AS completed,
       count(*) FILTER (WHERE e.type = 'failed')::integer AS failed,
       count(*) FILTER (WHERE e.type = 'cancelled')::integer AS cancelled,
       count(*) FILTER (WHERE e.type = 'retried')::integer AS retried,
       count(*) FILTER (WHERE e.type IN ('queued', 'retried'))::integer AS entered,
       count(*) FILTER (WHERE p.type IN ('queued', 'retried')
                          AND e.type NOT IN ('queued', 'retried'))::integer AS left_queue,
       errands_histogram(array_agg(errands_histogram_bucket(d.pickup))
                         FILTER (WHERE d.pickup >= 0)) AS pickups,
       errands_histogram(array_agg(errands_histogram_bucket(d.run))
                         FILTER (WHERE d.run IS NOT NULL)) AS runs
FROM job_events e
JOIN background_jobs j ON j.id = e.job_id
LEFT JOIN LATERAL (
    SELECT p.type, p.at, p.error FROM job_events p
    WHERE p.job_id = e.job_id AND p.id < e.id
      AND p.type NOT IN ('cancel_requested', 'rescheduled', 'answered')
    ORDER BY p.id DESC
    LIMIT 1
) AS p ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN e.type = 'started' THEN extract(epoch FROM e.at - CASE
               WHEN e.attempt = j.attempts THEN greatest(p.at, j.run_at)
               WHEN p.type = 'queued' THEN p.at
               WHEN jsonb_typeof(p.error -> 'retry_in') = 'number'
               THEN p.at + make_interval(secs => (p.error ->> 'retry_in')::float8)
           END) END::float8 AS pickup,
           CASE WHEN p.type = 'started' AND e.type <> 'started'
               THEN extract(epoch FROM e.at - p.at) END::float8 AS run
) AS d
WHERE e.at >= %(events_from)s AND e.at < %(events_to)s
  AND e.type NOT IN ('cancel_requested', 'rescheduled', 'answered')
GROUP BY 1, 2, 3

-- name: lock
-- One roll-up at a time (two services share a database); the others skip it.
SELECT pg_try_advisory_xact_lock(hashtext('errands_chart_rollup'))

-- name: clock
-- The database's clock, and how far the rollups reach (NULL: nothing rolled up yet).
SELECT now(), (SELECT upto FROM errands_chart_rollup)

-- name: set_upto
WITH gone AS (DELETE FROM errands_chart_rollup)
INSERT INTO errands_chart_rollup (upto) VALUES (%(upto)s)

-- name: store
-- The rows of the "minutes" query above, stored as minutes, quarters of an hour and
-- hours; a quarter or an hour that a roll-up began before gets the rest added to it.
WITH minutes AS (
{minutes}
),
widths AS (
    SELECT w.width, date_bin(make_interval(secs => w.width), m.minute,
                             timestamptz '2001-01-01') AS start,
           m.kind, m.queue, sum(m.completed)::integer AS completed,
           sum(m.failed)::integer AS failed, sum(m.cancelled)::integer AS cancelled,
           sum(m.retried)::integer AS retried, sum(m.entered)::integer AS entered,
           sum(m.left_queue)::integer AS left_queue,
           errands_histogram_total(array_agg(m.pickups)) AS pickups,
           errands_histogram_total(array_agg(m.runs)) AS runs
    FROM minutes m CROSS JOIN (VALUES (60), (900), (3600)) AS w (width)
    GROUP BY 1, 2, 3, 4
)
INSERT INTO errands_chart_rollups AS r
    (width, start, kind, queue, completed, failed, cancelled, retried, entered, left_queue,
     pickups, runs)
SELECT * FROM widths
ON CONFLICT (width, start, kind, queue) DO UPDATE SET
    completed = r.completed + excluded.completed,
    failed = r.failed + excluded.failed,
    cancelled = r.cancelled + excluded.cancelled,
    retried = r.retried + excluded.retried,
    entered = r.entered + excluded.entered,
    left_queue = r.left_queue + excluded.left_queue,
    pickups = errands_histogram_add(r.pickups, excluded.pickups),
    runs = errands_histogram_add(r.runs, excluded.runs)

-- name: forget
-- Rollups older than the longest window the charts show go.
DELETE FROM errands_chart_rollups WHERE start < %(before)s

-- name: read
-- The window [since, until) in buckets of %(bucket)s seconds, per group (%(split)s:
-- 'kind', 'queue', or NULL for one group ''), optionally of one kind and/or queue:
-- the rollups of %(width)s seconds before %(upto)s (the widest the bars are a multiple
-- of) and the minutes after it rolled up on the fly
-- (the "minutes" query from upto to now), so a chart is exact to the moment.
WITH rows AS (
    SELECT m.start AS minute, m.kind, m.queue, m.completed, m.failed, m.cancelled,
           m.retried, m.entered, m.left_queue, m.pickups, m.runs
    FROM errands_chart_rollups m
    WHERE m.width = %(width)s AND m.start >= %(since)s AND m.start < %(upto)s
    UNION ALL
    SELECT * FROM ({minutes}) AS tail
)
SELECT date_bin(make_interval(secs => %(bucket)s), r.minute, %(since)s) AS minute,
       CASE %(split)s::text WHEN 'kind' THEN r.kind WHEN 'queue' THEN r.queue ELSE '' END
           AS "group",
       sum(r.completed)::bigint AS completed, sum(r.failed)::bigint AS failed,
       sum(r.cancelled)::bigint AS cancelled, sum(r.retried)::bigint AS retried,
       sum(r.entered - r.left_queue)::bigint AS net,
       errands_histogram_total(array_agg(r.pickups)) AS pickups,
       errands_histogram_total(array_agg(r.runs)) AS runs
FROM rows r
WHERE r.minute >= %(since)s
  AND (%(kind)s::text IS NULL OR r.kind = %(kind)s::text)
  AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
GROUP BY 1, 2

-- name: depth_now
-- Jobs waiting now per group, on background_jobs_state_received_idx (its queued part
-- carries kind and queue): where the queue-depth lines end; they are drawn back from
-- here through each bucket's entries and exits.
SELECT CASE %(split)s::text WHEN 'kind' THEN j.kind WHEN 'queue' THEN j.queue ELSE '' END,
       count(*)
FROM background_jobs j
WHERE j.state = 'queued'
  AND (%(kind)s::text IS NULL OR j.kind = %(kind)s::text)
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
GROUP BY 1
