"""Who may use ``/v1/admin``: an operator's token to read (403 ``operator_required``
for anyone else), and one that is not read-only to act (403 ``forbidden`` for a token
made with ``errands token --operator --read-only``).

Routes declare what they need with :data:`OperatorPool` (read) or :data:`Acting`
(change something, recorded under the operator's name).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection, IsolationLevel
from psycopg_pool import AsyncConnectionPool

from errands.protocol import ErrorCode, ErrorResponse
from errands.sync.auth import Caller
from errands.sync.errors import ERROR_RESPONSES, Forbidden

ADMIN = "/v1/admin"

ERRORS: dict[int | str, dict[str, Any]] = ERROR_RESPONSES | {
    403: {
        "model": ErrorResponse,
        "description": "operator_required: not an operator's token; forbidden: a read-only "
        "operator's token, for an action",
    },
}

_bearer = HTTPBearer(auto_error=False, description="an operator's token (errands token --operator)")


@dataclass(frozen=True)
class Operator:
    """An operator's request: who (the token's subject) and the service's pool."""

    caller: Caller
    pool: AsyncConnectionPool[Any]

    @property
    def name(self) -> str:
        """The name an action is recorded under in ``job_events``."""
        return self.caller.user

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection whose transactions may write: one that last served a
        shape read would still open read-only, repeatable-read ones."""
        async with self.pool.connection() as conn:
            await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
            await conn.set_read_only(False)
            yield conn


async def _operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Operator:
    service = request.app.state.service  # errands.sync.app.Service, which includes us
    caller: Caller = service.auth.caller(credentials.credentials if credentials else None)
    if not caller.operator:
        raise Forbidden(
            f"the console and /v1/admin are for operators; {caller.user!r} is not one "
            "(errands token --operator makes an operator's token)",
            ErrorCode.OPERATOR_REQUIRED,
        )
    return Operator(caller, service.pool)


async def _pool(operator: Annotated[Operator, Depends(_operator)]) -> AsyncConnectionPool[Any]:
    return operator.pool


async def _acting(operator: Annotated[Operator, Depends(_operator)]) -> Operator:
    if operator.caller.read_only:
        raise Forbidden(
            f"{operator.name!r} has a read-only operator's token: it sees every job and "
            "changes none (errands token --operator, without --read-only, may act)"
        )
    return operator


Reader = Annotated[Operator, Depends(_operator)]
"""Any operator, read-only ones included."""
OperatorPool = Annotated[AsyncConnectionPool[Any], Depends(_pool)]
"""The service's pool, for any operator."""
Acting = Annotated[Operator, Depends(_acting)]
"""An operator who may change jobs and queues."""
