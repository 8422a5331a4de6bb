"""The operator's commands, straight against the database: ``errands jobs`` and
``errands cancel`` with ``--database-url`` (without it they are the client's commands),
``errands show``, ``errands retry``, ``errands reschedule``, ``errands stats`` and
``errands prune``.

Each prints rich tables on a terminal, or JSON with ``--json``; each exits non-zero with
a one-line message when the database cannot be used or a job cannot be found.

The filters of a command that changes jobs (cancel, retry, reschedule, prune) come only
from its command line, never from an environment variable: an ``ERRANDS_STATE`` left
exported in a shell must not turn a later ``errands cancel`` into a bulk cancel. Every
change is recorded in ``job_events`` under the local user's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
import psycopg
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from errands import operations, workflows
from errands.cli import client as client_commands
from errands.cli.durations import parse_span, since_option, span_option
from errands.cli.options import fail, stderr
from errands.cli.render import (
    attempts_table,
    dependencies_table,
    job_table,
    jobs_table,
    stats_tables,
    stdout,
    steps_table,
    timeline_table,
    to_json,
)
from errands.exceptions import ErrandsError
from errands.jobs import FINAL_STATES, STATES
from errands.operations import JobFilter

F = TypeVar("F", bound=Callable[..., Any])

CLIENT_OPTIONS = ("server", "replica", "token")


def _database_url(required: bool) -> Callable[[F], F]:
    help_text = "Postgres connection URL, e.g. postgresql://user@host/db." + (
        "" if required else " Selects the operator form: every job, from the database."
    )
    return click.option(
        "--database-url",
        envvar="ERRANDS_DATABASE_URL",
        show_envvar=True,
        required=required,
        default=None,
        metavar="URL",
        help=help_text,
    )


def _split(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma-separated lists alike: --state failed,cancelled."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _check_states(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    states = _split(ctx, param, values)
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise click.BadParameter(f"unknown state {unknown[0]!r}; states are {', '.join(STATES)}")
    return states


def _filter_options(function: F, *, from_environment: bool) -> F:
    """--state, --kind, --queue, --owner (each repeatable or comma-separated), --since;
    each also from its ERRANDS_ variable if ``from_environment``."""

    def env(name: str) -> dict[str, Any]:
        return {"envvar": f"ERRANDS_{name}", "show_envvar": True} if from_environment else {}

    options = [
        click.option(
            "--state",
            "states",
            multiple=True,
            callback=_check_states,
            help=f"Only jobs in this state ({', '.join(STATES)}).",
            **env("STATE"),
        ),
        click.option(
            "--kind",
            "kinds",
            multiple=True,
            callback=_split,
            help="Only jobs of this kind.",
            **env("KIND"),
        ),
        click.option(
            "--queue",
            "queues",
            multiple=True,
            callback=_split,
            help="Only jobs in this queue.",
            **env("QUEUE"),
        ),
        click.option(
            "--owner",
            "owners",
            multiple=True,
            callback=_split,
            help="Only jobs of this user.",
            **env("OWNER"),
        ),
        click.option(
            "--since",
            callback=since_option,
            metavar="WHEN",
            help="Only jobs asked for since then: a span ago (1h, 2d) or an ISO 8601 time.",
            **env("SINCE"),
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def filter_options(function: F) -> F:
    """The filters of a command that only reads: from options or ERRANDS_ variables."""
    return _filter_options(function, from_environment=True)


def explicit_filter_options(function: F) -> F:
    """The filters of a command that changes jobs: from its command line only."""
    return _filter_options(function, from_environment=False)


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="ERRANDS_JSON",
    show_envvar=True,
    help="Print JSON instead of tables.",
)


def _filter(
    states: list[str],
    kinds: list[str],
    queues: list[str],
    owners: list[str],
    since: datetime | None,
) -> JobFilter | None:
    """The filter the options ask for, None if they ask for none."""
    if not (states or kinds or queues or owners or since):
        return None
    return JobFilter(states=states, kinds=kinds, queues=queues, owners=owners, since=since)


@contextmanager
def connect(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; a database or errands error becomes a message and a
    non-zero exit."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            yield conn
    except psycopg.errors.UndefinedTable:
        fail("the database has no errands tables; run: errands migrate --database-url URL")
    except psycopg.Error as exc:
        fail(f"cannot use the database: {str(exc).strip()}")
    except ErrandsError as exc:
        fail(str(exc))


def _operator_form(ctx: click.Context, database_url: str | None) -> bool:
    """Whether a command that is both the client's and the operator's runs as the
    operator's: it does when a database URL is given, unless client options given on
    the command line override one that came from the environment."""
    if database_url is None:
        return False
    client_given = [
        name
        for name in CLIENT_OPTIONS
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    ]
    if not client_given:
        return True
    if ctx.get_parameter_source("database_url") == ParameterSource.COMMANDLINE:
        raise click.UsageError(
            f"--database-url (the operator's form) and --{client_given[0]} (the client's) "
            "do not go together; give one of them"
        )
    return False


FILTER_FLAGS = {
    "states": "--state",
    "kinds": "--kind",
    "queues": "--queue",
    "owners": "--owner",
    "since": "--since",
}


def _refuse_filters(ctx: click.Context) -> None:
    """The client's form has no filters: say how to get them."""
    for name, flag in FILTER_FLAGS.items():
        if ctx.params.get(name):
            raise click.UsageError(
                f"{flag} works on the database: give --database-url (or ERRANDS_DATABASE_URL)"
            )


def _ids(conn: psycopg.Connection[Any], texts: tuple[str, ...]) -> list[uuid.UUID]:
    return [operations.find_id(conn, text) for text in texts]


# --- errands jobs ---------------------------------------------------------------------


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="How many jobs. [default: 10 (client), 50 (operator)]",
)
@filter_options
@json_option
@_database_url(required=False)
@client_commands.client_options
@click.pass_context
def jobs(
    ctx: click.Context,
    limit: int | None,
    states: list[str],
    kinds: list[str],
    queues: list[str],
    owners: list[str],
    since: datetime | None,
    as_json: bool,
    database_url: str | None,
    server: str,
    replica: str | None,
    token: str | None,
) -> None:
    """List the newest jobs.

    \b
    Client form (--server, --replica, --token): your own jobs, from your replica,
    pending ones included, syncing first if the server answers.
    Operator form (--database-url or ERRANDS_DATABASE_URL): every job in the database,
    filtered by --state, --kind, --queue, --owner and --since.
    A --database-url or --server given on the command line wins over the other's
    environment variable.
    """
    if not _operator_form(ctx, database_url):
        _refuse_filters(ctx)
        if not as_json:
            ctx.invoke(
                client_commands.jobs, limit=limit or 10, server=server, replica=replica, token=token
            )
            return
        with client_commands.open_client(server, replica, token) as client:
            client_commands.sync_or_warn(client)
            click.echo(to_json(client.jobs(limit or 10)))
        return
    assert database_url is not None
    where = _filter(states, kinds, queues, owners, since)
    with connect(database_url) as conn:
        rows = operations.list_jobs(conn, where, limit=limit or 50)
        counts = operations.count_jobs(conn, where)
    if as_json:
        click.echo(to_json(rows))
    elif rows:
        stdout.print(jobs_table(rows))
        total = sum(counts.values())
        summary = ", ".join(f"{counts[s]} {s}" for s in STATES if s in counts)
        stderr.print(f"{len(rows)} of {total} jobs shown ({summary})", highlight=False)
    else:
        stderr.print("no job matches", highlight=False)


# --- errands cancel -------------------------------------------------------------------


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1)
@explicit_filter_options
@_database_url(required=False)
@client_commands.client_options
@click.pass_context
def cancel(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    states: list[str],
    kinds: list[str],
    queues: list[str],
    owners: list[str],
    since: datetime | None,
    database_url: str | None,
    server: str,
    replica: str | None,
    token: str | None,
) -> None:
    """Request the cancellation of jobs. ID is the whole id or its end, as `errands jobs`
    shows it. A queued job ends at once; a running one when its handler sees it.

    \b
    Client form (--server, --replica, --token): one of your jobs, locally first,
    then synced.
    Operator form (--database-url or ERRANDS_DATABASE_URL): any jobs, by ID... and/or
    by --state, --kind, --queue, --owner, --since.
    A --database-url or --server given on the command line wins over the other's
    environment variable.
    """
    if not _operator_form(ctx, database_url):
        _refuse_filters(ctx)
        if len(job_ids) != 1:
            raise click.UsageError("give one job ID (several need --database-url)")
        ctx.invoke(
            client_commands.cancel,
            job_id=job_ids[0],
            server=server,
            replica=replica,
            token=token,
        )
        return
    assert database_url is not None
    where = _filter(states, kinds, queues, owners, since)
    _act(database_url, "cancel", job_ids, where)


_DONE = {
    "cancel": ("asked to stop", "queued or running"),
    "retry": ("re-queued", "failed or cancelled"),
    "reschedule": ("rescheduled", "queued"),
}


def _act(
    database_url: str,
    action: str,
    job_ids: tuple[str, ...],
    where: JobFilter | None,
    run_at: datetime | None = None,
) -> None:
    """Run an action on jobs named and/or filtered and say what it did: each job
    changed, each held back and why (a retry whose unique key an unfinished job holds);
    exit 1 if a job named by id was left alone."""
    if not job_ids and where is None:
        raise click.UsageError("give job IDs, or filters such as --state and --kind")
    done, applies_to = _DONE[action]
    with connect(database_url) as conn:
        ids = _ids(conn, job_ids)
        outcome = operations.act(conn, action, *ids, where=where, run_at=run_at)
        skipped = [
            operations.get(conn, i)
            for i in ids
            if i not in set(outcome.changed) and i not in outcome.held
        ]
    for job_id in outcome.changed:
        click.echo(f"{job_id} {done}")
    count = len(outcome.changed)
    stderr.print(f"{count} job{'s' * (count != 1)} {done}", highlight=False)
    for job_id, key in outcome.held.items():
        stderr.print(
            f"[yellow]left alone:[/] {job_id}: an unfinished job holds its unique key {key!r}",
            highlight=False,
            markup=True,
        )
    for job in skipped:
        if job is not None:
            stderr.print(
                f"[yellow]left alone:[/] {job.id} is {job.state}; only {applies_to} jobs "
                "qualify" + (" (or it does not match the filters)" if where else ""),
                highlight=False,
            )
    if skipped or set(outcome.held) & set(ids):
        raise SystemExit(1)


# --- errands retry --------------------------------------------------------------------


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1)
@explicit_filter_options
@_database_url(required=True)
def retry(
    job_ids: tuple[str, ...],
    states: list[str],
    kinds: list[str],
    queues: list[str],
    owners: list[str],
    since: datetime | None,
    database_url: str,
) -> None:
    """Put failed or cancelled jobs back in the queue, by ID... and/or by filters
    (errands retry --state failed --kind resize). Each gets one more attempt; its
    earlier attempts stay in its timeline (errands show ID). A job whose unique key an
    unfinished job holds is left alone, and named."""
    where = _filter(states, kinds, queues, owners, since)
    _act(database_url, "retry", job_ids, where)


# --- errands reschedule ---------------------------------------------------------------


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option(
    "--at",
    "run_at",
    metavar="WHEN",
    callback=lambda _ctx, _param, text: _when(text),
    help="The new run time: a span from now (10m, 2h) or an ISO 8601 time. [default: now]",
)
@explicit_filter_options
@_database_url(required=True)
def reschedule(
    job_ids: tuple[str, ...],
    run_at: datetime | None,
    states: list[str],
    kinds: list[str],
    queues: list[str],
    owners: list[str],
    since: datetime | None,
    database_url: str,
) -> None:
    """Run queued jobs now (waiting on their run_at or a retry's backoff), or at --at,
    by ID... and/or by filters."""
    where = _filter(states, kinds, queues, owners, since)
    _act(database_url, "reschedule", job_ids, where, run_at)


def _when(text: str | None) -> datetime | None:
    """A span from now, or an ISO 8601 time (local without a zone)."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) + parse_span(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a span (10m, 2h) nor an ISO 8601 time (2026-12-01T10:00)"
        ) from None
    return when if when.tzinfo else when.astimezone()


# --- errands show ---------------------------------------------------------------------


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@_database_url(required=True)
def show(job_id: str, as_json: bool, database_url: str) -> None:
    """Show one job: its row, each attempt, and its timeline from job_events. ID is the
    whole id or its end, as `errands jobs` shows it."""
    with connect(database_url) as conn:
        job = operations.get(conn, operations.find_id(conn, job_id))
        if job is None:
            fail(f"no job {job_id} in the database")
        events = operations.timeline(conn, job.id)
        after = workflows.dependencies(conn, job.id)
        steps = workflows.steps(conn, job.id)
    if as_json:
        workflow = {"after": [d._asdict() for d in after], "steps": [s._asdict() for s in steps]}
        click.echo(to_json({"job": job, "timeline": events, **workflow}))
        return
    stdout.print(job_table(job))
    if after:
        stdout.print(dependencies_table(after))
    runs = operations.attempts(events)
    if runs:
        stdout.print(attempts_table(runs))
    stdout.print(timeline_table(events))
    if steps:
        stdout.print(steps_table(steps))
    traceback = job.error.get("traceback") if isinstance(job.error, dict) else None
    if traceback:
        stdout.print("[bold]traceback[/]")
        stdout.print(traceback, highlight=False, markup=False)


# --- errands stats --------------------------------------------------------------------


@click.command()
@json_option
@_database_url(required=True)
def stats(as_json: bool, database_url: str) -> None:
    """Jobs per kind and state, each queue's depth and oldest waiting job, and the jobs
    each worker runs now."""
    with connect(database_url) as conn:
        result = operations.stats(conn)
    if as_json:
        document = {
            "by_state": result.by_state,
            "counts": result.counts,
            "queues": result.queues,
            "oldest_queued": result.oldest_queued,
            "workers": result.workers,
        }
        click.echo(to_json(document))
        return
    for table in stats_tables(result):
        stdout.print(table)


# --- errands prune --------------------------------------------------------------------


@click.command()
@click.option(
    "--older-than",
    callback=span_option,
    metavar="SPAN",
    required=True,
    help="Prune jobs that finished longer ago than this: 30d, 12h, 90m, 45s.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    callback=_split,
    help="Only jobs in this state (completed, failed, cancelled). [default: all three]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="ERRANDS_DRY_RUN",
    show_envvar=True,
    help="Only count what would go.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=operations.PRUNE_BATCH_SIZE,
    show_default=True,
    envvar="ERRANDS_BATCH_SIZE",
    show_envvar=True,
    help="Jobs deleted per transaction.",
)
@_database_url(required=True)
def prune(
    older_than: timedelta, states: list[str], dry_run: bool, batch_size: int, database_url: str
) -> None:
    """Delete finished jobs (completed, failed, cancelled) and their events, in batches,
    oldest first. Never a queued or running job. Replicas drop the pruned jobs."""
    chosen = states or sorted(FINAL_STATES)
    not_final = sorted(set(chosen) - FINAL_STATES)
    if not_final:
        raise click.BadParameter(
            f"{not_final[0]!r}: only finished jobs (completed, failed, cancelled) can be pruned",
            param_hint="--state",
        )
    with connect(database_url) as conn:
        plan = operations.prunable(conn, older_than, chosen)
        detail = ", ".join(f"{plan.counts[s]} {s}" for s in sorted(plan.counts))
        if dry_run or not plan.total:
            verb = "would prune" if dry_run else "pruned"
            click.echo(f"{verb} {plan.total} jobs" + (f" ({detail})" if detail else ""))
            return
        with _progress_bar(plan.total) as advance:
            pruned = operations.prune(
                conn, older_than, chosen, batch_size=batch_size, on_batch=advance
            )
    click.echo(f"pruned {pruned} jobs")


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("pruning", total=total)
        yield lambda count: progress.advance(task, count)
