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
