"""Fixtures of the client's end-to-end tests: real server and worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.processes import SyncServer, start_worker, token
from tests.helpers import ErrandsProcess


@pytest.fixture
def server(database_url: str) -> Iterator[SyncServer]:
    """A sync service on this test's database, not started yet: tests start it (and
    stop it) when they want it up."""
    sync = SyncServer(database_url)
    yield sync
    sync.stop()


@pytest.fixture
def worker(database_url: str) -> Iterator[ErrandsProcess]:
    """A worker running tests/worker/handlers.py."""
    process = start_worker(database_url)
    yield process
    process.close()


@pytest.fixture(scope="session")
def alice() -> str:
    """A token of the user alice, from ``errands token``."""
    return token("alice")
