"""How the operator's commands print: rich tables for people, JSON for programs."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from errands.cli.client import SHORT_ID
from errands.durable import Dependency
from errands.jobs import STATES
from errands.operations import Attempt, JobEvent, JobRecord, Stats
from errands.workflows import Step

stdout = Console()
STATE_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def to_json(value: Any) -> str:
    """Records, lists and dicts of them as indented JSON (ids and times as strings)."""
    return json.dumps(value, default=_plain, indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON")


def when(moment: datetime | None) -> str:
    """A time in the local zone, short."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(moment: datetime | None) -> str:
    """How long ago (or, negative, how far ahead) a moment is, in the largest unit."""
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    return span(abs(seconds)) + (" ago" if seconds >= 0 else " from now")


def span(seconds: float) -> str:
    """1.2s, 3m 20s, 4h 05m, 2d 03h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def state(name: str) -> str:
    """A state, coloured."""
    return f"[{STATE_STYLES.get(name, 'default')}]{name}[/]"


def error_message(error: Any) -> str:
    """An error column in one line."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind else str(message)
    return "" if error is None else str(error)


def jobs_table(rows: Sequence[JobRecord]) -> Table:
    """Jobs, one per line; the id's end is what `errands show` takes."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    for name in ("kind", "queue", "owner", "submitted", "state", "attempt", "progress"):
        table.add_column(name)
    table.add_column("outcome", overflow="fold")
    for job in rows:
        note = " (cancel requested)" if job.cancelled and not job.done else ""
        outcome = error_message(job.error) if job.state == "failed" else ""
        if job.state == "completed":
            outcome = json.dumps(job.result)[:60]
        table.add_row(
            str(job.id)[-SHORT_ID:],
            job.kind,
            job.queue,
            job.owner or "",
            when(job.timestamp),
            state(job.state) + note,
            f"{job.attempts}/{job.max_attempts}",
            f"{job.progress:.0%}",
            outcome,
        )
    return table


def job_table(job: JobRecord) -> Table:
    """One job's columns, one per line."""
    table = Table(box=box.SIMPLE, show_header=False, title=f"job {job.id}", title_justify="left")
    table.add_column("column", style="bold")
    table.add_column("value", overflow="fold")
    for field in dataclasses.fields(job):
        value = getattr(job, field.name)
        if field.name == "state":
            shown = state(value)
        elif field.name == "error":
            shown = error_message(value)
        elif field.name in ("payload", "result"):
            shown = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, datetime):
            shown = when(value)
        else:
            shown = "" if value is None else str(value)
        table.add_row(field.name, shown)
    return table


def attempts_table(runs: Sequence[Attempt]) -> Table:
    """Each attempt: worker, start, end, duration, how it ended."""
    table = Table(box=box.SIMPLE_HEAD, title="attempts", title_justify="left")
    for name in ("#", "worker", "started", "ended", "took", "outcome", "error"):
        table.add_column(name)
    for run in runs:
        took = run.duration
        table.add_row(
            str(run.number),
            run.worker or "",
            when(run.started_at),
            when(run.ended_at),
            "" if took is None else span(took.total_seconds()),
            state(run.outcome) if run.outcome else "[yellow]running[/]",
            error_message(run.error),
        )
    return table


def timeline_table(events: Sequence[JobEvent]) -> Table:
    """Every transition, from job_events; "by" names the worker or the operator."""
    table = Table(box=box.SIMPLE_HEAD, title="timeline", title_justify="left")
    for name in ("at", "event", "attempt", "by", "error"):
        table.add_column(name)
    for event in events:
        table.add_row(
            when(event.at),
            event.type,
            str(event.attempt),
            event.worker or (f"operator {event.operator}" if event.operator else ""),
            error_message(event.error),
        )
    return table


def steps_table(steps: Sequence[Step]) -> Table:
    """A job's stored durable steps (ctx.step, ctx.sleep)."""
    table = Table(box=box.SIMPLE_HEAD, title="steps", title_justify="left")
    for name in ("at", "step", "attempt", "result"):
        table.add_column(name)
    for step in steps:
        result = json.dumps(step.result)
        table.add_row(when(step.at), step.name, str(step.attempt), escape(result[:60]))
    return table


def dependencies_table(dependencies: Sequence[Dependency]) -> Table:
    """The jobs a job runs after."""
    table = Table(box=box.SIMPLE_HEAD, title="runs after", title_justify="left")
    for name in ("id", "kind", "state"):
        table.add_column(name)
    for dependency in dependencies:
        table.add_row(str(dependency.id), dependency.kind, state(dependency.state))
    return table


def stats_tables(stats: Stats) -> list[Table]:
    """Jobs per kind and state; queues; workers."""
    counts = Table(box=box.SIMPLE_HEAD, title="jobs", title_justify="left")
    counts.add_column("kind")
    for name in STATES:
        counts.add_column(name, justify="right")
    for kind, per_state in sorted(stats.counts.items()):
        counts.add_row(kind, *(str(per_state.get(s, 0)) for s in STATES))
    counts.add_row("[bold]all[/]", *(f"[bold]{n}[/]" for n in stats.by_state.values()))

    queues = Table(box=box.SIMPLE_HEAD, title="queues", title_justify="left")
    for name in ("queue", "ready", "scheduled", "oldest ready"):
        queues.add_column(name)
    for queue in stats.queues:
        waited = "" if queue.oldest_age is None else f"{span(queue.oldest_age)} ago"
        queues.add_row(queue.queue, str(queue.ready), str(queue.scheduled), waited)

    workers = Table(box=box.SIMPLE_HEAD, title="workers", title_justify="left")
    for name in ("worker", "host", "pid", "kinds", "lease", "running"):
        workers.add_column(name)
    for worker in stats.workers:
        lease = ago(worker.lease_expires_at).replace("from now", "left")
        if not worker.alive:
            lease = f"[red]expired {lease}[/]" if lease else "[red]not registered[/]"
        workers.add_row(
            worker.id,
            worker.hostname or "",
            "" if worker.pid is None else str(worker.pid),
            ", ".join(worker.kinds or []),
            lease,
            str(len(worker.running)),
        )
    return [counts, queues, workers]
