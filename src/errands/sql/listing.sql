-- Pages and counts of jobs at any table size (errands.listing), by name. {selection}
-- and {columns} are filled as in operations.sql. Values are always parameters.

-- name: page
-- One page in a sort's order (errands.listing.SORTS fills {order}, and {cursor}: the
-- row comparison with the last job seen, in the sort's direction; {only}: the jobs the
-- sort's key exists for). Each order is the order of an index, so the planner walks it
-- from the cursor and stops at LIMIT: newest first on background_jobs_received_idx, by
-- state on background_jobs_state_received_idx (also when one state is chosen: the
-- equality lets it walk that state's part in order), by kind, queue or run time on
-- 0011's indexes. One row more than a page says whether there is a page after it.
SELECT {columns} FROM background_jobs j
WHERE {selection}
  AND {only}
  AND (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND {cursor}
ORDER BY {order}
LIMIT %(limit)s + 1

-- name: count_states
-- Jobs per state, each count stopping at %(cap)s rows: each walks the state's part of
-- background_jobs_state_received_idx, so a count costs at most cap index entries
-- whatever the table holds.
SELECT s.state,
       (SELECT count(*) FROM (
            SELECT FROM background_jobs j
            WHERE j.state = s.state AND {selection}
            LIMIT %(cap)s
        ) AS capped) AS jobs
FROM unnest(%(all_states)s::text[]) AS s (state)

-- name: estimate_state
-- The planner's estimate of a state's jobs, for counts past the cap.
EXPLAIN (FORMAT JSON) SELECT FROM background_jobs j WHERE j.state = %(state)s AND {selection}
