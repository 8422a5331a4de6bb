"""Past one process: nginx (deploy/nginx.conf) in front of two ``errands server``
processes on one database, a worker, and clients that go through nginx."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

import errands
from errands.sync.auth import make_token
from errands.sync.caching import CACHE_SECONDS
from tests.client.processes import SECRET, SyncServer, start_worker, token
from tests.e2e.conftest import StartNginx, StartServers
from tests.helpers import wait_for
from tests.sync.api import JOBS, insert, mutation, post, read, sync_all


def http(url: str, user: str, **claims: Any) -> httpx.Client:
    """An HTTP client with a fresh token for ``user``."""
    headers = {"Authorization": f"Bearer {make_token(SECRET, user, **claims)}"}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def test_clients_through_nginx_go_on_when_a_server_is_killed_mid_run(
    database_url: str, start_servers: StartServers, start_nginx: StartNginx, tmp_path: Path
) -> None:
    first, second = start_servers(2)
    nginx = start_nginx([first.port, second.port])
    worker = start_worker(database_url)
    alice, bob = token("alice"), token("bob")
    clients = {
        "alice": errands.Client(tmp_path / "alice.db", nginx.url, alice, max_backoff=0.3),
        "alice's other replica": errands.Client(
            tmp_path / "alice2.db", nginx.url, alice, max_backoff=0.3
        ),
        "bob": errands.Client(tmp_path / "bob.db", nginx.url, bob, max_backoff=0.3),
    }
    try:
        for client in clients.values():
            client.connect()
        slow = {"steps": 30, "step": 0.1}
        before = [clients["alice"].submit("sleep_async", slow) for _ in range(3)]
        bobs = [clients["bob"].submit("sleep_async", slow)]
        watcher = clients["alice's other replica"]

        def progressing() -> bool:
            return any((job := watcher.get(j.id)) is not None and job.progress > 0 for j in before)

        wait_for(progressing, timeout=30, what="a job's progress to reach the other replica")
        # nginx keeps each token on one process: kill the one alice's requests reach.
        busy = nginx.access_log()[-1].split()[1]
        victim = first if busy.endswith(f":{first.port}") else second
        victim.stop(signal.SIGKILL)  # mid-run: jobs running, long polls held through it
        after = [
            watcher.submit("add", {"a": 2, "b": 3}),
            clients["alice"].submit("sleep_async", {"steps": 3, "step": 0.1}),
        ]
        bobs.append(clients["bob"].submit("add", {"a": 1, "b": 1}))
        for job in before + after:
            assert clients["alice"].wait(job.id, timeout=60).state == "completed"
            assert watcher.wait(job.id, timeout=30).state == "completed"
        for job in bobs:
            assert clients["bob"].wait(job.id, timeout=60).state == "completed"
        assert watcher.get(after[0].id).result == 5  # type: ignore[union-attr]
        alices = {j.id for j in before + after}
        assert {j.id for j in watcher.jobs(limit=100)} == alices
        assert {j.id for j in clients["bob"].jobs(limit=100)} == {j.id for j in bobs}
        assert all(c.status.connected and c.status.pending == 0 for c in clients.values())
    finally:
        for client in clients.values():
            client.close()
        worker.close()
    served_by = {line.split()[1] for line in nginx.access_log()}
    assert {f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"} <= served_by


def test_a_users_limits_hold_across_two_processes_behind_nginx(
    start_servers: StartServers, start_nginx: StartNginx
) -> None:
    """Each process counts a user's live readers and shapes; nginx keeps a token on one
    process (deploy/nginx.conf hashes it), so two processes do not give a user twice
    its share: with 2 distinct shapes allowed, the third shape is refused."""
    servers = start_servers(2, "--max-shapes", "2", "--live-hold", "5")
    nginx = start_nginx([server.port for server in servers])
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'alice')}"}

    async def hold_three_shapes() -> list[int]:
        async with httpx.AsyncClient(base_url=nginx.url, headers=headers, timeout=30) as web:
            offsets = []
            for queue in ("q1", "q2", "q3"):
                where = json.dumps([{"column": "queue", "op": "eq", "value": queue}])
                first = await web.get(JOBS, params={"offset": "-1", "where": where})
                offsets.append((where, first.json()["offset"]))

            async def live(where: str, offset: str) -> int:
                params = {"offset": offset, "where": where, "live": "true"}
                return (await web.get(JOBS, params=params)).status_code

            held = [asyncio.create_task(live(*offsets[0])), asyncio.create_task(live(*offsets[1]))]
            await asyncio.sleep(1.0)  # both held by now (the service holds up to 5 s)
            third = await live(*offsets[2])
            return [third, *await asyncio.gather(*held)]

    third, *held = asyncio.run(hold_three_shapes())
    assert third == 429
    assert held == [200, 200]
    served_by = {line.split()[1] for line in nginx.access_log()}
    assert len(served_by) == 1  # one token, one process


def test_every_token_of_a_user_lands_on_one_process_and_the_limits_hold(
    start_servers: StartServers, start_nginx: StartNginx
) -> None:
    """nginx routes shape reads, event streams and uploads by the user the service
    verified (X-Errands-Route from /v1/me), not by the token: alice's eight tokens all
    reach one process (hashing the tokens would spread them: the chance that eight land
    on one of two processes is 1 in 128), so her third distinct shape, on yet another
    token, is refused; ten users do spread over both processes."""
    servers = start_servers(2, "--max-shapes", "2", "--live-hold", "5")
    nginx = start_nginx([server.port for server in servers])
    tokens = [make_token(SECRET, "alice", expires_in=3600 + n) for n in range(8)]
    assert len(set(tokens)) == 8

    def upstreams() -> set[str]:
        """The processes nginx sent requests to (a cache hit names none)."""
        return {m for line in nginx.access_log() for m in re.findall(r"127\.0\.0\.1:\d+", line)}

    for n, alices in enumerate(tokens):
        with httpx.Client(base_url=nginx.url, timeout=30) as web:
            headers = {"Authorization": f"Bearer {alices}"}
            assert web.get(JOBS, params={"offset": "-1"}, headers=headers).status_code == 200
            values = {"kind": "test", "payload": {"n": n}}
            upload = {"mutations": [mutation("insert", str(uuid.uuid4()), values)]}
            assert web.post("/v1/mutations", json=upload, headers=headers).status_code == 200
            stream = web.build_request(
                "GET", f"{JOBS}/stream", params={"offset": "-1"}, headers=headers
            )
            answer = web.send(stream, stream=True)
            assert answer.status_code == 200
            answer.close()
    assert len(upstreams()) == 1, nginx.access_log()

    async def three_shapes_on_three_tokens() -> list[int]:
        async def live(token_: str, queue: str) -> int:
            where = json.dumps([{"column": "queue", "op": "eq", "value": queue}])
            headers = {"Authorization": f"Bearer {token_}"}
            async with httpx.AsyncClient(base_url=nginx.url, headers=headers, timeout=30) as web:
                first = await web.get(JOBS, params={"offset": "-1", "where": where})
                params = {"offset": first.json()["offset"], "where": where, "live": "true"}
                return (await web.get(JOBS, params=params)).status_code

        held = [asyncio.create_task(live(tokens[n], f"q{n}")) for n in (0, 1)]
        await asyncio.sleep(1.0)  # both held by now (the service holds up to 5 s)
        third = await live(tokens[2], "q3")
        return [third, *await asyncio.gather(*held)]

    third, *held = asyncio.run(three_shapes_on_three_tokens())
    assert third == 429
    assert held == [200, 200]

    for user in (f"user{n}" for n in range(10)):
        with http(nginx.url, user) as web:
            assert web.get(JOBS, params={"offset": "-1"}).status_code == 200
    assert len(upstreams()) == 2, nginx.access_log()


def test_an_offset_issued_by_one_server_is_honoured_by_the_other(
    start_servers: StartServers,
) -> None:
    first, second = start_servers(2)
    with http(first.url, "alice") as one, http(second.url, "alice") as other:
        cancelled = insert(one)
        _, offset = sync_all(one)
        added = insert(other)
        post(one, mutation("update", cancelled, {"cancelled": True}))
        from_one, from_other = read(one, offset), read(other, offset)
        assert from_one.messages == from_other.messages
        changed = {m.key: m.row for m in from_other.messages if m.type == "upsert"}
        assert set(changed) == {cancelled, added}
        assert changed[cancelled]["cancelled"] is True
        # And on, back and forth: a live read on one from the other's offset.
        later = insert(other)
        live = read(one, from_other.offset, live="true")
        assert [m.key for m in live.messages if m.type == "upsert"] == [later]


CLIENTS = 500
ROWS = 12
PAGE = 5
PAGES = -(-ROWS // PAGE)


QUERIES = ("shape_queries", "change_queries")
"""Every query the service runs to answer readers: per shape, and per change batch."""


def stats(servers: list[SyncServer], *counters: str) -> int:
    """The sum of /v1/stats counters over the processes."""
    headers = {"Authorization": f"Bearer {make_token(SECRET, 'ops', operator=True)}"}
    total = 0
    for server in servers:
        answer = httpx.get(f"{server.url}/v1/stats", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        total += sum(int(answer.json()[counter]) for counter in counters)
    return total


def device(url: str, n: int) -> httpx.AsyncClient:
    """Client ``n`` of carol: a token of its own (another expiry), one user, many
    devices. verify=False: plain HTTP, and an SSL context costs 0.1 s per client."""
    token = make_token(SECRET, "carol", expires_in=3600 + n)
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=60, verify=False)  # noqa: S501


async def snapshot(web: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """Follow the shape from -1 to up-to-date: the rows and the offset reached."""
    rows: dict[str, Any] = {}
    offset = "-1"
    while True:
        answer = await web.get(JOBS, params={"offset": offset})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows |= {m["key"]: m["row"] for m in body["messages"] if m["type"] == "upsert"}
        offset = body["offset"]
        if any(m["type"] == "up-to-date" for m in body["messages"]):
            return rows, offset


def test_500_clients_of_one_user_cost_the_origins_one_query_per_page_then_per_change(
    start_servers: StartServers, start_nginx: StartNginx
) -> None:
    # A long poll interval: the hubs run (almost) no query of their own meanwhile. One
    # user's 500 live polls are past the default fair share (--max-live-readers): raised.
    servers = start_servers(
        2, "--page-size", str(PAGE), "--poll-interval", "30", "--max-live-readers", "1000"
    )
    nginx = start_nginx([s.port for s in servers])
    with http(servers[0].url, "carol") as carol, http(servers[1].url, "dave") as dave:
        values = [{"kind": "test", "payload": {"n": n}} for n in range(ROWS)]
        post(carol, *[mutation("insert", str(uuid.uuid4()), v) for v in values])
        daves = {insert(dave)}
        before = stats(servers, "shape_queries")

        async def cold_start_then_follow() -> tuple[
            list[dict[str, Any]], int, int, float, list[Any]
        ]:
            webs = [device(nginx.url, n) for n in range(CLIENTS)]
            try:
                started = time.monotonic()
                replicas = await asyncio.gather(*(snapshot(web) for web in webs))
                took = time.monotonic() - started
                cold = await asyncio.to_thread(stats, servers, "shape_queries")
                reads = await asyncio.to_thread(stats, servers, *QUERIES)
                live = [
                    asyncio.create_task(web.get(JOBS, params={"offset": offset, "live": "true"}))
                    for web, (_, offset) in zip(webs, replicas, strict=True)
                ]
                await asyncio.to_thread(
                    wait_for, lambda: stats(servers, "waiting") == CLIENTS, 60, 0.2, "live polls"
                )
                await asyncio.to_thread(insert, carol)
                answers = [(await task).json() for task in live]
                return [rows for rows, _ in replicas], cold, reads, took, answers
            finally:
                await asyncio.gather(*(web.aclose() for web in webs))

        replicas, cold, reads, took, answers = asyncio.run(cold_start_then_follow())
        follow = stats(servers, *QUERIES) - reads
    hits = sum(" HIT " in line for line in nginx.access_log())
    print(
        f"{CLIENTS} clients x {PAGES} pages in {took:.1f} s: {cold - before} shape queries,"
        f" {hits} cache hits; then {CLIENTS} long polls and a write: {follow} queries"
    )
    assert all(len(rows) == ROWS for rows in replicas)
    assert all({r["owner"] for r in rows.values()} == {"carol"} for rows in replicas)
    # One query per page (the cache lock holds the other requests), and one more per
    # page for each max-age the cold start lasted on this busy machine: an expired
    # entry is refreshed by one request while the others get the previous answer.
    assert PAGES <= cold - before <= PAGES * (1 + math.ceil(took / CACHE_SECONDS))
    # Every long poll got the new row, and the processes collapsed them: a few reads
    # each (change-log reads and shape queries) for the change, not one per reader.
    assert all(len([m for m in a["messages"] if m["type"] == "upsert"]) == 1 for a in answers)
    assert 1 <= follow <= 10 * len(servers)
    # Same URL, another user: dave's own rows, never carol's from the cache.
    with http(nginx.url, "dave") as dave_via_cache:
        answer = dave_via_cache.get(JOBS, params={"offset": "-1"})
    assert answer.headers["x-cache-status"] == "MISS"
    assert {m["key"] for m in answer.json()["messages"] if m["type"] == "upsert"} == daves
    # A forged token naming carol gets nothing, cached or not.
    forged = make_token("another-secret-0123456789abcdef012", "carol")
    refused = httpx.get(
        f"{nginx.url}{JOBS}", params={"offset": "-1"}, headers={"Authorization": f"Bearer {forged}"}
    )
    assert refused.status_code == 401
    assert json.loads(refused.text)["error"]["code"] == "unauthorized"


def test_a_cors_preflight_passes_nginxs_token_check(
    start_servers: StartServers, start_nginx: StartNginx
) -> None:
    """A preflight carries no token: nginx's auth_request lets it through to the service
    (which answers it) on the routes it checks tokens on."""
    servers = start_servers(2, "--cors-origin", "https://app.example")
    nginx = start_nginx([server.port for server in servers])
    ask = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for path in ("/v1/mutations", JOBS, f"{JOBS}/stream"):
        answer = httpx.options(nginx.url + path, headers=ask, timeout=10)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.post(f"{nginx.url}/v1/mutations", json={"mutations": []}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
