-- Every query errands runs against the job tables, by name. Values are always
-- parameters; identifiers are fixed here.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS errands_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM errands_migrations ORDER BY version

-- name: migrations_table_exists
SELECT to_regclass('errands_migrations') IS NOT NULL

-- name: record_migration
INSERT INTO errands_migrations (version, name) VALUES (%s, %s)

-- name: enqueue
-- Unset options (NULL) take the kind's registered defaults (errands_kind_defaults).
-- Returns nothing when the id exists already, or when an unfinished job has the same
-- unique key: enqueue_existing then finds which. waiting_for: how many jobs it runs
-- after, at most (wait_for, next in the same transaction, counts them exactly), so a job
-- that will wait never takes a turn only to give it back.
INSERT INTO background_jobs
    (id, "timestamp", kind, payload, owner, max_attempts, timeout_seconds, run_at,
     priority, queue, unique_key, waiting_for)
VALUES
    (%(id)s, now(), %(kind)s, %(payload)s, %(owner)s, %(max_attempts)s, %(timeout)s,
     coalesce(%(run_at)s, now()), %(priority)s, %(queue)s, %(unique_key)s, %(waiting_for)s)
ON CONFLICT DO NOTHING
RETURNING id

-- name: enqueue_existing
-- The job an enqueue that inserted nothing stands for: the same id, else the unfinished
-- job with the same unique key (and owner).
SELECT id FROM background_jobs WHERE id = %(id)s
UNION ALL
(SELECT id FROM background_jobs
 WHERE %(unique_key)s::text IS NOT NULL
   AND coalesce(owner, '') = coalesce(%(owner)s, '')
   AND unique_key = %(unique_key)s
   AND state IN ('queued', 'running'))
LIMIT 1

-- name: enqueue_many
-- One statement for the whole batch: one round trip, and the statement-level triggers
-- fire once, not once per job. waiting_for: as in enqueue. What the row triggers would
-- work out row by row is worked out once for the batch, by the same rules: unset options
-- take the kind's registered defaults (errands_kind_defaults), and a runnable batch of
-- one owner takes consecutive turns from the owner's next one (errands_take_turn gives
-- each row one past the owner's last queued turn, which is the row before it: the same
-- turns, without three lookups per row). The payloads come as one JSON array (json, not
-- jsonb: its 1 GB limit, not jsonb's 256 MB), in the ids' order. The ids are new (made
-- by enqueue_many), so no ON CONFLICT: its speculative insertion cost a WAL record and
-- a check per row.
INSERT INTO background_jobs
    (id, "timestamp", kind, payload, owner, max_attempts, timeout_seconds, run_at,
     priority, queue, waiting_for, turn)
SELECT batch.id, now(), %(kind)s, batch.payload::jsonb, %(owner)s,
       coalesce(%(max_attempts)s::integer, registered.max_attempts, 3), %(timeout)s,
       coalesce(%(run_at)s::timestamptz, now()),
       coalesce(%(priority)s::integer, registered.priority, 0),
       coalesce(%(queue)s::text, registered.queue, 'default'),
       %(waiting_for)s::integer,
       CASE WHEN coalesce(%(run_at)s::timestamptz, now()) <= now()
                 AND %(waiting_for)s::integer = 0
            THEN next.turn + batch.n - 1 END
FROM ROWS FROM (unnest(%(ids)s::uuid[]), json_array_elements(%(payloads)s::json))
     WITH ORDINALITY AS batch (id, payload, n)
LEFT JOIN errands_kinds AS registered ON registered.kind = %(kind)s
CROSS JOIN (SELECT errands_next_turn(%(owner)s) AS turn) AS next

-- name: register_kinds
-- What this worker's registry says about its kinds; the newest registration wins.
INSERT INTO errands_kinds AS k
    (kind, max_attempts, priority, queue, max_running, clients, client_priority,
     payload_schema, max_running_per_owner)
SELECT kind, max_attempts, priority, queue, max_running, clients, client_priority,
       payload_schema::jsonb, max_running_per_owner
FROM unnest(%(kinds)s::text[], %(max_attempts)s::integer[], %(priorities)s::integer[],
            %(job_queues)s::text[], %(max_running)s::integer[], %(clients)s::boolean[],
            %(client_priorities)s::integer[], %(payload_schemas)s::text[],
            %(max_running_per_owner)s::integer[])
     AS registered (kind, max_attempts, priority, queue, max_running, clients,
                    client_priority, payload_schema, max_running_per_owner)
ON CONFLICT (kind) DO UPDATE
SET max_attempts = excluded.max_attempts,
    priority = excluded.priority,
    queue = excluded.queue,
    max_running = excluded.max_running,
    clients = excluded.clients,
    client_priority = excluded.client_priority,
    payload_schema = excluded.payload_schema,
    max_running_per_owner = excluded.max_running_per_owner,
    registered_at = now()

-- name: declare_schedules
-- The schedules a worker runs, written as it starts them, so that the console and
-- `errands schedules` show each one's next run without the registry's code.
INSERT INTO errands_schedules (name, cron, timezone, kind)
SELECT * FROM unnest(%(names)s::text[], %(crons)s::text[], %(zones)s::text[], %(kinds)s::text[])
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, timezone = excluded.timezone, kind = excluded.kind, seen_at = now()

-- name: last_ticks
SELECT schedule, max(tick) AS tick FROM errands_schedule_ticks
WHERE schedule = ANY(%(schedules)s) GROUP BY schedule

-- name: enqueue_tick
-- A schedule's tick becomes one job: the tick's primary key lets one worker in, and a
-- tick older than one already recorded (a worker whose clock or sleep lags) is skipped.
-- Ticks older than a day go, except each schedule's newest.
WITH tick AS (
    INSERT INTO errands_schedule_ticks (schedule, tick, job_id)
    SELECT %(schedule)s, %(tick)s, %(id)s
    WHERE NOT EXISTS (
        SELECT FROM errands_schedule_ticks
        WHERE schedule = %(schedule)s AND tick >= %(tick)s)
    ON CONFLICT DO NOTHING
    RETURNING job_id
), pruned AS (
    DELETE FROM errands_schedule_ticks
    WHERE schedule = %(schedule)s AND tick < %(tick)s
      AND enqueued_at < now() - interval '1 day'
)
INSERT INTO background_jobs (id, "timestamp", kind, payload)
SELECT job_id, now(), %(kind)s, %(payload)s FROM tick
ON CONFLICT DO NOTHING
RETURNING id

-- name: renew_lease
-- Takes or extends this worker's lease. Waits while recover_orphans holds the row, so
-- that jobs_taken_back, next in the same transaction, sees what it did.
INSERT INTO errands_workers (id, hostname, pid, queues, kinds, lease_expires_at)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(kinds)s,
        now() + make_interval(secs => %(lease)s))
ON CONFLICT (id) DO UPDATE SET lease_expires_at = excluded.lease_expires_at

-- name: jobs_taken_back
-- Of the jobs this worker runs, those it no longer holds: recovered by another worker
-- while its lease had lapsed.
SELECT h.id FROM unnest(%(ids)s::uuid[]) AS h (id)
WHERE NOT EXISTS (
    SELECT 1 FROM background_jobs j
    WHERE j.id = h.id AND j.state = 'running' AND j.lease_owner = %(worker)s)

-- name: release_lease
DELETE FROM errands_workers WHERE id = %(id)s

-- name: claim_jobs
-- The outcomes of the jobs that just ended (ids, states, ... : empty arrays for none)
-- and the next claim, in one statement (errands_finish_and_claim, 0018).
SELECT * FROM errands_finish_and_claim(
    %(worker)s, %(ids)s::uuid[], %(states)s::text[], %(results)s::jsonb[],
    %(errors)s::jsonb[], %(retry_in)s::float8[], %(kinds)s, %(queues)s, %(limit)s)

-- name: finish_jobs
-- Ends a batch of jobs when no claim follows (errands_finish, 0018).
SELECT ended AS id
FROM errands_finish(%(worker)s, %(ids)s::uuid[], %(states)s::text[], %(results)s::jsonb[],
                    %(errors)s::jsonb[], %(retry_in)s::float8[]) AS ended

-- name: write_progress
UPDATE background_jobs AS j
SET progress = p.progress, progress_message = coalesce(p.message, j.progress_message),
    _txid = pg_current_xact_id()  -- skips the stamping row trigger (0017)
FROM unnest(%(ids)s::uuid[], %(progress)s::real[], %(messages)s::text[])
     AS p (id, progress, message)
WHERE j.id = p.id AND j.lease_owner = %(worker)s AND j.state = 'running'

-- name: cancel_requested
SELECT id FROM background_jobs
WHERE id = ANY(%(ids)s::uuid[]) AND cancelled AND state = 'running'

-- name: recover_orphans
-- Jobs whose worker stopped heartbeating go back to the queue (or fail, if that was
-- their last attempt). The attempt that was lost still counts, so a job that kills its
-- worker every time cannot loop forever. Expired workers' rows are locked: a worker
-- renewing its lease at this moment is either skipped (it holds the lock: alive) or
-- waits for this statement and then learns which of its jobs were taken back.
WITH expired AS (
    SELECT id FROM errands_workers WHERE lease_expires_at <= now()
    FOR UPDATE SKIP LOCKED
),
lost AS (
    SELECT j.id FROM background_jobs j
    WHERE j.state = 'running'
      AND (j.lease_owner IN (SELECT id FROM expired)
           OR NOT EXISTS (SELECT 1 FROM errands_workers w WHERE w.id = j.lease_owner))
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE background_jobs AS j
SET state = CASE WHEN j.cancelled THEN 'cancelled'
                 WHEN j.attempts >= j.max_attempts THEN 'failed'
                 ELSE 'queued' END,
    error = jsonb_build_object(
        'type', 'WorkerLost',
        'message', 'worker ' || coalesce(j.lease_owner, '?')
                   || ' stopped heartbeating during attempt ' || j.attempts,
        'attempt', j.attempts),
    lease_owner = NULL,
    run_at = now(),
    finished_at = CASE WHEN j.cancelled OR j.attempts >= j.max_attempts THEN now() END
FROM lost
WHERE j.id = lost.id
RETURNING j.id, j.state

-- name: forget_dead_workers
DELETE FROM errands_workers WHERE lease_expires_at < now() - interval '1 hour'

-- name: queued_unknown_kinds
SELECT kind, count(*) AS count FROM background_jobs
WHERE state = 'queued'
  AND kind <> ALL(%(kinds)s)
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
GROUP BY kind ORDER BY kind

-- name: served_queues
-- The queues workers serve, for /metrics' labels: those a running worker lists, the
-- queues of registered kinds, and 'default'.
SELECT name FROM (
    SELECT unnest(queues) AS name FROM errands_workers WHERE lease_expires_at > now()
    UNION SELECT queue FROM errands_kinds WHERE queue IS NOT NULL
    UNION SELECT 'default'
) AS served
ORDER BY name LIMIT %(limit)s

-- name: wait_for
-- The jobs just inserted in this transaction run after the jobs `after` (see
-- errands_wait_for in 0010_workflows.sql).
SELECT errands_wait_for(%(jobs)s::uuid[], %(after)s::uuid[], %(on_failure)s)

-- name: dependencies
-- A job's dependencies, in the order they were named, with how each ended.
SELECT d.id, d.kind, d.state, d.result
FROM job_dependencies e JOIN background_jobs d ON d.id = e.depends_on
WHERE e.job_id = %(id)s
ORDER BY e.position

-- name: steps
-- A job's stored steps, oldest first.
SELECT name, result, attempt, at FROM job_steps WHERE job_id = %(id)s ORDER BY at, name

-- name: save_step
-- Stores a step's result if this worker still holds the job; the first result stored
-- for a name wins (another attempt's, if one got there first). `held` is false when the
-- job was taken back from this worker.
WITH held AS (
    SELECT id FROM background_jobs
    WHERE id = %(id)s AND state = 'running' AND lease_owner = %(worker)s
), saved AS (
    INSERT INTO job_steps (job_id, name, result, attempt)
    SELECT id, %(name)s, %(result)s::jsonb, %(attempt)s FROM held
    ON CONFLICT DO NOTHING
    RETURNING result
)
SELECT EXISTS (SELECT FROM held) AS held,
       coalesce((SELECT result FROM saved),
                (SELECT result FROM job_steps WHERE job_id = %(id)s AND name = %(name)s))
           AS result

-- name: sleep_step
-- A sleep is a step whose result is when it ends: stored the first time, read back by
-- later attempts. While it has not ended, this attempt is not counted (the job is
-- suspended, not failed): the worker then sends the job back to the queue until then.
WITH held AS (
    SELECT id FROM background_jobs
    WHERE id = %(id)s AND state = 'running' AND lease_owner = %(worker)s
), saved AS (
    INSERT INTO job_steps (job_id, name, result, attempt)
    SELECT id, %(name)s, to_jsonb(now() + make_interval(secs => %(seconds)s)), %(attempt)s
    FROM held
    ON CONFLICT DO NOTHING
    RETURNING result
), step AS (
    SELECT extract(epoch FROM (
        coalesce((SELECT result FROM saved),
                 (SELECT result FROM job_steps WHERE job_id = %(id)s AND name = %(name)s))
        #>> '{}')::timestamptz - now())::float8 AS remaining
), uncounted AS (
    UPDATE background_jobs AS j SET attempts = j.attempts - 1
    FROM held, step
    WHERE j.id = held.id AND step.remaining > 0
)
SELECT EXISTS (SELECT FROM held) AS held, remaining FROM step

-- name: ask
-- A handler asks its job's owner a question. If this very question was answered (or
-- timed out, and the handler gave a default), the answer becomes the step's stored
-- result and the question goes; if it timed out without a default, the question goes
-- and `timed_out` tells the handler to fail; else the question is set (once) and the
-- job waits for its answer: one more in waiting_for, a deadline if the handler gave a
-- timeout, and this attempt not counted (the worker then sends the job back to the
-- queue, where it has no turn until answered or timed out). `answer` is the step's
-- stored result (the first one stored wins).
WITH held AS (
    SELECT id, question, answer FROM background_jobs
    WHERE id = %(id)s AND state = 'running' AND lease_owner = %(worker)s
), this AS (
    SELECT id,
           answer IS NOT NULL OR (question ? 'timed_out' AND question ? 'default') AS settled,
           answer IS NULL AND question ? 'timed_out' AND NOT question ? 'default' AS timed_out,
           coalesce(answer, question -> 'default') AS result
    FROM held WHERE question ->> 'name' = %(name)s
), answered AS (
    INSERT INTO job_steps (job_id, name, result, attempt)
    SELECT id, %(name)s, result, %(attempt)s FROM this WHERE settled
    ON CONFLICT (job_id, name) DO UPDATE SET result = job_steps.result
    RETURNING result
), asking AS (
    SELECT id FROM held WHERE NOT EXISTS (SELECT FROM this)
), changed AS (
    UPDATE background_jobs AS j
    SET question = CASE WHEN a.id IS NOT NULL THEN
                       jsonb_build_object('name', %(name)s, 'text', %(text)s::text,
                                          'choices', %(choices)s::jsonb, 'asked_at', now())
                       || CASE WHEN %(timeout)s::float8 IS NULL THEN '{}'::jsonb ELSE
                              jsonb_build_object('deadline', now() + make_interval(secs => %(timeout)s::float8))
                          END
                       || CASE WHEN %(default)s::jsonb IS NULL THEN '{}'::jsonb ELSE
                              jsonb_build_object('default', %(default)s::jsonb)
                          END
                   END,
        answer = NULL,
        question_deadline = CASE WHEN a.id IS NOT NULL THEN
                                now() + make_interval(secs => %(timeout)s::float8)
                            END,
        waiting_for = j.waiting_for + CASE WHEN a.id IS NOT NULL THEN 1 ELSE 0 END,
        attempts = j.attempts - CASE WHEN a.id IS NOT NULL THEN 1 ELSE 0 END
    FROM held LEFT JOIN asking AS a ON true
    WHERE j.id = held.id
      AND (a.id IS NOT NULL OR EXISTS (SELECT FROM this WHERE settled OR timed_out))
)
SELECT EXISTS (SELECT FROM held) AS held,
       EXISTS (SELECT FROM answered) AS answered,
       EXISTS (SELECT FROM this WHERE timed_out) AS timed_out,
       (SELECT result FROM answered) AS answer

-- name: answer
-- The answer to the question pending on a job, from its owner (`owner`; NULL: server
-- code or an operator, any job), if it answers the question (errands_answers: one of
-- its choices, or a text of at most `max_length` characters). The conditions are
-- checked again on the row as it is updated, so an answer racing another one or the
-- question's deadline applies at most once. The job waits for one fewer thing, takes a
-- turn when it waits for nothing, and the workers are woken; an 'answered' event names
-- the operator (errands_operator(), NULL for the owner).
WITH answered AS (
    UPDATE background_jobs
    SET answer = %(answer)s::jsonb,
        question_deadline = NULL,
        waiting_for = waiting_for - 1,
        turn = CASE WHEN state = 'queued' THEN NULL ELSE turn END
    WHERE id = %(id)s
      AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
      AND state IN ('queued', 'running')
      AND errands_question_pending(question, answer)
      AND errands_answers(question, %(answer)s::jsonb, %(max_length)s)
    RETURNING id, queue, attempts
), noted AS (
    INSERT INTO job_events (job_id, type, attempt, operator)
    SELECT id, 'answered', attempts, errands_operator() FROM answered
)
SELECT queue, errands_wake(queue) FROM answered

-- name: question_of
-- Why an answer did not apply: the job's owner, state and question as they are now.
SELECT owner, state, question, answer FROM background_jobs WHERE id = %(id)s
