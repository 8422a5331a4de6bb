"""The demo's signing secret: random, made once per data directory, kept there (0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "secret"  # noqa: S105 -- a file name, not a secret
"""The secret's file name in the data directory."""
SECRET_BYTES = 32
"""Random bytes in a new secret (hex-encoded in the file)."""


def demo_secret(data_dir: Path) -> str:
    """The secret kept in ``data_dir``, made on first use: only its owner may read the
    file, so tokens signed with it stay valid across runs (and the page's sign-in too)."""
    path = data_dir / SECRET_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # an older copy, or one the user edited: keep it private
        secret = path.read_text().strip()
        if secret:
            return secret
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    secret = secrets.token_hex(SECRET_BYTES)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    return secret
