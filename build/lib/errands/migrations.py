"""Versioned schema migrations: ``errands migrate``.

Migrations are ``sql/migrations/NNNN_name.sql``, applied in order, each in its own
transaction, under an advisory lock so that two processes migrating at once take turns.
Applying them again changes nothing.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from errands.exceptions import ConfigurationError, MigrationError
from errands.queries import query, read_sql

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Any constant will do; it only has to be the same for every errands process.
_LOCK_KEY = 0x6572_7261_6E64


@dataclass(frozen=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    filename: str

    def sql(self) -> str:
        """The migration's SQL text."""
        return read_sql(f"migrations/{self.filename}")


def available() -> list[Migration]:
    """Every migration shipped with this version of errands, in order."""
    folder = resources.files("errands").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.name))
    return sorted(found, key=lambda m: m.version)


def migrate(conninfo: str) -> list[Migration]:
    """Bring the database at ``conninfo`` up to date; return the migrations applied."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                return _apply_missing(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"could not migrate the database: {exc}".strip()) from exc


def _apply_missing(conn: psycopg.Connection) -> list[Migration]:
    conn.execute(query("create_migrations_table"))
    done = {row[0] for row in conn.execute(query("applied_migrations"))}
    applied = []
    for migration in available():
        if migration.version in done:
            continue
        with conn.transaction():
            conn.execute(migration.sql().encode())
            conn.execute(query("record_migration"), (migration.version, migration.name))
        applied.append(migration)
    return applied


def pending(conninfo: str) -> list[Migration]:
    """The migrations not yet applied to the database at ``conninfo``."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(query("migrations_table_exists")).fetchone()
        done = set()
        if exists and exists[0]:
            done = {row[0] for row in conn.execute(query("applied_migrations"))}
    return [m for m in available() if m.version not in done]


async def ensure_migrated(conninfo: str) -> None:
    """Raise a ConfigurationError that says what to do if the database cannot be
    reached or lacks migrations: better than retrying a query on a missing table."""
    try:
        missing = await asyncio.to_thread(pending, conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(f"cannot reach the database: {exc}".strip()) from None
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise ConfigurationError(
            f"the database lacks errands migrations ({names}): "
            "run `errands migrate --database-url URL` first"
        )
