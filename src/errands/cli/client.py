"""``errands submit``, ``errands jobs``, ``errands cancel``, ``errands sync``: the client
on the command line. Each works on a local replica first, then syncs once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from errands.cli.options import fail, stderr
from errands.client import Client, Job, default_replica
from errands.client.client import DEFAULT_SERVER, SubmitOptions
from errands.exceptions import ErrandsError, JobNotFound, ServerUnreachable
from errands.protocol import MAX_ATTEMPTS, MAX_PRIORITY

F = TypeVar("F", bound=Callable[..., Any])

SHORT_ID = 8
"""How many trailing characters of a job's id `errands jobs` shows (as the page does:
a UUIDv7 starts with its timestamp, so the end is what tells jobs apart)."""

stdout = Console()


def client_options(function: F) -> F:
    """``--server``, ``--replica`` and ``--token``, each with its ``ERRANDS_*`` variable."""
    options = [
        click.option(
            "--server",
            envvar="ERRANDS_SERVER",
            show_envvar=True,
            default=DEFAULT_SERVER,
            show_default=True,
            metavar="URL",
            help="The sync service's URL.",
        ),
        click.option(
            "--replica",
            envvar="ERRANDS_REPLICA",
            show_envvar=True,
            default=None,
            metavar="FILE",
            help=f"The local SQLite replica. Default: {default_replica()}.",
        ),
        click.option(
            "--token",
            envvar="ERRANDS_TOKEN",
            show_envvar=True,
            default=None,
            help="Bearer token (from `errands token`); prefer ERRANDS_TOKEN, since any user "
            "of this machine can read a command line (ps). Omit for a server run with --insecure.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@contextmanager
def open_client(server: str, replica: str | None, token: str | None) -> Iterator[Client]:
    """A Client; any errands error becomes a message and a non-zero exit."""
    try:
        with Client(replica=replica, server=server, token=token) as client:
            yield client
    except ErrandsError as exc:
        fail(str(exc))


def sync_or_warn(client: Client) -> None:
    """One sync round; if the server is unreachable, say local changes wait."""
    try:
        client.sync()
    except ServerUnreachable as exc:
        pending = client.status.pending
        stderr.print(
            f"[yellow]offline:[/] {exc}. Local changes are saved; "
            f"{pending} will upload on the next sync.",
            highlight=False,
        )


def parse_payload(_ctx: click.Context, _param: click.Parameter, text: str | None) -> Any:
    """The --payload option as JSON; a usage error (exit 2) if it is not."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}); nothing was submitted") from exc


def parse_moment(_ctx: click.Context, _param: click.Parameter, text: str | None) -> Any:
    """--run-at as an aware datetime (ISO 8601; without a zone: this machine's time)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time ({exc}); nothing was submitted") from exc
    return moment if moment.tzinfo is not None else moment.astimezone()


def submit_option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """One of ``errands submit``'s job options, with its ERRANDS_SUBMIT_* variable."""
    variable = "ERRANDS_SUBMIT_" + name.removeprefix("--").replace("-", "_").upper()
    return click.option(name, envvar=variable, show_envvar=True, default=None, **kwargs)


@click.command()
@click.argument("kind")
@click.option(
    "--payload",
    callback=parse_payload,
    metavar="JSON",
    help="The job's arguments as JSON, e.g. '{\"a\": 1}'.",
)
@submit_option(
    "--priority",
    type=click.IntRange(-MAX_PRIORITY, MAX_PRIORITY),
    help="Higher runs first. Default: the kind's, else 0.",
)
@submit_option("--queue", metavar="NAME", help="The queue. Default: the kind's, else 'default'.")
@submit_option(
    "--run-at",
    callback=parse_moment,
    metavar="TIME",
    help="Not before this ISO 8601 time (without a zone: this machine's). Default: now.",
)
@submit_option(
    "--max-attempts",
    type=click.IntRange(1, MAX_ATTEMPTS),
    help="Tries before the job fails. Default: the kind's, else 3.",
)
@submit_option(
    "--unique-key",
    metavar="KEY",
    help="At most one unfinished job of yours per key: while one is queued or running, "
    "that one is shown instead of submitting another.",
)
@click.option(
    "--after",
    multiple=True,
    metavar="ID",
    help="A job of yours this one runs after (its id, or its end as `errands jobs` shows "
    "it); repeat for several. The job waits until every one of them ended.",
)
@click.option(
    "--on-failure",
    type=click.Choice(["cancel", "run"]),
    default=None,
    help="With --after: when one of those fails or is cancelled, cancel this job "
    "(the default) or run it all the same.",
)
@click.option("--wait", is_flag=True, help="Show a live progress bar until the job ends.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="With --wait: give up after this many seconds (exit 1). Default: wait forever.",
)
@client_options
def submit(
    kind: str,
    payload: Any,
    priority: int | None,
    queue: str | None,
    run_at: datetime | None,
    max_attempts: int | None,
    unique_key: str | None,
    after: tuple[str, ...],
    on_failure: str | None,
    wait: bool,
    timeout: float | None,
    server: str,
    replica: str | None,
    token: str | None,
) -> None:
    """Submit a job of KIND. It is saved locally first, so it is never lost while the
    server is down; it uploads now if the server answers, or on a later sync.

    Exits 1 if the server rejects it as it uploads (a kind clients may not submit, a
    payload that does not match the kind's schema: the message says which field). With
    --wait, exits 0 once the job completed (printing its result as JSON), 1 if it
    failed, was cancelled or was rejected."""
    chosen = {
        "priority": priority,
        "queue": queue,
        "run_at": run_at,
        "max_attempts": max_attempts,
        "unique_key": unique_key,
        "on_failure": on_failure,
    }
    options = cast(SubmitOptions, {k: v for k, v in chosen.items() if v is not None})
    with open_client(server, replica, token) as client:
        try:
            if after:
                options["after"] = [client.find(short_id) for short_id in after]
            job = client.submit(kind, payload, **options)
        except (ValueError, JobNotFound) as exc:
            fail(f"{exc}; nothing was submitted", code=2)
        stderr.print(f"submitted {job.id}", highlight=False)
        if not wait:
            sync_or_warn(client)
            uploaded = client.get(job.id)
            if uploaded is not None and uploaded.state == "rejected":
                report(uploaded)  # the server said no at the door: say why, exit 1
            return
        client.connect()
        job = follow(client, job.id, timeout)
        report(job)


def follow(client: Client, job_id: str, timeout: float | None) -> Job:
    """A live progress bar until the job ends (or the timeout passes)."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, TimeElapsedColumn(), console=stderr, transient=True) as progress:
        bar = progress.add_task(job_id[:8], total=1.0)

        def show() -> None:  # called from the sync thread; rich's Progress is thread-safe
            job = client.get(job_id)
            if job is not None:
                note = job.progress_message or job.state
                if job.pending:
                    note += f" (not uploaded yet; {client.status})"
                progress.update(bar, completed=job.progress, description=f"{job_id[:8]} {note}")

        show()
        client.replica.add_listener(show)
        try:
            return client.wait(job_id, timeout=math.inf if timeout is None else timeout)
        finally:
            client.replica.remove_listener(show)


def report(job: Job) -> None:
    """Print how the job ended; exit non-zero unless it completed."""
    if job.state == "completed":
        stdout.print_json(json.dumps(job.result))
        return
    if job.state == "failed":
        message = job.error.get("message", job.error) if isinstance(job.error, dict) else job.error
        fail(f"job {job.id} failed: {message}")
    if job.state == "rejected":
        fail(f"job {job.id} was rejected by the server: {job.rejected}")
    fail(f"job {job.id} was cancelled")


@click.command()
@click.option(
    "--limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many jobs."
)
@client_options
def jobs(limit: int, server: str, replica: str | None, token: str | None) -> None:
    """List the newest jobs, pending ones included (syncing first if the server answers)."""
    with open_client(server, replica, token) as client:
        sync_or_warn(client)
        rows = client.jobs(limit)
        if rows:
            stdout.print(jobs_table(rows))
        else:
            stderr.print("no jobs yet: submit one with `errands submit KIND`", highlight=False)


def jobs_table(rows: list[Job]) -> Table:
    """The jobs as a rich table."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)  # the short id: `errands cancel` takes it
    for name in ("kind", "submitted", "state", "progress", "result"):
        table.add_column(name)
    for job in rows:
        state = job.state + (" (cancel requested)" if job.cancelled and not job.done else "")
        if job.state == "queued" and job.waiting_for:
            state += f", waiting for {job.waiting_for} job{'s' if job.waiting_for > 1 else ''}"
        if job.pending:
            state += " [dim](not uploaded)[/]"
        table.add_row(
            job.id[-SHORT_ID:],
            job.kind,
            job.timestamp.astimezone().strftime("%m-%d %H:%M:%S"),
            state,
            f"{job.progress:.0%}",
            outcome(job),
        )
    return table


def outcome(job: Job) -> str:
    """A job's result, error or rejection, in one short line."""
    if job.rejected:
        return f"rejected: {job.rejected}"
    if job.state == "failed" and job.error is not None:
        error = job.error.get("message", job.error) if isinstance(job.error, dict) else job.error
        return f"error: {error}"
    if job.state == "completed":
        return json.dumps(job.result)[:80]
    if job.asking:  # ctx.ask: answer with `errands answer ID VALUE`
        choices = job.question.get("choices")
        listed = f" ({' / '.join(json.dumps(c) for c in choices)})" if choices else ""
        return escape(f"waiting for your answer: {job.question.get('text', '')}{listed}"[:160])
    return ""


@click.command()
@click.argument("job_id", metavar="ID")
@client_options
def cancel(job_id: str, server: str, replica: str | None, token: str | None) -> None:
    """Request the cancellation of job ID (locally first, then synced). ID is the whole
    id or its end, as `errands jobs` shows it."""
    with open_client(server, replica, token) as client:
        job = client.cancel(client.find(job_id).id)
        stderr.print(f"cancellation requested for {job.id}", highlight=False)
        sync_or_warn(client)


@click.command()
@client_options
def sync(server: str, replica: str | None, token: str | None) -> None:
    """Upload the local changes and bring the replica up to date, once."""
    with open_client(server, replica, token) as client:
        client.sync()
        status = client.status
        stderr.print(
            f"up to date with {server}: {status.pending} pending, {status.rejected} rejected",
            highlight=False,
        )
