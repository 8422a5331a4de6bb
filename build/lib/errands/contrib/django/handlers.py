"""The errands registry ``manage.py errands_worker`` runs: one handler per Django task
of an :class:`~errands.contrib.django.ErrandsBackend`, and the handlers of the registries
its ``OPTIONS["REGISTRIES"]`` names.

The tasks are found as Django finds admin modules: each installed app's ``tasks`` module
is imported, and every task an ErrandsBackend validates is declared. ``registry`` is
built on first access (``errands worker`` loads ``errands.contrib.django.handlers:registry``),
once Django is set up.
"""

from __future__ import annotations

import traceback
from typing import Any

from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from errands.cli.worker import load_registry
from errands.contrib.django.backend import declared_tasks, errands_backends
from errands.contrib.django.compat import Task, TaskContext, TaskError, task_finished, task_started
from errands.contrib.django.results import ended
from errands.registry import Handler, JobContext, JobHandler, Registry

TASK_MODULES = "tasks"
"""The module of each installed app that holds its tasks."""


def run_task(task: Task[Any, Any]) -> Handler:
    """The errands handler of a Django task: calls it with the job's arguments (in a
    worker thread; an async task on an event loop of its own), sending Django's
    ``task_started`` and ``task_finished`` signals around it."""

    def handler(ctx: JobContext, payload: Any) -> Any:
        close_old_connections()  # as Django does around a request
        try:
            backend = task.get_backend()
            started = backend.get_result(str(ctx.job_id))
            task_started.send(type(backend), task_result=started)
            args, kwargs = payload.get("args", []), payload.get("kwargs", {})
            if task.takes_context:
                args = [TaskContext(task_result=started), *args]
            try:
                value = task.call(*args, **kwargs)
            except BaseException as exc:
                error = TaskError(
                    exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                    traceback="".join(traceback.format_exception(exc)),
                )
                failed = ended(started, timezone.now(), error=error)
                task_finished.send(type(backend), task_result=failed)
                raise
            task_finished.send(type(backend), task_result=ended(started, timezone.now(), value))
            return value
        finally:
            close_old_connections()

    return handler


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


def build() -> Registry:
    """Every task of the ErrandsBackends, and their registries' handlers, in one registry."""
    autodiscover_modules(TASK_MODULES)
    registry = Registry()
    for path, task in sorted(declared_tasks().items()):
        registry.add(
            JobHandler(
                path,
                run_task(task),
                timeout=getattr(task, "timeout", None),
                max_attempts=getattr(task, "max_attempts", None),
                max_running=getattr(task, "max_running", None),
                retry_backoff=_or_default(getattr(task, "retry_backoff", None), 1.0),
            )
        )
    for spec in sorted({spec for b in errands_backends() for spec in b.registries}):
        other = load_registry(spec)  # as `errands worker` loads one
        for kind in other.kinds:
            registry.add(other.get(kind))
    return registry


_BUILT: list[Registry] = []


def __getattr__(name: str) -> Any:
    if name != "registry":
        raise AttributeError(name)
    if not _BUILT:
        _BUILT.append(build())
    return _BUILT[0]
