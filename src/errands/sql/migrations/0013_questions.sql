-- Questions to the job's owner, from the owner's side (docs/workflows.md): answered
-- through the sync service like any change (the door checks who and what, the query
-- below checks again as it applies), and questions that stop waiting at a deadline.

-- When an unanswered question stops waiting (ctx.ask(timeout=...)); NULL without one.
-- A column, not a field of `question`, so that the claim's staging finds due questions
-- on an index that holds only them (a cast of jsonb text to a time cannot be indexed).
ALTER TABLE background_jobs ADD COLUMN question_deadline timestamptz;
CREATE INDEX background_jobs_question_deadline_idx ON background_jobs (question_deadline)
    WHERE question_deadline IS NOT NULL;

-- An answer is an event of its own (no state changes), naming the operator who gave it
-- (NULL: the job's owner, through the sync service).
ALTER TABLE job_events DROP CONSTRAINT job_events_type_check;
ALTER TABLE job_events ADD CONSTRAINT job_events_type_check CHECK (type IN (
    'queued', 'started', 'retried', 'failed', 'cancelled', 'completed',
    'cancel_requested', 'rescheduled', 'answered'
));

-- Whether a question waits for its answer: asked, not answered, and not past its
-- deadline (then `timed_out` is in it, and the job runs again without an answer).
CREATE FUNCTION errands_question_pending(question jsonb, answer jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT question IS NOT NULL AND answer IS NULL AND NOT (question ? 'timed_out')
$$;

-- Whether `value` answers `question`: not null, and equal (as JSON) to one of its
-- choices, or, for a question without choices, a text of at most max_length characters
-- (errands.protocol's QUESTION_ANSWER_RULE and check_answer: the limit is passed in,
-- so that it is written once).
CREATE FUNCTION errands_answers(question jsonb, value jsonb, max_length integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(value) <> 'null' AND CASE WHEN jsonb_typeof(question -> 'choices') = 'array'
                THEN EXISTS (SELECT FROM jsonb_array_elements(question -> 'choices') AS c (choice)
                             WHERE c.choice = value)
                ELSE jsonb_typeof(value) = 'string' AND length(value #>> '{}') <= max_length
           END
$$;

-- 0010's rule, with "unanswered" meaning errands_question_pending: a question that
-- timed out no longer holds a job an operator sends back to the queue.
CREATE OR REPLACE FUNCTION errands_take_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IN ('completed', 'failed', 'cancelled') THEN
        NEW.waiting_for := errands_unfinished_dependencies(NEW.id)
                           + errands_question_pending(NEW.question, NEW.answer)::integer;
    END IF;
    IF NEW.run_at > now() OR NEW.waiting_for > 0 THEN
        NEW.turn := NULL;
    ELSIF NEW.turn IS NULL OR (TG_OP = 'UPDATE' AND OLD.state <> 'queued') THEN
        NEW.turn := errands_next_turn(NEW.owner);
    END IF;
    RETURN NEW;
END
$$;

-- Questions past their deadline stop waiting: marked `timed_out`, the job waits for one
-- thing fewer (and takes its turn when it waits for nothing), and its next attempt's
-- ctx.ask returns the default or raises QuestionTimedOut. A deadline whose question
-- was settled otherwise (the job ended meanwhile) is only cleared, so that no deadline
-- stays due for ever.
CREATE FUNCTION errands_time_out_questions(max_jobs integer) RETURNS void
LANGUAGE sql AS $$
    UPDATE background_jobs AS j
    SET question_deadline = NULL,
        question = CASE WHEN due.waits THEN j.question || '{"timed_out": true}' ELSE j.question END,
        waiting_for = j.waiting_for - due.waits::integer,
        turn = CASE WHEN due.waits AND j.state = 'queued' THEN NULL ELSE j.turn END
    FROM (SELECT id, state IN ('queued', 'running')
                     AND errands_question_pending(question, answer) AS waits
          FROM background_jobs
          WHERE question_deadline <= now()
          ORDER BY question_deadline LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id
$$;

-- 0010's staging, and first the questions past their deadline. Claims of jobs without
-- questions pay one more cached probe, of an index that holds only questions with a
-- deadline (bench/questions_bench.py).
CREATE OR REPLACE FUNCTION errands_stage_due(max_jobs integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM background_jobs WHERE question_deadline <= now()) THEN
        PERFORM errands_time_out_questions(max_jobs);
    END IF;
    -- Most claims find nothing to stage: one cached index probe, not an UPDATE to plan.
    IF NOT EXISTS (SELECT FROM background_jobs WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()) THEN
        RETURN;
    END IF;
    UPDATE background_jobs AS j SET turn = NULL
    FROM (SELECT id FROM background_jobs
          WHERE state = 'queued' AND turn IS NULL AND waiting_for = 0 AND run_at <= now()
          ORDER BY run_at LIMIT max_jobs
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.id = due.id;
END
$$;
