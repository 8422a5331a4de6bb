"""Postgres for the tests: ``ERRANDS_TEST_DATABASE_URL``, else a local server on
127.0.0.1:5432, else an embedded one. Each test gets its own database, cloned from a
template that has every migration applied."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from errands.embedded import embedded_postgres
from errands.migrations import migrate

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / ".pgdata-test"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def server_url() -> str:
    """A URL of the maintenance database of the Postgres the tests use."""
    url = os.environ.get("ERRANDS_TEST_DATABASE_URL")
    if url:
        return url
    if _reachable(LOCAL_SERVER):
        return LOCAL_SERVER
    return embedded_postgres(EMBEDDED_DIR)


def _schema_fingerprint() -> str:
    digest = hashlib.sha256()
    folder = resources.files("errands").joinpath("sql", "migrations")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        digest.update(entry.name.encode() + entry.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    """The name of a database with every migration applied, made once per schema."""
    name = f"errands_tpl_{_schema_fingerprint()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        # Several pytest runs may share the server: one builds, the others wait.
        admin.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        try:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                building = f"{name}_building"
                admin.execute(f'DROP DATABASE IF EXISTS "{building}"')
                admin.execute(f'CREATE DATABASE "{building}"')
                migrate(with_dbname(server_url, building))
                admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            admin.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
    return name


def create_database(server_url: str, template: str | None = None) -> str:
    """Create a fresh database (optionally from a template); return its URL."""
    name = f"errands_test_{uuid.uuid4().hex[:16]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{clause}')
    return with_dbname(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop a test database, whoever is still connected to it."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    url = create_database(server_url, template_db)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """An empty database of this test's own, for migration tests."""
    url = create_database(server_url)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection
