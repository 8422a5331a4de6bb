"""Django's database connection, as errands uses it.

The backend writes jobs on the very connection Django's ORM uses, so a job is enqueued in
the caller's transaction (``transaction.atomic``) and with it, or not at all. The worker
opens connections of its own to the same database, from the same settings.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from psycopg.conninfo import make_conninfo

DJANGO_ONLY_PARAMETERS = frozenset(
    {"context", "cursor_factory", "prepare_threshold", "server_side_binding", "pool"}
)
"""What Django's ``get_connection_params()`` holds besides libpq's parameters."""


def psycopg_connection(alias: str) -> psycopg.Connection[Any]:
    """The psycopg connection under Django's connection ``alias``, connected; inside
    ``transaction.atomic`` its statements are part of Django's transaction."""
    wrapper = connections[alias]
    wrapper.ensure_connection()
    wrapper.validate_no_broken_transaction()
    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise ImproperlyConfigured(
            f"errands needs Django's database {alias!r} to be PostgreSQL through psycopg 3 "
            f"(django.db.backends.postgresql with psycopg installed), not {type(raw).__name__}"
        )
    return raw


def conninfo(alias: str) -> str:
    """A libpq connection string for Django's database ``alias`` (password included: hand
    it to code, never to a command line)."""
    params = connections[alias].get_connection_params()
    libpq: dict[str, Any] = {
        key: value
        for key, value in params.items()
        if key not in DJANGO_ONLY_PARAMETERS and isinstance(value, str | int) and value != ""
    }
    return make_conninfo(**libpq)
