"""The sync service: shapes out, mutations in, exactly right under concurrency.

:func:`create_app` builds the ASGI application (``errands server`` runs it with
uvicorn); :func:`make_token` signs a bearer token for a user. The wire types are in
:mod:`errands.protocol`, shared with the client.
"""

from errands.sync.app import ServiceSettings, create_app
from errands.sync.auth import make_token

__all__ = ["ServiceSettings", "create_app", "make_token"]
