"""The Background Jobs page: a small ASGI app served from the client process.

It reads and writes only the local replica through :class:`errands.Client`, so it
keeps working while the sync service is unreachable. Build it with
:func:`create_app`; ``errands ui`` serves it.
"""

from errands.ui.app import create_app
from errands.ui.kinds import Kind, parse_kind

__all__ = ["Kind", "create_app", "parse_kind"]
