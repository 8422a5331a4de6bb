"""Between errands' job rows and Django's ``TaskResult``: statuses, priorities, errors.

A Django task is a job whose kind is the task's module path (``myapp.tasks.send_mail``)
and whose payload is ``{"args": [...], "kwargs": {...}}``. Its ``TaskResult`` is read
from the row and its ``job_events``: one ``worker_id`` per attempt, one ``TaskError``
per failed attempt (with the traceback the worker kept).
"""

from __future__ import annotations

import builtins
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from errands import exceptions
from errands.contrib.django.compat import (
    TASK_MAX_PRIORITY,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from errands.operations import JobEvent, JobRecord, attempts
from errands.protocol import MAX_PRIORITY

STATUSES: dict[str, Any] = {  # TaskResultStatus members (untyped: Django has no types)
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "completed": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,  # Django has no cancelled status
}
"""The Django status of each errands state."""

PRIORITY_SCALE = MAX_PRIORITY // TASK_MAX_PRIORITY
"""Django's priorities (-100..100) spread over errands' (-1000..1000): higher runs first
in both."""

FAILED_EVENTS = frozenset({"retried", "failed"})


def errands_priority(priority: int) -> int:
    """The errands priority of a Django priority."""
    return priority * PRIORITY_SCALE


def django_priority(priority: int) -> int:
    """The Django priority of an errands priority (rounded, and within Django's range)."""
    return max(-TASK_MAX_PRIORITY, min(TASK_MAX_PRIORITY, round(priority / PRIORITY_SCALE)))


def payload(args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A task call's job payload."""
    return {"args": list(args), "kwargs": dict(kwargs)}


def exception_path(error: dict[str, Any]) -> str:
    """The import path of the exception an ``error`` column records.

    The traceback's last line names the class as Python printed it (``module.Class``,
    bare for builtins); errors the worker made itself (a timeout, a lost worker) have no
    traceback and are errands' exceptions where one has that name.
    """
    trace = str(error.get("traceback") or "").rstrip()
    if trace:
        name = trace.splitlines()[-1].split(":", 1)[0].strip()
        if name and " " not in name:
            return name if "." in name else f"builtins.{name}"
    kind = str(error.get("type") or "")
    if hasattr(exceptions, kind):
        return f"errands.exceptions.{kind}"
    if isinstance(getattr(builtins, kind, None), type):
        return f"builtins.{kind}"
    return "errands.exceptions.ErrandsError"


def task_error(error: dict[str, Any]) -> TaskError:
    """Django's ``TaskError`` for an errands ``error`` value."""
    trace = error.get("traceback") or f"{error.get('type')}: {error.get('message')}\n"
    return TaskError(exception_class_path=exception_path(error), traceback=str(trace))


def declared_task(kind: str) -> Task[Any, Any]:
    """The Django task a job's kind names; TaskResultDoesNotExist if it names none."""
    try:
        found = import_string(kind)
    except ImportError:
        found = None
    if not isinstance(found, Task):
        raise TaskResultDoesNotExist(f"jobs of kind {kind!r} are not a Django task's")
    return found


def _as_queued(task: Task[Any, Any], job: JobRecord) -> Task[Any, Any]:
    """``task`` with the priority and queue the job was enqueued with."""
    try:
        return task.using(priority=django_priority(job.priority), queue_name=job.queue)
    except InvalidTask:  # a queue this backend no longer lists: the task as declared
        return task


def task_result(job: JobRecord, events: Sequence[JobEvent], backend: str) -> TaskResult[Any]:
    """The ``TaskResult`` of a job row and its events."""
    runs = attempts(events)
    errors = [task_error(e.error) for e in events if e.type in FAILED_EVENTS and e.error]
    if job.state == "cancelled":
        errors.append(task_error(job.error or {"type": "JobCancelled", "message": "cancelled"}))
    arguments = job.payload if isinstance(job.payload, dict) else {}
    result: TaskResult[Any] = TaskResult(
        task=_as_queued(declared_task(job.kind), job),
        id=str(job.id),
        status=STATUSES[job.state],
        enqueued_at=job.timestamp,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=runs[-1].started_at if runs else None,
        args=list(arguments.get("args", [])),
        kwargs=dict(arguments.get("kwargs", {})),
        backend=backend,
        errors=errors,
        worker_ids=[run.worker or "" for run in runs],
    )
    if job.state == "completed":
        with_value(result, job.result)
    return result


def enqueued(
    task: Task[Any, Any], job_id: uuid.UUID, args: Any, kwargs: Any, at: datetime
) -> TaskResult[Any]:
    """The ``TaskResult`` of a task just enqueued (nothing read back)."""
    return TaskResult(
        task=task,
        id=str(job_id),
        status=STATUSES["queued"],
        enqueued_at=at,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=task.backend,
        errors=[],
        worker_ids=[],
    )


def with_value(result: TaskResult[Any], value: Any) -> TaskResult[Any]:
    """``result`` holding ``value`` as its return value (a field Django sets itself)."""
    object.__setattr__(result, "_return_value", value)
    return result


def ended(
    result: TaskResult[Any], at: datetime, value: Any = None, error: TaskError | None = None
) -> TaskResult[Any]:
    """A running task's result once its attempt ended, as the worker's handler sees it
    (before the outcome is written): successful with ``value``, or failed with ``error``."""
    if error is None:
        done = dataclasses.replace(result, status=STATUSES["completed"], finished_at=at)
        return with_value(done, value)
    return dataclasses.replace(
        result, status=STATUSES["failed"], finished_at=at, errors=[*result.errors, error]
    )
