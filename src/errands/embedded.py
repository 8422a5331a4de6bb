"""An embedded Postgres (pgserver) for the zero-setup default: ``make demo`` and tests
on a machine with no Postgres server."""

from __future__ import annotations

import warnings
from pathlib import Path

from errands.exceptions import ConfigurationError


def embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a Postgres keeping its data in ``data_dir``; return its URL.

    The server outlives this process only while another process still uses it; the
    data stays in ``data_dir`` for the next run.
    """
    try:
        import pgserver  # noqa: PLC0415 -- heavy, and only needed for the embedded default
    except ImportError as exc:  # pragma: no cover - pgserver is a dependency
        raise ConfigurationError("pgserver is not installed; pass --database-url") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        server = pgserver.get_server(data_dir, cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())
