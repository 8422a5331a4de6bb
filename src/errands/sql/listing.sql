-- Pages and counts of jobs at any table size (errands.listing), by name. {selection}
-- and {columns} are filled as in operations.sql. Values are always parameters.

-- name: page
-- One page in a sort's order (errands.listing.SORTS fills {order}, and {cursor}: the
-- row comparison with the last job seen, in the sort's direction; {only}: the jobs the
-- sort's key exists for). Each order is the order of an index, so the planner walks it
-- from the cursor and stops at LIMIT: newest first on background_jobs_received_idx;
-- one state chosen on background_jobs_state_received_idx (queued, failed, cancelled:
-- the equality lets it walk that state's part in order), on running_idx (running, a
-- few rows to sort) or on received_idx (completed, most rows); by run time on 0011's
-- index. By state, kind or queue the planner reads the filter's rows and keeps the top
-- (no index of their own, 0014). One row more than a page says whether there is a page
-- after it.
SELECT {columns} FROM background_jobs j
WHERE {selection}
  AND {only}
  AND (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND {cursor}
ORDER BY {order}
LIMIT %(limit)s + 1

-- name: count_state
-- One state's jobs, stopping at the cap. The state is written in as a literal (from
-- errands.jobs.STATES, never from a request), so that the planner can walk the partial
-- index that holds that state's jobs (background_jobs_state_received_idx for queued,
-- failed and cancelled, background_jobs_running_idx for running, received_idx for
-- completed): a count costs at most cap entries whatever the table holds.
-- errands.listing joins one of these per state with UNION ALL.
SELECT {state}::text AS state, (SELECT count(*) FROM (
            SELECT FROM background_jobs j
            WHERE j.state = {state} AND {selection}
            LIMIT %(cap)s
        ) AS capped) AS jobs

-- name: estimate_state
-- The planner's estimate of a state's jobs, for counts past the cap.
EXPLAIN (FORMAT JSON) SELECT FROM background_jobs j WHERE j.state = %(state)s AND {selection}
