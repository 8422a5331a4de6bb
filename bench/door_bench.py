"""What the door's dependency checks cost an upload: batches of client inserts posted
to a real ``errands server`` over HTTP, with and without ``after``.

    .venv/bin/python bench/door_bench.py [--jobs 1000] [--runs 5] [--base-src DIR]

Three shapes of one batch of ``--jobs`` inserts, ``--runs`` times each, interleaved:

* **plain**: no dependencies (what every upload paid before);
* **chain**: each job after the one before it in the same batch (a workflow made
  offline, uploaded whole): a cycle check over the batch, then per insert one locking
  read of its dependency and ``errands_wait_for``;
* **fan-in**: each job after the same 10 jobs of an earlier upload;
* **base** (with ``--base-src``): plain batches to a server run from another checkout
  (the commit before the door's checks), on a database of its own.

Each batch goes to a fresh user (no quota, no unique keys) of one database. Printed:
the median seconds per batch and per job, and each shape's ratio to plain. Raw output
is kept under ``bench/results/`` by the caller (``| tee``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

import errands
from errands.sync.auth import make_token

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "door-bench-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent

Shape = Callable[[int, list[str]], list[dict[str, Any]]]


def insert(job_id: str, after: list[str] | None = None) -> dict[str, Any]:
    """A client's insert of job ``job_id``, after ``after``."""
    values: dict[str, Any] = {"id": job_id, "kind": "bench", "payload": {}}
    if after:
        values["after"] = after
    return {"id": str(uuid.uuid4()), "table": "background_jobs", "op": "insert", "key": job_id} | {
        "values": values
    }


def plain(jobs: int, _: list[str]) -> list[dict[str, Any]]:
    return [insert(str(uuid.uuid4())) for _ in range(jobs)]


def chain(jobs: int, _: list[str]) -> list[dict[str, Any]]:
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    return [insert(job_id, ids[i - 1 : i]) for i, job_id in enumerate(ids)]


def fan_in(jobs: int, earlier: list[str]) -> list[dict[str, Any]]:
    return [insert(str(uuid.uuid4()), earlier) for _ in range(jobs)]


SHAPES: dict[str, Shape] = {"plain": plain, "chain": chain, "fan-in": fan_in}


def post(http: httpx.Client, user: str, batch: list[dict[str, Any]]) -> float:
    """Post one batch as ``user``; the seconds it took. Every insert must apply."""
    headers = {"Authorization": f"Bearer {make_token(SECRET, user)}"}
    started = time.perf_counter()
    answer = http.post("/v1/mutations", json={"mutations": batch}, headers=headers)
    took = time.perf_counter() - started
    answer.raise_for_status()
    refused = [r for r in answer.json()["results"] if r["status"] != "applied"]
    assert not refused, refused[:3]
    return took


class Service:
    """``errands server`` (from ``src``, if given: another checkout's ``src/`` folder) on
    a fresh database of its own."""

    def __init__(self, admin_url: str, src: str | None = None) -> None:
        self.admin_url = admin_url
        self.name = f"errands_bench_door_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        database = make_conninfo(admin_url, dbname=self.name)
        errands.migrate(database)
        env = {**os.environ, "ERRANDS_SECRET": SECRET, "ERRANDS_CLIENT_KINDS": "*"}
        if src is not None:
            env["PYTHONPATH"] = src
        command = [sys.executable, "-m", "errands", "server", "--database-url", database]
        self.process = subprocess.Popen(
            [*command, "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=src or ROOT,
        )
        assert self.process.stdout is not None
        found = None
        while found is None:
            line = self.process.stdout.readline()
            assert line, "errands server exited"
            found = re.search(r"listening on (http://\S+)", line)
        self.http = httpx.Client(base_url=found[1], timeout=120)

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(20)
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--server", default=os.environ.get("ERRANDS_BENCH_PG", LOCAL_SERVER))
    parser.add_argument(
        "--base-src",
        help="another checkout's src/ (before the door's checks): its plain uploads are "
        "timed too, interleaved, as 'base'",
    )
    args = parser.parse_args()

    with psycopg.connect(args.server, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()
    services = {"now": Service(args.server)}
    try:
        if args.base_src:
            services["base"] = Service(args.server, args.base_src)
        postgres = version[0] if version else "?"
        print(f"machine: {platform.node()}, {os.cpu_count()} cores; Postgres {postgres}")
        print(f"batches of {args.jobs} inserts, {args.runs} runs of each shape, interleaved")
        shapes = dict(SHAPES) | ({"base": plain} if args.base_src else {})
        times: dict[str, list[float]] = {shape: [] for shape in shapes}
        earlier = [str(uuid.uuid4()) for _ in range(10)]
        post(services["now"].http, "fan-in", [insert(job_id) for job_id in earlier])
        for service in services.values():
            post(service.http, "warm-up", plain(args.jobs, []))
        for run in range(args.runs):
            for shape, make in shapes.items():
                http = services["base" if shape == "base" else "now"].http
                user = "fan-in" if shape == "fan-in" else f"{shape}-{run}"
                took = post(http, user, make(args.jobs, earlier))
                times[shape].append(took)
                print(f"run {run} {shape:7} {took:.3f} s")
        reference = statistics.median(times["plain"])
        for shape, runs in times.items():
            median = statistics.median(runs)
            print(
                f"{shape:7} median {median:.3f} s per batch [{min(runs):.3f}-{max(runs):.3f}], "
                f"{median / args.jobs * 1e3:.3f} ms per job, {median / reference:.2f}x plain"
            )
        if args.base_src:  # the same run's plain and base, side by side: the machine's load
            ratios = [a / b for a, b in zip(times["plain"], times["base"], strict=True)]
            print(
                f"plain / base, run by run: median {statistics.median(ratios):.2f}x "
                f"[{min(ratios):.2f}-{max(ratios):.2f}]"
            )
    finally:
        for service in services.values():
            service.close()


if __name__ == "__main__":
    main()
