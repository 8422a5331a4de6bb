"""Retry rules and defaults per handler: @registry.job(max_attempts=, retry_on=, ...),
errands.Permanent, and the typed enqueue options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import errands
from errands.registry import JobHandler
from tests.worker.conftest import StartWorker, events, wait_for_state

registry = errands.Registry()
REGISTRY = "tests.worker.test_options:registry"


@registry.job("gives_up", max_attempts=5, retry_backoff=0.01)
def gives_up(ctx: errands.JobContext, payload: Any) -> None:
    raise errands.Permanent("the account is closed")


@registry.job("picky", max_attempts=4, retry_backoff=0.01, retry_on=(ConnectionError,))
def picky(ctx: errands.JobContext, payload: dict[str, str]) -> None:
    raise {"connection": ConnectionError, "value": ValueError}[payload["error"]]("no")


@registry.job("defaults", max_attempts=7, priority=3, queue="reports")
def defaults(ctx: errands.JobContext, payload: Any) -> str:
    return "ok"


def _handler(**options: Any) -> JobHandler:
    return JobHandler("k", lambda ctx, payload: None, **options)


def test_should_retry_follows_the_rules() -> None:
    plain = _handler()
    assert plain.should_retry(RuntimeError(), 1, 3)
    assert not plain.should_retry(RuntimeError(), 3, 3)
    assert not plain.should_retry(errands.Permanent(), 1, 3)
    only = _handler(retry_on=(ConnectionError, errands.JobTimeout))
    assert only.should_retry(ConnectionResetError(), 1, 3)
    assert only.should_retry(errands.JobTimeout(), 1, 3)
    assert not only.should_retry(ValueError(), 1, 3)


def test_backoff_doubles_with_each_attempt() -> None:
    handler = _handler(retry_backoff=2.0)
    for attempt, nominal in ((1, 2.0), (2, 4.0), (3, 8.0)):
        delays = [handler.backoff(attempt) for _ in range(50)]
        assert nominal / 2 <= min(delays)
        assert max(delays) <= nominal


@pytest.mark.parametrize(
    "options",
    [{"max_attempts": 0}, {"max_running": 0}, {"retry_backoff": -1}, {"timeout": 0}],
)
def test_bad_handler_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        _handler(**options)


def test_permanent_fails_at_once(start_worker: StartWorker, conn: psycopg.Connection[Any]) -> None:
    start_worker(registry=REGISTRY)
    job_id = errands.enqueue(conn, "gives_up", {})
    row = wait_for_state(conn, job_id, "failed")
    assert row["attempts"] == 1
    assert row["max_attempts"] == 5
    assert row["error"]["type"] == "Permanent"
    assert row["error"]["message"] == "the account is closed"
    assert events(conn, job_id) == ["queued", "started", "failed"]


def test_retry_on_retries_only_the_listed_errors(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_worker(registry=REGISTRY)
    retried = errands.enqueue(conn, "picky", {"error": "connection"})
    not_retried = errands.enqueue(conn, "picky", {"error": "value"})
    assert wait_for_state(conn, retried, "failed")["attempts"] == 4
    assert wait_for_state(conn, not_retried, "failed")["attempts"] == 1


def test_handler_defaults_apply_to_jobs_that_set_none(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    before = errands.enqueue(conn, "defaults", {}, run_at=_later())
    start_worker("--queue", "reports", registry=REGISTRY)  # registers the kind's defaults
    plain = errands.enqueue(conn, "defaults", {}, run_at=_later())
    own = errands.enqueue(
        conn, "defaults", {}, max_attempts=2, priority=-1, queue="other", run_at=_later()
    )
    # The batch query fills the defaults in itself (the trigger stays for other writers).
    [batch] = errands.enqueue_many(conn, "defaults", [{}], run_at=_later())
    [batch_own] = errands.enqueue_many(conn, "defaults", [{}], priority=-1, run_at=_later())
    recipe = conn.execute(
        "INSERT INTO background_jobs (id, payload, kind) VALUES (gen_random_uuid(), '{}',"
        " 'defaults') RETURNING id"
    ).fetchone()
    assert recipe is not None
    rows = {
        name: conn.execute(
            "SELECT max_attempts, priority, queue FROM background_jobs WHERE id = %s", (job_id,)
        ).fetchone()
        for name, job_id in (
            ("before", before), ("plain", plain), ("own", own),
            ("batch", batch), ("batch_own", batch_own),
        )
    }  # fmt: skip
    assert rows["before"] == (3, 0, "default")  # enqueued before any worker registered
    assert rows["plain"] == (7, 3, "reports")
    assert rows["own"] == (2, -1, "other")
    assert rows["batch"] == (7, 3, "reports")
    assert rows["batch_own"] == (7, -1, "reports")
    assert wait_for_state(conn, recipe[0], "completed")["max_attempts"] == 7


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_enqueue_options_are_typed_keywords(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError):
        errands.enqueue(conn, "defaults", {}, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        errands.enqueue_many(conn, "defaults", [{}], unique_key="k")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_attempts"):
        errands.enqueue(conn, "defaults", {}, max_attempts=0)
    assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)
