"""errands: local-first background jobs for Python.

A job is a row. Clients create it in a local replica, it syncs to Postgres, a worker
runs it and writes state, progress and result back into the same row.

The names below are the convenient facade; each is imported from its own module the
first time it is used (PEP 562), so ``import errands.protocol`` or ``import
errands.client`` loads only what that part needs, not the worker, the service or the
command line (tests/unit/test_imports.py checks it at run time).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from errands.client import AsyncClient, Client, Job, Status
    from errands.exceptions import (
        ConfigurationError,
        ErrandsError,
        HandlerNotFound,
        InvalidKind,
        JobCancelled,
        JobNotFound,
        JobTimeout,
        MigrationError,
        PayloadError,
        Permanent,
        ReplicaError,
        ReplicaMismatch,
        ServerUnreachable,
        SyncError,
        Unauthorized,
        WaitTimeout,
    )
    from errands.jobs import enqueue, enqueue_async, enqueue_many, enqueue_many_async
    from errands.migrations import migrate
    from errands.operations import (
        JobFilter,
        JobRecord,
        cancel,
        cancel_async,
        delete,
        delete_async,
        get,
        get_async,
        list_jobs,
        list_jobs_async,
        prune,
        prune_async,
        retry,
        retry_async,
        stats,
        stats_async,
        timeline,
        timeline_async,
        wait,
        wait_async,
    )
    from errands.registry import JobContext, Registry
    from errands.worker import Worker, WorkerSettings
    from errands.workflows import (
        Group,
        answer,
        answer_async,
        chain,
        chain_async,
        group,
        group_async,
    )

__version__ = "0.1.0"

_WHERE: dict[str, str] = {
    "AsyncClient": "errands.client",
    "Client": "errands.client",
    "ConfigurationError": "errands.exceptions",
    "ErrandsError": "errands.exceptions",
    "HandlerNotFound": "errands.exceptions",
    "InvalidKind": "errands.exceptions",
    "Job": "errands.client",
    "JobCancelled": "errands.exceptions",
    "JobContext": "errands.registry",
    "JobFilter": "errands.operations",
    "JobNotFound": "errands.exceptions",
    "JobRecord": "errands.operations",
    "JobTimeout": "errands.exceptions",
    "MigrationError": "errands.exceptions",
    "PayloadError": "errands.exceptions",
    "Permanent": "errands.exceptions",
    "Registry": "errands.registry",
    "ReplicaError": "errands.exceptions",
    "ReplicaMismatch": "errands.exceptions",
    "ServerUnreachable": "errands.exceptions",
    "Status": "errands.client",
    "SyncError": "errands.exceptions",
    "Unauthorized": "errands.exceptions",
    "WaitTimeout": "errands.exceptions",
    "Worker": "errands.worker",
    "WorkerSettings": "errands.worker",
    "Group": "errands.workflows",
    "answer": "errands.workflows",
    "answer_async": "errands.workflows",
    "chain": "errands.workflows",
    "chain_async": "errands.workflows",
    "group": "errands.workflows",
    "group_async": "errands.workflows",
    "cancel": "errands.operations",
    "cancel_async": "errands.operations",
    "delete": "errands.operations",
    "delete_async": "errands.operations",
    "enqueue": "errands.jobs",
    "enqueue_async": "errands.jobs",
    "enqueue_many": "errands.jobs",
    "enqueue_many_async": "errands.jobs",
    "get": "errands.operations",
    "get_async": "errands.operations",
    "list_jobs": "errands.operations",
    "list_jobs_async": "errands.operations",
    "migrate": "errands.migrations",
    "prune": "errands.operations",
    "prune_async": "errands.operations",
    "retry": "errands.operations",
    "retry_async": "errands.operations",
    "stats": "errands.operations",
    "stats_async": "errands.operations",
    "timeline": "errands.operations",
    "timeline_async": "errands.operations",
    "wait": "errands.operations",
    "wait_async": "errands.operations",
}
"""Each public name, and the module that defines it."""


def __getattr__(name: str) -> _typing.Any:
    """A public name, imported from its module at first use, then kept here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'errands' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "ErrandsError",
    "Group",
    "HandlerNotFound",
    "InvalidKind",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFilter",
    "JobNotFound",
    "JobRecord",
    "JobTimeout",
    "MigrationError",
    "PayloadError",
    "Permanent",
    "Registry",
    "ReplicaError",
    "ReplicaMismatch",
    "ServerUnreachable",
    "Status",
    "SyncError",
    "Unauthorized",
    "WaitTimeout",
    "Worker",
    "WorkerSettings",
    "__version__",
    "answer",
    "answer_async",
    "cancel",
    "cancel_async",
    "chain",
    "chain_async",
    "delete",
    "delete_async",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "get",
    "get_async",
    "group",
    "group_async",
    "list_jobs",
    "list_jobs_async",
    "migrate",
    "prune",
    "prune_async",
    "retry",
    "retry_async",
    "stats",
    "stats_async",
    "timeline",
    "timeline_async",
    "wait",
    "wait_async",
]
