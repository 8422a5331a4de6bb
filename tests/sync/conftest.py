"""Fixtures for the sync service: the real ``errands server`` in a subprocess, tokens,
and an HTTP client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from errands.sync.auth import make_token
from tests.helpers import ErrandsProcess
from tests.sync.history import WRITERS, Writer

SECRET = "tests-secret-0123456789abcdef0123456789"
READY = re.compile(r"errands server listening on (http://\S+)")


class SyncService:
    """A running ``errands server`` and its URL."""

    def __init__(self, process: ErrandsProcess) -> None:
        self.process = process
        process.wait_for_output("errands server listening on", timeout=30)
        found = READY.search(process.output())
        assert found, process.output()
        self.url = found[1]

    def client(self, user: str | None = "alice", *, operator: bool = False) -> httpx.Client:
        """An HTTP client with a token for ``user`` (None: no token)."""
        headers = {}
        if user is not None:
            headers["Authorization"] = f"Bearer {make_token(SECRET, user, operator=operator)}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


StartServer = Callable[..., SyncService]


@pytest.fixture
def start_server(database_url: str) -> Iterator[StartServer]:
    """Start ``errands server`` on a free port with short intervals; extra CLI
    arguments replace nothing and come last."""
    started: list[ErrandsProcess] = []

    def start(*extra: str, secret: bool = True) -> SyncService:
        env = {"ERRANDS_SECRET": SECRET} if secret else {}
        process = ErrandsProcess(
            "server",
            "--database-url",
            database_url,
            "--port",
            "0",
            "--poll-interval",
            "0.2",
            "--live-hold",
            "2",
            "--page-size",
            "5",
            *extra,
            env=env,
        )
        started.append(process)
        return SyncService(process)

    try:
        yield start
    finally:
        for process in started:
            process.stop()
            process.close()


@pytest.fixture
def service(start_server: StartServer) -> SyncService:
    """A running sync service with the test secret."""
    return start_server()


@pytest.fixture
def alice(service: SyncService) -> Iterator[httpx.Client]:
    with service.client("alice") as client:
        yield client


@pytest.fixture
def bob(service: SyncService) -> Iterator[httpx.Client]:
    with service.client("bob") as client:
        yield client


@pytest.fixture
def operator(service: SyncService) -> Iterator[httpx.Client]:
    with service.client("root", operator=True) as client:
        yield client


@pytest.fixture
def writers(database_url: str) -> Iterator[list[Writer]]:
    """Connections for the change-capture tests' concurrent writers."""
    conns = [psycopg.connect(database_url) for _ in range(WRITERS)]
    try:
        yield [Writer(c) for c in conns]
    finally:
        for c in conns:
            c.close()
