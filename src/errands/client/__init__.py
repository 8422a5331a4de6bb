"""The client: a SQLite replica of the jobs a program can see, synced both ways.

``Client`` (threads) and ``AsyncClient`` (asyncio) offer the same API; ``Job`` is one
row as the client sees it. The client never imports the sync service or the worker:
it speaks to them only through :mod:`errands.protocol`.
"""

from errands.backoff import Backoff
from errands.client.aio import AsyncClient
from errands.client.client import Client, default_replica
from errands.client.connection import Status
from errands.client.job import Job, Question

__all__ = ["AsyncClient", "Backoff", "Client", "Job", "Question", "Status", "default_replica"]
