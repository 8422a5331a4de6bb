-- Pages and counts of jobs at any table size (errands.listing), by name. {selection}
-- and {columns} are filled as in operations.sql. Values are always parameters.

-- name: page_older
-- The next page going back in time from a cursor (none: the newest page), on
-- background_jobs_received_idx, or background_jobs_state_received_idx when one state is
-- chosen (the equality lets the planner walk it in order). One row more than a page
-- says whether there is a page after it.
SELECT {columns} FROM background_jobs j
WHERE {selection}
  AND (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND (%(cursor_at)s::timestamptz IS NULL
       OR (j.received_at, j.id) < (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid))
ORDER BY j.received_at DESC, j.id DESC
LIMIT %(limit)s + 1

-- name: page_newer
-- The page before a cursor (newer jobs), read oldest first; the caller turns it round.
SELECT {columns} FROM background_jobs j
WHERE {selection}
  AND (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND (j.received_at, j.id) > (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid)
ORDER BY j.received_at, j.id
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
