-- Tenancy: a client asks, the server decides (docs/design.md, "Tenancy").
--
-- * A kind is a capability: the service accepts a client's job only for kinds declared
--   for clients (registered with clients=True, or named by the service's operator).
-- * A kind may publish its payload's JSON Schema; the service checks client payloads
--   against it at the door.
-- * Clients cannot buy precedence: their priority is capped by the kind, their run_at is
--   never before the server's clock, and among runnable jobs of one priority the claim
--   takes turns between owners (below).
-- * A kind may cap how many of one owner's jobs run at once, across every worker.

ALTER TABLE errands_kinds
    ADD COLUMN clients boolean NOT NULL DEFAULT false,
    ADD COLUMN client_priority integer,
    ADD COLUMN payload_schema jsonb,
    ADD COLUMN max_running_per_owner integer CHECK (max_running_per_owner >= 1);

-- Who asked for the job: a client through the sync service, an operator, or the server
-- (errands.enqueue, schedules, plain SQL). Handlers read it as ctx.submitted_by.
ALTER TABLE background_jobs
    ADD COLUMN submitted_by text NOT NULL DEFAULT 'server'
        CHECK (submitted_by IN ('client', 'operator', 'server'));

-- Turns: fair queueing between owners (start-time fair queueing, as network schedulers
-- share a link). A runnable job's turn is the later of the service's frontier (the
-- newest turn being served) and one past its owner's last queued turn. One owner's
-- backlog thus holds turns frontier, frontier+1, ... and another owner's new job takes
-- the frontier itself: it runs after at most about one job per busy slot, however long
-- the backlog. Turns are counted across kinds, so claims over several kinds stay fair.
--
-- A job that is not runnable yet (run_at later, a retry waiting out its backoff) has no
-- turn: it takes one when it comes due (the claim stages due jobs, errands_stage_due),
-- so a job scheduled long ago cannot jump ahead of everyone who asked since.
ALTER TABLE background_jobs ADD COLUMN turn bigint;

-- An owner's queued jobs: its last turn, and how many it has (the service's quota).
CREATE INDEX background_jobs_owner_turn_idx
    ON background_jobs ((coalesce(owner, '')), turn NULLS FIRST) WHERE state = 'queued';
CREATE INDEX background_jobs_running_turn_idx
    ON background_jobs (turn) WHERE state = 'running';
CREATE INDEX background_jobs_due_idx
    ON background_jobs (run_at) WHERE state = 'queued' AND turn IS NULL;

-- The claim walks each kind's runnable jobs in turn order.
DROP INDEX background_jobs_claim_idx;
CREATE INDEX background_jobs_claim_idx
    ON background_jobs (kind, priority DESC, turn, id)
    WHERE state = 'queued' AND turn IS NOT NULL;

-- The frontier: the newest turn running now, else the turn of the job that finished
-- last (so the frontier does not fall back to zero when the workers idle), else zero.
CREATE FUNCTION errands_next_turn(job_owner text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT greatest(
        coalesce(
            (SELECT max(turn) FROM background_jobs WHERE state = 'running'),
            (SELECT turn FROM background_jobs
             WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1),
            0),
        (SELECT max(turn) + 1 FROM background_jobs
         WHERE state = 'queued' AND turn IS NOT NULL
           AND coalesce(owner, '') = coalesce(job_owner, '')))
$$;

-- A job takes its turn as it becomes runnable: on insert, when it goes back to the
-- queue (a retry, a recovered job), and when it comes due. Every writer (sync service,
-- worker, errands.enqueue, plain SQL) goes through here. Fires after the other BEFORE
-- triggers (by name), so it sees the state they leave.
CREATE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF NEW.run_at > now() THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_take_turn
    BEFORE INSERT OR UPDATE OF state, run_at, turn ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_take_turn();

-- Jobs waiting without a turn whose time has come take one (through the trigger
-- above); the claim calls this first. A bounded batch, skipping rows another claim is
-- staging.
CREATE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND run_at <= now()) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;

-- Jobs queued before this migration take their turns in their old claim order.
UPDATE background_jobs AS j SET turn = old.position
FROM (SELECT id, row_number() OVER (ORDER BY priority DESC, run_at, id) AS position
      FROM background_jobs WHERE state = 'queued' AND run_at <= now()) AS old
WHERE j.id = old.id;

-- Claiming for kinds without limits: each kind's first jobs in turn order are locked
-- (SKIP LOCKED: another worker's claim is never waited for) and the first max_jobs of
-- all of them are claimed. The plan is pinned as before (0004).
CREATE OR REPLACE FUNCTION errands_claim_kinds(
    worker text, kinds text[], queues text[], max_jobs integer
)
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
            SELECT id, priority, turn FROM background_jobs
            WHERE state = 'queued'
              AND turn IS NOT NULL
              AND kind = handled.kind
              AND (queues IS NULL OR queue = ANY(queues))
            ORDER BY priority DESC, turn, id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ) AS best
        ORDER BY best.priority DESC, best.turn, best.id
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

-- Claiming for a kind whose jobs run at most per_owner at once per owner. The caller
-- holds the kind's advisory lock, so no other claim of the kind runs meanwhile and the
-- counts below are exact; it looks at the kind's first 1,000 runnable jobs in turn
-- order (turns interleave owners, so an owner at its cap hides few others' jobs).
CREATE FUNCTION errands_claim_per_owner(
    worker text, claimed_kind text, queues text[], max_jobs integer, per_owner integer
)
RETURNS SETOF background_jobs
LANGUAGE sql
SET enable_sort = off
SET jit = off
AS $$
    WITH running AS (
        SELECT coalesce(owner, '') AS owner, count(*) AS n FROM background_jobs
        WHERE state = 'running' AND kind = claimed_kind
        GROUP BY 1
    ), candidates AS (
        SELECT id, coalesce(owner, '') AS owner, priority, turn FROM background_jobs
        WHERE state = 'queued'
          AND turn IS NOT NULL
          AND kind = claimed_kind
          AND (queues IS NULL OR queue = ANY(queues))
        ORDER BY priority DESC, turn, id
        LIMIT 1000
    ), ranked AS (
        SELECT c.id, c.priority, c.turn,
               coalesce(r.n, 0)
               + row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.turn, c.id)
               AS nth
        FROM candidates c LEFT JOIN running r USING (owner)
    ), chosen AS (
        SELECT id FROM ranked WHERE nth <= per_owner
        ORDER BY priority DESC, turn, id
        LIMIT max_jobs
    )
    UPDATE background_jobs AS j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_owner = worker,
        started_at = now(),
        error = NULL
    FROM chosen
    WHERE j.id = chosen.id AND j.state = 'queued'
    RETURNING j.*
$$;

-- Claiming: due jobs take their turns first; then kinds with limits (max_running,
-- max_running_per_owner) take turns on a transaction-level advisory lock each, and
-- count their running jobs only once the turn has come (a new statement, a new
-- snapshot: every claim committed before, on any host, is seen); the others are
-- claimed together, without a lock.
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
    PERFORM errands_stage_due(greatest(max_jobs, 100));
    FOR limited IN
        SELECT kind, max_running, max_running_per_owner FROM errands_kinds
        WHERE kind = ANY(kinds)
          AND (max_running IS NOT NULL OR max_running_per_owner IS NOT NULL)
        ORDER BY kind  -- one order for every worker: no deadlock between the locks
    LOOP
        kinds := array_remove(kinds, limited.kind);
        CONTINUE WHEN claimed >= max_jobs;
        PERFORM pg_advisory_xact_lock(hashtextextended('errands_kind:' || limited.kind, 0));
        free := max_jobs - claimed;
        IF limited.max_running IS NOT NULL THEN
            SELECT least(free, limited.max_running - count(*)) INTO free
            FROM background_jobs WHERE state = 'running' AND kind = limited.kind;
        END IF;
        CONTINUE WHEN free <= 0;
        IF limited.max_running_per_owner IS NULL THEN
            RETURN QUERY SELECT * FROM errands_claim_kinds(
                worker, ARRAY[limited.kind], queues, free);
        ELSE
            RETURN QUERY SELECT * FROM errands_claim_per_owner(
                worker, limited.kind, queues, free, limited.max_running_per_owner);
        END IF;
        GET DIAGNOSTICS taken = ROW_COUNT;
        claimed := claimed + taken;
    END LOOP;
    IF claimed < max_jobs AND cardinality(kinds) > 0 THEN
        RETURN QUERY SELECT * FROM errands_claim_kinds(
            worker, kinds, queues, max_jobs - claimed);
    END IF;
END
$$;

-- A statement that queues jobs in thousands of queues at once (a bulk insert from SQL)
-- failed: its wake-up named every queue, past NOTIFY's 8000-byte payload. Past about
-- 7000 bytes the wake-up now says '*': every worker looks.
CREATE FUNCTION errands_wake(queues text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('errands_jobs', CASE WHEN length(queues) > 7000 THEN '*' ELSE queues END)
$$;

CREATE OR REPLACE FUNCTION errands_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
BEGIN
    INSERT INTO job_events (job_id, at, type, attempt)
    SELECT id, received_at, state, attempts FROM new_rows
    WHERE state IN ('queued', 'cancelled');
    SELECT string_agg(DISTINCT queue, ',') INTO queues FROM new_rows WHERE state = 'queued';
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION errands_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queues text;
    cancels integer;
BEGIN
    INSERT INTO job_events (job_id, type, attempt, worker, error)
    SELECT n.id,
           CASE WHEN n.state = 'running' THEN 'started'
                WHEN n.state = 'queued' THEN 'retried'
                ELSE n.state END,
           n.attempts,
           coalesce(n.lease_owner, o.lease_owner),
           CASE WHEN n.state IN ('queued', 'failed') THEN n.error END
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE n.state IS DISTINCT FROM o.state;

    SELECT string_agg(DISTINCT n.queue, ',') FILTER (WHERE n.state = 'queued'),
           count(*) FILTER (WHERE n.state = 'running' AND n.cancelled)
    INTO queues, cancels
    FROM new_rows n JOIN old_rows o USING (id)
    WHERE (n.state = 'queued' AND o.state <> 'queued')
       OR (n.state = 'running' AND n.cancelled AND NOT o.cancelled);
    IF queues IS NOT NULL THEN
        PERFORM errands_wake(queues);
    END IF;
    IF cancels > 0 THEN
        PERFORM pg_notify('errands_cancel', '');
    END IF;
    RETURN NULL;
END
$$;
