-- The operator's side: retention and the console's charts.

-- Pruning walks finished jobs oldest first and stops at its batch size.
CREATE INDEX background_jobs_finished_idx
    ON background_jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');

-- The console's charts read the last hour of transitions.
CREATE INDEX job_events_at_idx ON job_events (at);
