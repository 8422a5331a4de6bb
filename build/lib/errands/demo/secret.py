"""The demo's signing secret (random, made once per data directory, kept there with
0600) and the tokens it signs, made by ``errands token`` as a user would: the demo runs
in the client's process and keeps out of the sync service's code."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from errands.exceptions import ErrandsError

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


def issue_token(secret: str, user: str, expires_in: int, *, console_url: str | None = None) -> str:
    """A token for ``user`` from ``errands token`` (the secret in its environment, never
    on its command line); with ``console_url``, an operator's sign-in link to the console
    there instead."""
    args = ["--user", user, "--expires-in", str(expires_in)]
    if console_url is not None:
        args += ["--operator", "--console-url", console_url]
    made = subprocess.run(
        [sys.executable, "-m", "errands", "token", *args],
        env={**os.environ, "ERRANDS_SECRET": secret},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise ErrandsError(f"errands token failed: {made.stderr.strip()}")
    return made.stdout.strip()
