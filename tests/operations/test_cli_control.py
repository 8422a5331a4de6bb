"""The operator's command line in control (issue 16): no environment variable turns a
cancel, retry, reschedule or prune into a bulk action; a bulk retry over jobs sharing a
unique key re-queues what it can and names what it left; queues are listed, paused and
resumed; no option is declared twice and the server starts without warnings."""

from __future__ import annotations

import json
from typing import Any

import click
import psycopg
import pytest

import errands
from errands import operations
from errands.cli import main
from tests.client.processes import SyncServer
from tests.operations.jobs import end, make_job, start
from tests.operations.test_cli import run

Conn = psycopg.Connection[Any]

EXPORTED_FILTERS = {
    "ERRANDS_STATE": "failed,queued,completed",
    "ERRANDS_KIND": "resize",
    "ERRANDS_QUEUE": "default",
    "ERRANDS_OWNER": "alice",
    "ERRANDS_SINCE": "1d",
    "ERRANDS_OLDER_THAN": "0s",
}


@pytest.mark.parametrize("command", ["cancel", "retry", "reschedule", "prune"])
def test_exported_filters_never_make_a_bare_command_bulk(
    conn: Conn, database_url: str, command: str
) -> None:
    jobs = [make_job(conn, state) for state in ("queued", "failed", "completed")]
    before = {j.id: (j.state, j.run_at) for j in errands.list_jobs(conn)}
    env = {"ERRANDS_DATABASE_URL": database_url, **EXPORTED_FILTERS}

    code, output = run(command, env=env)

    assert code == 2, output  # a usage error, saying what to give
    assert "give job IDs, or filters" in output or "--older-than" in output
    assert {j.id: (j.state, j.run_at) for j in errands.list_jobs(conn)} == before
    assert len(jobs) == 3


def test_bulk_retry_over_shared_unique_keys_reports_what_it_left(
    conn: Conn, database_url: str
) -> None:
    def failed(key: str) -> Any:
        job = errands.enqueue(conn, "resize", {}, owner="alice", unique_key=key)
        start(conn, job)
        end(conn, job, "failed")
        return job

    older, newer = failed("same"), failed("same")
    code, output = run("retry", "--state", "failed", env={"ERRANDS_DATABASE_URL": database_url})

    assert code == 0, output
    assert f"{newer} re-queued" in output
    assert f"left alone: {older}: an unfinished job holds its unique key 'same'" in output
    assert "cannot use the database" not in output
    events = errands.timeline(conn, newer)
    assert (events[-1].type, events[-1].worker) == ("retried", None)
    assert events[-1].operator == operations.default_operator()
    code, output = run("show", str(newer), env={"ERRANDS_DATABASE_URL": database_url})
    assert code == 0, output
    assert f"operator {operations.default_operator()}" in output


def test_queues_pause_and_resume(conn: Conn, database_url: str) -> None:
    env = {"ERRANDS_DATABASE_URL": database_url}
    make_job(conn, "queued", queue="mail")
    make_job(conn, "running", queue="mail")

    code, output = run("queue", "pause", "mail", env=env)
    assert (code, output.strip()) == (0, "queue mail paused"), output
    code, output = run("queues", "--json", env=env)
    assert code == 0, output
    (mail,) = json.loads(output)
    assert (mail["name"], mail["ready"], mail["running"], mail["paused"]) == ("mail", 1, 1, True)
    assert mail["paused_by"] == operations.default_operator()
    code, output = run("queues", env=env)
    assert "paused" in output
    assert "mail" in output

    assert run("queue", "pause", "mail", env=env)[1].strip() == "queue mail was already paused"
    assert run("queue", "resume", "mail", env=env)[1].strip() == "queue mail resumed"
    assert run("queue", "resume", "mail", env=env)[1].strip() == "queue mail was not paused"


def test_reschedule_runs_a_waiting_job_now(conn: Conn, database_url: str) -> None:
    job = errands.enqueue(conn, "resize", {}, run_at=_hours_ahead(conn, 3))
    code, output = run("reschedule", str(job)[-8:], env={"ERRANDS_DATABASE_URL": database_url})
    assert code == 0, output
    assert f"{job} rescheduled" in output
    row = conn.execute("SELECT run_at <= now() FROM background_jobs WHERE id = %s", (job,))
    assert row.fetchone() == (True,)


def _hours_ahead(conn: Conn, hours: int) -> Any:
    row = conn.execute("SELECT now() + make_interval(hours => %s)", (hours,)).fetchone()
    assert row is not None
    return row[0]


def _commands(group: click.Group) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in _commands(command)]
    return found


def test_no_command_declares_an_option_twice() -> None:
    for name, command in _commands(main):
        flags = [flag for p in command.params for flag in getattr(p, "opts", [])]
        assert len(flags) == len(set(flags)), f"errands {name} declares an option twice"


def test_the_server_starts_without_warnings(database_url: str) -> None:
    server = SyncServer(database_url).start()
    try:
        assert "Warning" not in server.process.output()
    finally:
        server.stop()
    code, output = run("server", "--help")
    assert code == 0
    assert output.count("--prune-interval") == 1
