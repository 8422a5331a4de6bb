"""errands: local-first background jobs for Python.

A job is a row. Clients create it in a local replica, it syncs to Postgres, a worker
runs it and writes state, progress and result back into the same row.
"""

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
    ReplicaError,
    ReplicaMismatch,
    ServerUnreachable,
    SyncError,
    Unauthorized,
    WaitTimeout,
)
from errands.jobs import enqueue, enqueue_async, enqueue_many
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

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "ErrandsError",
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
    "cancel",
    "cancel_async",
    "delete",
    "delete_async",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "get",
    "get_async",
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
