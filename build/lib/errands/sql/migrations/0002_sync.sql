-- Change capture for the sync service: snapshot-diff cursors, no logical replication.
--
-- Every row version carries the id of the transaction that wrote it (_txid); a shape's
-- offset is a pg_current_snapshot(); the changes after an offset are the rows whose
-- _txid that snapshot could not see. Deletes leave tombstones with the same _txid.
-- Nothing here needs a superuser, a replication role or wal_level=logical.

ALTER TABLE background_jobs ADD COLUMN _txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX background_jobs_txid_idx ON background_jobs (_txid);

CREATE FUNCTION errands_sync_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW._txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER background_jobs_sync_stamp
    BEFORE INSERT OR UPDATE ON background_jobs
    FOR EACH ROW EXECUTE FUNCTION errands_sync_stamp();

-- A deleted row leaves its key, its owner (so only those who could see it hear of the
-- delete) and the deleting transaction.
CREATE TABLE errands_tombstones (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    key text NOT NULL,
    owner text,
    _txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX errands_tombstones_txid_idx ON errands_tombstones (table_name, _txid);

CREATE FUNCTION errands_sync_record_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO errands_tombstones (table_name, key, owner)
    SELECT TG_TABLE_NAME, id::text, owner FROM changed_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_sync_tombstones
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_record_deletes();

-- One wake-up per statement that changed rows (never per row: NOTIFY serialises
-- commits); Postgres folds equal notifications of one transaction into one. A hint
-- only: the service also polls.
CREATE FUNCTION errands_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM changed_rows) THEN
        PERFORM pg_notify('errands_sync', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER background_jobs_sync_notify_insert
    AFTER INSERT ON background_jobs REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();
CREATE TRIGGER background_jobs_sync_notify_update
    AFTER UPDATE ON background_jobs REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();
CREATE TRIGGER background_jobs_sync_notify_delete
    AFTER DELETE ON background_jobs REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION errands_sync_notify();

-- The database's generation: offsets of another generation mean nothing here. A dump
-- restored elsewhere copies this row, so the database's oid is kept beside it and a
-- mismatch starts a new generation (errands_sync_check_generation). pruned_below is the
-- retention horizon: tombstones of transactions below it are gone, so an offset whose
-- xmin is below it can no longer be answered exactly.
CREATE TABLE errands_sync_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation text NOT NULL,
    database_oid oid NOT NULL,
    pruned_below xid8 NOT NULL
);
INSERT INTO errands_sync_state (generation, database_oid, pruned_below)
SELECT replace(gen_random_uuid()::text, '-', ''), oid, '1'::xid8
FROM pg_database WHERE datname = current_database();

CREATE FUNCTION errands_sync_check_generation() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state errands_sync_state;
BEGIN
    SELECT * INTO state FROM errands_sync_state FOR UPDATE;
    IF state.database_oid <> (SELECT oid FROM pg_database WHERE datname = current_database())
       OR state.pruned_below > pg_current_xact_id() THEN
        -- Nothing is pruned in the new generation; ids from another cluster's history
        -- mean nothing here, so rows stamped "in the future" are stamped now.
        UPDATE errands_sync_state
        SET generation = replace(gen_random_uuid()::text, '-', ''),
            database_oid = (SELECT oid FROM pg_database WHERE datname = current_database()),
            pruned_below = '1'::xid8
        RETURNING * INTO state;
        DELETE FROM errands_tombstones WHERE _txid >= pg_current_xact_id();
        UPDATE background_jobs SET _txid = pg_current_xact_id()
        WHERE _txid > pg_current_xact_id();
    END IF;
    RETURN state.generation;
END
$$;

-- Mutations already applied, by (owner, client mutation id): a retried batch gets the
-- recorded results and applies nothing twice.
CREATE TABLE errands_sync_mutations (
    owner text NOT NULL,
    id text NOT NULL,
    status text NOT NULL DEFAULT 'applied' CHECK (status IN ('applied', 'rejected')),
    code text,
    message text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, id)
);
CREATE INDEX errands_sync_mutations_recorded_idx ON errands_sync_mutations (recorded_at);

-- Forget tombstones and mutation records older than the retention; move the horizon
-- past every pruned tombstone. Returns how many tombstones went.
CREATE FUNCTION errands_sync_prune(retention interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    horizon xid8;
    pruned integer;
BEGIN
    SELECT max(_txid) INTO horizon FROM errands_tombstones
    WHERE deleted_at < now() - retention;
    DELETE FROM errands_sync_mutations WHERE recorded_at < now() - retention;
    IF horizon IS NULL THEN
        RETURN 0;
    END IF;
    -- xid8 has no arithmetic: the next id is found through its text form.
    horizon := (horizon::text::numeric + 1)::text::xid8;
    UPDATE errands_sync_state SET pruned_below = greatest(pruned_below, horizon);
    DELETE FROM errands_tombstones WHERE _txid < horizon;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;
