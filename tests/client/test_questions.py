"""Questions to the job's owner, end to end: a real ``errands worker`` asks (``ctx.ask``),
the question syncs to the owner's Python client through a real ``errands server``, the
owner answers (offline too), and the job resumes once; what the door refuses, over
real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import errands
from errands.client.replica import Replica
from errands.protocol import (
    JOBS_TABLE,
    PREFIX,
    START,
    QuestionClosed,
    ShapeResponse,
    UpsertMessage,
)
from errands.sync.auth import make_token
from tests.client.processes import SECRET, SyncServer, free_port, token
from tests.helpers import ErrandsProcess, wait_for


@pytest.fixture
def worker(database_url: str) -> Iterator[ErrandsProcess]:
    """A worker of the workflow handlers (``charge`` asks its owner)."""
    process = ErrandsProcess(
        "worker",
        "tests.worker.workflow_handlers:registry",
        "--database-url",
        database_url,
        "--poll-interval",
        "0.1",
    )
    process.wait_for_output("started", timeout=30)
    yield process
    process.close()


def client_for(path: Path, url: str, user_token: str) -> errands.Client:
    return errands.Client(replica=path, server=url, token=user_token, max_backoff=0.3)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def row(database_url: str, job_id: str) -> dict[str, Any]:
    with (
        psycopg.connect(database_url) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        found = cur.execute("SELECT * FROM background_jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return found


def answer_events(database_url: str, job_id: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT type, operator FROM job_events WHERE job_id = %s AND type = 'answered'",
            (job_id,),
        ).fetchall()


def asked(client: errands.Client) -> list[errands.client.Question]:
    return wait_for(client.questions, timeout=60, what="the question to sync")


def test_answered_offline_the_job_resumes_once_after_reconnect(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    log = tmp_path / "log"
    server.start()
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("charge", {"log": str(log)})
        [question] = asked(client)
        assert (question.job, question.text, question.choices) == (
            job.id,
            "Charge 40 EUR?",
            ["yes", "no"],
        )
        assert question.asked_at is not None
        assert question.deadline is None
        assert client.get(job.id).asking  # type: ignore[union-attr]

        client.disconnect()
        server.stop()
        with pytest.raises(ValueError, match="not one of the question's choices"):
            client.answer(job.id, "maybe")  # refused locally, nothing recorded
        answered = client.answer(job.id, "yes")
        assert (answered.answer, answered.pending, answered.asking) == ("yes", True, False)
        assert client.questions() == []  # answered at once, offline
        assert client.status.pending == 1
        with pytest.raises(QuestionClosed):
            client.answer(job.id, "no")  # once
        assert row(server.database_url, job.id)["answer"] is None  # not uploaded yet
        assert [line.split()[0] for line in lines(log)] == ["run", "quote"]

        server.start()
        client.connect()
        done = client.wait(job.id, timeout=60)
        assert (done.state, done.result) == ("completed", {"quote": 40, "answer": "yes"})
        wait_for(lambda: client.status.pending == 0 and client.status.rejected == 0)
        assert client.questions() == []
    # Ran twice: once to ask, once answered; the step before the question ran once.
    assert [line.split()[0] for line in lines(log)] == ["run", "quote", "run", "answered"]
    assert lines(log)[-1] == "answered yes"
    assert answer_events(server.database_url, job.id) == [("answered", None)]  # the owner
    final = row(server.database_url, job.id)
    assert (final["question"], final["answer"], final["attempts"]) == (None, None, 1)


def mutation(job_id: str, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "mutations": [
            {
                "id": str(uuid.uuid4()),
                "table": JOBS_TABLE,
                "op": "update",
                "key": job_id,
                "values": values,
            }
        ]
    }


def post(url: str, user_token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}{PREFIX}/mutations",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {user_token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def test_the_door_takes_only_the_owners_answer_to_a_pending_question(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    log = tmp_path / "log"
    server.start()
    bob = token("bob")
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("charge", {"log": str(log)})
        asked(client)
        wait_for(lambda: client.status.pending == 0, what="the insert to settle")

    # Another user's answer: the same refusal as for a job that does not exist.
    theirs = post(server.url, bob, mutation(job.id, {"answer": "yes"}))
    unknown_id = str(uuid.uuid4())
    nobodys = post(server.url, bob, mutation(unknown_id, {"answer": "yes"}))
    assert theirs["status"] == nobodys["status"] == "rejected"
    assert theirs["code"] == nobodys["code"] == "not_found"
    assert theirs["message"].replace(job.id, "ID") == nobodys["message"].replace(unknown_id, "ID")

    # Not one of the choices; not with a cancellation in the same update; not null.
    bad = post(server.url, alice, mutation(job.id, {"answer": "maybe"}))
    assert (bad["status"], bad["code"]) == ("rejected", "validation_error")
    assert "not one of the question's choices" in bad["message"]
    both = post(server.url, alice, mutation(job.id, {"answer": "yes", "cancelled": True}))
    assert both["code"] == "forbidden_operation"
    null = post(server.url, alice, mutation(job.id, {"answer": None}))
    assert null["code"] == "validation_error"
    assert row(server.database_url, job.id)["answer"] is None

    # The owner's answer applies, once: a second one finds the question closed.
    assert post(server.url, alice, mutation(job.id, {"answer": "no"}))["status"] == "applied"
    again = post(server.url, alice, mutation(job.id, {"answer": "yes"}))
    assert (again["status"], again["code"]) == ("rejected", "question_closed")
    wait_for(lambda: row(server.database_url, job.id)["state"] == "completed", timeout=60)
    assert row(server.database_url, job.id)["result"] == {"quote": 40, "answer": "no"}
    assert [line.split()[0] for line in lines(log)] == ["run", "quote", "run", "answered"]


def test_an_operator_answers_through_the_admin_api_and_is_named(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    log = tmp_path / "log"
    server.start()
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("charge", {"log": str(log)})
        asked(client)
        admin = make_token(SECRET, "ops", operator=True)
        url = f"{server.url}{PREFIX}/admin/jobs/{job.id}/answer"
        headers = {"Authorization": f"Bearer {admin}"}
        refused = httpx.post(url, json={"value": "maybe"}, headers=headers, timeout=30)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "validation_error")
        by_alice = httpx.post(
            url, json={"value": "yes"}, headers={"Authorization": f"Bearer {alice}"}
        )
        assert by_alice.status_code == 403
        answered = httpx.post(url, json={"value": "yes"}, headers=headers, timeout=30)
        assert answered.status_code == 200, answered.text
        closed = httpx.post(url, json={"value": "yes"}, headers=headers, timeout=30)
        assert (closed.status_code, closed.json()["error"]["code"]) == (409, "question_closed")
        missing = httpx.post(
            f"{server.url}{PREFIX}/admin/jobs/{uuid.uuid4()}/answer",
            json={"value": "yes"},
            headers=headers,
        )
        assert missing.status_code == 404
        done = client.wait(job.id, timeout=60)
        assert done.result == {"quote": 40, "answer": "yes"}
    assert answer_events(server.database_url, job.id) == [("answered", "ops")]


def test_a_timed_out_question_leaves_the_clients_questions(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    log = tmp_path / "log"
    server.start()
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("charge", {"log": str(log), "timeout": 2})
        [question] = asked(client)
        assert question.deadline is not None
        assert question.asked_at is not None
        assert 1 < (question.deadline - question.asked_at).total_seconds() < 3
        done = client.wait(job.id, timeout=60)
        assert (done.state, done.error["type"]) == ("failed", "QuestionTimedOut")
        assert client.questions() == []
        with pytest.raises(QuestionClosed):
            client.answer(job.id, "yes")


def test_a_replica_answers_only_what_it_can_see(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "r.db")
    try:
        with pytest.raises(errands.JobNotFound):
            replica.answer(str(uuid.uuid4()), "yes")
        job_id = replica.insert_job("charge", {})
        with pytest.raises(QuestionClosed):
            replica.answer(job_id, "yes")  # it asks nothing (yet)
        assert replica.questions() == []
    finally:
        replica.close()


def test_the_command_line_shows_and_answers_a_question(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess
) -> None:
    log = tmp_path / "log"
    server.start()
    env = {
        "ERRANDS_SERVER": server.url,
        "ERRANDS_REPLICA": str(tmp_path / "cli.db"),
        "ERRANDS_TOKEN": token("carol"),
        "COLUMNS": "200",
    }

    def run(*args: str) -> tuple[int, str]:
        process = ErrandsProcess(*args, env=env)
        try:
            return process.process.wait(90), process.output()
        finally:
            process.close()

    code, output = run("submit", "charge", "--payload", json.dumps({"log": str(log)}))
    assert code == 0, output
    match = re.search(r"submitted (\S+)", output)
    assert match is not None, output
    job_id = match.group(1)

    def listed() -> str:
        code, output = run("jobs")
        assert code == 0, output
        return output if "waiting for your answer" in output else ""

    output = wait_for(listed, timeout=60, what="the question in `errands jobs`")
    assert 'Charge 40 EUR? ("yes" / "no")' in output
    short = job_id[-8:]
    code, output = run("answer", short, "maybe")
    assert code == 1
    assert "not one of the question's choices" in output
    assert "Traceback" not in output
    code, output = run("answer", short, "yes")
    assert code == 0, output
    assert "answered" in output
    wait_for(lambda: row(server.database_url, job_id)["state"] == "completed", timeout=60)
    assert row(server.database_url, job_id)["result"] == {"quote": 40, "answer": "yes"}


def test_the_async_client_lists_and_answers_questions(tmp_path: Path) -> None:
    dead_server = f"http://127.0.0.1:{free_port()}"  # offline: everything here is local
    job_id = str(uuid.uuid4())
    question = {"name": "ask 1", "text": "Go?", "choices": None, "asked_at": "2026-12-04T10:00:00Z"}
    row = {"id": job_id, "timestamp": "2026-12-04T10:00:00+00:00", "question": question}

    async def main() -> None:
        async with errands.AsyncClient(replica=tmp_path / "r.db", server=dead_server) as client:
            response = ShapeResponse(messages=[UpsertMessage(key=job_id, row=row)], offset="g_5_5_")
            client.replica.apply(response, START)
            [asked] = await client.questions()
            assert (asked.job, asked.text, asked.choices, asked.deadline) == (
                job_id,
                "Go?",
                None,
                None,
            )
            with pytest.raises(ValueError, match="a text of at most 10000 characters"):
                await client.answer(job_id, 42)
            answered = await client.answer(job_id, "Ada")
            assert (answered.answer, answered.pending) == ("Ada", True)
            assert await client.questions() == []

    asyncio.run(main())
