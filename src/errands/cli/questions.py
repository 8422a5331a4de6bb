"""``errands answer``: the answer to the question a job asks (``ctx.ask``), from its
owner's replica (the client's form) or, for an operator, straight into the database."""

from __future__ import annotations

import json
from typing import Any

import click

from errands import operations, workflows
from errands.cli import client as client_commands
from errands.cli.operations import _database_url, _operator_form, connect
from errands.cli.options import fail, stderr


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"--json: {text[:80]!r} is not JSON ({exc})") from None


@click.command()
@click.argument("job_id", metavar="ID")
@click.argument("text", metavar="VALUE")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="VALUE is JSON (a number, an object...), for questions whose choices are not texts.",
)
@_database_url(required=False)
@client_commands.client_options
@click.pass_context
def answer(
    ctx: click.Context,
    job_id: str,
    text: str,
    as_json: bool,
    database_url: str | None,
    server: str,
    replica: str | None,
    token: str | None,
) -> None:
    """Answer the question job ID asks (one of its choices; any text if it has none);
    the job then runs on with it. ID is the whole id or its end, as `errands jobs`
    shows it.

    \b
    Client form (--server, --replica, --token): one of your jobs, locally first (offline
    too), then synced.
    Operator form (--database-url or ERRANDS_DATABASE_URL): any job; job_events records
    the answer under your name.
    """
    value = _value(text, as_json)
    try:
        if _operator_form(ctx, database_url):
            assert database_url is not None
            with connect(database_url) as conn:
                answered = operations.find_id(conn, job_id)
                workflows.answer(conn, answered, value)
            stderr.print(f"answered {answered}", highlight=False)
            return
        with client_commands.open_client(server, replica, token) as client:
            job = client.answer(client.find(job_id).id, value)
            stderr.print(f"answered {job.id}", highlight=False)
            client_commands.sync_or_warn(client)
    except ValueError as exc:  # not a choice, or no question waits (QuestionClosed)
        fail(str(exc))
