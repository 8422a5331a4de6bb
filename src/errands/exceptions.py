"""The errands exception tree.

Every error errands raises on purpose derives from :class:`ErrandsError`; its docstring
is the default message, so ``raise ConfigurationError()`` still says something useful.

* ErrandsError
    * ConfigurationError -- a command-line argument or setting is unusable.
    * HandlerNotFound -- a job kind has no registered handler.
    * PayloadError -- a payload or result cannot be stored as JSON.
    * MigrationError -- the database schema cannot be brought up to date.
    * JobCancelled -- raised inside a handler once its job's cancellation was requested.
    * JobTimeout -- a handler ran past its job's timeout.
    * Permanent -- raised by a handler: the job fails at once, without retries.
        * QuestionTimedOut -- ``ctx.ask``'s question got no answer before its timeout.
    * JobNotFound -- the client's replica has no job with this id.
    * InvalidKind (also a ValueError) -- a job kind the sync service would refuse.
    * WaitTimeout (also a TimeoutError) -- ``Client.wait`` gave up before the job ended.
    * ReplicaError -- the client's SQLite replica file is unusable (corrupt, not a replica).
        * ReplicaMismatch -- the replica belongs to another server or user.
    * SyncError -- the sync service could not be used.
        * ServerUnreachable -- no answer from the sync service (the client retries).
            * DatabaseUnreachable -- the service answers, but cannot reach its database.
        * Unauthorized -- the sync service refused the client's token.
"""

from __future__ import annotations


class ErrandsError(Exception):
    """Something went wrong in errands."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)


class ConfigurationError(ErrandsError):
    """A setting or command-line argument is unusable; check it and try again."""


class HandlerNotFound(ErrandsError):
    """No handler is registered for this job kind."""


class PayloadError(ErrandsError):
    """The value cannot be stored as JSON; use dicts, lists, strings, numbers, booleans."""


class MigrationError(ErrandsError):
    """The database schema cannot be brought up to date."""


class JobCancelled(ErrandsError):
    """The job's cancellation was requested; the handler should stop."""


class JobTimeout(ErrandsError):
    """The handler ran past its job's timeout."""


class Permanent(ErrandsError):
    """The job cannot succeed however often it is tried; it fails now, without retries.

    Raise it from a handler (``raise errands.Permanent("no such user") from exc``); the
    job's error records its message and the exception it was raised from.
    """


class QuestionTimedOut(Permanent):
    """The job's question (``ctx.ask(..., timeout=...)``) got no answer before its
    timeout, and the handler gave no ``default``: the job fails, without retries (an
    operator's retry asks the question again)."""


class JobNotFound(ErrandsError):
    """The replica has no job with this id; check the id, or sync and try again."""


class InvalidKind(ErrandsError, ValueError):
    """A job's kind must be a string of 1 to 200 characters."""


class WaitTimeout(ErrandsError, TimeoutError):
    """The job did not end within the timeout; it may still be running."""


class ReplicaError(ErrandsError):
    """The replica file is unusable; move it aside and start with a new one."""


class ReplicaMismatch(ReplicaError):
    """The replica belongs to another server or user; use another replica file."""


class SyncError(ErrandsError):
    """The sync service could not be used."""


class ServerUnreachable(SyncError):
    """The sync service did not answer; local changes wait in the outbox."""


class DatabaseUnreachable(ServerUnreachable):
    """The sync service answers but cannot reach its database; the client retries when
    the service says (``Retry-After``)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("server can't reach its database")
        self.retry_after = retry_after
        """Seconds the server asked the client to wait before retrying."""


class Unauthorized(SyncError):
    """The sync service refused the token; pass a valid one (--token or ERRANDS_TOKEN)."""
