"""``errands token`` and ``errands server`` as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from errands.sync.auth import verify_token
from tests.helpers import ROOT, ErrandsProcess
from tests.sync.conftest import SECRET, StartServer, SyncService


def errands(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "errands", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_prints_a_token_the_service_accepts(service: SyncService) -> None:
    done = errands("token", "--secret", SECRET, "--user", "carol", "--operator")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    caller = verify_token(SECRET, token)
    assert (caller.user, caller.operator) == ("carol", True)
    me = httpx.get(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"] == "carol"


def test_token_reads_the_environment() -> None:
    done = errands(
        "token", "--expires-in", "60", env={"ERRANDS_SECRET": SECRET, "ERRANDS_USER": "dave"}
    )
    assert done.returncode == 0, done.stderr
    assert verify_token(SECRET, done.stdout.strip()).user == "dave"


def test_token_needs_a_secret_and_a_user() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    missing = subprocess.run(
        [sys.executable, "-m", "errands", "token", "--user", "x"],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode != 0
    assert "--secret" in missing.stderr
    assert "Traceback" not in missing.stderr
    empty = errands("token", "--secret", SECRET, "--user", " ")
    assert empty.returncode != 0
    assert "--user" in empty.stderr


def test_server_refuses_to_start_without_secret_or_insecure(database_url: str) -> None:
    done = errands("server", "--database-url", database_url, "--port", "0")
    assert done.returncode == 2
    assert "--secret" in done.stderr
    assert "--insecure" in done.stderr
    both = errands("server", "--database-url", database_url, "--secret", "s", "--insecure")
    assert both.returncode == 2


def test_server_explains_an_unusable_database(empty_database_url: str) -> None:
    unmigrated = errands("server", "--database-url", empty_database_url, "--secret", SECRET)
    assert unmigrated.returncode == 1
    assert "errands migrate" in unmigrated.stderr
    nowhere = errands(
        "server", "--database-url", "postgresql://nobody@127.0.0.1:1/none", "--secret", SECRET
    )
    assert nowhere.returncode == 1
    assert "cannot use the database" in nowhere.stderr
    assert "Traceback" not in unmigrated.stderr + nowhere.stderr


def test_insecure_mode_says_so_and_has_one_user(start_server: StartServer) -> None:
    service = start_server("--insecure", secret=False)
    assert "INSECURE" in service.process.output()
    me = httpx.get(f"{service.url}/v1/me", headers={"Authorization": "Bearer whatever"})
    assert me.status_code == 200
    assert (me.json()["user"], me.json()["operator"]) == ("local", False)


def test_server_takes_its_options_from_the_environment(database_url: str) -> None:
    process = ErrandsProcess(
        "server",
        env={
            "ERRANDS_DATABASE_URL": database_url,
            "ERRANDS_SECRET": SECRET,
            "ERRANDS_PORT": "0",
            "ERRANDS_LIVE_HOLD": "0.5",
        },
    )
    try:
        service = SyncService(process)
        with service.client("erin") as client:
            assert client.get("/v1/me").json()["user"] == "erin"
            openapi = client.get("/openapi.json").json()
            assert "/v1/mutations" in openapi["paths"]
    finally:
        process.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_server_stops_cleanly_even_while_clients_wait(
    start_server: StartServer, signum: int
) -> None:
    service = start_server("--live-hold", "60")
    with (
        service.client("alice") as client,
        client.stream(
            "GET", "/v1/shapes/background_jobs/stream", params={"offset": "-1"}
        ) as stream,
    ):
        assert stream.status_code == 200
        assert service.process.stop(signum, timeout=20) == 0
    assert "Traceback" not in service.process.output()
