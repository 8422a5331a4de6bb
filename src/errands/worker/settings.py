"""How a worker behaves: :class:`WorkerSettings`."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker behaves; the defaults suit production, tests shorten them.

    ``burst`` makes :meth:`Worker.run` return once no job the worker can take is runnable
    and none is running (jobs due later, retries waiting out their backoff included, are
    left for the next run).
    """

    concurrency: int = 10
    queues: tuple[str, ...] | None = None
    poll_interval: float = 1.0
    lease: float = 30.0
    heartbeat_interval: float = 5.0
    progress_interval: float = 0.25
    shutdown_timeout: float = 30.0
    listener_check_interval: float = 10.0
    burst: bool = False
    claim_lanes: int = 1
    """Claims in flight at once, each on a connection of its own and each for at most
    its share of the free slots (``concurrency / claim_lanes``): while one lane waits
    for Postgres, the other's jobs run and its next claim is already on the way."""
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.claim_lanes < 1:
            raise ValueError("claim_lanes must be at least 1")
        if self.heartbeat_interval >= self.lease:
            raise ValueError("heartbeat_interval must be shorter than the lease")
