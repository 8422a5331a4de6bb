-- The console at a million jobs, continued (docs/operators.md): sorts of the jobs
-- list, charts read from per-minute rollups, and the periodic schedules the workers run.

-- The jobs list sorted by run time (errands.listing.SORTS["run_time"], the listing.sql
-- "page" query with ORDER BY finished_at - started_at, received_at, id): walked in
-- order from a keyset cursor, 2 ms a page at 1,000,000 jobs instead of 330-850 ms.
-- Partial: only a job that ran to an end has a run time, and its entry is written once,
-- by the update that finishes it (already a non-HOT update: its state changes);
-- progress and lease writes leave these columns alone. The other sorts take no index
-- of their own: by state walks background_jobs_state_received_idx (0008); by kind or
-- by queue reads the filter's rows and keeps the top of them (60-100 ms in the
-- console's default window of 24 hours, 260-440 ms over all of 1,000,000 jobs,
-- bench/README.md), which costs the writers nothing.
CREATE INDEX background_jobs_run_time_idx
    ON background_jobs ((finished_at - started_at), received_at, id)
    WHERE finished_at IS NOT NULL AND started_at IS NOT NULL;

-- The charts read rollups of job_events instead of every event of the window (21-80 s
-- for a day or a week at 1,000,000 jobs). A minute is rolled up once it is over
-- (errands.charts.roll_up_async, run by the service's maintenance and before a chart is
-- read; nothing is added to any writer's work) into rows of a minute, a quarter of an
-- hour and an hour (`width`, in seconds: a chart reads the widest its bars allow, so a
-- week per hour reads 168 rows per kind and queue, not 10,080), by kind and queue: jobs
-- that ended each way, that entered the queue (new or retried) and left it (started,
-- or ended while waiting), and histograms of pickup latency and run time (48 buckets,
-- a factor of the square root of two apart from 1 ms: a percentile read from them is
-- within 19% of the exact one). Rollups outlive the jobs: pruning leaves them.
CREATE TABLE errands_chart_rollups (
    width integer NOT NULL CHECK (width IN (60, 900, 3600)),
    start timestamptz NOT NULL,
    kind text NOT NULL,
    queue text NOT NULL,
    completed integer NOT NULL,
    failed integer NOT NULL,
    cancelled integer NOT NULL,
    retried integer NOT NULL,
    entered integer NOT NULL,
    left_queue integer NOT NULL,
    pickups integer[] NOT NULL,
    runs integer[] NOT NULL,
    PRIMARY KEY (width, start, kind, queue)
);

-- How far the rollups reach: every event before `upto` is in them (one row).
CREATE TABLE errands_chart_rollup (
    upto timestamptz NOT NULL
);

-- A histogram's bucket for a duration in seconds (see above).
CREATE FUNCTION errands_histogram_bucket(seconds float8) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN seconds <= 0.001 THEN 0
                ELSE least(47, ceil(2 * log(2, (seconds * 1000)::numeric)))::integer END
$$;

-- The histogram (48 counts) of a list of bucket numbers.
CREATE FUNCTION errands_histogram(buckets integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(n.count, 0)::integer ORDER BY b)
    FROM generate_series(0, 47) AS b
    LEFT JOIN (SELECT x, count(*) FROM unnest(buckets) AS x GROUP BY x) AS n ON n.x = b
$$;

-- Two histograms added bucket by bucket (an empty one is all zeros).
CREATE FUNCTION errands_histogram_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY n)
    FROM unnest(a, b) WITH ORDINALITY AS t (x, y, n)
$$;

-- The histograms of a two-dimensional array (array_agg of histograms) added up: one
-- call per chart bar, where an aggregate calling errands_histogram_add per row took
-- 1.6 s for the 28,600 minute rollups of a day.
CREATE FUNCTION errands_histogram_total(histograms integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(s.total ORDER BY s.bucket), array_fill(0, ARRAY[48]))
    FROM (
        SELECT (n - 1) % 48 AS bucket, sum(x)::integer AS total
        FROM unnest(histograms) WITH ORDINALITY AS u (x, n)
        GROUP BY 1
    ) AS s
$$;

-- The periodic schedules of the workers' registries: each worker that runs schedules
-- writes its own here when it starts, so the console and `errands schedules` can show
-- every schedule with its next run without the registry's code.
CREATE TABLE errands_schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    timezone text NOT NULL,
    kind text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
