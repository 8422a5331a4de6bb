-- The console's own queries (errands.sync.console), by name; its charts are
-- errands.charts (sql/charts.sql). Values are always parameters.

-- name: running_jobs
-- What the workers run now (errands.operations.workers names them by id).
SELECT j.id, j.kind, j.started_at, j.progress
FROM background_jobs j
WHERE j.state = 'running'
ORDER BY j.started_at
