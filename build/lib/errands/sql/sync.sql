-- The queries of the sync service, by name. Values are always parameters. The shape
-- queries are templates: {row}, {permission} and {shape_filter} are filled by
-- errands.sync.shapes with psycopg.sql compositions of whitelisted column names.

-- name: read_position
-- The first statement of a shape read: it fixes the repeatable-read snapshot, which
-- pg_current_snapshot() then returns, so the offset describes exactly what was read.
SELECT generation, pruned_below::text, pg_current_snapshot()::text
FROM errands_sync_state

-- name: current_position
SELECT generation, pg_current_snapshot()::text FROM errands_sync_state

-- name: snapshot_page
-- The filter stands bare (a WHERE drops NULL as it drops false): wrapped in IS TRUE it
-- hid its columns from the planner, which then walked the primary key through every row
-- (0.3-0.75 s a snapshot at 1,000,000 jobs for the console's shapes; 1 ms on indexes).
SELECT id::text AS key, {row} AS row
FROM background_jobs
WHERE {permission}
  AND ({shape_filter})
  AND (%(after)s::uuid IS NULL OR id > %(after)s::uuid)
ORDER BY id
LIMIT %(limit)s

-- name: changes
-- Every row version and tombstone written by a transaction the old snapshot could not
-- see. A changed row that no longer matches the filter leaves the shape (a delete).
SELECT id::text AS key, ({shape_filter}) IS TRUE AS in_shape, {row} AS row, _txid::text
FROM background_jobs
WHERE _txid >= %(xmin)s::xid8
  AND NOT pg_visible_in_snapshot(_txid, %(since)s::pg_snapshot)
  AND {permission}
UNION ALL
SELECT key, false, NULL, _txid::text
FROM errands_tombstones
WHERE table_name = 'background_jobs'
  AND _txid >= %(xmin)s::xid8
  AND NOT pg_visible_in_snapshot(_txid, %(since)s::pg_snapshot)
  AND {permission}
ORDER BY 1

-- name: change_log
-- The fan-out's one read per change batch, for every shape (errands.sync.changes):
-- every row version and tombstone written by a transaction the cursor could not see,
-- with this statement's own snapshot, which becomes the next cursor. One statement, so
-- the rows and pg_current_snapshot() are the same snapshot without a transaction
-- around them. The position comes on every row (and alone when nothing changed).
SELECT state.generation, state.pruned_below::text, pg_current_snapshot()::text,
       changed.key, changed.owner, changed.row, changed.txid
FROM errands_sync_state AS state
LEFT JOIN LATERAL (
    (SELECT id::text AS key, owner, {row} AS row, _txid::text AS txid
     FROM background_jobs
     WHERE _txid >= %(xmin)s::xid8
       AND NOT pg_visible_in_snapshot(_txid, %(since)s::pg_snapshot)
     UNION ALL
     SELECT key, owner, NULL, _txid::text
     FROM errands_tombstones
     WHERE table_name = 'background_jobs'
       AND _txid >= %(xmin)s::xid8
       AND NOT pg_visible_in_snapshot(_txid, %(since)s::pg_snapshot))
    LIMIT %(limit)s
) AS changed ON true

-- name: batch_txid
SELECT pg_current_xact_id()::text

-- name: claim_mutation
-- Blocks while another transaction holds the same id, then does nothing if that one
-- committed: the mutation is then a replay.
INSERT INTO errands_sync_mutations (owner, id, fingerprint)
VALUES (%(owner)s, %(id)s, %(fingerprint)s)
ON CONFLICT DO NOTHING
RETURNING id

-- name: recorded_mutation
SELECT status, code, message, fingerprint FROM errands_sync_mutations
WHERE owner = %(owner)s AND id = %(id)s

-- name: record_rejection
UPDATE errands_sync_mutations SET status = 'rejected', code = %(code)s, message = %(message)s
WHERE owner = %(owner)s AND id = %(id)s

-- name: insert_job
-- Only the client-owned columns come from the client; owner comes from the token and
-- everything else from the column defaults.
-- Options left NULL take the kind's registered defaults (errands_kind_defaults). Nothing
-- is inserted if the id exists, or if an unfinished job of the owner has the unique key.
-- A client's run_at is never before the server's clock: it cannot buy an earlier place.
INSERT INTO background_jobs
    (id, "timestamp", kind, payload, cancelled, owner, priority, queue, run_at,
     max_attempts, unique_key, traceparent, submitted_by)
VALUES (%(id)s, coalesce(%(timestamp)s, now()), coalesce(%(kind)s, 'default'),
        coalesce(%(payload)s, '{}'::jsonb), coalesce(%(cancelled)s, false), %(owner)s,
        %(priority)s, %(queue)s, greatest(%(run_at)s, now()), %(max_attempts)s,
        %(unique_key)s, %(traceparent)s, %(submitted_by)s)
ON CONFLICT DO NOTHING
RETURNING id

-- name: unfinished_with_key
-- Why an insert did nothing, if not its id: the owner's unfinished job with its key.
SELECT id FROM background_jobs
WHERE %(unique_key)s::text IS NOT NULL
  AND id <> %(id)s
  AND coalesce(owner, '') = %(owner)s
  AND unique_key = %(unique_key)s
  AND state IN ('queued', 'running')

-- name: job_owner
SELECT owner FROM background_jobs WHERE id = %(id)s

-- name: queued_count
-- How many queued jobs the owner has, counted up to the quota on the owner's
-- queued-jobs index.
SELECT count(*) FROM (
    SELECT 1 FROM background_jobs
    WHERE coalesce(owner, '') = %(owner)s AND state = 'queued'
    LIMIT %(limit)s
) AS queued

-- name: client_kinds
-- What the kinds a batch of clients' jobs names allow them (errands.sync.kinds).
SELECT kind, clients, coalesce(client_priority, priority, 0), payload_schema::text
FROM errands_kinds WHERE kind = ANY(%(kinds)s)

-- name: cancel_job
UPDATE background_jobs SET cancelled = true
WHERE id = %(id)s AND (owner = %(owner)s OR %(operator)s)
RETURNING id

-- name: delete_job
DELETE FROM background_jobs WHERE id = %(id)s RETURNING id

-- name: check_generation
SELECT errands_sync_check_generation()

-- name: prune
SELECT errands_sync_prune(make_interval(secs => %(retention)s))

-- name: listen
-- The channel the trigger errands_sync_notify() sends on.
LISTEN errands_sync

-- name: ping
SELECT 1

-- name: use_utc
SET TIME ZONE 'UTC'
