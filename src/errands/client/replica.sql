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
    error TEXT,                               -- why it was rejected: "code: message"
    sort_key INTEGER                          -- an insert's timestamp, as synced_jobs'
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id, seq);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, seq);

CREATE TABLE IF NOT EXISTS shapes (
    name TEXT PRIMARY KEY,
    "offset" TEXT NOT NULL
) STRICT;

-- name: outbox_newest
-- The newest jobs only the outbox has, without reading the outbox: jobs() costs the same
-- however long it grew offline. (Created apart from the schema: a replica written before
-- outbox.sort_key existed gets the column first, see add_sort_key.)
CREATE INDEX IF NOT EXISTS outbox_newest ON outbox (sort_key DESC, job_id DESC) WHERE op = 'insert';

-- name: asking_index
-- The synced jobs that ask a question (few of many): questions() reads them here.
CREATE INDEX IF NOT EXISTS synced_jobs_asking ON synced_jobs (id)
WHERE json_extract(row, '$.question') IS NOT NULL;

-- name: asking_ids
SELECT id FROM synced_jobs WHERE json_extract(row, '$.question') IS NOT NULL;

-- name: outbox_counts
-- How many entries the outbox holds in each status, kept by triggers on every write (an
-- older errands writing the file keeps them too): the status line never counts rows.
CREATE TABLE outbox_counts (status TEXT PRIMARY KEY, entries INTEGER NOT NULL) STRICT;
INSERT INTO outbox_counts (status, entries)
SELECT status, (SELECT count(*) FROM outbox WHERE outbox.status = s.status)
FROM (SELECT 'pending' AS status UNION ALL SELECT 'acked' UNION ALL SELECT 'rejected') AS s;
CREATE TRIGGER outbox_counted_insert AFTER INSERT ON outbox BEGIN
    UPDATE outbox_counts SET entries = entries + 1 WHERE status = new.status;
END;
CREATE TRIGGER outbox_counted_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET entries = entries - 1 WHERE status = old.status;
END;
CREATE TRIGGER outbox_counted_update AFTER UPDATE OF status ON outbox
WHEN old.status <> new.status BEGIN
    UPDATE outbox_counts SET entries = entries - 1 WHERE status = old.status;
    UPDATE outbox_counts SET entries = entries + 1 WHERE status = new.status;
END;

-- name: add_sort_key
ALTER TABLE outbox ADD COLUMN sort_key INTEGER;

-- name: unsorted_inserts
SELECT seq, "values" FROM outbox WHERE op = 'insert' AND sort_key IS NULL;

-- name: set_sort_key
UPDATE outbox SET sort_key = :sort_key WHERE seq = :seq;

-- name: outbox_columns
SELECT name FROM pragma_table_info('outbox');

-- name: list_tables
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';

-- name: get_meta
SELECT value FROM meta WHERE key = :key;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: add_entry
INSERT INTO outbox (mutation_id, job_id, op, "values", sort_key)
VALUES (:mutation_id, :job_id, :op, :values, :sort_key);

-- name: pending_entries
SELECT seq, mutation_id, job_id, op, "values" FROM outbox
WHERE status = 'pending' ORDER BY seq LIMIT :limit;

-- name: count_entries
SELECT (SELECT entries FROM outbox_counts WHERE status = 'pending'),
       (SELECT entries FROM outbox_counts WHERE status = 'rejected');

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

-- name: newest_inserted
SELECT job_id FROM outbox WHERE op = 'insert'
ORDER BY sort_key DESC, job_id DESC LIMIT :limit;

-- name: ended_of
-- How many of the jobs :ids (a JSON array) have ended, as the synced rows say.
SELECT count(*) FROM synced_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND json_extract(row, '$.state') IN ('completed', 'failed', 'cancelled');

-- name: get_synced
SELECT row FROM synced_jobs WHERE id = :id;

-- name: newest_synced
SELECT id FROM synced_jobs ORDER BY sort_key DESC, id DESC LIMIT :limit;

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
