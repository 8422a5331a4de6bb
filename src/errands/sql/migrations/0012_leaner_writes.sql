-- Leaner writes: what every enqueue, claim and finish pays for besides the job itself
-- (bench/README.md, "Bytes per job: the index audit", has the measurements).

-- A job's events are read by job (`errands show`, the console's job page: a handful of
-- rows, sorted by id after the read) and deleted by job. A B-tree on job_id alone
-- stores each job once with a list of its events (deduplication); (job_id, id) stored
-- one entry per event: 151 bytes per job after a drain, 79 now.
DROP INDEX job_events_job_idx;
CREATE INDEX job_events_job_idx ON job_events (job_id);

-- Nothing reads an event by its id (no foreign key points here, the readers go by job
-- or by time): its unique index cost 70 bytes per job. The id stays, as the events'
-- order within a job.
ALTER TABLE job_events DROP CONSTRAINT job_events_pkey;

-- The owner's index serves the sync service's per-user reads (`owner = $user`, the
-- snapshot pages in id order, keyset by id) and the operators' owner filter
-- (`owner = ANY(...)`): every one names an owner. Jobs without an owner (the server's
-- own) leave it alone, and a user's snapshot walks it in page order instead of sorting
-- every job of the user by id.
DROP INDEX background_jobs_owner_idx;
CREATE INDEX background_jobs_owner_idx ON background_jobs (owner, id) WHERE owner IS NOT NULL;

-- Row triggers only where they have something to do (as 0009 did for two others). The
-- sync stamp: an insert already takes the transaction's id from the column's default,
-- so the function runs only where the row would otherwise keep another one.
DROP TRIGGER background_jobs_sync_stamp ON background_jobs;
CREATE TRIGGER background_jobs_sync_stamp
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW
    WHEN (NEW._txid IS DISTINCT FROM pg_current_xact_id())
    EXECUTE FUNCTION errands_sync_stamp();

-- Turns: errands_take_turn returns at once for a row that is not queued (every claim
-- and finish), and an insert that arrives with its turn, runnable now and waiting for
-- nothing (enqueue_many gives the batch its turns) is left as it is. One trigger per
-- event, since a WHEN clause of an insert cannot name OLD. The names keep them after
-- the other BEFORE triggers (they fire by name).
DROP TRIGGER background_jobs_take_turn ON background_jobs;
CREATE TRIGGER background_jobs_take_turn
    BEFORE UPDATE OF state, run_at, turn ON background_jobs
    FOR EACH ROW
    WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION errands_take_turn();
CREATE TRIGGER background_jobs_take_turn_on_insert
    BEFORE INSERT ON background_jobs
    FOR EACH ROW
    WHEN (NEW.state = 'queued'
          AND (NEW.turn IS NULL OR NEW.run_at > now() OR NEW.waiting_for > 0))
    EXECUTE FUNCTION errands_take_turn();
