"""Answers and deadlines racing, played move by move on two real connections: the
``answer`` query checks the question again on the row it updates, so whichever commits
first wins and the other applies nothing (no answer is applied twice, and none after a
timeout)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import errands
from errands.protocol import QuestionClosed
from tests.worker.conftest import job

QUESTION = {"name": "ask 1", "text": "Go?", "choices": ["yes", "no"], "asked_at": "2026"}


@pytest.fixture
def other(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A second connection, whose transaction the test holds open."""
    with psycopg.connect(database_url) as connection:
        yield connection


def waiting(conn: psycopg.Connection[Any], *, due: bool) -> uuid.UUID:
    """A queued job waiting for the answer to QUESTION, as ctx.ask leaves it; ``due``:
    its deadline has passed."""
    job_id = errands.enqueue(conn, "charge", {})
    conn.execute(
        "UPDATE background_jobs SET question = %s, waiting_for = 1, turn = NULL,"
        " question_deadline = now() + CASE WHEN %s THEN interval '-1 second'"
        " ELSE interval '1 hour' END WHERE id = %s",
        (Jsonb(QUESTION), due, job_id),
    )
    return job_id


def blocked(action: Callable[[], None]) -> tuple[threading.Thread, list[BaseException | None]]:
    """Run ``action`` in a thread (it blocks on the row lock); its outcome goes in the list."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 -- the test reads it
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "it did not wait for the row lock"
    return thread, outcome


def test_an_answer_waiting_on_the_deadlines_release_applies_nothing(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str
) -> None:
    job_id = waiting(conn, due=True)
    other.execute("SELECT errands_stage_due(100)")  # the timeout, not committed yet
    with psycopg.connect(database_url, autocommit=True) as third:
        thread, outcome = blocked(lambda: errands.answer(third, job_id, "yes"))
        other.commit()
        thread.join(30)
    assert isinstance(outcome[0], QuestionClosed)
    row = job(conn, job_id)
    assert row["answer"] is None
    assert row["question"]["timed_out"] is True
    assert (row["waiting_for"], row["question_deadline"], row["turn"] is not None) == (
        0,
        None,
        True,
    )


def test_a_deadline_passing_while_an_answer_commits_releases_nothing(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    job_id = waiting(conn, due=True)
    other.execute("SELECT 1")  # a transaction open: the answer joins it
    errands.answer(other, job_id, "yes")  # in other's transaction, not committed yet
    conn.execute("SELECT errands_stage_due(100)")  # skips the locked row
    other.commit()
    conn.execute("SELECT errands_stage_due(100)")  # nothing due any more
    row = job(conn, job_id)
    assert row["answer"] == "yes"
    assert "timed_out" not in row["question"]
    assert (row["waiting_for"], row["question_deadline"]) == (0, None)


def test_two_answers_racing_apply_once(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str
) -> None:
    job_id = waiting(conn, due=False)
    other.execute("SELECT 1")  # a transaction open: the answer joins it
    errands.answer(other, job_id, "no")  # the first, not committed yet
    with psycopg.connect(database_url, autocommit=True) as third:
        thread, outcome = blocked(lambda: errands.answer(third, job_id, "yes"))
        other.commit()
        thread.join(30)
    assert isinstance(outcome[0], QuestionClosed)
    row = job(conn, job_id)
    assert (row["answer"], row["waiting_for"]) == ("no", 0)
    answered = conn.execute(
        "SELECT count(*) FROM job_events WHERE job_id = %s AND type = 'answered'", (job_id,)
    ).fetchone()
    assert answered == (1,)


def test_a_deadline_of_a_job_that_ended_is_only_cleared(conn: psycopg.Connection[Any]) -> None:
    """A job cancelled while it waited: its deadline must not stay due for ever (every
    claim would look at it again)."""
    job_id = waiting(conn, due=True)
    conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (job_id,))
    assert job(conn, job_id)["state"] == "cancelled"
    conn.execute("SELECT errands_stage_due(100)")
    row = job(conn, job_id)
    assert (row["question_deadline"], row["question"]) == (None, QUESTION)
