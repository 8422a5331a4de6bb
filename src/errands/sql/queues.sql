-- The queues (errands.queues), by name. Values are always parameters.

-- name: overview
-- Every queue that has jobs waiting or running, finished some in the last hour, is
-- paused, or is a registered kind's default: jobs ready now, scheduled later, running,
-- the oldest ready job's received_at (the server's clock, never a client's), and jobs
-- finished in the last hour. Read on the partial indexes of queued and of running jobs
-- (an OR, so that the planner takes each) and job_events' (at) index: no walk of the
-- finished jobs.
WITH live AS (
    SELECT j.queue,
           count(*) FILTER (WHERE j.state = 'queued' AND j.run_at <= now()) AS ready,
           count(*) FILTER (WHERE j.state = 'queued' AND j.run_at > now()) AS scheduled,
           count(*) FILTER (WHERE j.state = 'running') AS running,
           min(j.received_at) FILTER (WHERE j.state = 'queued' AND j.run_at <= now())
               AS oldest_waiting
    FROM background_jobs j
    WHERE j.state = 'queued' OR j.state = 'running'
    GROUP BY j.queue
),
finished AS (
    SELECT j.queue,
           count(*) FILTER (WHERE e.type = 'completed') AS completed,
           count(*) FILTER (WHERE e.type = 'failed') AS failed
    FROM job_events e JOIN background_jobs j ON j.id = e.job_id
    WHERE e.at >= now() - interval '1 hour' AND e.type IN ('completed', 'failed')
    GROUP BY j.queue
),
names AS (
    SELECT queue FROM live
    UNION SELECT queue FROM finished
    UNION SELECT queue FROM errands_queue_pauses
    UNION SELECT queue FROM errands_kinds WHERE queue IS NOT NULL
)
SELECT n.queue AS name,
       coalesce(l.ready, 0) AS ready,
       coalesce(l.scheduled, 0) AS scheduled,
       coalesce(l.running, 0) AS running,
       l.oldest_waiting,
       extract(epoch FROM now() - l.oldest_waiting)::float8 AS oldest_age,
       coalesce(f.completed, 0) AS completed_last_hour,
       coalesce(f.failed, 0) AS failed_last_hour,
       p.queue IS NOT NULL AS paused,
       p.paused_at,
       p.paused_by
FROM names n
LEFT JOIN live l ON l.queue = n.queue
LEFT JOIN finished f ON f.queue = n.queue
LEFT JOIN errands_queue_pauses p ON p.queue = n.queue
ORDER BY n.queue

-- name: pause
-- Workers skip a paused queue from their next claim on (errands_claim_kinds).
INSERT INTO errands_queue_pauses (queue, paused_by) VALUES (%(queue)s, %(operator)s)
ON CONFLICT (queue) DO NOTHING
RETURNING queue

-- name: resume
-- The workers are woken, as for a new job: the queue's backlog is claimable again.
WITH resumed AS (
    DELETE FROM errands_queue_pauses WHERE queue = %(queue)s RETURNING queue
)
SELECT r.queue, pg_notify('errands_jobs', r.queue) FROM resumed r

-- name: schedules
-- Each periodic schedule a worker declared (0011) or that ever ran: its expression, and
-- its newest tick (kept for good, see 0004): when it last ran, the job it made and that
-- job's state (NULL once pruned).
SELECT coalesce(s.name, t.schedule) AS name, s.cron, s.timezone, s.kind, s.seen_at,
       t.tick AS last_tick, t.enqueued_at, t.job_id, j.state AS job_state
FROM errands_schedules s
FULL JOIN (
    SELECT DISTINCT ON (schedule) schedule, tick, enqueued_at, job_id
    FROM errands_schedule_ticks ORDER BY schedule, tick DESC
) AS t ON t.schedule = s.name
LEFT JOIN background_jobs j ON j.id = t.job_id
ORDER BY 1
