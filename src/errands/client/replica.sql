-- The client's SQLite replica. One file: synced rows, the outbox (which is also the
-- pending overlay), per-shape offsets and what the replica belongs to.
--
-- What the application sees for a job is its synced row with every unsettled outbox
-- entry of that job applied on top. An entry settles (and is deleted) once the server
-- has acknowledged it AND the shape's offset covers the acknowledging transaction: only
-- then is the synced row guaranteed to contain its effect, so a pending change never
-- flickers back to an older server value. Rejected entries stay, as the record of
-- what the server refused.

-- name: schema
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,       -- schema_version, generation, user, server
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS synced_jobs (
    id TEXT PRIMARY KEY,
    sort_key INTEGER NOT NULL,  -- the row's timestamp in microseconds since the epoch
    row TEXT NOT NULL           -- the row as the shape delivered it, JSON
) STRICT;
CREATE INDEX IF NOT EXISTS synced_jobs_newest ON synced_jobs (sort_key DESC, id DESC);

CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- upload order
    mutation_id TEXT NOT NULL UNIQUE,         -- chosen once, reused on every retry
    job_id TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update')),
    "values" TEXT NOT NULL,                   -- JSON object of client-owned columns
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acked', 'rejected')),
    txid INTEGER,                             -- the acknowledging transaction
    error TEXT                                -- why it was rejected: "code: message"
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id, seq);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, seq);

CREATE TABLE IF NOT EXISTS shapes (
    name TEXT PRIMARY KEY,
    "offset" TEXT NOT NULL
) STRICT;

-- name: list_tables
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';

-- name: get_meta
SELECT value FROM meta WHERE key = :key;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: add_entry
INSERT INTO outbox (mutation_id, job_id, op, "values")
VALUES (:mutation_id, :job_id, :op, :values);

-- name: pending_entries
SELECT seq, mutation_id, job_id, op, "values" FROM outbox
WHERE status = 'pending' ORDER BY seq LIMIT :limit;

-- name: count_entries
SELECT count(*) FILTER (WHERE status = 'pending'),
       count(*) FILTER (WHERE status = 'rejected')
FROM outbox;

-- name: ack_entry
UPDATE outbox SET status = 'acked', txid = :txid
WHERE mutation_id = :mutation_id AND status = 'pending';

-- name: reject_entry
UPDATE outbox SET status = 'rejected', error = :error
WHERE mutation_id = :mutation_id AND status = 'pending';

-- name: acked_entries
SELECT seq, txid FROM outbox WHERE status = 'acked';

-- name: requeue_acked
-- The server's database is a new generation (restored from a dump): what it had
-- acknowledged may be missing from it, so it is uploaded again; the server applies a
-- mutation id at most once, so what the restored database does have is not doubled.
UPDATE outbox SET status = 'pending', txid = NULL WHERE status = 'acked';

-- name: clear_offsets
DELETE FROM shapes;

-- name: settle_entry
DELETE FROM outbox WHERE seq = :seq;

-- name: job_entries
SELECT op, "values", status, error FROM outbox WHERE job_id = :job_id ORDER BY seq;

-- name: overlay_entries
-- Every entry that still shapes what the application sees, for jobs(): few, by design.
SELECT job_id, op, "values", status, error FROM outbox ORDER BY seq;

-- name: get_synced
SELECT row FROM synced_jobs WHERE id = :id;

-- name: newest_synced
SELECT row FROM synced_jobs ORDER BY sort_key DESC, id DESC LIMIT :limit;

-- name: ids_ending_with
-- For short ids (a suffix, as the page and `errands jobs` show them): at most two, which
-- is enough to tell unique from ambiguous.
SELECT id FROM synced_jobs WHERE id LIKE '%' || :suffix
UNION
SELECT job_id FROM outbox WHERE job_id LIKE '%' || :suffix
LIMIT 2;

-- name: ids_with_key
-- Candidates only: the caller works out each one's current state.
SELECT id FROM synced_jobs WHERE json_extract(row, '$.unique_key') = :unique_key
UNION
SELECT job_id FROM outbox WHERE op = 'insert' AND json_extract("values", '$.unique_key') = :unique_key;

-- name: synced_by_ids
SELECT row FROM synced_jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: upsert_synced
INSERT INTO synced_jobs (id, sort_key, row) VALUES (:id, :sort_key, :row)
ON CONFLICT (id) DO UPDATE SET sort_key = excluded.sort_key, row = excluded.row;

-- name: delete_synced
DELETE FROM synced_jobs WHERE id = :id;

-- name: clear_synced
DELETE FROM synced_jobs;

-- name: get_offset
SELECT "offset" FROM shapes WHERE name = :name;

-- name: set_offset
INSERT INTO shapes (name, "offset") VALUES (:name, :offset)
ON CONFLICT (name) DO UPDATE SET "offset" = excluded."offset";

-- name: delete_offset
DELETE FROM shapes WHERE name = :name;
