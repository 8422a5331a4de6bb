-- Lighter rows: what every enqueue, claim and finish writes besides the job itself
-- (bench/README.md, "Where a job's time goes", has the measurements).

-- job_events keeps no foreign key to its job. The key cost every event a lookup of the
-- job and a row lock on it (FOR KEY SHARE), in the very statement that had just written
-- that job: 33 of the 71 ms of a batched enqueue of 1,000 jobs. Events are written only
-- by the triggers on background_jobs, for the rows they change, so none can name a
-- missing job; the cascade it gave is kept by a statement trigger, once per DELETE.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;

CREATE FUNCTION errands_delete_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_delete_events
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_delete_events();

-- The console's charts read the last hour of events. job_events is append-only and
-- `at` grows with it, so a BRIN index (a few pages for millions of events) finds the
-- last hour as well as a B-tree did, and costs an event almost nothing to maintain.
DROP INDEX job_events_at_idx;
CREATE INDEX job_events_at_idx ON job_events USING brin (at);

-- Row triggers only where they have something to do. A plpgsql call per row was most
-- of a batched insert's cost after the events: kind defaults are filled in only when a
-- job leaves one unset (the enqueue queries fill them in themselves), and the
-- cancellation rule runs only for a row that is cancelled or whose `completed` does
-- not match its state (exactly the rows errands_cancel_queued changes).
DROP TRIGGER background_jobs_kind_defaults ON background_jobs;
CREATE TRIGGER background_jobs_kind_defaults
    BEFORE INSERT ON background_jobs
    FOR EACH ROW
    WHEN (NEW.max_attempts IS NULL OR NEW.priority IS NULL OR NEW.queue IS NULL)
    EXECUTE FUNCTION errands_kind_defaults();

DROP TRIGGER background_jobs_cancel_queued ON background_jobs;
CREATE TRIGGER background_jobs_cancel_queued
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW
    WHEN (NEW.cancelled OR NEW.completed IS DISTINCT FROM (NEW.state = 'completed'))
    EXECUTE FUNCTION errands_cancel_queued();
