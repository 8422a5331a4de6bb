"""The operator's commands as real subprocesses against a real database: ``errands
jobs / show / retry / cancel / stats / prune`` with ``--database-url``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from errands.operations import default_operator
from tests.helpers import ErrandsProcess
from tests.operations.jobs import make_job

Conn = psycopg.Connection[Any]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """``errands ARGS`` to its end: exit status and output (stdout and stderr)."""
    process = ErrandsProcess(*args, env={"COLUMNS": "200", **(env or {})})
    try:
        return process.process.wait(timeout), process.output()
    finally:
        process.close()


@pytest.fixture
def db(database_url: str) -> dict[str, str]:
    """The environment that selects the operator's form."""
    return {"ERRANDS_DATABASE_URL": database_url}


def test_jobs_lists_and_filters_every_job(conn: Conn, db: dict[str, str]) -> None:
    failed = make_job(conn, "failed", "resize", owner="bob")
    make_job(conn, "completed", "resize")
    email = make_job(conn, "queued", "email", queue="mail")

    code, output = run("jobs", "--state", "failed,queued", "--json", env=db)
    assert code == 0, output
    listed = json.loads(output)
    assert [(j["id"], j["state"]) for j in listed] == [
        (str(email), "queued"),
        (str(failed), "failed"),
    ]
    assert listed[1]["error"] == {"type": "ValueError", "message": "boom"}

    code, output = run("jobs", "--owner", "bob", env=db)
    assert code == 0, output
    assert str(failed)[-8:] in output
    assert str(email)[-8:] not in output
    assert "1 of 1 jobs shown (1 failed)" in output

    code, output = run("jobs", "--kind", "nothing", env=db)
    assert (code, output.strip()) == (0, "no job matches")


def test_show_prints_the_row_attempts_and_timeline(conn: Conn, db: dict[str, str]) -> None:
    job_id = make_job(conn, "failed")
    conn.execute(
        'UPDATE background_jobs SET error = error || \'{"traceback": "Traceback: line 7"}\''
    )
    code, output = run("show", str(job_id)[-8:], env=db)
    assert code == 0, output
    assert str(job_id) in output
    for expected in ("attempts", "timeline", "started", "ValueError: boom", "Traceback: line 7"):
        assert expected in output

    code, output = run("show", str(job_id), "--json", env=db)
    assert code == 0, output
    shown = json.loads(output)
    assert shown["job"]["state"] == "failed"
    assert [e["type"] for e in shown["timeline"]] == ["queued", "started", "failed"]


def test_retry_by_id_and_by_filter(conn: Conn, db: dict[str, str]) -> None:
    failed = make_job(conn, "failed", "resize")
    done = make_job(conn, "completed", "resize")
    code, output = run("retry", str(failed), str(done)[-8:], env=db)
    assert code == 1, output  # one of the two could not be retried: say so
    assert f"{failed} re-queued" in output
    assert f"left alone: {done} is completed" in output
    assert "Traceback" not in output
    assert [e.type for e in errands.timeline(conn, failed)][-1] == "retried"

    more = [make_job(conn, "failed", "email") for _ in range(3)]
    other = make_job(conn, "failed", "resize")
    code, output = run("retry", "--state", "failed", "--kind", "email", env=db)
    assert code == 0, output
    assert "3 jobs re-queued" in output
    states = {j.id: j.state for j in errands.list_jobs(conn)}
    assert [states[i] for i in more] == ["queued"] * 3
    assert states[other] == "failed"


def test_cancel_in_the_database_form(conn: Conn, db: dict[str, str]) -> None:
    queued = [make_job(conn, "queued", "email") for _ in range(2)]
    kept = make_job(conn, "queued", "resize")
    code, output = run("cancel", "--kind", "email", env=db)
    assert code == 0, output
    assert "2 jobs asked to stop" in output
    states = {j.id: j.state for j in errands.list_jobs(conn)}
    assert (states[queued[0]], states[queued[1]], states[kept]) == ("cancelled",) * 2 + ("queued",)


def test_stats_reports_counts_and_queues(conn: Conn, db: dict[str, str]) -> None:
    make_job(conn, "queued", "resize")
    make_job(conn, "queued", "resize", queue="slow")
    make_job(conn, "failed", "email")
    code, output = run("stats", "--json", env=db)
    assert code == 0, output
    stats = json.loads(output)
    assert stats["by_state"] == {
        "queued": 2,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert stats["counts"] == {"email": {"failed": 1}, "resize": {"queued": 2}}
    assert [(q["queue"], q["ready"]) for q in stats["queues"]] == [("default", 1), ("slow", 1)]

    code, output = run("stats", env=db)
    assert code == 0, output
    for title in ("jobs", "queues", "workers", "resize", "slow"):
        assert title in output


def test_prune_dry_run_then_prune(conn: Conn, db: dict[str, str]) -> None:
    old = [make_job(conn, "completed", finished_ago=40 * 86400) for _ in range(5)]
    old_failed = make_job(conn, "failed", finished_ago=40 * 86400)
    recent = make_job(conn, "completed", finished_ago=86400)
    queued = make_job(conn, "queued")

    code, output = run("prune", "--older-than", "30d", "--dry-run", env=db)
    assert code == 0, output
    assert "would prune 6 jobs (5 completed, 1 failed)" in output
    assert len(errands.list_jobs(conn)) == 8

    code, output = run(
        "prune", "--older-than", "30d", "--state", "completed", "--batch-size", "2", env=db
    )
    assert code == 0, output
    assert "pruned 5 jobs" in output
    left = {j.id for j in errands.list_jobs(conn)}
    assert left == {old_failed, recent, queued}
    assert not left & set(old)


def test_prune_refuses_unfinished_states_and_bad_spans(conn: Conn, db: dict[str, str]) -> None:
    make_job(conn, "running", finished_ago=0)
    code, output = run("prune", "--older-than", "0s", "--state", "running", env=db)
    assert code == 2, output
    assert "only finished jobs" in output
    code, output = run("prune", "--older-than", "a month", env=db)
    assert code == 2, output
    assert "not a span of time" in output
    assert len(errands.list_jobs(conn)) == 1


def test_database_errors_are_one_line(empty_database_url: str) -> None:
    code, output = run("stats", env={"ERRANDS_DATABASE_URL": empty_database_url})
    assert code == 1, output
    assert "run: errands migrate" in output
    code, output = run("jobs", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 1, output
    assert "cannot use the database" in output
    assert "Traceback" not in output


def test_show_of_an_unknown_job_is_an_error(db: dict[str, str]) -> None:
    code, output = run("show", "0123abcd", env=db)
    assert code == 1, output
    assert "no job with an id ending in '0123abcd'" in output


def test_the_client_and_operator_forms_are_told_apart(
    conn: Conn, db: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    make_job(conn, "queued")
    client = ["--server", "http://127.0.0.1:1", "--replica", str(tmp_path / "r.db")]
    # Both on the command line: refused.
    code, output = run("jobs", "--database-url", database_url, *client)
    assert code == 2, output
    assert "do not go together" in output
    # The database from the environment, the server on the command line: the client.
    code, output = run("jobs", *client, env=db)
    assert code == 0, output
    assert "no jobs yet" in output
    code, output = run("jobs", "--json", *client, env=db)
    assert code == 0, output
    assert output.rstrip().endswith("[]")
    # Filters and several ids belong to the operator's form.
    code, output = run("jobs", "--state", "failed", *client)
    assert code == 2, output
    assert "--state works on the database" in output
    code, output = run("cancel", "aaaa", "bbbb", *client)
    assert code == 2, output
    assert "several need --database-url" in output


def test_answer_gives_an_operators_answer_once(conn: Conn, db: dict[str, str]) -> None:
    job_id = make_job(conn, "queued", "charge")
    question = {"name": "ask 1", "text": "Go?", "choices": ["yes", "no"], "asked_at": "2026"}
    conn.execute(  # as ctx.ask leaves a job that waits for its answer
        "UPDATE background_jobs SET question = %s, waiting_for = 1 WHERE id = %s",
        (psycopg.types.json.Jsonb(question), job_id),
    )
    code, output = run("answer", str(job_id)[-8:], "maybe", env=db)
    assert code == 1
    assert "not one of the question's choices" in output
    assert "Traceback" not in output
    code, output = run("answer", str(job_id)[-8:], "yes", "--env-operator-is-ignored", env=db)
    assert code == 2  # an unknown option: a usage error, nothing answered
    code, output = run("answer", str(job_id)[-8:], "yes", env=db)
    assert code == 0, output
    assert f"answered {job_id}" in output
    row = conn.execute(
        "SELECT answer, waiting_for, turn IS NOT NULL FROM background_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("yes", 0, True)  # runnable again
    [(operator,)] = conn.execute(
        "SELECT operator FROM job_events WHERE job_id = %s AND type = 'answered'", (job_id,)
    ).fetchall()
    assert operator == default_operator()
    code, output = run("answer", str(job_id), "no", env=db)
    assert code == 1
    assert "no question waiting for an answer" in output
