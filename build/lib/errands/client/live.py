"""Live queries: call back when the newest jobs may have changed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from errands.client.job import Job
from errands.client.replica import Replica

log = logging.getLogger("errands.client")

Callback = Callable[[list[Job]], None]


@dataclass(eq=False)
class _Subscription:
    callback: Callback
    limit: int
    last: list[Job] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


class LiveQueries:
    """The subscriptions of one replica to ``jobs(limit)``.

    After every committed change to the replica (a local write, or a sync batch) each
    subscription's query runs again, and its callback gets the new list if it differs
    from the last one delivered. Callbacks run in the thread that made the change: the
    application's thread for local writes, a background sync thread for incoming rows.
    An exception in a callback is logged, never raised into the writer."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._subscriptions: list[_Subscription] = []
        self._lock = threading.Lock()
        replica.add_listener(self.refresh)

    def subscribe(self, callback: Callback, limit: int = 10) -> Callable[[], None]:
        """Deliver the current list at once, then every change; return ``unsubscribe``."""
        subscription = _Subscription(callback, limit)
        with self._lock:
            self._subscriptions.append(subscription)
        self._deliver(subscription)

        def unsubscribe() -> None:
            with self._lock:
                if subscription in self._subscriptions:
                    self._subscriptions.remove(subscription)

        return unsubscribe

    def refresh(self) -> None:
        """Run every subscription's query again; deliver what changed."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            self._deliver(subscription)

    def _deliver(self, subscription: _Subscription) -> None:
        with subscription.lock:  # one delivery at a time, in the order of the changes
            jobs = self.replica.jobs(subscription.limit)
            if jobs == subscription.last:
                return
            subscription.last = jobs
            try:
                subscription.callback(jobs)
            except Exception:
                log.exception("a subscriber's callback raised")
