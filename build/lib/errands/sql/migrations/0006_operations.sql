-- The operator's side: retention, the console's charts, and tracing.

-- Pruning walks finished jobs oldest first and stops at its batch size.
CREATE INDEX background_jobs_finished_idx
    ON background_jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');

-- The console's charts read the last hour of transitions.
CREATE INDEX job_events_at_idx ON job_events (at);

-- One trace per job (errands.tracing): the W3C trace context of the span that submitted
-- it, written by the client; the service, the worker and the client join that trace.
ALTER TABLE background_jobs ADD COLUMN traceparent text
    CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
