-- Workflows (docs/workflows.md): jobs that run after other jobs, and durable steps.

-- A job runs after the jobs it depends on. An edge is added only as its job is created,
-- and only to jobs that exist already (errands_wait_for), so the graph cannot hold a
-- cycle. `position` keeps the order the caller named them in (a chain's results, a
-- group's members). No foreign key on depends_on: deleting a dependency is handled by
-- errands_dependencies_deleted (its waiting dependents end cancelled), which a cascade
-- would have run after the edges were gone.
CREATE TABLE job_dependencies (
    job_id uuid NOT NULL REFERENCES background_jobs (id) ON DELETE CASCADE,
    depends_on uuid NOT NULL,
    position integer NOT NULL,
    on_failure text NOT NULL DEFAULT 'cancel' CHECK (on_failure IN ('cancel', 'run')),
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_depends_on_idx ON job_dependencies (depends_on);

-- How many of the job's dependencies have not ended yet. While it is above zero the job
-- has no turn, so no claim sees it (the claim index holds only jobs with a turn) and
-- the claim's staging skips it: jobs without dependencies are claimed exactly as before.
ALTER TABLE background_jobs ADD COLUMN waiting_for integer NOT NULL DEFAULT 0
    CHECK (waiting_for >= 0);

DROP INDEX background_jobs_due_idx;
CREATE INDEX background_jobs_due_idx
    ON background_jobs (run_at) WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0;

-- The number of a job's dependencies that are still queued or running.
CREATE FUNCTION errands_unfinished_dependencies(job uuid) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM job_dependencies e
    JOIN background_jobs d ON d.id = e.depends_on
    WHERE e.job_id = job AND d.state IN ('queued', 'running')
$$;

-- 0007's rule, and: a job waiting for dependencies (or an answer) has no turn. A job
-- sent back to the queue after it ended (an operator's retry) counts what it still
-- waits for again: a dependency that failed no longer holds it (the operator asked for
-- it to run); a question still unanswered does.
CREATE OR REPLACE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IN ('completed', 'failed', 'cancelled') THEN
        NEW.waiting_for := errands_unfinished_dependencies(NEW.id)
                           + (NEW.question IS NOT NULL AND NEW.answer IS NULL)::integer;
    END IF;
    IF NEW.run_at > now() OR NEW.waiting_for > 0 THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;

-- 0007's staging, skipping jobs that still wait for dependencies.
CREATE OR REPLACE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()) THEN
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

-- Adds the dependencies `after` to `jobs`, which the caller has just inserted in this
-- transaction. The dependencies are locked (FOR SHARE, in id order) until the caller
-- commits: one that ends meanwhile waits, and its release (below) then sees the new
-- edges; one that ended before is counted as ended here. Refused: an unknown
-- dependency, a job depending on itself, and new dependencies of a job that others
-- already wait for (the only way to close a cycle).
CREATE FUNCTION errands_wait_for(jobs uuid[], after uuid[], on_failure text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM FROM background_jobs WHERE id = ANY(after) ORDER BY id FOR SHARE;
    SELECT a INTO missing FROM unnest(after) AS a
    WHERE NOT EXISTS (SELECT FROM background_jobs WHERE id = a) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'job % does not exist: a job can only run after jobs that exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF jobs && after OR EXISTS (SELECT FROM job_dependencies WHERE depends_on = ANY(jobs)) THEN
        RAISE EXCEPTION 'a job can take dependencies only as it is created'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO job_dependencies (job_id, depends_on, position, on_failure)
    SELECT job.id, named.id, named.position, errands_wait_for.on_failure
    FROM unnest(jobs) AS job (id)
    CROSS JOIN (SELECT id, min(n)::integer AS position
                FROM unnest(after) WITH ORDINALITY AS a (id, n) GROUP BY id) AS named
    ON CONFLICT DO NOTHING;
    -- Waiting for the unfinished ones; ended already if one failed (unless told to run).
    UPDATE background_jobs AS j
    SET waiting_for = s.unfinished,
        turn = NULL,
        cancelled = j.cancelled OR s.cause IS NOT NULL,
        error = coalesce(s.cause, j.error)
    FROM (SELECT count(*) FILTER (WHERE d.state IN ('queued', 'running')) AS unfinished,
                 (array_agg(errands_dependency_error(d.id, d.kind, d.state, d.error))
                  FILTER (WHERE d.state IN ('failed', 'cancelled')
                            AND errands_wait_for.on_failure = 'cancel'))[1] AS cause
          FROM background_jobs d WHERE d.id = ANY(after)) AS s
    WHERE j.id = ANY(jobs) AND j.state = 'queued';
END
$$;

-- What a job cancelled because of a dependency says: which one, and how it ended.
CREATE FUNCTION errands_dependency_error(dependency uuid, kind text, state text, error jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'type', 'DependencyFailed',
        'message', format('job %s (%s) it runs after %s', dependency, kind,
                          CASE WHEN state = 'failed' THEN 'failed' ELSE 'was ' || state END)
                   || coalesce(': ' || (error ->> 'message'), ''),
        'dependency', dependency)
$$;

-- Dependencies that ended (or went away: 'deleted'): their waiting dependents are
-- released or cancelled, in one pass whatever the depth of the graph.
-- * a dependent is cancelled, with an error naming the cause, when a dependency failed
--   or was cancelled and its edge says 'cancel'; so are, in the same statement, the
--   jobs that wait for it along 'cancel' edges, transitively (a nested trigger per level
--   would run out of stack on a long chain);
-- * otherwise the dependent waits for one fewer; at zero it takes a turn (the turn
--   trigger) and the workers are woken.
-- The dependents are locked in id order first, so two transactions releasing the same
-- jobs cannot deadlock each other.
CREATE FUNCTION errands_end_dependencies(ids uuid[], states text[], kinds text[], errors jsonb[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    PERFORM FROM background_jobs
    WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ANY(ids))
      AND state = 'queued'
    ORDER BY id FOR UPDATE;

    WITH RECURSIVE ended AS (
        SELECT * FROM unnest(ids, states, kinds, errors) AS e (id, state, kind, error)
    ), doomed (id, cause) AS (
        SELECT e.job_id, errands_dependency_error(ended.id, ended.kind, ended.state, ended.error)
        FROM ended JOIN job_dependencies e ON e.depends_on = ended.id
        WHERE ended.state <> 'completed' AND e.on_failure = 'cancel'
        UNION
        SELECT e.job_id, doomed.cause
        FROM doomed JOIN job_dependencies e ON e.depends_on = doomed.id
        JOIN background_jobs j ON j.id = e.job_id
        WHERE e.on_failure = 'cancel' AND j.state = 'queued'
    )
    UPDATE background_jobs AS j
    SET cancelled = true, error = first.cause
    FROM (SELECT DISTINCT ON (id) id, cause FROM doomed ORDER BY id) AS first
    WHERE j.id = first.id AND j.state = 'queued';

    WITH released AS (
        UPDATE background_jobs AS j
        SET waiting_for = greatest(j.waiting_for - r.n, 0), turn = NULL
        FROM (SELECT e.job_id, count(*)::integer AS n
              FROM unnest(ids, states) AS ended (id, state)
              JOIN job_dependencies e ON e.depends_on = ended.id
              WHERE ended.state = 'completed' OR e.on_failure = 'run'
              GROUP BY e.job_id) AS r
        WHERE j.id = r.job_id AND j.state = 'queued'
        RETURNING j.queue, j.waiting_for
    )
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM released WHERE waiting_for = 0;
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
END
$$;

-- Jobs that ended in this statement release their dependents. One call per statement;
-- a statement that ends no job with dependents returns after one look at its rows.
CREATE FUNCTION errands_dependencies_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ended record;
BEGIN
    SELECT array_agg(n.id) AS ids, array_agg(n.state) AS states, array_agg(n.kind) AS kinds,
           array_agg(n.error) AS errors
    INTO ended
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IN ('completed', 'failed', 'cancelled')
      AND o.state NOT IN ('completed', 'failed', 'cancelled')
      -- only jobs something waits for: a finish of jobs without dependents (nearly
      -- every finish) stops here, after one index probe per job
      AND EXISTS (SELECT FROM job_dependencies e WHERE e.depends_on = n.id);
    IF ended.ids IS NOT NULL THEN
        PERFORM errands_end_dependencies(ended.ids, ended.states, ended.kinds, ended.errors);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_dependencies_ended
    AFTER UPDATE ON background_jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_dependencies_ended();

-- A dependency deleted before it ended (an operator's delete) counts as cancelled for
-- its dependents; then every edge to a deleted job goes (pruning finished jobs too).
CREATE FUNCTION errands_dependencies_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    SELECT array_agg(id) AS ids, array_agg('deleted'::text) AS states, array_agg(kind) AS kinds,
           array_agg(NULL::jsonb) AS errors
    INTO gone
    FROM old_rows WHERE state IN ('queued', 'running');
    IF gone.ids IS NOT NULL THEN
        PERFORM errands_end_dependencies(gone.ids, gone.states, gone.kinds, gone.errors);
    END IF;
    DELETE FROM job_dependencies WHERE depends_on IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_dependencies_deleted
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_dependencies_deleted();

-- Durable steps: a step's result, stored before ctx.step returns, so a later attempt of
-- the job gets it back instead of running the step again. ctx.sleep stores its wake-up
-- time as a step too.
CREATE TABLE job_steps (
    job_id uuid NOT NULL REFERENCES background_jobs (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    result jsonb,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Questions to the job's owner (ctx.ask): the question pending on the job, and its
-- answer once given. While a question waits, the job waits for one more thing
-- (waiting_for), so it has no turn and holds no slot; the answer gives it back. A
-- column of the row, not a table of its own, so that it can sync to the owner with the
-- rest of the job (the client's side is not built yet: docs/workflows.md).
ALTER TABLE background_jobs
    ADD COLUMN question jsonb,
    ADD COLUMN answer jsonb;
