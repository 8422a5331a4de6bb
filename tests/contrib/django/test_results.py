"""From errands' rows to Django's TaskResult, without a database: statuses, priorities,
and the exception path each kind of error record gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from errands.contrib.django.compat import TaskResultStatus
from errands.contrib.django.results import (
    django_priority,
    errands_priority,
    exception_path,
    task_result,
)
from errands.operations import JobEvent, JobRecord

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def record(state: str, error: object = None, result: object = None) -> JobRecord:
    """A job row of the shop's ``confirm`` task."""
    return JobRecord(
        id=uuid.UUID(int=1),
        timestamp=NOW,
        kind="tests.contrib.django.shop.tasks.confirm",
        payload={"args": [1], "kwargs": {"note": "x"}},
        owner=None,
        state=state,
        cancelled=state == "cancelled",
        completed=state == "completed",
        progress=0.0,
        progress_message=None,
        result=result,
        error=error,
        attempts=1,
        max_attempts=3,
        timeout_seconds=None,
        run_at=NOW,
        priority=-250,
        queue="default",
        lease_owner=None,
        received_at=NOW,
        started_at=NOW + timedelta(seconds=1),
        finished_at=NOW + timedelta(seconds=2),
        traceparent=None,
    )


def event(number: int, kind: str, error: object = None) -> JobEvent:
    """One of the row's events, by worker w1."""
    return JobEvent(number, uuid.UUID(int=1), NOW + timedelta(seconds=number), kind, 1, "w1", error)


@pytest.mark.parametrize(
    ("error", "path"),
    [
        (
            {"type": "ValueError", "traceback": "Traceback ...\nValueError: bad: worse\n"},
            "builtins.ValueError",
        ),
        (
            {"type": "Boom", "traceback": "Traceback ...\nshop.errors.Boom: it broke\n"},
            "shop.errors.Boom",
        ),
        ({"type": "KeyError", "traceback": "Traceback ...\nKeyError\n"}, "builtins.KeyError"),
        ({"type": "JobTimeout", "message": "ran past 5s"}, "errands.exceptions.JobTimeout"),
        ({"type": "TimeoutError", "message": "no traceback"}, "builtins.TimeoutError"),
        (
            {"type": "WorkerLost", "message": "stopped heartbeating"},
            "errands.exceptions.ErrandsError",
        ),
    ],
)
def test_the_exception_path_of_each_kind_of_error(error: dict[str, str], path: str) -> None:
    assert exception_path(error) == path


def test_priorities_spread_over_errands_range_and_come_back() -> None:
    assert [errands_priority(p) for p in (-100, 0, 1, 100)] == [-1000, 0, 10, 1000]
    assert [django_priority(p) for p in (-1000, -250, 4, 6, 5000)] == [-100, -25, 0, 1, 100]


def test_a_cancelled_job_is_a_failed_task_with_a_job_cancelled_error() -> None:
    result = task_result(record("cancelled"), [event(1, "queued"), event(2, "started")], "default")
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["errands.exceptions.JobCancelled"]
    assert result.worker_ids == ["w1"]
    assert result.task.priority == -25


def test_a_completed_job_carries_its_value_and_each_retry_is_an_error() -> None:
    retried = {"type": "OSError", "traceback": "Traceback ...\nOSError: disk\n"}
    events = [
        event(1, "queued"),
        event(2, "started"),
        event(3, "retried", retried),
        event(4, "started"),
    ]
    result = task_result(record("completed", result={"ok": True}), events, "default")
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, {"ok": True})
    assert [e.exception_class is OSError for e in result.errors] == [True]
    assert (result.worker_ids, result.last_attempted_at) == (
        ["w1", "w1"],
        NOW + timedelta(seconds=4),
    )
    assert (result.args, result.kwargs) == ([1], {"note": "x"})
