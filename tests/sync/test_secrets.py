"""Secrets off the command line, and user names that are what they look like (issue 8):
``errands token`` and ``errands server`` as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from errands.sync.auth import verify_token
from tests.helpers import ROOT
from tests.sync.conftest import SECRET, StartServer

WARNING = "visible to every user of this machine"


def errands(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    return subprocess.run(
        [sys.executable, "-m", "errands", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_takes_the_secret_from_the_environment_or_a_file(tmp_path: Path) -> None:
    from_env = errands("token", "--user", "alice", env={"ERRANDS_SECRET": SECRET})
    assert from_env.returncode == 0, from_env.stderr
    assert verify_token(SECRET, from_env.stdout.strip()).user == "alice"
    assert WARNING not in from_env.stderr
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = errands("token", "--user", "bob", "--secret-file", str(secret_file))
    assert from_file.returncode == 0, from_file.stderr
    assert verify_token(SECRET, from_file.stdout.strip()).user == "bob"
    assert WARNING not in from_file.stderr
    both = errands("token", "--user", "bob", "--secret-file", str(secret_file), "--secret", "x")
    assert both.returncode == 2
    assert "once" in both.stderr


def test_a_secret_on_the_command_line_is_warned_about() -> None:
    on_argv = errands("token", "--user", "alice", "--secret", SECRET)
    assert on_argv.returncode == 0, on_argv.stderr
    assert WARNING in on_argv.stderr
    assert "ERRANDS_SECRET" in on_argv.stderr


def test_the_server_warns_about_a_secret_on_its_command_line(start_server: StartServer) -> None:
    warned = start_server("--secret", SECRET, secret=False)
    assert WARNING in warned.process.output()
    quiet = start_server()  # the fixture passes ERRANDS_SECRET
    assert WARNING not in quiet.process.output()


def test_help_teaches_the_environment() -> None:
    for command in ("server", "token"):
        shown = errands(command, "--help")
        assert "ERRANDS_SECRET" in shown.stdout
        assert "--secret-file" in shown.stdout


@pytest.mark.parametrize(
    "user",
    [
        b"al\xffice",  # not UTF-8: Python would hand on a lone surrogate
        "ali\u202ece\u200b".encode(),
        "alice\u200b".encode(),
        b"al\x07ice",
        b" alice",
    ],
)
def test_token_refuses_user_names_that_are_not_what_they_look_like(user: bytes) -> None:
    done = errands(b"token", b"--user", user, env={"ERRANDS_SECRET": SECRET})
    assert done.returncode == 2
    assert "--user" in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_token_normalises_user_names() -> None:
    done = errands("token", "--user", "jose\u0301", env={"ERRANDS_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    assert verify_token(SECRET, done.stdout.strip()).user == "jos\u00e9"
