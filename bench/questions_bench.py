"""What questions' deadlines cost the claims of jobs that ask nothing.

    .venv/bin/python bench/questions_bench.py [--jobs 20000] [--questions 10000]
        [--claims 1000] [--rounds 5]

Migration 0013 makes the claim's staging (``errands_stage_due``, run by every claim)
look first for questions past their deadline, on an index that holds only questions with
a deadline. This times one claim of 16 jobs (``errands_claim``, in a transaction rolled
back, so every call sees the same queue of ``--jobs`` runnable jobs without questions),
``--claims`` times per round, in three set-ups taken in turn, ``--rounds`` times:

* ``0010``: the staging as migration 0010 left it (no deadline probe);
* ``0013``: the staging of 0013, no question waiting;
* ``0013+questions``: the same, with ``--questions`` jobs waiting for answers whose
  deadline is an hour away (the index then holds them all).

Then the staging alone, where the difference lives, called alternately (0010's under
another name, then 0013's, ``--claims`` times each per round, so that the machine's
drift hits both alike), with and without ``--questions`` waiting.

Printed: the median per set-up (median of the rounds' medians) and the ratios to
``0010``. Raw output goes to bench/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import errands
from errands.queries import read_sql

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results"


def staging_of(migration: str) -> str:
    """The CREATE OR REPLACE of errands_stage_due in a migration file."""
    text = read_sql(f"migrations/{migration}")
    start = text.index("CREATE OR REPLACE FUNCTION errands_stage_due")
    return text[start : text.index("$$;", text.index("AS $$", start) + 5) + 3]


def fresh_database(server: str) -> str:
    name = f"errands_bench_questions_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server, dbname=name)
    errands.migrate(url)
    return url


def fill(conn: psycopg.Connection[Any], jobs: int) -> None:
    """``jobs`` runnable jobs of kind k, asking nothing."""
    conn.execute(
        "INSERT INTO background_jobs (id, kind, payload) "
        "SELECT gen_random_uuid(), 'k', '{}' FROM generate_series(1, %s)",
        (jobs,),
    )


def ask(conn: psycopg.Connection[Any], questions: int) -> None:
    """``questions`` jobs of kind q waiting for answers due in an hour (as ctx.ask
    leaves them)."""
    conn.execute(
        "INSERT INTO background_jobs (id, kind, payload, question, question_deadline, waiting_for) "
        "SELECT gen_random_uuid(), 'q', '{}', jsonb_build_object('name', 'ask 1', 'text', 'Go?',"
        " 'asked_at', now()), now() + interval '1 hour', 1 FROM generate_series(1, %s)",
        (questions,),
    )


def forget_questions(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM background_jobs WHERE kind = 'q'")


def time_staging(conn: psycopg.Connection[Any], calls: int) -> tuple[float, float]:
    """The median seconds of one call of 0010's staging and of 0013's, alternated."""
    old: list[float] = []
    new: list[float] = []
    for _ in range(calls):
        for name, times in (("errands_stage_due_0010", old), ("errands_stage_due", new)):
            started = time.perf_counter()
            conn.execute(f"SELECT {name}(100)")
            times.append(time.perf_counter() - started)
    return statistics.median(old), statistics.median(new)


def time_claims(conn: psycopg.Connection[Any], claims: int) -> float:
    """The median seconds of one claim of 16 jobs, rolled back."""
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT count(*) FROM errands_claim('bench', ARRAY['k'], NULL, 16)")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def stage_alone(url: str, old: str, new: str, args: argparse.Namespace) -> list[str]:
    """The staging alone, 0010's and 0013's alternated, without and with questions."""
    lines = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(new)
        conn.execute(old.replace("errands_stage_due(", "errands_stage_due_0010(", 1))
        for questions in (0, args.questions):
            if questions:
                ask(conn, questions)
                conn.execute("ANALYZE background_jobs")
            pairs = [time_staging(conn, args.claims) for _ in range(args.rounds)]
            old_median = statistics.median(p[0] for p in pairs)
            new_median = statistics.median(p[1] for p in pairs)
            lines.append(
                f"staging alone, {questions} questions waiting: 0010 {old_median * 1e6:.1f} us,"
                f" 0013 {new_median * 1e6:.1f} us ({new_median / old_median:.3f}x,"
                f" {(new_median - old_median) * 1e6:+.1f} us a claim)"
            )
            print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=LOCAL_SERVER)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = fresh_database(args.server)
    old, new = staging_of("0010_workflows.sql"), staging_of("0013_questions.sql")
    found: dict[str, list[float]] = {"0010": [], "0013": [], "0013+questions": []}
    lines = [f"questions_bench {datetime.now(UTC).isoformat()} {vars(args)}"]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            fill(conn, args.jobs)
            conn.execute("VACUUM ANALYZE background_jobs")
            for round_number in range(args.rounds):
                for setup, times in found.items():
                    conn.execute(old if setup == "0010" else new)
                    if setup == "0013+questions":
                        ask(conn, args.questions)
                        conn.execute("ANALYZE background_jobs")
                    times.append(time_claims(conn, args.claims))
                    if setup == "0013+questions":
                        forget_questions(conn)
                    lines.append(f"round {round_number} {setup}: {times[-1] * 1e3:.3f} ms")
                    print(lines[-1], file=sys.stderr)
        staged = stage_alone(url, old, new, args)
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            name = conninfo_to_dict(url)["dbname"]
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    lines.extend(staged)
    base = statistics.median(found["0010"])
    for setup, times in found.items():
        median = statistics.median(times)
        lines.append(f"{setup:>16}: median claim {median * 1e3:.3f} ms, {median / base:.3f}x 0010")
    print("\n".join(lines[-5:]))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"questions_bench-{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
