-- Idempotency means the same request: each recorded mutation id keeps a digest of its
-- content (table, operation, key, values), so that the id reused for another change is
-- refused (409 mutation_id_reused) instead of answered "replayed". Records made before
-- this migration have none and replay as before.
ALTER TABLE errands_sync_mutations ADD COLUMN fingerprint text;
