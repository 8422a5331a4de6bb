#!/usr/bin/env bash
# The worker benchmark on a machine with no Postgres and no package registry: errands
# next to PgQueuer, 3 interleaved rounds, on an embedded Postgres 16 (pgserver).
#
#   bench/device_run.sh DIR [JOBS] [RUNS]
#
# DIR holds whl/ (cp312 manylinux wheels: errands' own, built with `pip wheel --no-deps
# .`, its dependencies, PgQueuer and asyncpg) and bench/ (this folder). Raw output goes
# to $OUT (default /tmp/errands-device-out); the summary table is printed last.
# ERRANDS_BENCH_DATABASE_URL skips the embedded Postgres (a dry run on a machine with
# one); HISTORY=N adds the drain with N finished jobs in the table; PROCESSES lists the
# `--processes` counts; LIMIT is the seconds the benchmark may take before it is stopped
# (its output so far is kept); SYNC_UNTIL=S runs bench/sync_bench.py (1,000 clients of
# 1,000 users, SSE, 30 s) afterwards if fewer than S seconds have passed.
set -uo pipefail

DIR=$(cd "${1:?usage: bench/device_run.sh DIR [JOBS] [RUNS]}" && pwd)
JOBS=${2:-20000}
RUNS=${3:-3}
HISTORY=${HISTORY:-0}
PROCESSES=${PROCESSES:-1 2 4 8}
LIMIT=${LIMIT:-480}
OUT=${OUT:-/tmp/errands-device-out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/errands-site}
mkdir -p "$OUT"
log="$OUT/device_run.log"
exec > >(tee -a "$log") 2>&1

echo "== $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== memory: $(free -g | awk '/Mem:/ {print $2}') GiB; $($PY --version)"
started=$SECONDS
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$DIR"/whl/*.whl || exit 1
export PYTHONPATH="$SITE" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
echo "== installed in $((SECONDS - started)) s"

url=${ERRANDS_BENCH_DATABASE_URL:-}
if [ -z "$url" ]; then
    # As root, pgserver runs Postgres as a system user of its own (`pgserver`, made with
    # useradd): Postgres refuses to run as root.
    start='import sys, pgserver; print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_uri())'
    url=$("$PY" -c "$start" /tmp/errands-pg)
    if [ -z "$url" ] && [ "$(id -u)" = 0 ]; then
        # No useradd there: start it as nobody instead (it keeps running for the runs).
        tail -5 /tmp/errands-pg/log 2>/dev/null
        mkdir -p /tmp/errands-pg-nobody && chown 65534:65534 /tmp/errands-pg-nobody
        url=$(HOME=/tmp/errands-pg-nobody XDG_RUNTIME_DIR=/tmp/errands-pg-nobody \
            setpriv --reuid=65534 --regid=65534 --clear-groups \
            "$PY" -c "$start" /tmp/errands-pg-nobody/data)
    fi
    [ -n "$url" ] || { tail -20 /tmp/errands-pg*/log /tmp/errands-pg-nobody/data/log 2>/dev/null; exit 1; }
fi
"$PY" - "$url" <<'EOF' || exit 1
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    print("== postgres:", conn.execute("SELECT version()").fetchone()[0])
    for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections", "max_wal_size"):
        print(f"   {name} = {conn.execute(f'SHOW {name}').fetchone()[0]}")
EOF

workloads="drain16 lanes2 cli cli_asyncio processes pickup"
[ "$HISTORY" -gt 0 ] && workloads="$workloads history"
cd "$DIR/bench" || exit 1
# shellcheck disable=SC2086 -- the lists are meant to split
timeout --signal=INT "$LIMIT" "$PY" worker_bench.py --database-url "$url" \
    --runs "$RUNS" --jobs "$JOBS" --history "$HISTORY" --latency-jobs 200 \
    --libraries errands pgqueuer --workloads $workloads --processes $PROCESSES \
    --results "$OUT"
status=$?
echo "== benchmark exit status $status after $((SECONDS - started)) s"
# The sync benchmark too, while time is left (SYNC_UNTIL: seconds since the start).
if [ "$((SECONDS - started))" -lt "${SYNC_UNTIL:-0}" ]; then
    timeout --signal=INT 100 "$PY" sync_bench.py --database-url "$url" \
        --clients "${SYNC_CLIENTS:-1000}" --users all --mode sse \
        --seconds "${SYNC_SECONDS:-30}" 2>&1 | tee "$OUT/sync_bench.txt"
fi
report=$(ls -t "$OUT"/worker_bench-*.txt 2>/dev/null | head -1)
if [ -n "$report" ]; then
    echo "== summary ($report)"
    sed -n '/^workload/,$p' "$report"
fi
exit "$status"
