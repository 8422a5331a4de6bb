"""One replica talking to the sync service over HTTP: who am I, push, pull.

:class:`SyncSession` knows the protocol (errands.protocol) and nothing of threads or
retries; :mod:`errands.client.connection` runs it forever, :meth:`SyncSession.round`
runs it once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from pydantic import ValidationError

from errands.client.replica import Replica
from errands.exceptions import ReplicaMismatch, ServerUnreachable, SyncError, Unauthorized
from errands.protocol import (
    JOBS_TABLE,
    LIVE_HOLD_SECONDS,
    MAX_BATCH,
    MAX_BODY_BYTES,
    PREFIX,
    START,
    ControlMessage,
    ErrorCode,
    ErrorResponse,
    Mutation,
    MutationBatch,
    MutationResponse,
    MutationResult,
    ShapeResponse,
    WhoAmI,
    client_action,
)

log = logging.getLogger("errands.client")

REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
LIVE_TIMEOUT = httpx.Timeout(LIVE_HOLD_SECONDS + 15.0, connect=5.0)
BATCH_BYTES = MAX_BODY_BYTES // 2
"""Keep a batch well under the server's body limit (JSON overhead varies)."""


class Refused(SyncError):
    """The server refused a request as wrong (protocol.ANSWER_RULES: ``refused``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = message


def make_http(server: str, token: str | None) -> httpx.AsyncClient:
    """The HTTP client every request of a session goes through."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.rstrip("/"), headers=headers, timeout=REQUEST_TIMEOUT)


class SyncSession:
    """The protocol's three conversations, for one replica and one HTTP client."""

    def __init__(self, replica: Replica, http: httpx.AsyncClient) -> None:
        self.replica = replica
        self.http = http

    async def round(self) -> None:
        """Check the server is the replica's, push the outbox, pull to up-to-date."""
        await self.check_identity()
        await self.push()
        await self.pull_until_up_to_date()

    async def check_identity(self) -> WhoAmI:
        """Ask who the token is; refuse a replica that belongs to another server or user.

        The first time, the replica records the server's URL, its database generation
        and the user. The same URL serving a new generation is the same service on a
        restored database: the replica re-syncs and keeps its outbox."""
        me = WhoAmI.model_validate(await self._call("GET", f"{PREFIX}/me"))
        generation = self.replica.meta("generation")
        server = str(self.http.base_url)
        if generation is None:
            await asyncio.to_thread(self._adopt, me)
        elif self.replica.meta("user") != me.user:
            raise ReplicaMismatch(
                f"the replica {self.replica.path!r} belongs to user "
                f"{self.replica.meta('user')!r}, but the token is {me.user!r}'s; nothing was "
                "uploaded or changed: use the right token, or another replica file"
            )
        elif generation != me.generation and self.replica.meta("server") != server:
            raise ReplicaMismatch(
                f"the replica {self.replica.path!r} belongs to another server (database "
                f"generation {generation}, but {server} serves {me.generation}); "
                "nothing was uploaded or changed: use another replica file for this server"
            )
        elif generation != me.generation:
            log.warning(
                "%s serves a new database generation (restored from a dump?): re-syncing "
                "the replica and uploading its outbox again",
                server,
            )
            await asyncio.to_thread(self.replica.start_generation, me.generation)
        return me

    def _adopt(self, me: WhoAmI) -> None:
        # One transaction: a replica killed halfway must not keep a generation without
        # its user (it would then refuse every token as another user's).
        self.replica.set_metas(
            {"generation": me.generation, "user": me.user, "server": str(self.http.base_url)}
        )

    # -- write path -------------------------------------------------------------------

    async def push(self) -> int:
        """Upload the outbox in order until it is empty; return how many were sent.

        A batch the server refuses as a whole is retried one mutation at a time, so
        one bad mutation is rejected on its own and never wedges the rest."""
        sent = 0
        while mutations := await asyncio.to_thread(self.replica.pending_mutations, MAX_BATCH):
            batch = _fit(mutations)
            try:
                await self._upload(batch)
            except Refused as refused:
                if len(batch) == 1:
                    await self._reject(batch[0], refused)
                else:
                    for mutation in batch:
                        await self._upload_alone(mutation)
            sent += len(batch)
        return sent

    async def _upload_alone(self, mutation: Mutation) -> None:
        try:
            await self._upload([mutation])
        except Refused as refused:
            await self._reject(mutation, refused)

    async def _reject(self, mutation: Mutation, refused: Refused) -> None:
        log.warning("the server refused mutation %s: %s", mutation.id, refused)
        result = MutationResult(
            id=mutation.id, status="rejected", code=_code(refused.code), message=refused.detail
        )
        await asyncio.to_thread(self.replica.record_results, [result], None)

    async def _upload(self, batch: list[Mutation]) -> None:
        body = MutationBatch(mutations=batch).model_dump(mode="json")
        answer = MutationResponse.model_validate(
            await self._call("POST", f"{PREFIX}/mutations", json=body)
        )
        missing = {m.id for m in batch} - {r.id for r in answer.results}
        if missing:
            raise SyncError(f"the server did not answer for mutations {sorted(missing)}")
        for result in answer.results:
            if result.status == "rejected":
                log.warning("the server rejected mutation %s: %s", result.id, result.message)
        await asyncio.to_thread(self.replica.record_results, answer.results, answer.txid)

    # -- read path --------------------------------------------------------------------

    async def pull_until_up_to_date(self) -> None:
        """Read the shape (snapshot pages, then changes) until it is up to date."""
        while not await self.pull(live=False):
            pass

    async def pull(self, live: bool) -> bool:
        """One read of the jobs shape, applied atomically; return whether it brought the
        replica up to date. ``live`` waits (long-poll) for the next change."""
        read_from = self.replica.offset()
        params = {"offset": read_from}
        live = live and read_from != START
        if live:
            params["live"] = "true"
        try:
            body = await self._call(
                "GET",
                f"{PREFIX}/shapes/{JOBS_TABLE}",
                params=params,
                timeout=LIVE_TIMEOUT if live else REQUEST_TIMEOUT,
            )
            response = ShapeResponse.model_validate(body)
        except _MustRefetch as exc:
            log.warning("must-refetch (%s): rebuilding the synced rows of %s", exc, JOBS_TABLE)
            response = ShapeResponse(messages=[ControlMessage(type="must-refetch")], offset=START)
        except ValidationError as exc:
            raise SyncError(f"the server sent a shape response errands cannot read: {exc}") from exc
        await asyncio.to_thread(self.replica.apply, response, read_from)
        return response.up_to_date and not response.must_refetch

    # -- HTTP -------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServerUnreachable(f"cannot reach {self.http.base_url}: {reason}") from exc
        if answer.is_success:
            try:
                return answer.json()
            except ValueError as exc:
                raise SyncError(f"the server sent a body that is not JSON: {exc}") from exc
        code, message = _error(answer)
        action = client_action(answer.status_code, code)  # the protocol's ANSWER_RULES
        if action == "unauthorized":
            raise Unauthorized(f"the server refused the token: {message}")
        if action == "refused":  # a mutation id reused: uploaded alone, it is rejected
            raise Refused(code, message)
        if action == "must_refetch":
            raise _MustRefetch(message if code != "http_409" else "the offset is no longer usable")
        # Anything else (a 5xx, a 404 from a proxy...) may pass: retried, never rejected.
        raise ServerUnreachable(f"the server answered {answer.status_code}: {message}")


class _MustRefetch(SyncError):
    """The shape's offset is no longer usable: start again from the snapshot."""


def _error(answer: httpx.Response) -> tuple[str, str]:
    try:
        detail = ErrorResponse.model_validate_json(answer.content).error
    except ValidationError:
        return "http_" + str(answer.status_code), answer.text[:200] or answer.reason_phrase
    return detail.code.value, detail.message


def _code(code: str) -> ErrorCode | None:
    try:
        return ErrorCode(code)
    except ValueError:
        return None


def _fit(mutations: list[Mutation]) -> list[Mutation]:
    """The longest prefix of ``mutations`` that makes a body under BATCH_BYTES (at
    least one)."""
    size = 0
    for count, mutation in enumerate(mutations):
        size += len(mutation.model_dump_json())
        if size > BATCH_BYTES and count:
            return mutations[:count]
    return mutations
