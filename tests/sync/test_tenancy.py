"""A client asks, the server decides: each row of issue 15's table, tried over real HTTP
against ``errands server`` with one ordinary user's token (mallory) next to another's."""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import psycopg
import pydantic

import errands
from errands.operations import queues
from errands.queries import query
from tests.sync.api import JOBS, mutation, post, sync_all
from tests.sync.conftest import SECRET, StartServer, SyncService

registry = errands.Registry()


class Resize(pydantic.BaseModel):
    width: int
    height: int = 1


@registry.job("resize", clients=True)
def resize(ctx: errands.JobContext, payload: Resize) -> None:
    """Declared for clients, with a typed payload."""


@registry.job("urgent", clients=True, priority=3, client_priority=5)
def urgent(ctx: errands.JobContext, payload: Any) -> None:
    """Clients may ask for up to priority 5."""


@registry.job("cleanup", priority=9)
def cleanup(ctx: errands.JobContext, payload: Any) -> None:
    """Meant only for the app's own schedule: not for clients."""


def strict(start_server: StartServer, database_url: str, *extra: str) -> SyncService:
    """A service that lets clients submit only the declared kinds (and ``extra``'s)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(query("register_kinds"), registry.kind_settings())
    return start_server("--client-kinds", "", *extra)


def submit(client: httpx.Client, kind: str, **values: Any) -> Any:
    """Insert one job; its mutation result."""
    response = post(client, mutation("insert", str(uuid.uuid4()), {"kind": kind, **values}))
    return response.results[0]


def test_only_kinds_declared_for_clients_are_accepted(
    start_server: StartServer, database_url: str
) -> None:
    service = strict(start_server, database_url, "--client-kinds", "report")
    with service.client("mallory") as mallory, service.client("root", operator=True) as root:
        refused = submit(mallory, "cleanup", payload={"scope": "EVERYTHING", "tenant": "alice"})
        assert (refused.status, refused.code) == ("rejected", "kind_not_allowed")
        assert submit(mallory, "default").code == "kind_not_allowed"
        assert submit(mallory, "resize", payload={"width": 2}).status == "applied"
        assert submit(mallory, "report").status == "applied"  # named by --client-kinds
        assert submit(root, "cleanup").status == "applied"  # operators are not limited
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kind, submitted_by FROM background_jobs ORDER BY kind"
        ).fetchall()
    assert rows == [("cleanup", "operator"), ("report", "client"), ("resize", "client")]


def test_a_payload_must_match_its_kinds_schema(
    start_server: StartServer, database_url: str
) -> None:
    service = strict(start_server, database_url)
    with service.client("mallory") as mallory:
        wrong = submit(mallory, "resize", payload={"width": "wide"})
        assert (wrong.status, wrong.code) == ("rejected", "validation_error")
        assert "payload.width" in wrong.message
        assert "integer" in wrong.message
        missing = submit(mallory, "resize", payload={"height": 3})
        assert "width" in missing.message
        assert submit(mallory, "resize", payload={"width": 1, "height": 2}).status == "applied"


def test_clients_cannot_buy_precedence(start_server: StartServer, database_url: str) -> None:
    service = strict(start_server, database_url)
    with service.client("mallory") as mallory:
        for _ in range(3):
            applied = submit(
                mallory,
                "resize",
                payload={"width": 1},
                priority=1000,
                run_at="0001-01-01T00:00:00Z",
            )
            assert applied.status == "applied"
        assert submit(mallory, "urgent", priority=1000).status == "applied"
        assert submit(mallory, "urgent", priority=4).status == "applied"
        assert submit(mallory, "urgent").status == "applied"  # the kind's own priority
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kind, priority, run_at >= received_at FROM background_jobs"
            " ORDER BY kind, priority"
        ).fetchall()
    # resize: capped at its own priority (0); urgent: at its client_priority (5), and
    # its own (3) when the client asks for none
    assert rows == [("resize", 0, True)] * 3 + [
        ("urgent", 3, True),
        ("urgent", 4, True),
        ("urgent", 5, True),
    ]


def test_a_quota_of_queued_jobs_per_user(start_server: StartServer, database_url: str) -> None:
    service = strict(start_server, database_url, "--max-queued-per-user", "5")

    def batch(count: int) -> dict[str, Any]:
        values = {"kind": "resize", "payload": {"width": 1}}
        return {"mutations": [mutation("insert", str(uuid.uuid4()), values) for _ in range(count)]}

    with service.client("mallory") as mallory, service.client("alice") as alice:
        assert mallory.post("/v1/mutations", json=batch(3)).status_code == 200
        # Under the quota when it arrives, a batch goes through whole (never wedged)...
        assert mallory.post("/v1/mutations", json=batch(4)).status_code == 200
        # ...and once the quota is reached, any batch that inserts is refused whole.
        refused = mallory.post("/v1/mutations", json=batch(1))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert submit(alice, "resize", payload={"width": 1}).status == "applied"  # her own
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE background_jobs SET state = 'completed' WHERE owner = 'mallory'")
        assert mallory.post("/v1/mutations", json=batch(1)).status_code == 200
    with psycopg.connect(database_url) as conn:
        owners = conn.execute(
            "SELECT owner, state, count(*) FROM background_jobs GROUP BY 1, 2 ORDER BY 1, 2"
        )
        assert owners.fetchall() == [
            ("alice", "queued", 1),
            ("mallory", "completed", 7),
            ("mallory", "queued", 1),
        ]


def test_a_client_timestamp_moves_no_window_and_no_alert(
    service: SyncService, database_url: str
) -> None:
    with service.client("mallory") as mallory:
        for stamp in ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"):
            assert submit(mallory, "k", timestamp=stamp).status == "applied"
    with psycopg.connect(database_url) as conn:
        [depth] = queues(conn)
    assert depth.oldest_age is not None
    assert depth.oldest_age < 3600  # was 6.4e10 s: the age of year 1
    assert depth.oldest is not None
    assert depth.oldest.year == datetime.now(UTC).year


def test_a_failed_jobs_traceback_reaches_only_operators(
    service: SyncService, database_url: str
) -> None:
    with service.client("alice") as alice:
        key = str(uuid.uuid4())
        assert post(alice, mutation("insert", key, {"kind": "k"})).results[0].status == "applied"
        error = {"type": "KeyError", "message": "'x'", "traceback": "File /srv/app/secret.py"}
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE background_jobs SET state = 'failed', error = %s WHERE id = %s",
                (psycopg.types.json.Jsonb(error), key),
            )
        rows, _ = sync_all(alice)
        assert rows[key]["error"] == {"type": "KeyError", "message": "'x'"}
    with service.client("root", operator=True) as root:
        detail = root.get(f"/v1/admin/jobs/{key}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["job"]["error"]["traceback"] == "File /srv/app/secret.py"


def test_confusable_token_subjects_are_refused(service: SyncService) -> None:
    now = int(time.time())
    for subject in ("\u0430lice", "\u0441\u043e\u0440\u0435"):  # Cyrillic a + Latin; all Cyrillic
        token = jwt.encode({"sub": subject, "exp": now + 60}, SECRET, algorithm="HS256")
        answer = httpx.get(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert (
            "script" in answer.json()["error"]["message"]
            or "Latin" in answer.json()["error"]["message"]
        )
    token = jwt.encode({"sub": "Иван", "exp": now + 60}, SECRET, algorithm="HS256")
    answer = httpx.get(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.json()["user"] == "Иван"  # a name in one script, not a look-alike


def test_bodies_outside_body_routes_are_not_read(service: SyncService) -> None:
    """A declared 3 MB body to a route that takes none is answered at once, unread
    (before, the service waited for it, holding what had arrived)."""
    url = urlsplit(service.url)
    for method, path in (("POST", "/metrics"), ("PUT", "/console"), ("DELETE", "/no-such")):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n"
                "Content-Type: application/json\r\n\r\n"
            )
            sock.sendall(head.encode() + b"{")
            started = time.monotonic()
            status = sock.recv(64).split(b" ")[1]
            assert time.monotonic() - started < 5
            assert status in (b"404", b"405"), (method, path, status)


def test_plain_requests_in_flight_are_counted_per_user(
    start_server: StartServer, database_url: str
) -> None:
    """Over the limit, a user's plain reads are refused at once with 429; another user's
    are served meanwhile."""
    service = start_server("--max-requests-per-user", "1", "--page-size", "1000")
    with psycopg.connect(database_url, autocommit=True) as conn:
        errands.enqueue_many(conn, "k", [{"pad": "x" * 2000}] * 3000, owner="mallory")
    codes: list[int] = []
    with service.client("mallory") as mallory, service.client("alice") as alice:

        def read(_: int) -> int:
            return mallory.get(JOBS, params={"offset": "-1"}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            reads = [pool.submit(read, i) for i in range(8)]
            assert alice.get(JOBS, params={"offset": "-1"}).status_code == 200
            codes = [r.result() for r in reads]
    assert 200 in codes
    assert 429 in codes
