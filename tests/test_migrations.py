"""The migrations: idempotent, and together exactly ``schema.sql``."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from errands.exceptions import MigrationError
from errands.migrations import available, migrate, pending
from errands.queries import read_sql

# Everything a migration can change, read from the catalogs in a stable order.
CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
}


def describe(url: str) -> dict[str, list[Any]]:
    """The schema of a database, as comparable data."""
    with psycopg.connect(url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in CATALOG_QUERIES.items()}


def test_migrations_produce_exactly_the_schema_file(
    empty_database_url: str, database_url: str
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(read_sql("schema.sql").encode())
    from_schema = describe(empty_database_url)
    from_migrations = describe(database_url)
    from_migrations["columns"] = [
        c for c in from_migrations["columns"] if c[0] != "errands_migrations"
    ]
    from_migrations["constraints"] = [
        c for c in from_migrations["constraints"] if c[0] != "errands_migrations"
    ]
    from_migrations["indexes"] = [
        i for i in from_migrations["indexes"] if i[0] != "errands_migrations"
    ]
    for part in CATALOG_QUERIES:
        assert from_migrations[part] == from_schema[part], part


def test_migrate_applies_everything_once(empty_database_url: str) -> None:
    assert pending(empty_database_url) == available()
    assert migrate(empty_database_url) == available()
    before = describe(empty_database_url)
    assert migrate(empty_database_url) == []
    assert pending(empty_database_url) == []
    assert describe(empty_database_url) == before


def test_migration_versions_are_unique_and_contiguous() -> None:
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_reports_a_database_it_cannot_update(empty_database_url: str) -> None:
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM errands_migrations WHERE version = 1")
    # Migration 1 runs again and collides with the tables it made the first time.
    with pytest.raises(MigrationError, match="could not migrate"):
        migrate(empty_database_url)
