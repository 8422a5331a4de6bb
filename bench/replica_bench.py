"""The Python client offline at scale: many submits with a subscriber.

    .venv/bin/python bench/replica_bench.py [--jobs 10000]

A ``Client`` that never connects (offline: the outbox only grows), one subscriber to
``jobs(limit=10)`` (called in the submitting thread, as for every local write), then
``--jobs`` submits one after another, each timed; then ``jobs(limit=10)`` and
``status`` on the full outbox. Prints p50, p99 and the slowest submit per tenth of the
run and overall: a submit that re-reads the outbox grows with it, one on the indexes
stays flat. Run it with ``PYTHONPATH`` at another checkout's ``src`` to compare.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import errands


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(call: object, times: int) -> list[float]:
    """Milliseconds each of ``times`` calls of ``call`` took."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        client = errands.Client(Path(scratch) / "replica.sqlite", server="http://127.0.0.1:9")
        deliveries = []
        client.subscribe(deliveries.append, limit=10)
        submits = []
        for i in range(args.jobs):
            started = time.perf_counter()
            client.submit("bench", {"i": i})
            submits.append((time.perf_counter() - started) * 1000)
        reads = timed(lambda: client.jobs(limit=10), 20)
        counts = timed(lambda: client.status, 20)
        pending = client.status.pending
        client.close()
    tenth = max(1, len(submits) // 10)
    print(f"Python client ({errands.__file__}), {args.jobs} offline submits, one subscriber")
    for start in range(0, len(submits), tenth):
        chunk = submits[start : start + tenth]
        print(
            f"  submits {start + 1:>6}-{start + len(chunk):<6} p50 {percentile(chunk, 0.5):7.2f} ms"
            f"  p99 {percentile(chunk, 0.99):7.2f} ms  max {max(chunk):7.2f} ms"
        )
    print(
        f"  all submits: p50 {percentile(submits, 0.5):.2f} ms, p99 {percentile(submits, 0.99):.2f}"
        f" ms, max {max(submits):.2f} ms; total {sum(submits) / 1000:.1f} s"
    )
    print(f"  jobs(limit=10) on the full outbox: p50 {percentile(reads, 0.5):.2f} ms")
    print(f"  status (counts) on the full outbox: p50 {percentile(counts, 0.5):.2f} ms")
    print(f"  subscriber deliveries: {len(deliveries)}; pending: {pending}")


if __name__ == "__main__":
    main()
