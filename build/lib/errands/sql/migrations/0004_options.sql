-- Per-kind settings from the workers' registries, unique jobs, limits on how many jobs
-- of a kind run at once, and the ticks of periodic schedules (docs: README "Write jobs").

-- What the handlers registered for each kind say, written by every worker as it starts
-- (the newest registration wins): the defaults of jobs that do not set their own, and
-- how many jobs of the kind may run at once across every worker (NULL: no limit).
CREATE TABLE errands_kinds (
    kind text PRIMARY KEY,
    max_attempts integer CHECK (max_attempts >= 1),
    priority integer,
    queue text,
    max_running integer CHECK (max_running >= 1),
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- A job that leaves max_attempts, priority or queue unset (NULL, or absent from the
-- INSERT) takes its kind's registered default, else the built-in one. BEFORE triggers
-- run before NOT NULL is checked, so every row still has all three.
ALTER TABLE background_jobs
    ALTER COLUMN max_attempts DROP DEFAULT,
    ALTER COLUMN priority DROP DEFAULT,
    ALTER COLUMN queue DROP DEFAULT;

CREATE FUNCTION errands_kind_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    registered errands_kinds;
BEGIN
    IF NEW.max_attempts IS NULL OR NEW.priority IS NULL OR NEW.queue IS NULL THEN
        SELECT * INTO registered FROM errands_kinds WHERE kind = NEW.kind;
        NEW.max_attempts := coalesce(NEW.max_attempts, registered.max_attempts, 3);
        NEW.priority := coalesce(NEW.priority, registered.priority, 0);
        NEW.queue := coalesce(NEW.queue, registered.queue, 'default');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_kind_defaults
    BEFORE INSERT ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_kind_defaults();

-- Unique jobs: at most one unfinished (queued or running) job per key and owner. Per
-- owner, so that one user's keys can neither reveal nor block another's jobs; jobs
-- enqueued without an owner share one space.
ALTER TABLE background_jobs ADD COLUMN unique_key text
    CHECK (length(unique_key) BETWEEN 1 AND 200);
CREATE UNIQUE INDEX background_jobs_unique_key_idx
    ON background_jobs ((coalesce(owner, '')), unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

-- Periodic schedules: a tick becomes a job only through its row here, and the primary
-- key lets exactly one worker insert it, however many run the schedule (no leader to
-- elect, none to lose). The newest tick of each schedule is kept for good: it is where
-- the schedule resumes after every worker was stopped.
CREATE TABLE errands_schedule_ticks (
    schedule text NOT NULL,
    tick timestamptz NOT NULL,
    job_id uuid NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);

-- The claim walks, for each kind the worker handles, that kind's queued jobs in claim
-- order (highest priority first, then oldest run_at), and takes the best of them. With
-- 0001's index (no kind), a worker's claim read past every queued job of kinds it does
-- not handle: 220 ms a claim behind a backlog of 100,000 jobs of another kind.
DROP INDEX background_jobs_claim_idx;
CREATE INDEX background_jobs_claim_idx
    ON background_jobs (kind, priority DESC, run_at, id) WHERE state = 'queued';

-- Claiming for the given kinds. Each kind's best jobs are locked (SKIP LOCKED: another
-- worker's claim is never waited for) and the best max_jobs of all of them are claimed;
-- the others' locks end with the claiming transaction, moments later. The plan is pinned
-- (a function's plan cannot see max_jobs, and guesses thousands of rows): enable_sort =
-- off keeps each kind on the index order (see 0001); no hash or merge join, which would
-- read the whole table to update a few rows (330 ms at 100,000 rows); and no JIT, which
-- the sort left (of a few rows), priced high by enable_sort = off, would set off (0.9 s).
CREATE FUNCTION errands_claim_kinds(worker text, kinds text[], queues text[], max_jobs integer)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
    WITH claimable AS (
        SELECT best.id
        FROM unnest(kinds) AS handled (kind)
        CROSS JOIN LATERAL (
            SELECT id, priority, run_at FROM background_jobs
            WHERE state = 'queued'
              AND kind = handled.kind
              AND run_at <= now()
              AND (queues IS NULL OR queue = ANY(queues))
            ORDER BY priority DESC, run_at, id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ) AS best
        ORDER BY best.priority DESC, best.run_at, best.id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.*
$$;

-- Claiming, with max_running enforced in the claim itself. Claims of a limited kind take
-- turns on a transaction-level advisory lock (held until the claiming transaction
-- commits), and the running jobs are counted only once the turn has come, by a new
-- statement with a new snapshot: it sees every claim committed before, on any host.
-- Kinds without a limit take no lock and are claimed as before.
CREATE OR REPLACE FUNCTION errands_claim(
    worker text, kinds text[], queues text[], max_jobs integer
)
RETURNS SETOF background_jobs
LANGUAGE plpgsql
AS $$
DECLARE
    limited record;
    free integer;
    claimed integer := 0;
    taken integer;
BEGIN
    FOR limited IN
        SELECT kind, max_running FROM errands_kinds
        WHERE kind = ANY(kinds) AND max_running IS NOT NULL
        ORDER BY kind  -- one order for every worker: no deadlock between the locks
    LOOP
        kinds := array_remove(kinds, limited.kind);
        CONTINUE WHEN claimed >= max_jobs;
        PERFORM pg_advisory_xact_lock(hashtextextended('errands_kind:' || limited.kind, 0));
        SELECT limited.max_running - count(*) INTO free
        FROM background_jobs WHERE state = 'running' AND kind = limited.kind;
        CONTINUE WHEN free <= 0;
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, ARRAY[limited.kind], queues, least(free, max_jobs - claimed));
        GET DIAGNOSTICS taken = ROW_COUNT;
        claimed := claimed + taken;
    END LOOP;
    IF claimed < max_jobs AND cardinality(kinds) > 0 THEN
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, kinds, queues, max_jobs - claimed);
    END IF;
END
$$;
