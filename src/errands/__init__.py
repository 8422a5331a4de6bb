"""errands: local-first background jobs for Python.

A job is a row. Clients create it in a local replica, it syncs to Postgres, a worker
runs it and writes state, progress and result back into the same row.
"""

from errands.exceptions import (
    ConfigurationError,
    ErrandsError,
    HandlerNotFound,
    JobCancelled,
    JobTimeout,
    MigrationError,
    PayloadError,
)
from errands.jobs import enqueue, enqueue_many
from errands.migrations import migrate
from errands.registry import JobContext, Registry
from errands.worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ErrandsError",
    "HandlerNotFound",
    "JobCancelled",
    "JobContext",
    "JobTimeout",
    "MigrationError",
    "PayloadError",
    "Registry",
    "Worker",
    "WorkerSettings",
    "__version__",
    "enqueue",
    "enqueue_many",
    "migrate",
]
