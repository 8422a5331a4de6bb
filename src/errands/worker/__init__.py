"""The worker: claims jobs from Postgres, runs their handlers, writes back the outcome.

One module per part: :mod:`.worker` (the :class:`Worker` and its claim loop),
:mod:`.running` (a handler's attempt: on the event loop, in a thread, its timeout),
:mod:`.processes` (``isolation="process"``), :mod:`.finishing` (outcomes and their
writes), :mod:`.leasing` (the lease, renewed from its own thread), :mod:`.listening`
(``LISTEN``), :mod:`.connections` (reconnecting database connections) and
:mod:`.settings`.
"""

from errands.worker.finishing import MAX_RETRY_DELAY, retry_delay
from errands.worker.settings import WorkerSettings
from errands.worker.worker import Worker

__all__ = ["MAX_RETRY_DELAY", "Worker", "WorkerSettings", "retry_delay"]
