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
    "JobNotFound",
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
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "migrate",
]
