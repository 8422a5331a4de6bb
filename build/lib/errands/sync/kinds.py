"""The door: which kinds a client may submit, and what each kind lets it ask for.

A kind is a capability. A client's job is accepted only for a kind declared for
clients: registered by a worker with ``@registry.job(..., clients=True)`` (the
``errands_kinds`` table), or named by the service's operator
(``errands server --client-kinds``) for kinds with no worker yet. Operators, and server
code that enqueues through Postgres, are not limited.

For an accepted kind:

* the payload must match the JSON Schema the kind published, if it did (the handler's
  payload annotation): refused as ``validation_error`` naming the first bad field;
* the priority is capped at the kind's ``client_priority`` (default: the kind's own
  priority), so a client cannot put its jobs ahead of other users';
* ``run_at`` is never before the server's clock (the insert query sees to it).

The kinds a batch names are read in one query, when the batch is applied: a worker that
registers a kind is obeyed from its next batch on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from psycopg import AsyncConnection

from errands.protocol import ErrorCode
from errands.queries import query
from errands.sync.errors import Rejection
from errands.sync.shapes import SYNC_QUERIES

ANY_KIND = "*"
"""Named in ``--client-kinds``: clients may submit every kind (development only)."""
MAX_VALIDATORS = 256
"""Compiled schemas kept; a kind's schema changes only when a worker registers anew."""


@dataclass(frozen=True)
class KindRule:
    """What the kinds table says about clients' jobs of one kind."""

    clients: bool
    priority_cap: int
    schema: str | None


class ClientKinds:
    """The kinds clients may submit: those registered for clients, plus ``named``."""

    def __init__(self, named: Iterable[str] = ()) -> None:
        self.named = frozenset(named)
        self.any = ANY_KIND in self.named
        self._validators: dict[str, Any] = {}

    async def rules(self, conn: AsyncConnection[Any], kinds: Iterable[str]) -> dict[str, KindRule]:
        """The rules of ``kinds``, read in one query (kinds nobody registered are absent)."""
        cursor = await conn.execute(query("client_kinds", SYNC_QUERIES), {"kinds": sorted(kinds)})
        return {kind: KindRule(*rule) for kind, *rule in await cursor.fetchall()}

    def admit(
        self, kind: str, rule: KindRule | None, payload: Any, priority: int | None
    ) -> int | None:
        """The priority a client's job of ``kind`` gets (None: the kind's default);
        :class:`Rejection` if the kind is not for clients or the payload does not match
        the kind's schema."""
        if not (self.any or kind in self.named or (rule is not None and rule.clients)):
            raise Rejection(
                ErrorCode.KIND_NOT_ALLOWED,
                f"clients may not submit jobs of kind {kind!r:.80}; the app declares the "
                "kinds they may: @registry.job(..., clients=True), or errands server "
                "--client-kinds",
            )
        cap = 0 if rule is None else rule.priority_cap
        if rule is not None and rule.schema is not None:
            self._check_payload(rule.schema, payload)
        return None if priority is None else min(priority, cap)

    def _check_payload(self, schema: str, payload: Any) -> None:
        validator = self._validators.get(schema)
        if validator is None:
            if len(self._validators) >= MAX_VALIDATORS:
                self._validators.clear()
            try:
                validator = jsonschema_rs.validator_for(json.loads(schema))
            except (ValueError, jsonschema_rs.ValidationError):  # written around the worker
                raise Rejection(
                    ErrorCode.VALIDATION_ERROR,
                    "the kind's payload schema is not a usable JSON Schema; tell the operator",
                ) from None
            self._validators[schema] = validator
        error = next(validator.iter_errors({} if payload is None else payload), None)
        if error is not None:
            raise Rejection(
                ErrorCode.VALIDATION_ERROR,
                f"the payload does not match the kind's schema: at "
                f"{json_path(error.instance_path)}: {error.message}",
            )


def json_path(parts: Iterable[str | int]) -> str:
    """``payload.size[0]``: where in the payload a schema error is."""
    path = "payload"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
