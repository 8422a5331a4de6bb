"""errands.js offline at scale: many submits with a subscriber, in Chromium.

    .venv/bin/python bench/browser_bench.py [--jobs 10000] [--ref GIT_REF]

Serves errands.js (src/errands/web, or the same files at ``--ref``, to compare with an
older version) from a local HTTP server, opens it in Debian's Chromium (Playwright, which
downloads nothing) and, with no sync service at all (offline, the outbox only grows):

* subscribes to ``jobs({limit: 10})``, as a page does;
* submits ``--jobs`` jobs one after another, timing each ``submit()``;
* times ``jobs({limit: 10})`` and the status counts on the full outbox.

Prints p50, p99 and the slowest submit, per thousand jobs and overall: a submit that
re-reads the outbox grows with it; one that uses the indexes stays flat.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "src" / "errands" / "web"
CHROMIUM = "/usr/bin/chromium"

RUN = """async (jobs) => {
    const errands = await import("/errands.js");
    const client = new errands.Client({ server: location.origin, replica: `bench ${Date.now()}` });
    await client.ready;
    let deliveries = 0;
    client.subscribe(() => deliveries++, { limit: 10 });
    const submits = [];
    for (let i = 0; i < jobs; i++) {
        const started = performance.now();
        await client.submit("bench", { i });
        submits.push(performance.now() - started);
    }
    await new Promise((resolve) => setTimeout(resolve, 500)); // the subscriber catches up
    const reads = [];
    for (let i = 0; i < 20; i++) {
        const started = performance.now();
        const newest = await client.jobs({ limit: 10 });
        reads.push(performance.now() - started);
        if (newest.length !== 10) throw new Error(`jobs() gave ${newest.length}`);
    }
    return { submits, reads, deliveries, pending: client.status.pending };
}"""


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def files_at(ref: str | None, into: Path) -> Path:
    """errands.js's files: the working tree's, or those of git ``ref`` copied to ``into``."""
    if ref is None:
        return WEB
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{ref}:src/errands/web"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for name in listing.stdout.split():
        shown = subprocess.run(
            ["git", "show", f"{ref}:src/errands/web/{name}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        (into / name).write_bytes(shown.stdout)
    return into


def serve(directory: Path) -> ThreadingHTTPServer:
    """A static file server for ``directory`` on a free loopback port (a secure context)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def guess_type(self, path: str | Path) -> str:
            return "text/javascript" if str(path).endswith(".js") else "text/html"

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--ref", help="a git ref whose errands.js to measure instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server = serve(files_at(args.ref, Path(scratch)))
        origin = f"http://127.0.0.1:{server.server_port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page()
            page.goto(f"{origin}/errands.d.ts")
            result = page.evaluate(RUN, args.jobs)
            browser.close()
        server.shutdown()
    submits: list[float] = result["submits"]
    print(f"errands.js ({args.ref or 'working tree'}), {args.jobs} offline submits, one subscriber")
    for start in range(0, len(submits), max(1, len(submits) // 10)):
        chunk = submits[start : start + max(1, len(submits) // 10)]
        print(
            f"  submits {start + 1:>6}-{start + len(chunk):<6} p50 {percentile(chunk, 0.5):7.2f} ms"
            f"  p99 {percentile(chunk, 0.99):7.2f} ms  max {max(chunk):7.2f} ms"
        )
    print(
        f"  all submits: p50 {percentile(submits, 0.5):.2f} ms, p99 {percentile(submits, 0.99):.2f}"
        f" ms, max {max(submits):.2f} ms; total {sum(submits) / 1000:.1f} s"
    )
    reads = result["reads"]
    print(
        f"  jobs({{limit: 10}}) on the full outbox: p50 {percentile(reads, 0.5):.2f} ms,"
        f" max {max(reads):.2f} ms"
    )
    print(f"  subscriber deliveries: {result['deliveries']}; pending: {result['pending']}")


if __name__ == "__main__":
    main()
