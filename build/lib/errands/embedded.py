"""An embedded Postgres (pgserver) for the zero-setup default: ``make demo`` and tests
on a machine with no Postgres server."""

from __future__ import annotations

import contextlib
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from errands.exceptions import ConfigurationError


def _start(data_dir: Path, cleanup_mode: str | None) -> Any:
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver  # noqa: PLC0415 -- heavy, and only needed for the embedded default

        try:
            return pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigurationError(
                f"the embedded Postgres did not start ({exc}); its log is {data_dir / 'log'}. "
                "Pass --database-url to use another Postgres."
            ) from None


def embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a Postgres keeping its data in ``data_dir``; return its URL.

    The server keeps running after this process exits, for the next one (the tests'
    sessions share one this way).
    """
    return str(_start(data_dir, cleanup_mode=None).get_uri())


@contextlib.contextmanager
def embedded_postgres_running(data_dir: Path) -> Iterator[str]:
    """A Postgres keeping its data in ``data_dir``, stopped when the block ends."""
    server = _start(data_dir, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
