"""The worker: claims jobs from Postgres, runs their handlers, writes back the outcome.

One module per part:

* :mod:`.worker` -- the :class:`Worker`: its lifecycle and claim loop;
* :mod:`.running` -- one attempt of a handler, on the event loop or in a thread, and
  its timeout;
* :mod:`.threads` and :mod:`.processes` -- plain handlers' threads, and
  ``isolation="process"`` children;
* :mod:`.finishing` -- outcomes and their writes;
* :mod:`.leasing` -- the lease, renewed from a thread of its own;
* :mod:`.listening` -- ``LISTEN`` wake-ups;
* :mod:`.connections` -- database connections that reconnect at once;
* :mod:`.settings` -- :class:`WorkerSettings`.
"""

from errands.worker.settings import WorkerSettings
from errands.worker.worker import Worker

__all__ = ["Worker", "WorkerSettings"]
