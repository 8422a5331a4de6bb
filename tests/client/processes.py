"""Real processes for the client's end-to-end tests: the sync service, workers, and a
TCP proxy that sees (and can interrupt) what goes between a client and the service."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
from collections.abc import Callable

from tests.helpers import ErrandsProcess

SECRET = "client-tests-secret"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SyncServer:
    """``errands server`` in a subprocess, on a port of its own that survives restarts."""

    def __init__(self, database_url: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.extra = extra
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ErrandsProcess | None = None
        self.output = ""

    def start(self) -> SyncServer:
        """Start it and wait until it accepts requests."""
        self.process = ErrandsProcess(
            "server",
            "--database-url",
            self.database_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--poll-interval",
            "0.2",
            *self.extra,
            env={"ERRANDS_SECRET": SECRET, **self.env},
        )
        self.process.wait_for_output(f"listening on {self.url}", timeout=30)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (if running) and keep what it printed."""
        if self.process is not None:
            self.process.stop(sig)
            self.output += self.process.output()
            self.process.close()
            self.process = None


def start_worker(database_url: str) -> ErrandsProcess:
    """``errands worker`` with the worker tests' handlers and short intervals."""
    return ErrandsProcess(
        "worker",
        "tests.worker.handlers:registry",
        "--database-url",
        database_url,
        "--poll-interval",
        "0.1",
        "--lease",
        "2",
    )


def token(user: str, secret: str = SECRET) -> str:
    """A bearer token from the real ``errands token`` command."""
    process = ErrandsProcess("token", "--user", user, env={"ERRANDS_SECRET": secret})
    try:
        assert process.process.wait(30) == 0, process.output()
        return process.output().strip().splitlines()[-1]
    finally:
        process.close()


_REQUEST = re.compile(rb"(GET|POST) (/v1/\S+) HTTP/1\.1")


class Proxy:
    """A TCP proxy to ``target``, recording each HTTP request line that goes through.

    ``on_mutation_answer``, if set, is called when the service starts answering a
    ``POST /v1/mutations``; the answer is then dropped, never reaching the client --
    the moment between upload and acknowledgement. While ``uploads`` is clear, uploads
    are held back (everything else goes through).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[str] = []
        self.on_mutation_answer: Callable[[], None] | None = None
        self.uploads = threading.Event()
        self.uploads.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting and cut every connection."""
        self.uploads.set()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                downstream.close()
                continue
            self._sockets += [downstream, upstream]
            posted = threading.Event()
            threading.Thread(
                target=self._pump, args=(downstream, upstream, posted, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, posted, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, posted: threading.Event, up: bool
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if up:
                    for method, path in _REQUEST.findall(chunk):
                        self.requests.append(f"{method.decode()} {path.decode()}")
                        if method == b"POST" and path.startswith(b"/v1/mutations"):
                            posted.set()
                            self.uploads.wait()
                elif posted.is_set() and self.on_mutation_answer is not None:
                    self.on_mutation_answer()
                    return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
