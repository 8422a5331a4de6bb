"""nginx (Debian's package) in front of real ``errands server`` processes, run with the
configuration the project ships (deploy/nginx.conf) and everything else in tmp_path."""

from __future__ import annotations

import getpass
import grp
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.client.processes import SyncServer, free_port
from tests.helpers import ROOT, wait_for

NGINX = Path("/usr/sbin/nginx")
SITE = ROOT / "deploy" / "nginx.conf"
UPSTREAMS = re.compile(r"^    server 10\.0\.0\.\d+:8000 (.*)\n", re.MULTILINE)


class Nginx:
    """``nginx -g 'daemon off;'`` as this user, with its pid, logs, temporary files and
    cache in ``folder``, proxying to sync processes on ``ports``."""

    def __init__(self, folder: Path, ports: list[int]) -> None:
        if not NGINX.exists():
            pytest.fail(f"{NGINX} is missing: apt-get install nginx (Debian's package)")
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "nginx.conf"
        config.write_text(self._config(ports))
        self._stderr = (folder / "stderr.log").open("w")
        self.process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log"),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )  # fmt: skip
        wait_for(self._accepts, timeout=20, what="nginx to listen")

    def _config(self, ports: list[int]) -> str:
        site = SITE.read_text()
        options = UPSTREAMS.findall(site)
        assert options, f"no upstream servers to replace in {SITE}"
        servers = "".join(f"    server 127.0.0.1:{port} {options[0]}\n" for port in ports)
        site = UPSTREAMS.sub("", site)
        for old, new in [
            ("upstream errands_sync {\n", "upstream errands_sync {\n" + servers),
            ("/var/cache/nginx/errands", str(self.folder / "cache")),
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
        ]:
            assert old in site, f"{old!r} is no longer in {SITE}"
            site = site.replace(old, new)
        user = getpass.getuser()
        group = grp.getgrgid(os.getgid()).gr_name
        temp = "\n".join(
            f"    {kind}_temp_path {self.folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""
user {user} {group};  # matters only when run as root
worker_processes 1;
pid {self.folder / "nginx.pid"};
error_log {self.folder / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    log_format upstream '$status $upstream_addr $upstream_cache_status "$request"';
    access_log {self.folder / "access.log"} upstream;
{temp}
{site}
}}
"""

    def _accepts(self) -> bool:
        assert self.process.poll() is None, (self.folder / "error.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def access_log(self) -> list[str]:
        """The lines nginx has logged: status, upstream address, cache status, request."""
        return (self.folder / "access.log").read_text().splitlines()

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


StartNginx = Callable[[list[int]], Nginx]


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[StartNginx]:
    """Start nginx in front of the sync processes on the given ports."""
    started: list[Nginx] = []

    def start(ports: list[int]) -> Nginx:
        nginx = Nginx(tmp_path / f"nginx{len(started)}", ports)
        started.append(nginx)
        return nginx

    try:
        yield start
    finally:
        for nginx in started:
            nginx.stop()


StartServers = Callable[..., list[SyncServer]]


@pytest.fixture
def start_servers(database_url: str) -> Iterator[StartServers]:
    """Start ``count`` sync processes on the test's database (extra CLI arguments
    last)."""
    started: list[SyncServer] = []

    def start(count: int, *extra: str) -> list[SyncServer]:
        servers = [SyncServer(database_url, *extra) for _ in range(count)]
        started.extend(servers)
        return [server.start() for server in servers]

    try:
        yield start
    finally:
        for server in started:
            server.stop()
