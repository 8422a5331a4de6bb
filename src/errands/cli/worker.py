"""``errands worker``."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import click

from errands.cli.options import database_url_option, fail, setup_logging
from errands.exceptions import ErrandsError
from errands.logs import log_format_option, use_json_logs
from errands.metrics import SupervisorMetrics, WorkerMetrics
from errands.migrations import ensure_migrated
from errands.registry import Registry
from errands.worker import Worker, WorkerSettings
from errands.worker.supervisor import Supervisor, available_cores
from errands.worker.watchdog import OVERRUN_SLACK, ShutdownWatchdog
from errands.worker.worker import ABORT_GRACE

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's multiprocess mode keeps each process's metrics."""


class ProcessCount(click.ParamType[int, Any]):
    """A number of processes, at least 1, or ``auto``: one per core."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """``auto`` -> the cores this process may use; else a whole number >= 1."""
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return available_cores()
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if count < 1:
            self.fail("at least 1 process", param, ctx)
        return count


def load_registry(spec: str) -> Registry:
    """Import ``module:attribute`` (``attribute`` defaults to ``registry``)."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "registry"
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the working directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r}: {exc}", code=2)
    except Exception as exc:  # noqa: BLE001 -- the user's module failed while importing
        fail(f"importing {module_name!r} raised {type(exc).__name__}: {exc}", code=2)
    registry = getattr(module, attribute, None)
    if not isinstance(registry, Registry):
        found = "nothing" if registry is None else type(registry).__name__
        fail(f"{spec!r} should name an errands.Registry, but it is {found}", code=2)
    if not len(registry):
        fail(f"{spec!r} has no handlers; register some with @registry.job(...)", code=2)
    return registry


@click.command()
@click.argument("registry", metavar="MODULE:REGISTRY", envvar="ERRANDS_REGISTRY")
@database_url_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    envvar="ERRANDS_CONCURRENCY",
    show_envvar=True,
    help="How many jobs run at once.",
)
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    envvar="ERRANDS_QUEUES",
    show_envvar=True,
    help="Only take jobs from this queue (repeatable; "
    "the variable takes a space-separated list). Default: every queue.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    envvar="ERRANDS_POLL_INTERVAL",
    show_envvar=True,
    help="Seconds between polls when no notification arrives.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0.5),
    default=30.0,
    show_default=True,
    envvar="ERRANDS_LEASE",
    show_envvar=True,
    help="Seconds after its last heartbeat that a worker counts as dead "
    "and its jobs are re-queued.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.05),
    default=None,
    envvar="ERRANDS_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between heartbeats. Default: a sixth of the lease.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="ERRANDS_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="On SIGTERM, seconds to let running jobs finish before re-queueing them.",
)
@click.option(
    "--burst",
    is_flag=True,
    envvar="ERRANDS_BURST",
    show_envvar=True,
    help="Exit (status 0) once no job this worker can take is runnable and none is "
    "running; jobs due later, retries waiting out their backoff included, are left. "
    "For CI steps and cron-driven batches.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="ERRANDS_METRICS_PORT",
    show_envvar=True,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port). "
    "Default: no metrics.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="ERRANDS_METRICS_HOST",
    show_envvar=True,
    help="The address --metrics-port listens on.",
)
@click.option(
    "--processes",
    "-p",
    type=ProcessCount(),
    default="1",
    show_default=True,
    envvar="ERRANDS_PROCESSES",
    show_envvar=True,
    help="Worker processes to run under one supervisor ('auto': one per core), each "
    "with --concurrency slots and a lease of its own; a crashed one is restarted.",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    envvar="ERRANDS_LOOP",
    show_envvar=True,
    help="The event loop: uvloop (less Python per job) or asyncio's own; 'auto' takes "
    "uvloop when it is installed.",
)
@click.option("--supervised", is_flag=True, hidden=True)  # a child of --processes
@log_format_option
@click.option("--verbose", "-v", is_flag=True, help="Log debugging detail.")
def worker(
    registry: str,
    database_url: str,
    concurrency: int,
    queues: tuple[str, ...],
    poll_interval: float,
    lease: float,
    heartbeat_interval: float | None,
    shutdown_timeout: float,
    burst: bool,
    metrics_port: int | None,
    metrics_host: str,
    processes: int,
    loop: str,
    supervised: bool,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the jobs whose kinds MODULE:REGISTRY handles.

    MODULE:REGISTRY names an errands.Registry, e.g. myapp.jobs:registry. The worker
    wakes on notifications within milliseconds, polls as a fallback, and stops
    gracefully on SIGTERM or Ctrl-C (press it twice to stop at once). With
    --processes N it supervises N such workers: one Ctrl-C stops them all.
    """
    if log_format == "json":
        use_json_logs(verbose)
    else:
        setup_logging(verbose)
    loaded = load_registry(registry)
    if processes > 1:
        context = click.get_current_context()
        arguments = [registry, *_forwarded(context), "--log-format", log_format]
        _supervise(arguments, processes, database_url, metrics_host, metrics_port)
        return
    settings = WorkerSettings(
        concurrency=concurrency,
        queues=queues or None,
        poll_interval=poll_interval,
        lease=lease,
        heartbeat_interval=heartbeat_interval or lease / 6,
        shutdown_timeout=shutdown_timeout,
        burst=burst,
    )
    # A supervised child counts into its supervisor's metrics folder; it serves nothing.
    counted = metrics_port is not None or (supervised and MULTIPROCESS_DIR in os.environ)
    metrics = WorkerMetrics(database_url) if counted else None
    stop_serving = _serve_metrics(metrics, metrics_host, None if supervised else metrics_port)
    running = Worker(loaded, database_url, settings, metrics)
    watchdog = ShutdownWatchdog(
        lambda: running.stopping,
        settings.shutdown_timeout + ABORT_GRACE + OVERRUN_SLACK,
        ABORT_GRACE + OVERRUN_SLACK,
    )
    try:
        with _runner(loop) as runner:  # its closing is watched too
            runner.run(_run(running, watchdog, supervised))
    except ErrandsError as exc:
        fail(str(exc))
    finally:  # the worker has stopped: the process may go on (Django's call_command)
        watchdog.close()
        stop_serving()


# Options a supervisor hands to its children as they are; the rest it decides itself.
_FORWARDED = (
    "concurrency",
    "queues",
    "poll_interval",
    "lease",
    "heartbeat_interval",
    "shutdown_timeout",
    "burst",
    "loop",
    "verbose",
)


def _forwarded(context: click.Context) -> list[str]:
    """The command-line arguments that give a child this command's options."""
    arguments: list[str] = []
    for option in context.command.params:
        if option.name not in _FORWARDED or not isinstance(option, click.Option):
            continue
        flag = option.opts[0]
        value = context.params[option.name]
        if option.is_flag:
            arguments += [flag] if value else []
        elif option.multiple:
            for item in value:
                arguments += [flag, str(item)]
        elif value is not None:
            arguments += [flag, str(value)]
    return arguments


def _supervise(
    arguments: list[str],
    processes: int,
    database_url: str,
    metrics_host: str,
    metrics_port: int | None,
) -> None:
    """Run ``processes`` workers (``errands worker ARGUMENTS``) under a supervisor; exit
    with its status."""
    try:
        asyncio.run(ensure_migrated(database_url))  # a clear error once, not once per child
    except ErrandsError as exc:
        fail(str(exc))
    command = [sys.executable, "-m", "errands", "worker", *arguments, "--supervised"]
    # The URL travels in the environment, never in argv (where ps shows it).
    env = {**os.environ, "ERRANDS_DATABASE_URL": database_url, "ERRANDS_PROCESSES": "1"}
    with tempfile.TemporaryDirectory(prefix="errands-metrics-") as folder:
        metrics = None
        if metrics_port is not None:
            env[MULTIPROCESS_DIR] = folder
            metrics = SupervisorMetrics(database_url, folder)
        supervisor = Supervisor(
            command,
            processes,
            env,
            on_exit=metrics.process_exited if metrics else lambda pid: None,
            on_restart=metrics.restarts.inc if metrics else lambda: None,
        )
        stop_serving = _serve_metrics(metrics, metrics_host, metrics_port)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: supervisor.stop())
        try:
            status = supervisor.run()
        finally:
            stop_serving()
    sys.exit(status)


def _serve_metrics(
    metrics: WorkerMetrics | SupervisorMetrics | None, host: str, port: int | None
) -> Callable[[], None]:
    """Start serving /metrics if asked; the function that stops it."""
    if metrics is None or port is None:
        return lambda: None
    try:
        url, stop = metrics.serve(host, port)
    except OSError as exc:
        fail(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", 2)
    logging.getLogger("errands.worker").info("metrics at %s", url)
    return stop


def _runner(loop: str) -> asyncio.Runner:
    """An asyncio runner on the chosen event loop (uvloop only where it is installed:
    it stays optional)."""
    if loop == "asyncio":
        return asyncio.Runner()
    try:
        import uvloop  # noqa: PLC0415 -- optional
    except ImportError:
        if loop == "uvloop":
            fail("--loop uvloop: uvloop is not installed (pip install uvloop)", code=2)
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def _run(running: Worker, watchdog: ShutdownWatchdog, supervised: bool) -> None:
    loop = asyncio.get_running_loop()
    watchdog.start()
    signals = 0

    def on_signal(signum: int, frame: object) -> None:
        # A Python-level handler, not the loop's: it runs even while a handler blocks
        # the loop, so the watchdog hears every signal; the stop itself is the loop's.
        nonlocal signals
        signals += 1
        watchdog.asked(at_once=signals > 1 or running.stopping)
        loop.call_soon_threadsafe(running.stop)

    before = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        if supervised:
            _stop_when_orphaned(loop, running)
        await running.run()
    finally:  # the loop is about to close: its handlers go with it
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _stop_when_orphaned(loop: asyncio.AbstractEventLoop, running: Worker) -> None:
    """Stop gracefully once the supervisor is gone: standard input is a pipe only the
    supervisor writes to (it never does), so reading its end means the supervisor died."""
    stdin = sys.stdin.fileno()

    def readable() -> None:
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            logging.getLogger("errands.worker").warning(
                "the supervisor is gone: stopping gracefully"
            )
            running.stop()

    loop.add_reader(stdin, readable)
