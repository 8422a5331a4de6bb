"""Workflows on real worker processes: jobs that run after others (chains, groups,
failures, a graph drained under SIGKILL), durable steps and sleeps."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import errands
from errands.protocol import QuestionClosed
from errands.queries import query
from errands.worker.finishing import Finisher, Outcome
from errands.worker.steps import WorkerSteps
from tests.helpers import ErrandsProcess, wait_for
from tests.worker.conftest import StartWorker, events, job, wait_for_state

REGISTRY = "tests.worker.workflow_handlers:registry"


@pytest.fixture
def start(start_worker: StartWorker) -> StartWorker:
    """Start a worker of the workflow handlers."""

    def start_one(*args: str) -> ErrandsProcess:
        return start_worker(*args, registry=REGISTRY)

    return start_one


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- dependencies ---------------------------------------------------------------------


def test_a_chain_runs_in_order_each_job_seeing_the_one_before(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    start("--concurrency", "4")
    start("--concurrency", "4")
    ids = errands.chain(
        conn, [("record", {"name": name, "log": str(log)}) for name in ("a", "b", "c", "d")]
    )
    rows = [wait_for_state(conn, job_id, "completed", "failed", "cancelled") for job_id in ids]
    assert [r["state"] for r in rows] == ["completed"] * 4
    assert lines(log) == ["a", "b", "c", "d"]
    assert rows[0]["result"] == {"name": "a", "saw": []}
    assert rows[1]["result"] == {"name": "b", "saw": [{"name": "a", "saw": []}]}
    assert rows[3]["result"]["saw"] == [rows[2]["result"]]
    for row in rows:
        assert events(conn, row["id"]) == ["queued", "started", "completed"]


def test_a_groups_then_job_runs_once_after_every_member(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start("--concurrency", "8")
    batch = errands.group(
        conn, [("record", {"name": f"m{i}"}) for i in range(6)], then=("collect", None)
    )
    assert batch.then is not None
    then = wait_for_state(conn, batch.then, "completed", "failed", "cancelled")
    assert then["state"] == "completed"
    # The members' results, in the order they were named.
    assert then["result"]["saw"] == [["completed", {"name": f"m{i}", "saw": []}] for i in range(6)]
    assert all(state == "completed" for state, _ in then["result"]["saw"])  # as it ran
    assert events(conn, batch.then) == ["queued", "started", "completed"]


def test_a_failed_dependency_cancels_its_dependents_naming_the_cause(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start()
    first, second, third = errands.chain(
        conn, [("fails", None), ("record", {"name": "b"}), ("record", {"name": "c"})]
    )
    # Another job runs after the failing one all the same.
    anyway = errands.enqueue(conn, "collect", None, after=[first], on_failure="run")
    assert wait_for_state(conn, first, "failed")["error"]["message"] == "boom"
    for dependent in (second, third):
        row = wait_for_state(conn, dependent, "cancelled", "completed", "failed")
        assert row["state"] == "cancelled"
        assert row["attempts"] == 0  # never started
        assert row["error"]["type"] == "DependencyFailed"
        assert row["error"]["message"] == f"job {first} (fails) it runs after failed: boom"
        assert events(conn, dependent) == ["queued", "cancelled"]
    ran = wait_for_state(conn, anyway, "completed", "cancelled", "failed")
    assert ran["result"]["saw"] == [["failed", None]]


def test_a_cancelled_waiting_job_cancels_what_waits_for_it(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    # No worker yet: the chain waits; cancelling its second job ends the third.
    first, second, third = errands.chain(conn, [("record", {"name": n}) for n in "abc"])
    conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (second,))
    row = job(conn, third)
    assert row["state"] == "cancelled"
    assert row["error"]["message"] == f"job {second} (record) it runs after was cancelled"
    start()
    assert wait_for_state(conn, first, "completed")["state"] == "completed"


def test_dependencies_that_ended_before_count_at_once(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start()
    done = errands.enqueue(conn, "record", {"name": "done"})
    failed = errands.enqueue(conn, "fails", None)
    wait_for_state(conn, done, "completed")
    wait_for_state(conn, failed, "failed")
    runs = errands.enqueue(conn, "collect", None, after=[done])
    assert wait_for_state(conn, runs, "completed")["result"]["saw"] == [
        ["completed", {"name": "done", "saw": []}]
    ]
    doomed = errands.enqueue(conn, "collect", None, after=[done, failed])
    row = job(conn, doomed)  # ended as it was inserted
    assert (row["state"], row["error"]["type"]) == ("cancelled", "DependencyFailed")


def test_finishing_a_dependency_and_claiming_in_one_statement_takes_its_dependent(
    conn: psycopg.Connection[Any],
) -> None:
    # A busy worker ends its jobs and claims the next in one statement (0018): the claim
    # runs after the release, so a chain goes on without waiting for another claim.
    first = errands.enqueue(conn, "record", {"name": "first"})
    then = errands.enqueue(conn, "record", {"name": "then"}, after=[first])
    finisher = Finisher("w")
    claim = {"kinds": ["record"], "queues": None, "limit": 1}
    [claimed] = conn.execute(query("claim_jobs"), {**finisher.outcomes([]), **claim})
    assert claimed[1] == first
    done = [Outcome(first, "completed", result="1")]
    head, *claimed_next = conn.execute(query("claim_jobs"), {**finisher.outcomes(done), **claim})
    assert head[0] == [first]
    assert [row[1] for row in claimed_next] == [then]


def test_unknown_or_late_dependencies_are_refused(conn: psycopg.Connection[Any]) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(errands.JobNotFound, match=f"job {unknown} does not exist"):
        errands.enqueue(conn, "record", {"name": "x"}, after=[unknown])
    with pytest.raises(errands.JobNotFound):
        errands.chain(conn, [("record", {}), ("record", {})], after=[unknown])
    [(count,)] = conn.execute("SELECT count(*) FROM background_jobs").fetchall()
    assert count == 0  # nothing of either call was inserted
    # An existing job keeps the dependencies it was created with (no cycle can close).
    first = errands.enqueue(conn, "record", {})
    second = errands.enqueue(conn, "record", {}, after=[first])
    assert errands.enqueue(conn, "record", {}, id=first, after=[second]) == first
    assert job(conn, first)["waiting_for"] == 0
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("SELECT errands_wait_for(%s, %s, 'cancel')", ([first], [second]))
    with pytest.raises(ValueError, match="on_failure"):
        errands.enqueue(conn, "record", {}, after=[first], on_failure="maybe")  # type: ignore[arg-type]


def test_deleting_a_waited_for_job_cancels_its_dependents(conn: psycopg.Connection[Any]) -> None:
    first, second = errands.chain(conn, [("record", {}), ("record", {})])
    errands.delete(conn, first)
    row = job(conn, second)
    assert row["state"] == "cancelled"
    assert row["error"]["message"] == f"job {first} (record) it runs after was deleted"


def test_an_operators_retry_runs_a_job_its_failed_dependency_had_cancelled(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start()
    _, dependent = errands.chain(conn, [("fails", None), ("collect", None)])
    wait_for_state(conn, dependent, "cancelled")
    errands.retry(conn, dependent)
    row = wait_for_state(conn, dependent, "completed", "failed", "cancelled", timeout=30)
    assert row["result"]["saw"] == [["failed", None]]


def layered_graph(
    conn: psycopg.Connection[Any], log: Path, layers: int, width: int
) -> list[uuid.UUID]:
    """Jobs in layers, each after one to three jobs of the layer before (seeded)."""
    rng = random.Random(17)
    ids: list[uuid.UUID] = []
    previous: list[uuid.UUID] = []
    with conn.transaction():
        for _ in range(layers):
            layer = [
                errands.enqueue(
                    conn,
                    "node",
                    {"log": str(log)},
                    after=rng.sample(previous, min(len(previous), rng.randint(1, 3))),
                )
                for _ in range(width)
            ]
            ids += layer
            previous = layer
    return ids


def test_a_graph_of_a_thousand_jobs_drains_under_a_worker_sigkill(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    ids = layered_graph(conn, log, layers=20, width=50)
    first = start("--concurrency", "8")
    start("--concurrency", "8")
    wait_for(lambda: len(lines(log)) >= 300, 120, what="a third of the graph to run")
    first.stop(signal.SIGKILL)
    start("--concurrency", "8")

    def ended() -> bool:
        [(n,)] = conn.execute(
            "SELECT count(*) FROM background_jobs WHERE state <> 'queued' AND state <> 'running'"
        ).fetchall()
        return bool(n == len(ids))

    wait_for(ended, 240, interval=0.5, what="the whole graph to end")
    states = Counter(s for (s,) in conn.execute("SELECT state FROM background_jobs").fetchall())
    assert states == {"completed": len(ids)}
    # None started before every job it runs after had completed: the node handler reads
    # their states as it starts and fails for good otherwise (the rows' timestamps
    # cannot tell: now() is a transaction's start time, and a claim that waited on a
    # lock stamps its jobs earlier than the finish it waited for).
    # Nothing lost, nothing run twice: a job ran again only if its worker was killed
    # while it ran or before its outcome was written (8 slots, and the outcomes of jobs
    # that ended since its last claim).
    runs = Counter(lines(log))
    assert set(runs) == {str(i) for i in ids}
    again = [job_id for job_id, n in runs.items() if n > 1]
    assert len(again) <= 16, again
    assert all(n == 2 for n in runs.values() if n > 1)


# -- durable steps --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["steps_sync", "steps_async"])
def test_a_worker_killed_between_steps_runs_no_finished_step_twice(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path, kind: str
) -> None:
    log = tmp_path / "steps"
    first = start()
    job_id = errands.enqueue(conn, kind, {"steps": 5, "gap": 1.0, "log": str(log)})
    # Killed in the pause after the second step was stored.
    wait_for(lambda: "stored s1" in lines(log), 60, what="two steps to be stored")
    first.stop(signal.SIGKILL)
    second = start()
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=90)
    assert row["state"] == "completed"
    assert row["result"] == [0, 10, 20, 30, 40]
    assert row["attempts"] == 2
    runs = [line.split() for line in lines(log) if not line.startswith("stored")]
    assert [name for name, _ in runs] == ["s0", "s1", "s2", "s3", "s4"]  # each once
    assert {pid for name, pid in runs if name in ("s0", "s1")} == {str(first.pid)}
    assert {pid for name, pid in runs if name in ("s2", "s3", "s4")} == {str(second.pid)}
    stored = errands.workflows.steps(conn, job_id)
    assert [(s.name, s.result, s.attempt) for s in stored] == [
        ("s0", 0, 1), ("s1", 10, 1), ("s2", 20, 2), ("s3", 30, 2), ("s4", 40, 2),
    ]  # fmt: skip


def test_the_running_step_shows_as_progress_and_a_cancel_stops_between_steps(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "steps"
    start()
    job_id = errands.enqueue(conn, "steps_sync", {"steps": 8, "gap": 1.5, "log": str(log)})
    seen = wait_for(
        lambda: (
            (message := job(conn, job_id)["progress_message"]) in ("step s1", "step s2") and message
        ),
        60,
        what="a later step as the progress message",
    )
    assert seen in ("step s1", "step s2")  # what the owner's client shows
    errands.operations.cancel(conn, job_id)
    row = wait_for_state(conn, job_id, "cancelled", "completed", "failed", timeout=60)
    assert row["state"] == "cancelled"
    runs = [line.split()[0] for line in lines(log) if not line.startswith("stored")]
    assert runs == [f"s{i}" for i in range(len(runs))]  # each step once, in order
    assert len(runs) < 8  # stopped between steps, not run to the end


def test_a_failed_attempt_keeps_its_finished_steps(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    # The handler's next attempt skips the steps the failed one stored.
    log = tmp_path / "steps"
    start()
    payload = {"steps": 3, "gap": "not a number", "log": str(log)}  # fails after s0
    job_id = errands.enqueue(conn, "steps_sync", payload, max_attempts=2)
    row = wait_for_state(conn, job_id, "failed", "completed", timeout=60)
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert [line.split()[0] for line in lines(log)] == ["s0", "stored", "stored"]


def test_a_sleep_gives_back_the_slot_and_does_not_count_as_an_attempt(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "steps"
    start("--concurrency", "1")
    sleeping = errands.enqueue(conn, "sleeper", {"seconds": 5, "log": str(log)})

    def asleep() -> bool:
        slept = any(s.name == "sleep 1" for s in errands.workflows.steps(conn, sleeping))
        return slept and job(conn, sleeping)["state"] == "queued"

    wait_for(asleep, 60, what="the job to sleep")
    assert job(conn, sleeping)["attempts"] == 0
    # Its only slot is free meanwhile: another job runs while it sleeps.
    other = errands.enqueue(conn, "record", {"name": "other"})
    other_row = wait_for_state(conn, other, "completed")
    row = wait_for_state(conn, sleeping, "completed", "failed", timeout=60)
    assert row["result"] == {"before": 10, "after": 20, "attempt": 1}
    assert other_row["finished_at"] < row["started_at"]
    assert [line.split()[0] for line in lines(log)] == ["before", "after"]
    assert events(conn, sleeping) == ["queued", "started", "retried", "started", "completed"]
    [sleep] = [s for s in errands.workflows.steps(conn, sleeping) if s.name == "sleep 1"]
    assert row["started_at"] >= datetime.fromisoformat(sleep.result)


def test_a_plain_handler_sleeps_too(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    start()
    job_id = errands.enqueue(conn, "sleeper_sync", {"seconds": 1, "log": str(log)})
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert (row["result"], row["attempts"]) == ("woke", 1)
    assert lines(log) == ["start", "start"]


def test_errands_show_lists_what_a_job_runs_after_and_its_steps(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    first, second = errands.chain(conn, [("record", {}), ("steps_sync", {})])
    conn.execute(
        "INSERT INTO job_steps (job_id, name, result, attempt) VALUES (%s, 'charge', %s, 1)",
        (second, Jsonb({"paid": 40})),
    )
    show = ErrandsProcess("show", str(second), "--database-url", database_url, "--json")
    try:
        assert show.process.wait(60) == 0, show.output()
        shown = json.loads(show.output())
    finally:
        show.close()
    assert [(d["id"], d["kind"], d["state"]) for d in shown["after"]] == [
        (str(first), "record", "queued")
    ]
    assert [(s["name"], s["result"], s["attempt"]) for s in shown["steps"]] == [
        ("charge", {"paid": 40}, 1)
    ]
    show = ErrandsProcess(
        "show", str(second), "--database-url", database_url, env={"COLUMNS": "200"}
    )
    try:
        assert show.process.wait(60) == 0, show.output()
        for expected in ("runs after", str(first), "steps", "charge", '{"paid": 40}'):
            assert expected in show.output()
    finally:
        show.close()


def edges(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """What the job runs after, in order, with each edge's on_failure."""
    rows = conn.execute(
        "SELECT depends_on, on_failure FROM job_dependencies WHERE job_id = %s ORDER BY position",
        (job_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def waiting(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> tuple[int, int | None]:
    row = job(conn, job_id)
    return row["waiting_for"], row["turn"]


def test_the_batch_and_async_forms_build_the_same_graph(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    first = errands.enqueue(conn, "record", {})
    assert waiting(conn, first)[1] is not None  # a job without dependencies: as before
    batch = errands.enqueue_many(conn, "record", [{}, {}], after=[first], on_failure="run")
    assert [edges(conn, b) for b in batch] == [[(first, "run")]] * 2
    assert [waiting(conn, b) for b in batch] == [(1, None)] * 2  # no turn while waiting

    async def build() -> tuple[list[uuid.UUID], errands.Group, list[uuid.UUID]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            chained = await errands.chain_async(aconn, [("record", {}), ("record", {})])
            grouped = await errands.group_async(
                aconn, [("record", {}), ("record", {})], then=("collect", None), after=batch
            )
            many = await errands.enqueue_many_async(aconn, "record", [{}], after=chained)
            return chained, grouped, many

    chained, grouped, many = asyncio.run(build())
    assert edges(conn, chained[1]) == [(chained[0], "cancel")]
    assert [edges(conn, m) for m in grouped.members] == [[(b, "cancel") for b in batch]] * 2
    assert grouped.then is not None
    assert edges(conn, grouped.then) == [(m, "cancel") for m in grouped.members]
    assert edges(conn, many[0]) == [(c, "cancel") for c in chained]
    assert waiting(conn, grouped.then) == (2, None)
    # Completing the first job releases its two dependents: each takes a turn.
    conn.execute(
        "UPDATE background_jobs SET state = 'completed', finished_at = now() WHERE id = %s",
        (first,),
    )
    released = [waiting(conn, b) for b in batch]
    assert all(w == 0 and turn is not None for w, turn in released), released


def test_dependents_wait_through_their_dependencys_retries(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start()
    flaky, after = errands.chain(conn, [("flaky", {"succeed_on": 3}), ("collect", None)])
    row = wait_for_state(conn, after, "completed", "cancelled", "failed", timeout=60)
    assert row["result"]["saw"] == [["completed", 3]]
    assert events(conn, flaky) == [
        "queued", "started", "retried", "started", "retried", "started", "completed",
    ]  # fmt: skip


def test_a_groups_then_job_with_on_failure_run_is_a_batch_callback(
    conn: psycopg.Connection[Any], start: StartWorker
) -> None:
    start("--concurrency", "4")
    batch = errands.group(
        conn,
        [("record", {"name": "ok"}), ("fails", None), ("record", {"name": "ok too"})],
        then=("collect", None),
        on_failure="run",
    )
    assert batch.then is not None
    row = wait_for_state(conn, batch.then, "completed", "cancelled", "failed")
    assert [state for state, _ in row["result"]["saw"]] == ["completed", "failed", "completed"]


def test_a_step_of_an_attempt_taken_back_is_not_stored(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    job_id = errands.enqueue(conn, "record", {})
    conn.execute(
        "UPDATE background_jobs SET state = 'running', lease_owner = 'other' WHERE id = %s",
        (job_id,),
    )

    async def save() -> None:
        store = WorkerSteps(database_url, "this worker")
        try:
            await store.save(job_id, 1, "charge", "40")
        finally:
            await store.close()

    with pytest.raises(errands.JobCancelled, match="no longer held by this worker"):
        asyncio.run(save())
    assert errands.workflows.steps(conn, job_id) == []


# -- questions ------------------------------------------------------------------------


def test_a_question_frees_the_slot_until_answered_then_the_job_resumes(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    start("--concurrency", "1")
    job_id = errands.enqueue(conn, "approve", {"log": str(log)})

    def asking() -> dict[str, Any] | None:
        row = job(conn, job_id)
        return row if row["state"] == "queued" and row["question"] is not None else None

    row = wait_for(asking, 60, what="the question")
    assert row["question"]["text"] == "Charge 40 EUR?"
    assert row["question"]["choices"] == ["yes", "no"]
    assert (row["waiting_for"], row["turn"], row["attempts"]) == (1, None, 0)
    # Its only slot is free meanwhile.
    other = errands.enqueue(conn, "record", {"name": "other"})
    assert wait_for_state(conn, other, "completed")["state"] == "completed"
    assert job(conn, job_id)["state"] == "queued"
    with pytest.raises(ValueError, match="not one of the question's choices"):
        errands.answer(conn, job_id, "maybe")
    errands.answer(conn, job_id, "yes")
    with pytest.raises(ValueError, match="no question waiting"):
        errands.answer(conn, job_id, "no")  # answered once
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert row["result"] == {"quote": 40, "answer": "yes", "attempt": 1}
    assert (row["question"], row["answer"]) == (None, None)
    assert lines(log)[0].split()[0] == "quote"
    assert len(lines(log)) == 1  # the step before the question ran once
    assert [s.name for s in errands.workflows.steps(conn, job_id)] == ["quote", "ask 1"]


def test_a_plain_handler_asks_too(conn: psycopg.Connection[Any], start: StartWorker) -> None:
    start()
    job_id = errands.enqueue(conn, "approve_sync", None)
    wait_for(lambda: job(conn, job_id)["question"] is not None, 60, what="the question")
    wait_for_state(conn, job_id, "queued")
    errands.answer(conn, job_id, "Ada")
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert row["result"] == "Ada"


def test_a_question_past_its_timeout_takes_its_default(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    start()
    job_id = errands.enqueue(conn, "charge", {"log": str(log), "timeout": 1.5, "default": "no"})
    asked = wait_for(lambda: job(conn, job_id)["question"], 60, what="the question")
    assert asked["default"] == "no"
    assert datetime.fromisoformat(asked["deadline"]) > datetime.fromisoformat(asked["asked_at"])
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert row["result"] == {"quote": 40, "answer": "no"}
    assert (row["question"], row["answer"], row["question_deadline"]) == (None, None, None)
    assert [line.split()[0] for line in lines(log)] == ["run", "quote", "run", "answered"]
    assert lines(log)[-1] == "answered no"
    # Answered by the timeout, once and for all: too late for the owner.
    with pytest.raises(QuestionClosed):
        errands.answer(conn, job_id, "yes")
    assert [s.name for s in errands.workflows.steps(conn, job_id)] == ["quote", "ask 1"]


def test_a_question_past_its_timeout_without_a_default_fails_the_job(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    start()
    job_id = errands.enqueue(conn, "charge", {"log": str(log), "timeout": 1}, max_attempts=3)
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert row["state"] == "failed"
    assert row["error"]["type"] == "QuestionTimedOut"
    assert "got no answer within its timeout of 1s" in row["error"]["message"]
    assert row["attempts"] == 1  # the asking attempt is not counted, and no retries
    assert row["question"] is None
    assert [line.split()[0] for line in lines(log)] == ["run", "quote", "run"]
    with pytest.raises(QuestionClosed):
        errands.answer(conn, job_id, "yes")


def test_an_answer_and_a_deadline_racing_apply_once(
    conn: psycopg.Connection[Any], start: StartWorker, tmp_path: Path
) -> None:
    """Answers given as the deadline passes: either the answer or the timeout wins,
    never both (the job runs twice: once asking, once answered)."""
    log = tmp_path / "log"
    start()
    job_id = errands.enqueue(conn, "charge", {"log": str(log), "timeout": 0.5, "default": "no"})
    wait_for(lambda: job(conn, job_id)["question"], 60, what="the question")
    answered = []
    deadline = time.monotonic() + 60
    while job(conn, job_id)["state"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, "the job did not end"
        try:
            errands.answer(conn, job_id, "yes")
            answered.append("yes")
        except QuestionClosed:
            time.sleep(0.01)
    row = job(conn, job_id)
    assert row["result"]["answer"] == ("yes" if answered else "no")
    assert len(answered) <= 1
    assert [line.split()[0] for line in lines(log)].count("run") == 2
