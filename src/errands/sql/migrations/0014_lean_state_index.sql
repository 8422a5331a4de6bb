-- The console's state index holds only the states it cannot find another way
-- (bench/README.md, "Third round"). Keyed by state, it took a new
-- entry for every version of every job (queued, running, completed), each in another
-- part of the index: 311 bytes per job after a drain, a fifth of all a job wrote. Now:
-- - queued, failed and cancelled jobs are here (a backlog, and the rare ends an
--   operator looks for: one entry a job that succeeds, at its insert);
-- - running jobs are found on background_jobs_running_idx (as many as workers run);
-- - completed jobs, most of any table, on background_jobs_received_idx, newest first,
--   the state read from the row.
-- Counts and lists by state name the state as a constant (sql/listing.sql), so the
-- planner can match it to this predicate. A sort by state now reads like a sort by kind
-- or queue (no index of its own: 0.2 s over a million jobs).
DROP INDEX background_jobs_state_received_idx;
CREATE INDEX background_jobs_state_received_idx ON background_jobs (state, received_at, id)
    INCLUDE (kind, queue, owner)
    WHERE state IN ('queued', 'failed', 'cancelled');
