"""``ErrandsBackend``: Django's tasks framework on errands.

::

    TASKS = {
        "default": {
            "BACKEND": "errands.contrib.django.ErrandsBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"DATABASE": "default"},
        }
    }

A task's ``enqueue()`` inserts a job on Django's own connection: inside
``transaction.atomic`` the job commits with the view's writes, or not at all (no
``on_commit`` needed). ``manage.py errands_worker`` runs the tasks; ``get_result()``
reads a job back as a ``TaskResult``. errands' own options reach a task through the
decorator (``@task(max_attempts=5, timeout=60, max_running=2)``, where Django forwards
extra arguments: ``retry_backoff`` too) and through ``using(unique_key=..., timeout=...,
max_attempts=...)``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any, ParamSpec, Self, TypeVar

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from errands import migrations
from errands.contrib.django.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    task_backends,
    task_enqueued,
)
from errands.contrib.django.connection import psycopg_connection
from errands.contrib.django.results import (
    enqueued,
    errands_priority,
    payload,
    task_result,
)
from errands.ids import uuid7
from errands.jobs import JobOptions, enqueue
from errands.operations import get, timeline, workers
from errands.protocol import MAX_KIND_LENGTH, MAX_NAME_LENGTH
from errands.queries import query

P = ParamSpec("P")
T = TypeVar("T")

OPTIONS = frozenset({"DATABASE", "REGISTRIES", "MIGRATE"})
"""What ``OPTIONS`` may hold: ``DATABASE``, the alias of the Django database holding the
jobs (default ``"default"``); ``REGISTRIES``, errands registries (``"myapp.jobs:registry"``)
whose handlers ``manage.py errands_worker`` runs beside the tasks; ``MIGRATE`` (default
true), whether ``manage.py migrate`` also applies errands' migrations to that database."""

_DECLARED: dict[str, Task[Any, Any]] = {}
"""Every task validated by an ErrandsBackend in this process, by module path: what
``manage.py errands_worker`` runs."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ErrandsTask(Task[P, T]):
    """A Django task with errands' options. Each left out takes errands' default."""

    unique_key: str | None = None
    """At most one unfinished job per key: enqueueing while one is queued or running
    returns that job's result and inserts nothing."""
    timeout: float | None = None
    """Seconds an attempt may run."""
    max_attempts: int | None = None
    """How many times the task is tried before it fails."""
    max_running: int | None = None
    """At most this many run at once, across every worker (set at the decorator)."""
    retry_backoff: float | None = None
    """Base delay in seconds of the backoff between attempts (set at the decorator;
    errands' default is 1)."""

    def using(
        self,
        *,
        unique_key: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        **changes: Any,
    ) -> Self:
        """Django's ``using()`` (priority, queue_name, run_after, backend), and errands'
        per-job options."""
        task = Task.using(self, **changes)
        extra = {"unique_key": unique_key, "timeout": timeout, "max_attempts": max_attempts}
        chosen: dict[str, Any] = {name: value for name, value in extra.items() if value is not None}
        return dataclasses.replace(task, **chosen) if chosen else task


class ErrandsBackend(BaseTaskBackend):
    """Django's tasks on errands: jobs in Postgres, run by ``manage.py errands_worker``."""

    task_class = ErrandsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {unknown}; "
                f"errands knows {sorted(OPTIONS)}"
            )
        self.database: str = self.options.get("DATABASE", "default")
        self.registries: tuple[str, ...] = tuple(self.options.get("REGISTRIES", ()))
        self.migrate: bool = bool(self.options.get("MIGRATE", True))

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Django's rules, and what errands cannot honour: names too long to store,
        errands options out of range."""
        super().validate_task(task)
        if len(task.module_path) > MAX_KIND_LENGTH:
            raise InvalidTask(f"the task's path is longer than {MAX_KIND_LENGTH} characters")
        if not 0 < len(task.queue_name) <= MAX_NAME_LENGTH:
            raise InvalidTask(f"queue names have 1 to {MAX_NAME_LENGTH} characters")
        if isinstance(task, ErrandsTask):
            _check_options(task)
        _DECLARED.setdefault(task.module_path, task)

    def enqueue(self, task: Task[P, T], args: Any, kwargs: Any) -> TaskResult[T]:
        """Insert the task's job in the current transaction of Django's connection (with a
        ``unique_key`` an unfinished job holds, that job's result, and no signal)."""
        self.validate_task(task)
        job_id = uuid7()
        result = enqueued(task, job_id, args, kwargs, timezone.now())  # checks the args
        conn = psycopg_connection(self.database)
        found = enqueue(
            conn,
            task.module_path,
            payload(result.args, result.kwargs),
            id=job_id,
            **job_options(task),
        )
        if found != job_id:  # an unfinished job with the same unique key: nothing enqueued
            return self.get_result(str(found))
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The task's result as the job row and its events say now (on Django's
        connection: a job enqueued in the current transaction is found)."""
        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"{result_id!r} is not an errands job id") from None
        conn = psycopg_connection(self.database)
        job = get(conn, job_id)
        if job is None:
            raise TaskResultDoesNotExist(f"no job {job_id}")
        return task_result(job, timeline(conn, job_id), self.alias)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """Django's database must be PostgreSQL (the rest needs the database:
        :meth:`database_checks`)."""
        engine = settings.DATABASES.get(self.database, {}).get("ENGINE", "")
        if not engine.endswith("postgresql"):
            yield checks.Error(
                f"TASKS[{self.alias!r}] keeps its jobs in database {self.database!r}, "
                f"whose engine is {engine or 'not configured'}",
                hint="errands needs django.db.backends.postgresql (with psycopg 3)",
                id="errands.E001",
            )

    def database_checks(self) -> Iterable[checks.CheckMessage]:
        """errands' migrations applied; a running worker for each of ``QUEUES``."""
        conn = psycopg_connection(self.database)
        exists = conn.execute(query("migrations_table_exists")).fetchone()
        done = (
            {row[0] for row in conn.execute(query("applied_migrations"))}
            if (exists and exists[0])
            else set()
        )
        missing = [m for m in migrations.available() if m.version not in done]
        if missing:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            yield checks.Warning(
                f"database {self.database!r} lacks errands migrations: {names}",
                hint="run `manage.py migrate` (or `errands migrate --database-url URL`)",
                id="errands.W001",
            )
            return
        alive = [w for w in workers(conn) if w.alive]
        if any(w.queues is None for w in alive):
            return  # a worker takes every queue
        served = {queue for w in alive for queue in w.queues or ()}
        for queue in sorted(self.queues - served):
            yield checks.Warning(
                f"no running worker takes jobs from queue {queue!r} of TASKS[{self.alias!r}]",
                hint=f"start `manage.py errands_worker` (with `--queue {queue}` if it "
                "takes only some queues)",
                id="errands.W002",
            )


def _check_options(task: ErrandsTask[Any, Any]) -> None:
    if task.unique_key is not None and not 0 < len(task.unique_key) <= MAX_NAME_LENGTH:
        raise InvalidTask(f"unique_key must have 1 to {MAX_NAME_LENGTH} characters")
    if task.timeout is not None and task.timeout <= 0:
        raise InvalidTask("timeout must be positive")
    for name, value, least in (
        ("max_attempts", task.max_attempts, 1),
        ("max_running", task.max_running, 1),
        ("retry_backoff", task.retry_backoff, 0),
    ):
        if value is not None and value < least:
            raise InvalidTask(f"{name} must be at least {least}")


def job_options(task: Task[Any, Any]) -> JobOptions:
    """The errands options of a task's job."""
    options = JobOptions(priority=errands_priority(task.priority), queue=task.queue_name)
    if task.run_after is not None:
        options["run_at"] = task.run_after
    if isinstance(task, ErrandsTask):
        if task.unique_key is not None:
            options["unique_key"] = task.unique_key
        if task.timeout is not None:
            options["timeout"] = task.timeout
        if task.max_attempts is not None:
            options["max_attempts"] = task.max_attempts
    return options


def declared_tasks() -> dict[str, Task[Any, Any]]:
    """Every task an ErrandsBackend validated in this process, by module path."""
    return dict(_DECLARED)


def errands_backends() -> list[ErrandsBackend]:
    """The configured backends that are errands'."""
    return [b for b in task_backends.all() if isinstance(b, ErrandsBackend)]
